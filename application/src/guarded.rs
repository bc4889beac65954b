//! A streamed reply, made safe to speak as it arrives: the model's words are cut into sentences,
//! and each sentence passes the safe-messaging guard before it is yielded. The first sentence
//! that fails the guard ends the model's part: the vetted fallback is yielded instead, once, and
//! nothing more of the model's reply. A model that fails, stalls into an error, or says nothing
//! gets the fallback too, so a caller never hears half a reply end in silence.
//!
//! The guard reads the reply so far, not the sentence alone, so the words a caller hears, taken
//! together, pass the same guard as a reply composed whole (and are no longer than one).
//!
//! The stream adds no clock: how long a model may take is its adapter's bound. The caller speaks
//! the fallback itself when `LanguageModel::stream_reply` fails before any stream exists.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use domain::call::ReplySource;
use domain::risk::{self, GuardViolation, SentenceBuffer};
use futures_core::{FusedStream, Stream};

use crate::ports::{PortError, ReplyStream};

/// A piece of a reply that may be spoken, and where it came from.
#[derive(Debug, PartialEq, Eq)]
pub enum GuardedSentence {
    /// A sentence of the model's reply, passed by the guard.
    Model(String),
    /// The vetted fallback, spoken instead of the rest of the model's reply. The last item.
    Fallback {
        text: String,
        reason: FallbackReason,
    },
}

impl GuardedSentence {
    /// The words to speak.
    pub fn text(&self) -> &str {
        match self {
            Self::Model(text) | Self::Fallback { text, .. } => text,
        }
    }

    /// Where the words came from, as a turn records it.
    pub fn source(&self) -> ReplySource {
        match self {
            Self::Model(_) => ReplySource::Model,
            Self::Fallback {
                reason: FallbackReason::Blocked { .. },
                ..
            } => ReplySource::ScriptAfterGuard,
            Self::Fallback { .. } => ReplySource::Script,
        }
    }
}

/// Why the fallback was spoken. Safe to log: it never holds the model's words.
#[derive(Debug, PartialEq, Eq)]
pub enum FallbackReason {
    /// A sentence failed the guard, for this category of violation (`GuardViolation::category`).
    Blocked { category: &'static str },
    /// The model's stream failed.
    Failed(PortError),
    /// The model's stream ended without a word.
    Empty,
}

/// The guarded sentences of a streamed reply; see the module's documentation.
pub struct GuardedSentences {
    /// The model's reply, until it ends or the fallback is due.
    reply: Option<ReplyStream>,
    sentences: SentenceBuffer,
    /// Sentences complete and not yet guarded (one piece may complete several).
    ready: VecDeque<String>,
    /// What has been yielded of the model's reply, which every new sentence is guarded with.
    spoken: String,
    fallback: String,
    /// Whether the stream is over: nothing more will be yielded.
    over: bool,
}

impl std::fmt::Debug for GuardedSentences {
    // The model's words stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedSentences")
            .field("spoken_chars", &self.spoken.chars().count())
            .field("ready", &self.ready.len())
            .field("over", &self.over)
            .finish_non_exhaustive()
    }
}

/// Guards `reply` sentence by sentence, with the vetted `fallback` to speak if it cannot be
/// spoken to the end.
pub fn guarded_sentences(reply: ReplyStream, fallback: impl Into<String>) -> GuardedSentences {
    GuardedSentences {
        reply: Some(reply),
        sentences: SentenceBuffer::new(),
        ready: VecDeque::new(),
        spoken: String::new(),
        fallback: fallback.into(),
        over: false,
    }
}

impl GuardedSentences {
    /// Guards the next sentence with what was spoken before it.
    fn vet(&mut self, sentence: String) -> GuardedSentence {
        let reply = if self.spoken.is_empty() {
            sentence.clone()
        } else {
            format!("{} {sentence}", self.spoken)
        };
        match risk::guard_reply(&reply) {
            Ok(()) => {
                self.spoken = reply;
                GuardedSentence::Model(sentence)
            }
            Err(violation) => self.blocked(&violation),
        }
    }

    fn blocked(&mut self, violation: &GuardViolation) -> GuardedSentence {
        self.fall_back(FallbackReason::Blocked {
            category: violation.category(),
        })
    }

    /// The fallback, and the end of the stream: the rest of the model's reply is dropped unread.
    fn fall_back(&mut self, reason: FallbackReason) -> GuardedSentence {
        self.over = true;
        self.reply = None;
        self.ready.clear();
        GuardedSentence::Fallback {
            text: std::mem::take(&mut self.fallback),
            reason,
        }
    }

    /// Whether what is spoken and what waits to complete a sentence is already more than a reply
    /// may be: a model that never ends a sentence is not listened to for ever.
    fn overlong(&self) -> bool {
        let waiting = self.sentences.pending().chars().count();
        self.spoken.chars().count() + waiting > risk::MAX_REPLY_CHARS
    }
}

impl Stream for GuardedSentences {
    type Item = GuardedSentence;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.over {
                return Poll::Ready(None);
            }
            if let Some(sentence) = this.ready.pop_front() {
                return Poll::Ready(Some(this.vet(sentence)));
            }
            let Some(reply) = this.reply.as_mut() else {
                // The model's reply ended and every sentence of it was spoken.
                this.over = true;
                return Poll::Ready(None);
            };
            match reply.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(piece))) => {
                    this.ready.extend(this.sentences.push(&piece));
                    if this.ready.is_empty() && this.overlong() {
                        return Poll::Ready(Some(this.blocked(&GuardViolation::TooLong)));
                    }
                }
                // Half a sentence is not spoken: what was cut short is dropped.
                Poll::Ready(Some(Err(error))) => {
                    return Poll::Ready(Some(this.fall_back(FallbackReason::Failed(error))));
                }
                Poll::Ready(None) => {
                    this.reply = None;
                    let rest = std::mem::take(&mut this.sentences).finish();
                    this.ready.extend(rest);
                    if this.ready.is_empty() && this.spoken.is_empty() {
                        return Poll::Ready(Some(this.fall_back(FallbackReason::Empty)));
                    }
                }
            }
        }
    }
}

