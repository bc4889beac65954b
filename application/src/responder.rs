//! Understanding a turn once its words are known, and choosing its answer: screen, ask the model
//! (if one is configured) for its opinion of the risk while it composes a reply, assess, and guard
//! the reply. Shared by the pipeline (record mode, and speech turns whose answer was deferred),
//! the speech webhook (which answers while Twilio waits) and the live session.
//!
//! The screener's level is a floor; a model may raise it, never lower it; a model that fails or
//! times out makes the risk unknown, which goes to a person. The model's opinion and its reply are
//! asked for at the same time, so a turn costs one model round trip, not two: a reply composed
//! for a turn that turns out to warrant a person is thrown away unheard.

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::call::{Analysis, ReplySource, StageTimings};
use domain::risk::{self, Language, ModelOpinion, RiskAssessment, RiskLevel, Route, Screening};
use domain::script;

use crate::ports::LanguageModel;

/// How long the model may take for each of its answers before it counts as unknown.
pub const MODEL_TIMEOUT: Duration = Duration::from_secs(6);

/// Whether the words can be screened at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Words {
    /// Speech-to-text (ours or Twilio's) is confident of them.
    Readable,
    /// They cannot be read: the risk is unknown, and unknown goes to a person.
    Unreadable(risk::Unreadable),
}

/// Understands turns.
#[derive(Clone)]
pub struct Responder {
    model: Option<Arc<dyn LanguageModel>>,
    model_timeout: Duration,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("model", &self.model_name())
            .field("model_timeout", &self.model_timeout)
            .finish()
    }
}

pub(crate) fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Responder {
    /// Without a `model`, the screener and the vetted script answer.
    pub fn new(model: Option<Arc<dyn LanguageModel>>) -> Self {
        Self {
            model,
            model_timeout: MODEL_TIMEOUT,
        }
    }

    /// Sets how long the model may take for each answer (tests use short timeouts).
    #[must_use]
    pub fn with_model_timeout(mut self, timeout: Duration) -> Self {
        self.model_timeout = timeout;
        self
    }

    /// The model consulted, if any.
    pub fn model(&self) -> Option<&Arc<dyn LanguageModel>> {
        self.model.as_ref()
    }

    /// The model's name, recorded with every analysis it took part in.
    pub fn model_name(&self) -> Option<String> {
        self.model.as_ref().map(|m| m.name().to_owned())
    }

    /// The screener's reading of `transcript`.
    pub fn screen(transcript: &str, words: Words) -> Screening {
        match words {
            Words::Readable => risk::screen(transcript),
            Words::Unreadable(why) => Screening::unreadable(why),
        }
    }

    /// The model's opinion of the risk, within its timeout; a failure is an unknown.
    pub async fn opinion(&self, transcript: &str) -> Option<ModelOpinion> {
        let model = self.model.as_ref()?;
        Some(
            match tokio::time::timeout(self.model_timeout, model.assess_risk(transcript)).await {
                Ok(Ok(level)) => ModelOpinion::Level(level),
                Ok(Err(error)) => {
                    tracing::warn!(error = %error, "model risk assessment failed; risk is unknown");
                    ModelOpinion::Unknown
                }
                Err(_) => {
                    tracing::warn!("model risk assessment timed out; risk is unknown");
                    ModelOpinion::Unknown
                }
            },
        )
    }

    /// Screens, assesses and answers `transcript`. `language` is the call's: a reply is in the
    /// language the words were read in, or the call's when the screener could not tell.
    pub async fn understand(
        &self,
        transcript: String,
        words: Words,
        language: Language,
        mut timings: StageTimings,
    ) -> Analysis {
        let started = Instant::now();
        let screening = Self::screen(&transcript, words);
        // A reply is worth composing only when the screener alone would let the bot answer.
        let may_reply = risk::assess(&screening, None).route == Route::Reply;
        let reply_language = screening.language.unwrap_or(language);
        let opinion = async {
            let opinion = match words {
                Words::Readable => self.opinion(&transcript).await,
                Words::Unreadable(_) => None,
            };
            (opinion, elapsed_ms(started))
        };
        let composed = async {
            let started = Instant::now();
            let composed = if may_reply {
                Some(
                    self.compose(&transcript, screening.level, reply_language)
                        .await,
                )
            } else {
                None
            };
            (composed, elapsed_ms(started))
        };
        let ((opinion, assessment_ms), (composed, reply_ms)) = tokio::join!(opinion, composed);
        let assessment = risk::assess(&screening, opinion);
        timings.assessment_ms = assessment_ms;
        timings.reply_ms = reply_ms;
        let (reply, reply_source) = match (assessment.route, composed) {
            (Route::Reply, Some((text, source))) => (Some(text), Some(source)),
            // The model raised the risk: the composed reply is never heard.
            _ => (None, None),
        };
        Analysis {
            transcript,
            screening,
            assessment,
            model: self.model_name(),
            reply,
            reply_source,
            timings,
            recording_key: None,
        }
    }

    /// The screening and the assessment of `transcript`, without a reply (the live session
    /// streams its own).
    pub async fn assess(&self, transcript: &str, words: Words) -> (Screening, RiskAssessment) {
        let screening = Self::screen(transcript, words);
        let opinion = match words {
            Words::Readable => self.opinion(transcript).await,
            Words::Unreadable(_) => None,
        };
        let assessment = risk::assess(&screening, opinion);
        (screening, assessment)
    }

    /// The model's reply if it passes the guard in time; the vetted script otherwise.
    pub async fn compose(
        &self,
        transcript: &str,
        level: RiskLevel,
        language: Language,
    ) -> (String, ReplySource) {
        let scripted = || script::reply_for(level, language).to_owned();
        let Some(model) = &self.model else {
            return (scripted(), ReplySource::Script);
        };
        let reply = model.compose_reply(transcript, level, language);
        match tokio::time::timeout(self.model_timeout, reply).await {
            Ok(Ok(reply)) => match risk::guard_reply(&reply) {
                Ok(()) => (reply, ReplySource::Model),
                Err(violation) => {
                    // The violation names a category, never the reply's text.
                    tracing::warn!(
                        violation = violation.category(),
                        "model reply blocked by the guard"
                    );
                    (scripted(), ReplySource::ScriptAfterGuard)
                }
            },
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "model reply failed; using the script");
                (scripted(), ReplySource::Script)
            }
            Err(_) => {
                tracing::warn!("model reply timed out; using the script");
                (scripted(), ReplySource::Script)
            }
        }
    }
}
