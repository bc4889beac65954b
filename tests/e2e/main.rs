//! End-to-end tests: the real router served on 127.0.0.1, real PostgreSQL (a fresh database per
//! test), and requests signed exactly as Twilio signs them.

mod ai_services;
mod alerts;
mod audit;
mod bench;
mod calls;
mod chaos;
mod command_line;
mod dashboard;
mod durable;
mod embedded;
mod handoff;
mod helpers;
mod limits;
mod openapi;
mod operator;
mod outage;
mod pipeline;
mod processes;
mod read_api;
mod reconcile;
mod relay;
mod resilience;
mod safety;
mod security;
mod simulated;
mod speech;
mod twilio_rest;
mod twilio_stand_in;
mod views;
