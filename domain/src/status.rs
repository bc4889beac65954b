//! Twilio's `CallStatus`. Unknown values are kept, not refused: Twilio adds values without notice.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A call's status as Twilio reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum CallStatus {
    Queued,
    Initiated,
    Ringing,
    InProgress,
    Completed,
    Busy,
    Failed,
    NoAnswer,
    Canceled,
    /// A value this version does not know; kept verbatim.
    Other(String),
}

impl CallStatus {
    /// Parses Twilio's spelling; never fails.
    pub fn parse(value: &str) -> Self {
        match value {
            "queued" => Self::Queued,
            "initiated" => Self::Initiated,
            "ringing" => Self::Ringing,
            "in-progress" => Self::InProgress,
            "completed" => Self::Completed,
            "busy" => Self::Busy,
            "failed" => Self::Failed,
            "no-answer" => Self::NoAnswer,
            "canceled" => Self::Canceled,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Twilio's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Queued => "queued",
            Self::Initiated => "initiated",
            Self::Ringing => "ringing",
            Self::InProgress => "in-progress",
            Self::Completed => "completed",
            Self::Busy => "busy",
            Self::Failed => "failed",
            Self::NoAnswer => "no-answer",
            Self::Canceled => "canceled",
            Self::Other(other) => other,
        }
    }

    /// Whether the call is over: nothing after this changes its state.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Busy | Self::Failed | Self::NoAnswer | Self::Canceled
        )
    }
}

impl From<String> for CallStatus {
    fn from(value: String) -> Self {
        Self::parse(&value)
    }
}

impl From<CallStatus> for String {
    fn from(value: CallStatus) -> String {
        value.as_str().to_owned()
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_unknown_ones_are_kept() {
        for s in [
            "queued",
            "ringing",
            "in-progress",
            "completed",
            "no-answer",
            "initiated",
        ] {
            assert_eq!(CallStatus::parse(s).as_str(), s);
        }
        assert_eq!(
            CallStatus::parse("paused"),
            CallStatus::Other("paused".into())
        );
    }

    #[test]
    fn only_final_statuses_are_terminal() {
        assert!(CallStatus::Completed.is_terminal());
        assert!(CallStatus::NoAnswer.is_terminal());
        assert!(!CallStatus::InProgress.is_terminal());
        assert!(!CallStatus::Other("x".into()).is_terminal());
    }
}
