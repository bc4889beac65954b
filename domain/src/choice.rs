//! What the caller chose after hearing a reply: keep talking, end the call, or a human.

use serde::{Deserialize, Serialize};

/// The caller's choice at the `<Gather>` after a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// Key 1, or "continue"/"yes": record another turn.
    Continue,
    /// Key 2, or "end"/"goodbye": crisis resources, goodbye, hang up.
    End,
    /// Key 0, or "counselor"/"human": connect to the counselor line.
    Counselor,
}

impl Choice {
    /// Reads a choice from `Digits` and `SpeechResult`. Asking for a human wins over anything else,
    /// because a human must always be one key (or word) away.
    pub fn from_input(digits: Option<&str>, speech: Option<&str>) -> Option<Self> {
        let digits = digits.map(str::trim).unwrap_or_default();
        let speech = speech.map(str::to_lowercase).unwrap_or_default();
        let said = |words: &[&str]| {
            speech
                .split(|c: char| !c.is_alphanumeric())
                .any(|w| words.contains(&w))
        };
        if digits.starts_with('0')
            || said(&[
                "counselor",
                "counsellor",
                "human",
                "person",
                "someone",
                "operator",
                "agent",
            ])
        {
            Some(Self::Counselor)
        } else if digits.starts_with('1') || said(&["continue", "yes", "talk", "more"]) {
            Some(Self::Continue)
        } else if digits.starts_with('2') || said(&["end", "goodbye", "bye", "stop", "no"]) {
            Some(Self::End)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_choices() {
        assert_eq!(Choice::from_input(Some("1"), None), Some(Choice::Continue));
        assert_eq!(Choice::from_input(Some("2"), None), Some(Choice::End));
        assert_eq!(Choice::from_input(Some("0"), None), Some(Choice::Counselor));
        assert_eq!(Choice::from_input(Some("7"), None), None);
        assert_eq!(Choice::from_input(None, None), None);
    }

    #[test]
    fn words_map_to_choices_and_a_human_always_wins() {
        assert_eq!(
            Choice::from_input(None, Some("I want a Human.")),
            Some(Choice::Counselor)
        );
        assert_eq!(
            Choice::from_input(None, Some("yes please")),
            Some(Choice::Continue)
        );
        assert_eq!(Choice::from_input(None, Some("Goodbye")), Some(Choice::End));
        assert_eq!(
            Choice::from_input(Some("1"), Some("no, get me a counselor")),
            Some(Choice::Counselor)
        );
        assert_eq!(Choice::from_input(None, Some("banana")), None);
    }
}
