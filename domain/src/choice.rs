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

/// Words that ask for a person. They count wherever they are said: a person is always the safe
/// way on, and a human must always be one word away.
const COUNSELOR_WORDS: &[&str] = &[
    "counselor",
    "counsellor",
    "counseler",
    "human",
    "person",
    "someone",
    "somebody",
    "operator",
    "agent",
    "consejero",
    "consejera",
    "persona",
    "alguien",
    "humano",
];
const CONTINUE_WORDS: &[&str] = &[
    "continue",
    "yes",
    "yeah",
    "yep",
    "talk",
    "talking",
    "more",
    "keep",
    "going",
    "go",
    "on",
    "one",
    "sure",
    "okay",
    "ok",
    "si",
    "seguir",
    "continuar",
    "hablando",
    "uno",
];
const END_WORDS: &[&str] = &[
    "end", "goodbye", "bye", "stop", "no", "hang", "up", "finish", "two", "adios", "terminar",
    "colgar", "dos", "nope",
];
/// Words that may surround a choice without making it a sentence ("end the call, please").
/// Only politeness and fillers: "I want to end it" is words to screen, not a choice.
const AROUND_A_CHOICE: &[&str] = &[
    "please", "thanks", "thank", "you", "um", "uh", "the", "call", "oh", "well", "okay", "ok",
    "por", "favor", "la", "llamada", "gracias",
];

impl Choice {
    /// Whether the keys the caller pressed ask for a person: 0, whether it is the key that ended a
    /// recording or the first key at a choice. The one place that rule is written.
    pub fn keys_ask_for_person(digits: Option<&str>) -> bool {
        digits.is_some_and(|d| d.trim().starts_with('0'))
    }

    /// Reads a choice from `Digits` and `SpeechResult`. Asking for a human wins over anything
    /// else, wherever it is said. The other choices count only when they are the whole answer
    /// (or nearly): "goodbye" ends the call, but "I'm going to kill myself tonight, goodbye" is
    /// not a choice at all; it is words to screen, as any turn's are.
    pub fn from_input(digits: Option<&str>, speech: Option<&str>) -> Option<Self> {
        let digits = digits.map(str::trim).unwrap_or_default();
        let words = speech.map(crate::risk::words).unwrap_or_default();
        let said_anywhere = |list: &[&str]| words.iter().any(|w| list.contains(&w.as_str()));
        let whole_answer = |list: &[&str]| {
            words.iter().any(|w| list.contains(&w.as_str()))
                && words
                    .iter()
                    .all(|w| list.contains(&w.as_str()) || AROUND_A_CHOICE.contains(&w.as_str()))
        };
        if Self::keys_ask_for_person(Some(digits)) || said_anywhere(COUNSELOR_WORDS) {
            Some(Self::Counselor)
        } else if digits.starts_with('1') || (digits.is_empty() && whole_answer(CONTINUE_WORDS)) {
            Some(Self::Continue)
        } else if digits.starts_with('2') || (digits.is_empty() && whole_answer(END_WORDS)) {
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
    fn a_zero_first_asks_for_a_person_and_nothing_else_does() {
        for digits in ["0", "0#", " 0", "01"] {
            assert!(Choice::keys_ask_for_person(Some(digits)), "{digits:?}");
        }
        for digits in [None, Some(""), Some("#"), Some("1"), Some("10"), Some("2")] {
            assert!(!Choice::keys_ask_for_person(digits), "{digits:?}");
        }
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
        assert_eq!(
            Choice::from_input(None, Some("end the call please")),
            Some(Choice::End)
        );
    }

    #[test]
    fn a_choice_word_inside_a_sentence_is_not_a_choice() {
        for sentence in [
            "I'm going to kill myself tonight, goodbye",
            "I want to end my life",
            "I can't stop crying",
            "No. Nobody would miss me",
            "No, I don't want to stop",
            "yes i have been thinking about it more and more",
            "I want to end it",
            "i just want it to stop",
            "let's end it",
            "no quiero",
        ] {
            assert_eq!(Choice::from_input(None, Some(sentence)), None, "{sentence}");
        }
    }
}
