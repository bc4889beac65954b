//! Hotline's adapters: the PostgreSQL event store (postgres-es over sqlx), Twilio's webhook
//! signatures and TwiML, the embedded PostgreSQL used when no database is configured, and the
//! service's configuration.
#![forbid(unsafe_code)]

pub mod appended;
pub mod audio_store;
pub mod audit;
pub mod config;
pub mod embedded_pg;
pub mod event_store;
pub mod jobs;
pub mod openai;
pub mod pipeline;
pub mod queries;
pub mod subscription;
pub mod tokens;
pub mod twilio;
pub mod views;
pub mod wakeup;
