//! The HTTP server: hyper's HTTP/1.1 under the limits a public endpoint needs, which
//! `axum::serve` does not expose. Twilio sends a webhook's head and body at once and waits at most
//! 15 s for the answer; a client that trickles its headers, leaves a connection idle, or opens
//! thousands of them holds a descriptor and memory each, and enough of them lock Twilio out.
//!
//! - **Header read** (`header_read`): a request's head must arrive within this long from when the
//!   connection starts waiting for it, or the connection is closed. hyper starts that timer
//!   whenever it waits for a head, the first or the next one, so the same limit closes a
//!   kept-alive connection left idle: it is also the idle keep-alive timeout.
//! - **Body** (`body`) and **request** (`request`): layers of the router (`app`). A caller-facing
//!   webhook cut off by either still answers the safe TwiML (`twilio::refusal`).
//! - **Connections** (`max_connections`): past the cap, the oldest open connection is asked to
//!   close (at once when idle, after its current request otherwise). A new connection, which may
//!   be Twilio's, is always served, and a crowd of idle ones is shed rather than kept.
//!
//! A connection upgraded to a WebSocket (a live ConversationRelay session) leaves the server's
//! count when it is upgraded: its session is bounded by the call, not by these limits.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// The server's limits (README, "Limits at the edge").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a connection may take to send a request's head (and how long it may stay idle
    /// between requests).
    pub header_read: Duration,
    /// How long a request's body may take to arrive.
    pub body: Duration,
    /// How long a handler may take to answer.
    pub request: Duration,
    /// The most connections open at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            body: Duration::from_secs(10),
            request: Duration::from_secs(30),
            max_connections: 4096,
        }
    }
}

impl Limits {
    /// The limits `config` sets.
    pub fn from_config(config: &infrastructure::config::Config) -> Self {
        Self {
            header_read: Duration::from_secs(config.header_read_timeout_secs),
            body: Duration::from_secs(config.body_timeout_secs),
            request: Duration::from_secs(config.request_timeout_secs),
            max_connections: config.max_connections,
        }
    }
}

/// What the server's connections did since it started (`/health` shows it).
#[derive(Debug, Default)]
pub struct ConnectionStats {
    open: AtomicUsize,
    accepted: AtomicU64,
    shed: AtomicU64,
    timed_out: AtomicU64,
}

/// `ConnectionStats` as read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ConnectionCounts {
    /// Open now (WebSocket sessions not counted).
    pub open: usize,
    /// Accepted since the start.
    pub accepted: u64,
    /// Asked to close because the cap was reached.
    pub shed: u64,
    /// Closed because a request's head did not arrive in time (or the connection sat idle).
    pub timed_out: u64,
}

impl ConnectionStats {
    pub fn counts(&self) -> ConnectionCounts {
        ConnectionCounts {
            open: self.open.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            shed: self.shed.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
        }
    }
}

/// How long the server waits after an accept error (out of descriptors, most often) before it
/// accepts again: connections have to close before another can be taken.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long a stopping server waits for requests under way.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The open connections, oldest first, each with the signal that asks it to close.
#[derive(Debug, Default)]
struct Open(Mutex<BTreeMap<u64, Arc<Notify>>>);

impl Open {
    /// Counts connection `id` in; returns the oldest one's signal when the cap is passed.
    fn admit(&self, id: u64, close: Arc<Notify>, cap: usize) -> Option<Arc<Notify>> {
        let mut open = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.insert(id, close);
        if open.len() > cap {
            open.pop_first().map(|(_, oldest)| oldest)
        } else {
            None
        }
    }

    /// The oldest connection's signal, no longer counted as open.
    fn oldest(&self) -> Option<Arc<Notify>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_first()
            .map(|(_, oldest)| oldest)
    }

    fn remove(&self, id: u64) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
    }

    fn all(&self) -> Vec<Arc<Notify>> {
        let open = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.values().cloned().collect()
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` completes, then waits (for at
/// most `SHUTDOWN_GRACE`) for the requests under way.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let open = Arc::new(Open::default());
    let mut connections = JoinSet::new();
    let mut last_id = 0_u64;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors (a limit below `max_connections`): the oldest connection
                // makes room, as at the cap, so that the next one can be taken.
                if matches!(error.raw_os_error(), Some(23 | 24)) {
                    if let Some(oldest) = open.oldest() {
                        stats.shed.fetch_add(1, Ordering::Relaxed);
                        oldest.notify_one();
                    }
                }
                tracing::warn!(%error, "could not accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Without TCP_NODELAY a live session's reply waits on the caller side's delayed ACK: its
        // first frame sits behind the last one's unacknowledged segment, for up to 40 ms.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY on a connection");
        }
        last_id += 1;
        let close = Arc::new(Notify::new());
        if let Some(oldest) = open.admit(last_id, close.clone(), limits.max_connections) {
            stats.shed.fetch_add(1, Ordering::Relaxed);
            oldest.notify_one();
        }
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let connection = Connection {
            id: last_id,
            open: open.clone(),
            stats: stats.clone(),
        };
        connections.spawn(connection.serve(tcp, peer, router.clone(), limits.header_read, close));
    }
    for close in open.all() {
        close.notify_one();
    }
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        tracing::warn!(
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "requests still under way when the server stopped"
        );
    }
}

/// One accepted connection, counted out when it ends.
struct Connection {
    id: u64,
    open: Arc<Open>,
    stats: Arc<ConnectionStats>,
}

impl Connection {
    async fn serve(
        self,
        tcp: TcpStream,
        peer: SocketAddr,
        router: Router,
        header_read: Duration,
        close: Arc<Notify>,
    ) {
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            // As `axum::serve`'s connect info: the rate limits key on the peer's address.
            request.extensions_mut().insert(ConnectInfo(peer));
            tower::ServiceExt::oneshot(router.clone(), request)
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_read)
            .keep_alive(true);
        let connection = builder
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        tokio::pin!(connection);
        // The connection first: a request already waiting in the socket is read (and then
        // served) before a close signal stored for it is looked at.
        let ended = tokio::select! {
            biased;
            ended = connection.as_mut() => ended,
            () = close.notified() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = ended {
            if error.is_timeout() {
                self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
            } else {
                tracing::debug!(%error, "a connection ended with an error");
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.open.remove(self.id);
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_the_oldest_connection_is_asked_to_close() {
        let open = Open::default();
        let signals: Vec<_> = (0..3).map(|_| Arc::new(Notify::new())).collect();
        assert!(open.admit(1, signals[0].clone(), 2).is_none());
        assert!(open.admit(2, signals[1].clone(), 2).is_none());
        let shed = open.admit(3, signals[2].clone(), 2).expect("one is shed");
        assert!(Arc::ptr_eq(&shed, &signals[0]));
        open.remove(2);
        assert_eq!(open.all().len(), 1);
    }
}
