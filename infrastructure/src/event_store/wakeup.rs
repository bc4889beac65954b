//! Waiting for work: woken by a PostgreSQL notification, or after a pause (the fallback poll,
//! which also covers notifications lost while the listener was reconnecting).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;

/// A LISTEN connection on one channel, reconnected whenever it is lost.
#[derive(Debug)]
pub struct Wakeup {
    pool: PgPool,
    channel: &'static str,
    listener: Option<PgListener>,
    local: Option<watch::Receiver<u64>>,
}

impl Wakeup {
    /// Listens on `channel` through `pool`'s settings.
    pub fn new(pool: PgPool, channel: &'static str) -> Self {
        Self {
            pool,
            channel,
            listener: None,
            local: None,
        }
    }

    /// Also woken by this process's own signal (its appends, which notify other processes only).
    #[must_use]
    pub fn with_local(mut self, local: watch::Receiver<u64>) -> Self {
        self.local = Some(local);
        self
    }

    /// Waits for a notification or `pause`, whichever comes first; returns false when `shutdown`
    /// completed instead.
    pub async fn wait(
        &mut self,
        pause: Duration,
        shutdown: &mut Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> bool {
        if self.listener.is_none() {
            self.listener = match PgListener::connect_with(&self.pool).await {
                Ok(mut listener) => listener.listen(self.channel).await.ok().map(|()| listener),
                Err(_) => None,
            };
        }
        let notified = async {
            match self.listener.as_mut() {
                Some(listener) => listener.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        let local = async {
            match self.local.as_mut() {
                Some(local) => {
                    if local.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        let listener_ok = tokio::select! {
            () = shutdown.as_mut() => return false,
            result = notified => result.is_ok(),
            () = local => true,
            () = tokio::time::sleep(pause) => true,
        };
        if !listener_ok {
            self.listener = None;
        }
        true
    }
}
