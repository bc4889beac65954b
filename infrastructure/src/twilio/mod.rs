//! Twilio: its REST API, the TwiML we answer with, and the adapters of the pipeline's ports.
//! Webhook signatures are the `twilio-signature` crate's, shared with the simulator.

pub mod adapters;
pub mod answers;
pub mod relay;
pub mod rest;
pub mod routes;
pub mod twiml;
