//! Replaying the spool into the store: see `crate::spool`.

use cqrs_es::EventStore;
use domain::{Call, CallCommand};

use super::{store_away, CallService};
use crate::error::AppError;
use crate::spool::{Replayed, SpoolPosition, Spooled, SPOOL_ENTRY};

/// How many entries are read from the spool at a time.
const BATCH: usize = 64;

/// How one entry's replay went.
enum Outcome {
    Recorded,
    Refused,
}

impl<ES: EventStore<Call>> CallService<ES> {
    /// Replays what waits in the spool into the store, oldest first, until the spool is empty
    /// (`Ok`) or the store is away again (`Err`, the rest left for the next replay). An entry the
    /// store refuses for good (a rule of the call, data it cannot take) is dropped and logged:
    /// retrying it would only hold up every entry behind it.
    pub async fn replay_spool(&self) -> Result<Replayed, AppError> {
        let mut replayed = Replayed::default();
        let Some(spool) = &self.spool else {
            return Ok(replayed);
        };
        let _one_at_a_time = self.replaying.lock().await;
        loop {
            let batch = spool.oldest(BATCH).await.map_err(spool_failed)?;
            let Some((last, _)) = batch.last() else {
                return Ok(replayed);
            };
            let last = last.clone();
            let mut done: Option<SpoolPosition> = None;
            let mut refused = 0;
            for (position, entry) in batch {
                match self.replay_one(&position, &entry).await {
                    Ok(Outcome::Recorded) => replayed.recorded += 1,
                    Ok(Outcome::Refused) => {
                        refused += 1;
                        replayed.refused += 1;
                    }
                    Err(error) => {
                        if let Some(done) = &done {
                            spool.replayed(done, refused).await.map_err(spool_failed)?;
                        }
                        return Err(error);
                    }
                }
                done = Some(position);
            }
            spool.replayed(&last, refused).await.map_err(spool_failed)?;
        }
    }

    async fn replay_one(
        &self,
        position: &SpoolPosition,
        entry: &Spooled,
    ) -> Result<Outcome, AppError> {
        let key = position.to_string();
        // On record already: the process stopped between the append and the spool's mark.
        if self
            .dispatcher
            .has_event_with(entry.call_id, SPOOL_ENTRY, &key)
            .await?
        {
            return Ok(Outcome::Recorded);
        }
        let metadata = entry.replay_metadata(position);
        match self
            .dispatcher
            .execute(entry.call_id, entry.command.clone(), &metadata)
            .await
        {
            Ok(_) => Ok(Outcome::Recorded),
            // Contended is another writer's moment on the call: tried again on the next replay.
            Err(error) if store_away(&error) || matches!(error, AppError::Contended { .. }) => {
                Err(error)
            }
            // A webhook and the escalation its caller heard, refused together (the call unknown,
            // or over): each is recorded alone if it can be, so that nothing that can be kept
            // is lost with what cannot.
            Err(AppError::Rule(rule)) if matches!(entry.command, CallCommand::Together(_)) => {
                tracing::warn!(reason = %rule, entry = %key, "a spooled webhook was refused as a whole; replaying its parts");
                let CallCommand::Together(commands) = &entry.command else {
                    unreachable!("matched above")
                };
                let mut kept = false;
                for command in commands {
                    match self
                        .dispatcher
                        .execute(entry.call_id, command.clone(), &metadata)
                        .await
                    {
                        Ok(_) => kept = true,
                        Err(error) if store_away(&error) => return Err(error),
                        Err(error) => {
                            tracing::warn!(%error, entry = %key, "part of a spooled webhook refused")
                        }
                    }
                }
                Ok(if kept {
                    Outcome::Recorded
                } else {
                    Outcome::Refused
                })
            }
            Err(error) => {
                tracing::warn!(%error, entry = %key, "a spooled webhook was refused by the store; dropped");
                Ok(Outcome::Refused)
            }
        }
    }
}

fn spool_failed(error: crate::spool::SpoolError) -> AppError {
    AppError::SpoolFailed(error.to_string())
}
