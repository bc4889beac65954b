//! The `call_views` subscription: folds each event into the call's views, in the subscription's
//! transaction, so that each event takes effect once.

use std::collections::{BTreeMap, BTreeSet};

use application::views::{CallProjection, TurnView};
use domain::{CallEvent, CallId};
use sqlx::PgConnection;

use super::writer::write;
use crate::event_store::subscription::{Consumer, ConsumerError, StoredEvent};

/// The projection's subscription name. Never rename it: it would start over.
pub const CALL_VIEWS: &str = "call_views";

/// Folds events into `call_views`, `call_turns` and `call_projection_state`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallViewsProjection;

impl Consumer for CallViewsProjection {
    fn name(&self) -> &str {
        CALL_VIEWS
    }

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ConsumerError> {
        // One event is a batch of one: the same fold, the same rows.
        self.handle_batch(conn, std::slice::from_ref(event))
            .await
            .map_err(|(_, error)| error)
    }

    /// The batch's calls are read in one statement, folded in memory, and written in one
    /// statement a table, whatever the batch's size: the same rows as folding its events one at a
    /// time would leave, at a fraction of the round trips (and of the time the batch holds the horizon).
    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), (i64, ConsumerError)> {
        let mut decoded = Vec::with_capacity(events.len());
        for event in events.iter().filter(|e| e.aggregate_type == "Call") {
            let (id, call_event) = decode(event).map_err(|e| (event.global_position, e))?;
            decoded.push((event, id, call_event));
        }
        let Some((first, _, _)) = decoded.first() else {
            return Ok(());
        };
        let at_first = |error: sqlx::Error| (first.global_position, ConsumerError::from(error));
        let ids: Vec<uuid::Uuid> = decoded
            .iter()
            .map(|(_, id, _)| id.as_uuid())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let stored: Vec<(uuid::Uuid, sqlx::types::Json<CallProjection>)> = sqlx::query_as(
            "SELECT call_id, state FROM call_projection_state WHERE call_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(at_first)?;
        // Each call's state before the batch, and as the batch leaves it.
        let mut calls: BTreeMap<uuid::Uuid, (Option<CallProjection>, Option<CallProjection>)> =
            BTreeMap::new();
        for (id, state) in stored {
            calls.insert(id, (Some(state.0.clone()), Some(state.0)));
        }
        for (event, id, call_event) in &decoded {
            let (_, current) = calls.entry(id.as_uuid()).or_insert((None, None));
            if let Some(after) =
                CallProjection::fold(current.clone(), *id, event.sequence, call_event)
            {
                *current = Some(after);
            }
        }
        let mut projections = Vec::new();
        let mut befores = Vec::new();
        for (before, after) in calls.into_values() {
            if let Some(after) = after.filter(|a| Some(a) != before.as_ref()) {
                befores.push(before);
                projections.push(after);
            }
        }
        if projections.is_empty() {
            return Ok(());
        }
        // The turns the batch added or changed; an upsert of the others would change nothing.
        let turns: Vec<&TurnView> = projections
            .iter()
            .zip(&befores)
            .flat_map(|(after, before)| {
                after
                    .turns
                    .iter()
                    .filter(move |t| before.as_ref().is_none_or(|b| !b.turns.contains(t)))
            })
            .collect();
        write(conn, &projections, &turns).await.map_err(at_first)
    }
}

/// The call an event belongs to, and the event.
fn decode(event: &StoredEvent) -> Result<(CallId, CallEvent), ConsumerError> {
    let id = CallId::parse(&event.aggregate_id)
        .map_err(|_| ConsumerError::Decode("a call id that is not a UUID".into()))?;
    let call_event: CallEvent = serde_json::from_value(event.payload.clone())
        .map_err(|e| ConsumerError::Decode(format!("{}: {e}", event.event_type)))?;
    Ok((id, call_event))
}
