//! Hotline's adapters: the PostgreSQL event store (postgres-es over sqlx) and its subscriptions,
//! the read side, the conversation pipeline's workers and clients, Twilio's REST API and TwiML,
//! the embedded PostgreSQL used when no database is configured, and the service's configuration.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod config;
pub mod embedded_pg;
pub mod event_store;
pub mod pipeline;
pub mod read_side;
pub mod spool;
pub mod tokens;
pub mod twilio;
pub mod workers;
