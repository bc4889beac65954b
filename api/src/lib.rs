//! Hotline's HTTP surface and the `hotline` command line. `app` is the router with its layers,
//! `wiring` the composition root that `hotline serve` and the tests' `spawn_app()` both build a
//! service through, `cli` the commands; the other modules are the routes.
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod cli;
pub mod dashboard;
pub mod error;
pub mod health;
pub mod json;
pub mod openapi;
pub mod operator;
pub mod rate_limit;
pub mod read_api;
pub mod server;
pub mod state;
pub mod twilio;
pub mod wiring;

pub use app::{app, app_with, MAX_BODY_BYTES, REQUEST_ID};
pub use state::AppState;
