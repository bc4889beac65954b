//! The safe-messaging guard. Every generated reply passes it before a caller hears it; a reply it
//! blocks is replaced by the vetted script. It is deliberately blunt: a false block costs a
//! scripted reply, a false pass could cost a life.
//!
//! Blocked: any mention of methods, means, doses or places (even to warn against them); anything
//! that presents suicide as a solution or relief; any claim to be a person; empty or overlong text.

/// Why a reply may not be spoken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardViolation {
    #[error("the reply mentions a method, means, dose or place: {0:?}")]
    MentionsMeans(String),
    #[error("the reply presents suicide as a solution: {0:?}")]
    PresentsSuicideAsSolution(String),
    #[error("the reply claims to be a person: {0:?}")]
    ClaimsToBeHuman(String),
    #[error("the reply is empty")]
    Empty,
    #[error("the reply is longer than {MAX_REPLY_CHARS} characters")]
    TooLong,
}

impl GuardViolation {
    /// The rule the reply broke, as a stable snake_case name: safe to log, unlike the violation's
    /// `Display`, which quotes the phrase the reply used.
    pub fn category(&self) -> &'static str {
        match self {
            Self::MentionsMeans(_) => "mentions_means",
            Self::PresentsSuicideAsSolution(_) => "suicide_as_solution",
            Self::ClaimsToBeHuman(_) => "claims_to_be_human",
            Self::Empty => "empty",
            Self::TooLong => "too_long",
        }
    }
}

/// The longest reply spoken in one turn (about 40 seconds of speech).
pub const MAX_REPLY_CHARS: usize = 700;

const MORE_MEANS: &[&str] = &[
    "mg",
    "milligrams",
    "milligram",
    "dose",
    "doses",
    "dosage",
    "lethal",
    "tylenol",
    "acetaminophen",
    "paracetamol",
    "ibuprofen",
    "aspirin",
    "insulin",
    "fentanyl",
    "opioid",
    "opioids",
    "sleeping pills",
    "bleach",
    "cyanide",
    "noose",
    "hanging",
    "wrist",
    "wrists",
    "jump",
    "jumping",
    "railway",
    "tracks",
    "tall building",
    "firearm",
    "bullet",
    "bullets",
    "blade",
    "medication",
    "medications",
    "overdosing",
    "suffocate",
    "suffocation",
];

const SOLUTION: &[&str] = &[
    "only way out",
    "end your pain",
    "end the pain",
    "suicide is a",
    "understandable to want to die",
    "go through with it",
    "better off dead",
    "better off without you",
    "at peace",
    "free yourself",
    "permanent solution",
    "you should end",
    "you deserve to die",
    "the right choice",
    "release from",
    "escape it all",
    "rest forever",
];

const HUMAN: &[&str] = &[
    "i am human",
    "i am a human",
    "i am a real person",
    "i am a person",
    "i am not a bot",
    "i am not a robot",
    "i am not an ai",
    "i am not a machine",
    "as a human",
    "my name is",
    "i am a counselor",
    "i am a counsellor",
    "i am a therapist",
    "i am a nurse",
    "i am a doctor",
    "i am a volunteer",
    "real person here",
];

/// Checks a generated reply.
pub fn guard_reply(reply: &str) -> Result<(), GuardViolation> {
    if reply.trim().is_empty() {
        return Err(GuardViolation::Empty);
    }
    if reply.chars().count() > MAX_REPLY_CHARS {
        return Err(GuardViolation::TooLong);
    }
    let text = normalise(reply);
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || ".!?;,".contains(c))
        .filter(|w| !w.is_empty())
        .collect();
    for table in [METHODS, MEANS, MORE_MEANS] {
        if let Some(phrase) = find_phrase(&words, table) {
            return Err(GuardViolation::MentionsMeans(phrase.to_owned()));
        }
    }
    if let Some(phrase) = find_phrase(&words, SOLUTION) {
        return Err(GuardViolation::PresentsSuicideAsSolution(phrase.to_owned()));
    }
    if let Some(phrase) = find_phrase(&words, HUMAN) {
        return Err(GuardViolation::ClaimsToBeHuman(phrase.to_owned()));
    }
    Ok(())
}

