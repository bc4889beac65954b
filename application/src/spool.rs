//! The spool: where a webhook's command is kept when the event store cannot take it (down, too
//! slow, its breaker open), so that what happened while the store was away is still recorded.
//! The caller is answered once the command is kept (durably: it survives a crash of the
//! process), and the command is replayed into the store when the store is back, in the order the
//! webhooks came, by `CallService::replay_spool`.
//!
//! A caller-facing webhook answered while the store was away heard the fallback, which puts a
//! person on the line: it is kept with that escalation, the two recorded together
//! (`CallCommand::Together`), so that the pipeline can never act on the caller's words without
//! seeing that the caller went to a person. Callbacks no caller hears (status, transcription,
//! recording) are kept as they came, and Twilio gets its 2xx.
//!
//! Replaying is exactly once in effect: an entry already on record (the process died between
//! its append and the spool's mark) is found by its position, stored in the event's metadata,
//! and skipped; the aggregate's own rules make the same webhook twice harmless besides.

use async_trait::async_trait;
use domain::{CallCommand, CallId};
use serde::{Deserialize, Serialize};

use crate::metadata::CommandMetadata;

/// The metadata key a replayed event carries its spool position under.
pub const SPOOL_ENTRY: &str = "spool_entry";

/// A webhook's command, kept until the store takes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spooled {
    pub call_id: CallId,
    pub command: CallCommand,
    /// The webhook's own metadata (its request id, Twilio's idempotency token, when it came).
    pub metadata: CommandMetadata,
}

/// Where an entry is in its spool: the spool's own id (one per data directory) and the entry's
/// sequence in it. Unique across spools, so it can be stored with the events it became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolPosition {
    pub spool: String,
    pub sequence: u64,
}

impl std::fmt::Display for SpoolPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.spool, self.sequence)
    }
}

/// How the spool stands, for `/health` and the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SpoolStats {
    /// Entries waiting to be replayed.
    pub pending: u64,
    /// Their size on disk, and the most the spool may hold.
    pub bytes: u64,
    pub capacity_bytes: u64,
    /// Entries kept, replayed, and refused by the store for good, since the process started.
    pub kept: u64,
    pub replayed: u64,
    pub refused: u64,
    /// Webhooks that could not be kept because the spool was full.
    pub full: u64,
}

/// Why an entry could not be kept or read.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full ({capacity_bytes} bytes)")]
    Full { capacity_bytes: u64 },
    #[error("the spool could not be written or read: {0}")]
    Io(String),
}

/// A durable, ordered journal of webhooks' commands.
#[async_trait]
pub trait Spool: Send + Sync + std::fmt::Debug {
    /// Keeps `entry`. When this returns, the entry survives a crash of the process.
    async fn keep(&self, entry: Spooled) -> Result<SpoolPosition, SpoolError>;
    /// Whether entries of call `id` wait to be replayed: that call's next command must wait for
    /// them, or join them, to stay in order.
    fn holds(&self, id: CallId) -> bool;
    /// The oldest entries waiting, at most `limit`, in the order they were kept.
    async fn oldest(&self, limit: usize) -> Result<Vec<(SpoolPosition, Spooled)>, SpoolError>;
    /// Every entry up to `through` was replayed (`refused` of them refused for good).
    async fn replayed(&self, through: &SpoolPosition, refused: u64) -> Result<(), SpoolError>;
    /// How the spool stands.
    fn stats(&self) -> SpoolStats;
    /// Completes when an entry is kept after this was called: the replayer's wake-up.
    async fn kept(&self);
}

/// What one replay of the spool did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Entries now on record (including those found already on record).
    pub recorded: u64,
    /// Entries the store refused for good (a rule of the call, bad data): dropped, and logged.
    pub refused: u64,
}

impl Spooled {
    /// `self`'s metadata, marked with where it was spooled.
    pub fn replay_metadata(&self, position: &SpoolPosition) -> CommandMetadata {
        let mut metadata = self.metadata.clone();
        metadata.spool_entry = Some(position.to_string());
        metadata
    }
}
