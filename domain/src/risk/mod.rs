//! Suicide-risk assessment, and the guard every generated reply passes before it is spoken (whole,
//! or sentence by sentence as a streamed reply is cut by `SentenceBuffer`).
//!
//! Risk only escalates. The built-in screener's level is a floor: a language model's opinion may
//! raise it, never lower it, and an opinion that could not be had (the model failed or timed out)
//! counts as unknown, which is routed like high risk: straight to a person.

pub mod corpus;
mod guard;
mod lexicon;
mod normalise;
mod pattern;
mod question;
mod screener;
mod sentences;

pub use guard::{guard_reply, GuardViolation, MAX_REPLY_CHARS};
pub use normalise::words;
pub use question::{direct_answer, DirectAnswer, NO_KEY, YES_KEY};
pub use screener::{screen, SCREENER_VERSION};
pub use sentences::SentenceBuffer;

use serde::{Deserialize, Serialize};

/// How much risk a caller's words show, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    None,
    Low,
    Moderate,
    High,
    Imminent,
}

impl RiskLevel {
    /// Parses the snake_case name (as a model is asked to answer).
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "none" => Some(Self::None),
            "low" => Some(Self::Low),
            "moderate" | "medium" => Some(Self::Moderate),
            "high" => Some(Self::High),
            "imminent" => Some(Self::Imminent),
            _ => None,
        }
    }
}

/// What in the caller's words set the level. The first six follow the C-SSRS screener's items;
/// the rest are the other ways a caller shows that a person is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// C-SSRS 1: wished to be dead, or not to wake up.
    WishToBeDead,
    /// C-SSRS 2: thoughts of killing oneself.
    ActiveThoughts,
    /// C-SSRS 3: thought about how, or asked how lethal something is.
    Method,
    /// C-SSRS 4: some intention of acting on the thoughts.
    Intent,
    /// C-SSRS 5: worked out the details; a plan.
    Plan,
    /// C-SSRS 6: done, started or prepared something.
    RecentBehaviour,
    /// Something is happening now, or about to.
    Imminence,
    /// Hopelessness, feeling trapped or a burden.
    Hopelessness,
    /// The caller is worried about someone else.
    ConcernForOther,
    /// Reasons for living the caller named (recorded; they never lower the level).
    ProtectiveFactor,
    /// Preparations: letters, goodbyes, giving things away, a will, affairs settled.
    Preparation,
    /// Self-injury: cutting, burning, hitting oneself, or the urge to.
    SelfHarm,
    /// Pills or another substance taken in a harmful amount.
    Overdose,
    /// A means of dying at hand: a gun, saved-up pills, a rope.
    MeansAccess,
    /// A lethal situation: a bridge, a ledge, the tracks, a running engine.
    LethalSituation,
    /// Someone else is in danger now.
    ThirdPartyDanger,
    /// The caller may harm someone else.
    HarmToOthers,
    /// The caller is in danger from someone else.
    DangerFromOthers,
    /// Voices or visions telling the caller to harm, or fear of unreal danger.
    Psychosis,
}

impl Signal {
    /// Whether the signal is a sign of risk (every one is, but a protective factor).
    pub fn is_risk(self) -> bool {
        self != Self::ProtectiveFactor
    }
}

/// A language: the one the screener read the words in, and the one a call is held in.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    /// Calls start in English; the greeting offers Spanish.
    #[default]
    English,
    Spanish,
}

/// Why the screener could not read the words: the risk is unknown, and unknown goes to a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unreadable {
    /// A language the screener does not cover.
    UnsupportedLanguage,
    /// Too few words to tell anything.
    TooLittleText,
    /// Speech-to-text failed, or gave up on the recording.
    FailedTranscription,
    /// Speech-to-text was not confident of the words.
    LowConfidence,
}

/// The screener's reading of one utterance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Screening {
    pub level: RiskLevel,
    pub signals: Vec<Signal>,
    pub version: String,
    /// The language it was read in; `None` when it could not be read.
    #[serde(default)]
    pub language: Option<Language>,
    /// Why it could not be read, if it could not.
    #[serde(default)]
    pub unreadable: Option<Unreadable>,
}

impl Screening {
    /// The screening of words that could not be had or read at all.
    pub fn unreadable(why: Unreadable) -> Self {
        Self {
            level: RiskLevel::None,
            signals: Vec::new(),
            version: SCREENER_VERSION.to_owned(),
            language: None,
            unreadable: Some(why),
        }
    }

