//! Suicide-risk assessment, and the guard every generated reply passes before it is spoken.
//!
//! Risk only escalates. The built-in screener's level is a floor: a language model's opinion may
//! raise it, never lower it, and an opinion that could not be had (the model failed or timed out)
//! counts as unknown, which is routed like high risk: straight to a person.

mod guard;
mod screener;

pub use guard::{guard_reply, GuardViolation};
pub use screener::{screen, SCREENER_VERSION};

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

/// What in the caller's words set the level. The first six follow the C-SSRS screener's items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// C-SSRS 1: wished to be dead, or not to wake up.
    WishToBeDead,
    /// C-SSRS 2: thoughts of killing oneself.
    ActiveThoughts,
    /// C-SSRS 3: thought about how.
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
}

/// The screener's reading of one turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Screening {
    pub level: RiskLevel,
    pub signals: Vec<Signal>,
    pub version: String,
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
    /// True when a model was asked and gave no usable answer: treated as high.
    pub unknown: bool,
    pub route: Route,
}

/// Combines the screener's floor with a model's opinion (if one was asked): the higher wins, and
/// an unknown opinion routes to a person.
pub fn assess(screened: RiskLevel, opinion: Option<ModelOpinion>) -> RiskAssessment {
    let (level, unknown) = match opinion {
        None => (screened, false),
        Some(ModelOpinion::Level(model)) => (screened.max(model), false),
        Some(ModelOpinion::Unknown) => (screened, true),
    };
    let route = if unknown || level >= RiskLevel::High {
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

    #[test]
    fn a_model_can_raise_the_level_but_never_lower_it() {
        for screened in [
            RiskLevel::None,
            RiskLevel::Low,
            RiskLevel::Moderate,
            RiskLevel::High,
            RiskLevel::Imminent,
        ] {
            for model in [
                RiskLevel::None,
                RiskLevel::Low,
                RiskLevel::Moderate,
                RiskLevel::High,
                RiskLevel::Imminent,
            ] {
                let assessed = assess(screened, Some(ModelOpinion::Level(model)));
                assert!(assessed.level >= screened, "{model:?} lowered {screened:?}");
                assert_eq!(assessed.level, screened.max(model));
            }
        }
    }

    #[test]
    fn an_unknown_opinion_goes_to_a_person() {
        let assessed = assess(RiskLevel::None, Some(ModelOpinion::Unknown));
        assert!(assessed.unknown);
        assert_eq!(assessed.route, Route::Escalate);
    }

    #[test]
    fn high_and_imminent_skip_the_automated_reply() {
        assert_eq!(assess(RiskLevel::Moderate, None).route, Route::Reply);
        assert_eq!(assess(RiskLevel::High, None).route, Route::Escalate);
        assert_eq!(
            assess(
                RiskLevel::Low,
                Some(ModelOpinion::Level(RiskLevel::Imminent))
            )
            .route,
            Route::Escalate
        );
    }

    #[test]
    fn levels_parse_from_model_answers() {
        assert_eq!(RiskLevel::parse(" High "), Some(RiskLevel::High));
        assert_eq!(RiskLevel::parse("medium"), Some(RiskLevel::Moderate));
        assert_eq!(RiskLevel::parse("severe"), None);
    }
}