impl FusedStream for GuardedSentences {
    fn is_terminated(&self) -> bool {
        self.over
    }
}

#[cfg(test)]
mod tests {
    use futures_util::stream::{self, StreamExt};

    use super::*;
    use crate::ports::{Failure, Service};

    const FALLBACK: &str = "Thank you for telling me. I'm here to listen.";

    fn reply(pieces: Vec<Result<&str, Failure>>) -> ReplyStream {
        let pieces: Vec<Result<String, PortError>> = pieces
            .into_iter()
            .map(|piece| {
                piece
                    .map(str::to_owned)
                    .map_err(|failure| PortError::new(Service::Ai, failure))
            })
            .collect();
        Box::pin(stream::iter(pieces))
    }

    async fn heard(pieces: Vec<Result<&str, Failure>>) -> Vec<GuardedSentence> {
        guarded_sentences(reply(pieces), FALLBACK).collect().await
    }

    fn model(text: &str) -> GuardedSentence {
        GuardedSentence::Model(text.to_owned())
    }

    fn fallback(reason: FallbackReason) -> GuardedSentence {
        GuardedSentence::Fallback {
            text: FALLBACK.to_owned(),
            reason,
        }
    }

    #[tokio::test]
    async fn a_safe_reply_is_yielded_sentence_by_sentence_in_order() {
        let sentences = heard(vec![
            Ok("That sounds"),
            Ok(" exhausting. I'm"),
            Ok(" glad you called"),
            Ok("! Would you like to say more"),
            Ok("?"),
        ])
        .await;
        assert_eq!(
            sentences,
            [
                model("That sounds exhausting."),
                model("I'm glad you called!"),
                model("Would you like to say more?"),
            ]
        );
        assert!(sentences.iter().all(|s| s.source() == ReplySource::Model));
    }

    #[tokio::test]
    async fn an_unsafe_sentence_is_never_yielded_and_nothing_after_it() {
        let sentences = heard(vec![
            Ok("I hear you. Maybe take a few"),
            Ok(" extra pills to sleep. You"),
            Ok(" will feel better."),
        ])
        .await;
        assert_eq!(
            sentences,
            [
                model("I hear you."),
                fallback(FallbackReason::Blocked {
                    category: "mentions_means"
                }),
            ]
        );
        assert_eq!(sentences[1].source(), ReplySource::ScriptAfterGuard);
        assert_eq!(sentences[1].text(), FALLBACK);
    }

    #[tokio::test]
    async fn a_sentence_is_guarded_with_what_was_said_before_it() {
        let long = "I hear how much you are carrying right now, and I am glad you called. ";
        let pieces: Vec<Result<&str, Failure>> = (0..12).map(|_| Ok(long)).collect();
        let sentences = heard(pieces).await;
        let (last, spoken) = sentences.split_last().expect("some");
        assert_eq!(
            *last,
            fallback(FallbackReason::Blocked {
                category: "too_long"
            })
        );
        let chars: usize = spoken.iter().map(|s| s.text().chars().count() + 1).sum();
        assert!(chars <= risk::MAX_REPLY_CHARS + 1, "{chars}");
    }

    #[tokio::test]
    async fn a_model_that_never_ends_a_sentence_is_not_listened_to_for_ever() {
        let mut guarded = guarded_sentences(
            Box::pin(stream::repeat_with(|| Ok("and then ".to_owned()))),
            FALLBACK,
        );
        assert_eq!(
            guarded.next().await,
            Some(fallback(FallbackReason::Blocked {
                category: "too_long"
            }))
        );
        assert_eq!(guarded.next().await, None);
        assert!(guarded.is_terminated());
    }

    #[tokio::test]
    async fn an_error_mid_stream_gives_the_fallback_after_what_was_said() {
        let sentences = heard(vec![
            Ok("I hear you. And"),
            Err(Failure::Timeout),
            Ok(" more."),
        ])
        .await;
        assert_eq!(
            sentences,
            [
                model("I hear you."),
                fallback(FallbackReason::Failed(PortError::new(
                    Service::Ai,
                    Failure::Timeout
                ))),
            ]
        );
        assert_eq!(sentences[1].source(), ReplySource::Script);
    }

    #[tokio::test]
    async fn an_error_before_anything_gives_the_fallback() {
        assert_eq!(
            heard(vec![Err(Failure::Status(503))]).await,
            [fallback(FallbackReason::Failed(PortError::new(
                Service::Ai,
                Failure::Status(503)
            )))]
        );
    }

    #[tokio::test]
    async fn an_empty_reply_gives_the_fallback() {
        assert_eq!(heard(vec![]).await, [fallback(FallbackReason::Empty)]);
        assert_eq!(
            heard(vec![Ok(" "), Ok("\n\n")]).await,
            [fallback(FallbackReason::Empty)]
        );
    }

    #[tokio::test]
    async fn the_last_sentence_without_a_point_is_guarded_too() {
        assert_eq!(
            heard(vec![Ok("I'm here. Tell me more")]).await,
            [model("I'm here."), model("Tell me more")]
        );
        assert_eq!(
            heard(vec![Ok("I'm here. My name is Sarah")]).await,
            [
                model("I'm here."),
                fallback(FallbackReason::Blocked {
                    category: "claims_to_be_human"
                }),
            ]
        );
    }
}
