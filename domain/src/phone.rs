//! Phone numbers. A caller's number is sensitive: it is never logged and is masked for display.
//! Numbers we dial come from configuration and must be dialable.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Whatever Twilio put in `From`: usually E.164, but also `client:…`, a SIP URI, or a withheld-number
/// placeholder. Spoofable display data: never trusted, never logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallerId(String);

impl CallerId {
    /// Wraps the raw `From` value; any string is accepted because callers can withhold their number.
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// The raw value, for the few places that must see it (dialling back, an auditor's view).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A display form that keeps the country prefix and the last two digits only.
    pub fn masked(&self) -> String {
        let digits: Vec<char> = self.0.chars().filter(char::is_ascii_digit).collect();
        if !self.0.starts_with('+') || digits.len() < 6 {
            return "withheld or non-phone caller".to_owned();
        }
        let tail: String = digits[digits.len() - 2..].iter().collect();
        let head: String = digits[..1].iter().collect();
        format!("+{head}{}{tail}", "•".repeat(digits.len() - 3))
    }
}

// Debug must not leak the number into logs or panic messages.
impl fmt::Debug for CallerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallerId({})", self.masked())
    }
}

/// Why a number to dial was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a dialable number: use E.164 (+ and 8 to 15 digits) or a 3 to 6 digit short code such as 988")]
pub struct DialNumberError(String);

/// A number Hotline dials: a counselor line, a crisis line. E.164 or a short code (e.g. `988`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DialNumber(String);

impl DialNumber {
    /// Parses a configured number.
    pub fn parse(value: &str) -> Result<Self, DialNumberError> {
        let value = value.trim();
        let e164 = value.strip_prefix('+').is_some_and(|rest| {
            (8..=15).contains(&rest.len())
                && rest.bytes().all(|b| b.is_ascii_digit())
                && !rest.starts_with('0')
        });
        let short_code =
            (3..=6).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit());
        if e164 || short_code {
            Ok(Self(value.to_owned()))
        } else {
            Err(DialNumberError(value.to_owned()))
        }
    }

    /// The number as it is dialled.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number written for speech: digits separated so text-to-speech reads them one by one.
    pub fn spoken(&self) -> String {
        let digits: Vec<String> = self
            .0
            .chars()
            .filter(char::is_ascii_digit)
            .map(String::from)
            .collect();
        digits.join(" ")
    }
}

impl TryFrom<String> for DialNumber {
    type Error = DialNumberError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<DialNumber> for String {
    fn from(value: DialNumber) -> String {
        value.0
    }
}

impl fmt::Debug for DialNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DialNumber({})", self.0)
    }
}

impl fmt::Display for DialNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_numbers_are_masked_and_never_debug_printed() {
        let caller = CallerId::new("+14155550123");
        assert_eq!(caller.masked(), "+1••••••••23");
        assert!(!format!("{caller:?}").contains("5550123"));
        assert_eq!(
            CallerId::new("anonymous").masked(),
            "withheld or non-phone caller"
        );
        assert_eq!(
            CallerId::new("client:alice").masked(),
            "withheld or non-phone caller"
        );
    }

    #[test]
    fn dial_numbers_accept_e164_and_short_codes_only() {
        assert!(DialNumber::parse("+14155550123").is_ok());
        assert!(DialNumber::parse("988").is_ok());
        for bad in [
            "",
            "98",
            "+0123456789",
            "+1 415 555",
            "call me",
            "+1234567890123456",
            "1234567",
        ] {
            assert!(DialNumber::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn numbers_are_spoken_digit_by_digit() {
        assert_eq!(
            DialNumber::parse("988").map(|n| n.spoken()),
            Ok("9 8 8".to_owned())
        );
    }
}