/// Ways of dying: a reply naming any of them is blocked.
const METHODS: &[&str] = &[
    "hang myself",
    "hanging myself",
    "shoot myself",
    "shooting myself",
    "overdose",
    "slit my wrists",
    "cut my wrists",
    "jump off",
    "jump in front of",
    "step in front of",
    "drown myself",
    "poison myself",
    "crash my car",
    "how to kill myself",
    "ways to die",
];

/// Means of dying: a reply naming any of them is blocked.
const MEANS: &[&str] = &[
    "pills",
    "tablets",
    "gun",
    "rifle",
    "pistol",
    "rope",
    "bridge",
    "knife",
    "razor",
    "train",
    "poison",
    "car exhaust",
    "carbon monoxide",
    "rooftop",
    "roof",
    "cliff",
    "ledge",
];

/// Lower case, contractions expanded, punctuation other than clause breaks removed.
fn normalise(text: &str) -> String {
    let lowered = text.to_lowercase().replace(['’', '‘', '`'], "'");
    let expanded = [
        ("i'm", "i am"),
        ("im ", "i am "),
        ("i've", "i have"),
        ("i'll", "i will"),
        ("i'd", "i would"),
        ("can't", "cannot"),
        ("won't", "will not"),
        ("n't", " not"),
        ("gonna", "going to"),
        ("wanna", "want to"),
        ("it's", "it is"),
        ("that's", "that is"),
    ]
    .iter()
    .fold(format!("{lowered} "), |acc, (from, to)| {
        acc.replace(from, to)
    });
    expanded
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == ' ' || ".!?;,".contains(c) {
                c
            } else {
                ' '
            }
        })
        .collect()
}

/// The first phrase of `table` that occurs in `words`, whole words only.
fn find_phrase<'t>(words: &[&str], table: &[&'t str]) -> Option<&'t str> {
    table.iter().copied().find(|phrase| {
        let phrase: Vec<&str> = phrase.split_whitespace().collect();
        !phrase.is_empty() && words.windows(phrase.len()).any(|w| w == phrase.as_slice())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supportive_replies_pass() {
        for reply in [
            "Thank you for telling me. It sounds like you're carrying a lot right now, and I'm glad you called.",
            "You don't have to go through this alone. Would you like to talk about what happened today?",
            "I'm an automated assistant, and I'm here to listen. A counselor is one key away if you'd like.",
        ] {
            assert_eq!(guard_reply(reply), Ok(()), "{reply:?}");
        }
    }

    #[test]
    fn methods_means_doses_and_places_are_blocked_even_as_warnings() {
        for reply in [
            "Please don't take those pills.",
            "Taking 500 mg would be dangerous.",
            "Stay away from the bridge tonight.",
            "An overdose of Tylenol is painful.",
            "Put the gun somewhere safe.",
        ] {
            assert!(
                matches!(guard_reply(reply), Err(GuardViolation::MentionsMeans(_))),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn suicide_as_a_solution_is_blocked() {
        for reply in [
            "It may feel like the only way out.",
            "You would finally be at peace.",
            "It's understandable to want to die when the pain is this bad.",
        ] {
            assert!(
                matches!(
                    guard_reply(reply),
                    Err(GuardViolation::PresentsSuicideAsSolution(_))
                ),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn claiming_to_be_human_is_blocked() {
        for reply in [
            "Don't worry, I'm a real person.",
            "My name is Sarah and I'm here for you.",
            "I'm not a bot.",
        ] {
            assert!(
                matches!(guard_reply(reply), Err(GuardViolation::ClaimsToBeHuman(_))),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn a_violation_s_category_names_the_rule_and_never_the_phrase() {
        let violation = guard_reply("Put the gun somewhere safe.").expect_err("blocked");
        assert_eq!(violation.category(), "mentions_means");
        assert_eq!(GuardViolation::TooLong.category(), "too_long");
    }

    #[test]
    fn empty_and_overlong_replies_are_blocked() {
        assert_eq!(guard_reply("  "), Err(GuardViolation::Empty));
        assert_eq!(
            guard_reply(&"I hear you. ".repeat(100)),
            Err(GuardViolation::TooLong)
        );
    }
}
