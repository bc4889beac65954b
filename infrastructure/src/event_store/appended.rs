//! Telling subscription runners that events were appended, without slowing the append.
//!
//! A `NOTIFY` inside the appending transaction would be simplest, but PostgreSQL serialises the
//! commits of notifying transactions on one lock held through the commit's WAL flush, so
//! concurrent appends stop sharing flushes: measured with pgbench on this schema, an append per
//! transaction ran at less than half the rate with the notification as without it. So appends
//! notify no one in the database. Instead:
//! - runners in the appending process are woken in memory at once (`Appended`);
//! - runners in other processes get one `NOTIFY` per burst of appends, sent after the append
//!   committed by a task of the appending process, at most every `NOTIFY_EVERY`;
//! - and every runner still polls, which covers a lost notification or a crashed sender.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

/// The channel appends are announced on to other processes.
pub const EVENTS_CHANNEL: &str = "hotline_events";

/// The shortest time between two cross-process notifications from one store: under load, one
/// notification covers many appends, so the notifications' cost stays a few hundred transactions
/// a second at most, whatever the append rate.
const NOTIFY_EVERY: Duration = Duration::from_millis(5);

/// Appends made by this process to one database, counted, so that its runners on that database
/// can wait for the count to change.
#[derive(Debug, Clone)]
pub struct Appended(watch::Sender<u64>);

/// One counter per database this process writes to, so that an append to one database does not
/// wake the runners of another (tests run many services in one process).
static BY_DATABASE: LazyLock<Mutex<HashMap<String, Appended>>> = LazyLock::new(Mutex::default);

impl Appended {
    /// The counter of appends to `pool`'s database.
    pub fn of(pool: &PgPool) -> Self {
        let options = pool.connect_options();
        let key = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        );
        let mut map = BY_DATABASE.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key)
            .or_insert_with(|| Self(watch::channel(0).0))
            .clone()
    }

    /// Counts an append: every runner waiting on this database looks again.
    pub fn announce(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver whose `changed()` completes after the next append (or at once, if one happened
    /// since it last looked).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// Sends the cross-process notification for one store's appends, coalesced.
#[derive(Debug)]
pub struct Notifier {
    pending: watch::Sender<u64>,
}

impl Notifier {
    /// A notifier sending through `pool`. Its task waits for appends, and ends when the notifier
    /// is dropped.
    pub fn new(pool: PgPool) -> Self {
        let (pending, mut receiver) = watch::channel(0u64);
        let task = async move {
            // Ends when the store (and so the sender) is gone.
            while receiver.changed().await.is_ok() {
                receiver.mark_unchanged();
                let sent = sqlx::query("SELECT pg_notify($1, '')")
                    .bind(EVENTS_CHANNEL)
                    .execute(&pool)
                    .await;
                if let Err(error) = sent {
                    // Other processes' runners will poll instead.
                    tracing::debug!(error = %error, "could not notify other processes of appends");
                }
                // A rate limit, not a synchronisation: appends during the pause are all covered by
                // the next notification.
                tokio::time::sleep(NOTIFY_EVERY).await;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(task);
            }
            // Outside a runtime (a store built for a one-off command), there is nobody to tell.
            Err(_) => drop(task),
        }
        Self { pending }
    }

    /// Asks for a notification soon.
    pub fn poke(&self) {
        self.pending.send_modify(|n| *n = n.wrapping_add(1));
    }
}
