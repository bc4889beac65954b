//! The direct question crisis lines ask every caller: "are you having thoughts of suicide?" Only a
//! clear "no", with nothing risky said alongside it, counts as no; yes, unsure, silence, anything
//! unclear, or any sign of risk in the answer goes to a person.

use serde::{Deserialize, Serialize};

use super::normalise::words;
use super::screen;

/// What the caller answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectAnswer {
    /// A clear no, and nothing risky with it.
    No,
    /// Yes, or a sign of risk in the answer.
    Yes,
    /// Unsure, unclear, or nothing at all.
    Unsure,
}

impl DirectAnswer {
    /// Whether the answer sends the caller to a person: anything but a clear no.
    pub fn warrants_person(self) -> bool {
        self != Self::No
    }
}

/// The key that answers no; 1 answers yes, and 0 is a counselor, as at every prompt.
pub const NO_KEY: &str = "2";
/// The key that answers yes.
pub const YES_KEY: &str = "1";

/// Whole answers that mean no, in English and Spanish, after normalisation. Words around them
/// that are not fillers make the answer unclear, unless the screener finds them harmless.
const NO_WORDS: &[&str] = &[
    "no", "nope", "nah", "never", "not", "negative", "nada", "tampoco", "jamas", "nunca",
];
const NO_PHRASES: &[&str] = &[
    "not at all",
    "of course not",
    "definitely not",
    "absolutely not",
    "no i am not",
    "i am not",
    "no i do not",
    "i do not",
    "no i have not",
    "i have not",
    "no i am fine",
    "para nada",
    "claro que no",
    "no estoy",
    "no no estoy",
    "no tengo",
    "no para nada",
];
const YES_WORDS: &[&str] = &[
    "yes",
    "yeah",
    "yep",
    "yup",
    "si",
    "sometimes",
    "maybe",
    "kind",
];
/// Words that make a no unsure: "i don't know", "not really", "no sé", "no estoy segura".
const UNSURE_WORDS: &[&str] = &[
    "know", "sure", "unsure", "guess", "think", "probably", "perhaps", "really", "exactly",
    "usually", "lately", "anymore", "se", "segura", "seguro", "creo", "quizas", "tal",
];
const FILLERS: &[&str] = &[
    "um",
    "uh",
    "erm",
    "well",
    "i",
    "mean",
    "honestly",
    "thanks",
    "thank",
    "you",
    "ok",
    "okay",
    "just",
    "pues",
    "gracias",
    "eh",
    "este",
    "oh",
    "ma",
    "am",
    "sir",
    "miss",
    "nothing",
    "like",
    "that",
    "thoughts",
    "thinking",
    "of",
    "suicide",
    "about",
    "it",
    "pensamientos",
    "suicidio",
    "en",
    "eso",
    "pensando",
    "no",
    "not",
    "am",
    "do",
    "have",
    "any",
    "none",
];

/// Reads the answer from what the caller said and pressed.
pub fn direct_answer(speech: Option<&str>, digits: Option<&str>) -> DirectAnswer {
    match digits.map(str::trim).filter(|d| !d.is_empty()) {
        Some(NO_KEY) => return DirectAnswer::No,
        Some(_) => return DirectAnswer::Yes,
        None => {}
    }
    let Some(speech) = speech.filter(|s| !s.trim().is_empty()) else {
        return DirectAnswer::Unsure;
    };
    let tokens = words(speech);
    if tokens.is_empty() {
        return DirectAnswer::Unsure;
    }
    if tokens.iter().any(|w| YES_WORDS.contains(&w.as_str())) {
        return DirectAnswer::Yes;
    }
    if tokens.iter().any(|w| UNSURE_WORDS.contains(&w.as_str())) {
        return DirectAnswer::Unsure;
    }
    let text = tokens.join(" ");
    let clear_no = NO_PHRASES
        .iter()
        .any(|p| text == *p || text.starts_with(&format!("{p} ")))
        || tokens
            .first()
            .is_some_and(|w| NO_WORDS.contains(&w.as_str()));
    let only_fillers = tokens
        .iter()
        .all(|w| FILLERS.contains(&w.as_str()) || NO_WORDS.contains(&w.as_str()));
    if !clear_no {
        return DirectAnswer::Unsure;
    }
    // "No. Nobody would miss me": the words after the no are screened like any turn's.
    let rest = screen(speech);
    if rest.signals.iter().any(|s| s.is_risk()) || rest.level > super::RiskLevel::None {
        return DirectAnswer::Yes;
    }
    if only_fillers || rest.unreadable.is_none() {
        DirectAnswer::No
    } else {
        DirectAnswer::Unsure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(text: &str) -> DirectAnswer {
        direct_answer(Some(text), None)
    }

    #[test]
    fn a_clear_no_is_no() {
        for text in [
            "No.",
            "no",
            "nope",
            "No, I'm not.",
            "no im not",
            "not at all",
            "No, I just had a rough week at work.",
            "no no estoy pensando en eso",
            "No, para nada.",
        ] {
            assert_eq!(said(text), DirectAnswer::No, "{text}");
        }
        assert_eq!(direct_answer(None, Some("2")), DirectAnswer::No);
    }

    #[test]
    fn yes_unsure_and_silence_go_to_a_person() {
        for text in [
            "yes",
            "Yeah, sometimes.",
            "maybe",
            "I don't know",
            "sí",
            "kind of",
            "hmm",
        ] {
            assert!(said(text).warrants_person(), "{text}");
        }
        assert!(direct_answer(None, None).warrants_person());
        assert!(direct_answer(Some("   "), None).warrants_person());
        assert!(direct_answer(None, Some("1")).warrants_person());
        assert!(direct_answer(None, Some("0")).warrants_person());
    }

    #[test]
    fn a_no_with_risk_after_it_is_not_a_no() {
        for text in [
            "No. Nobody would miss me.",
            "no but i wish i could just not wake up",
            "no i already took the pills",
        ] {
            assert!(said(text).warrants_person(), "{text}");
        }
    }
}
