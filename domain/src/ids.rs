//! Identifiers. Twilio's SIDs are parsed once at the edge; the aggregate id is derived from the
//! CallSid so that any webhook carrying a CallSid finds its call without a lookup table.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a SID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} must be '{prefix}' followed by 32 hexadecimal digits")]
pub struct SidError {
    kind: &'static str,
    prefix: &'static str,
}

fn parse_sid(value: &str, prefix: &'static str, kind: &'static str) -> Result<String, SidError> {
    let ok = value.len() == 34
        && value.starts_with(prefix)
        && value[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(value.to_owned())
    } else {
        Err(SidError { kind, prefix })
    }
}

macro_rules! sid_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses a SID as Twilio sends it.
            pub fn parse(value: &str) -> Result<Self, SidError> {
                parse_sid(value, $prefix, stringify!($name)).map(Self)
            }

            /// The SID as Twilio wrote it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = SidError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

sid_type!(
    /// A Twilio call SID: `CA` and 32 hex digits.
    CallSid,
    "CA"
);
sid_type!(
    /// A Twilio account SID: `AC` and 32 hex digits.
    AccountSid,
    "AC"
);
sid_type!(
    /// A Twilio recording SID: `RE` and 32 hex digits.
    RecordingSid,
    "RE"
);

/// The namespace of call ids. Fixed forever: changing it would orphan every stored call.
const CALL_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c1e_4f5a_2b7d_4e0a_9c3f_5d8e_1a2b_3c4d);

/// The aggregate id of a call: UUIDv5 of its CallSid, so a retried webhook or a status callback
/// that carries only the CallSid lands on the same aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(Uuid);

impl CallId {
    /// The id of the call Twilio knows by `sid`.
    pub fn for_call_sid(sid: &CallSid) -> Self {
        Self(Uuid::new_v5(&CALL_ID_NAMESPACE, sid.as_str().as_bytes()))
    }

    /// Parses an id from a URL path segment.
    pub fn parse(value: &str) -> Result<Self, uuid::Error> {
        Uuid::parse_str(value).map(Self)
    }

    /// A call named the way people name it: by its id, or by its CallSid.
    pub fn from_id_or_sid(value: &str) -> Option<Self> {
        Self::parse(value).ok().or_else(|| {
            CallSid::parse(value)
                .ok()
                .map(|sid| Self::for_call_sid(&sid))
        })
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "CA0123456789abcdef0123456789abcdef";

    #[test]
    fn sids_of_the_right_shape_parse() {
        assert_eq!(
            CallSid::parse(SID).map(|s| s.to_string()),
            Ok(SID.to_owned())
        );
        assert!(AccountSid::parse("AC0123456789ABCDEF0123456789abcdef").is_ok());
        assert!(RecordingSid::parse("RE0123456789abcdef0123456789abcdef").is_ok());
    }

    #[test]
    fn sids_of_the_wrong_shape_are_refused() {
        for bad in [
            "",
            "CA",
            "CA0123456789abcdef0123456789abcde",
            "CA0123456789abcdef0123456789abcdef0",
            "RE0123456789abcdef0123456789abcdef",
            "CA0123456789abcdef0123456789abcdeg",
            "ca0123456789abcdef0123456789abcdef",
        ] {
            assert!(CallSid::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_call_id_is_deterministic_per_call_sid() {
        let sid = CallSid::parse(SID).expect("valid sid");
        let other = CallSid::parse("CA0123456789abcdef0123456789abcdee").expect("valid sid");
        assert_eq!(CallId::for_call_sid(&sid), CallId::for_call_sid(&sid));
        assert_ne!(CallId::for_call_sid(&sid), CallId::for_call_sid(&other));
        let id = CallId::for_call_sid(&sid);
        assert_eq!(CallId::parse(&id.to_string()).ok(), Some(id));
    }

    #[test]
    fn sids_deserialize_only_when_valid() {
        let ok: Result<CallSid, _> = serde_json::from_str(&format!("\"{SID}\""));
        assert!(ok.is_ok());
        let bad: Result<CallSid, _> = serde_json::from_str("\"CA123\"");
        assert!(bad.is_err());
    }
}
