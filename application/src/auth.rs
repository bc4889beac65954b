//! Who may use the API: each bearer token has one role, and each endpoint names the roles it
//! serves. Roles follow the people who use Hotline, and what each may see of callers' data.

use std::fmt;
use std::str::FromStr;

/// A token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Runs the service: re-processes recordings, places test calls.
    Operator,
    /// Queries call views and statistics; never sees phone numbers, transcripts or audio.
    Analyst,
    /// Replays and verifies calls' full event histories, caller data included.
    Auditor,
    /// Watches live calls and their turns on the dashboard.
    Supervisor,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Self::Operator,
        Self::Analyst,
        Self::Auditor,
        Self::Supervisor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Analyst => "analyst",
            Self::Auditor => "auditor",
            Self::Supervisor => "supervisor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role '{0}': roles are operator, analyst, auditor and supervisor")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_read_back_from_their_names_and_nothing_else_is_a_role() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert_eq!(
            "Operator".parse::<Role>(),
            Err(UnknownRole("Operator".into()))
        );
        assert!("admin".parse::<Role>().is_err());
    }
}