    /// Whether these words need a person: any sign of risk, or words that could not be read.
    pub fn warrants_person(&self) -> bool {
        self.level > RiskLevel::None
            || self.unreadable.is_some()
            || self.signals.iter().any(|s| s.is_risk())
    }
}

/// A language model's opinion of the same words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelOpinion {
    /// The model answered with a level.
    Level(RiskLevel),
    /// The model failed, timed out, or answered something unusable.
    Unknown,
}

/// Where a turn goes after assessment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// An answer is composed and played.
    Reply,
    /// No automated answer: the caller is connected to a person.
    Escalate,
}

/// The assessed risk of a turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskAssessment {
    pub level: RiskLevel,
    /// True when the words could not be read, or a model was asked and gave no usable answer.
    pub unknown: bool,
    pub route: Route,
}

/// Combines the screener's floor with a model's opinion (if one was asked): the higher wins.
/// Only a turn with no sign of risk at all gets an automated reply: any risk, whatever its level,
/// and any unknown (unreadable words, a failed model) goes to a person. The level says how
/// urgently, not whether.
pub fn assess(screening: &Screening, opinion: Option<ModelOpinion>) -> RiskAssessment {
    let (level, model_unknown) = match opinion {
        None => (screening.level, false),
        Some(ModelOpinion::Level(model)) => (screening.level.max(model), false),
        Some(ModelOpinion::Unknown) => (screening.level, true),
    };
    let unknown = model_unknown || screening.unreadable.is_some();
    let route = if unknown || level > RiskLevel::None || screening.warrants_person() {
        Route::Escalate
    } else {
        Route::Reply
    };
    RiskAssessment {
        level,
        unknown,
        route,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEVELS: [RiskLevel; 5] = [
        RiskLevel::None,
        RiskLevel::Low,
        RiskLevel::Moderate,
        RiskLevel::High,
        RiskLevel::Imminent,
    ];

    fn screened(level: RiskLevel) -> Screening {
        Screening {
            level,
            signals: Vec::new(),
            version: SCREENER_VERSION.to_owned(),
            language: Some(Language::English),
            unreadable: None,
        }
    }

    #[test]
    fn a_model_can_raise_the_level_but_never_lower_it() {
        for level in LEVELS {
            for model in LEVELS {
                let assessed = assess(&screened(level), Some(ModelOpinion::Level(model)));
                assert!(assessed.level >= level, "{model:?} lowered {level:?}");
                assert_eq!(assessed.level, level.max(model));
            }
        }
    }

    #[test]
    fn an_unknown_opinion_goes_to_a_person() {
        let assessed = assess(&screened(RiskLevel::None), Some(ModelOpinion::Unknown));
        assert!(assessed.unknown);
        assert_eq!(assessed.route, Route::Escalate);
    }

    #[test]
    fn any_sign_of_risk_goes_to_a_person_whatever_its_level() {
        assert_eq!(assess(&screened(RiskLevel::None), None).route, Route::Reply);
        for level in &LEVELS[1..] {
            assert_eq!(assess(&screened(*level), None).route, Route::Escalate);
        }
        let mut signal_only = screened(RiskLevel::None);
        signal_only.signals.push(Signal::SelfHarm);
        assert_eq!(assess(&signal_only, None).route, Route::Escalate);
        let mut protective_only = screened(RiskLevel::None);
        protective_only.signals.push(Signal::ProtectiveFactor);
        assert_eq!(assess(&protective_only, None).route, Route::Reply);
    }

    #[test]
    fn words_that_could_not_be_read_go_to_a_person() {
        for why in [
            Unreadable::UnsupportedLanguage,
            Unreadable::TooLittleText,
            Unreadable::FailedTranscription,
            Unreadable::LowConfidence,
        ] {
            let assessed = assess(&Screening::unreadable(why), None);
            assert!(assessed.unknown);
            assert_eq!(assessed.route, Route::Escalate);
        }
    }

    #[test]
    fn a_screening_stored_before_languages_were_read_still_loads() {
        let stored = r#"{"level":"low","signals":["hopelessness"],"version":"cssrs-screener-2"}"#;
        let screening: Screening = serde_json::from_str(stored).expect("old screening");
        assert_eq!(screening.unreadable, None);
        assert!(screening.warrants_person());
    }

    #[test]
    fn levels_parse_from_model_answers() {
        assert_eq!(RiskLevel::parse(" High "), Some(RiskLevel::High));
        assert_eq!(RiskLevel::parse("medium"), Some(RiskLevel::Moderate));
        assert_eq!(RiskLevel::parse("severe"), None);
    }
}
