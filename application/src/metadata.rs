//! What is stored beside every event: where the command came from, for auditors.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};

/// The metadata key of Twilio's `I-Twilio-Idempotency-Token`.
pub const IDEMPOTENCY_TOKEN: &str = "twilio_idempotency_token";

/// Who asked for a command, and when. Stored as the event's metadata.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CommandMetadata {
    /// The request id (`x-request-id`) of the HTTP request that carried the command.
    pub request_id: String,
    /// Twilio's `I-Twilio-Idempotency-Token`, when the request carried one: the same on retries.
    pub idempotency_token: Option<String>,
    /// Who sent the command: `twilio`, `operator:<token id>`, `pipeline`…
    pub actor: String,
    /// When the command was received.
    pub received_at: DateTime<Utc>,
    /// Where the command waited in the spool while the store was away (`spool::SPOOL_ENTRY`),
    /// when it was replayed from there.
    #[serde(default)]
    pub spool_entry: Option<String>,
}

impl CommandMetadata {
    /// The metadata as cqrs-es stores it.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            ("request_id".to_owned(), self.request_id.clone()),
            ("actor".to_owned(), self.actor.clone()),
            (
                "received_at".to_owned(),
                self.received_at
                    .to_rfc3339_opts(SecondsFormat::Micros, true),
            ),
        ]);
        if let Some(token) = &self.idempotency_token {
            map.insert(IDEMPOTENCY_TOKEN.to_owned(), token.clone());
        }
        if let Some(entry) = &self.spool_entry {
            map.insert(crate::spool::SPOOL_ENTRY.to_owned(), entry.clone());
        }
        map
    }
}
