//! Twilio: webhook signatures and the TwiML we answer with.

pub mod adapters;
pub mod answers;
pub mod rest;
pub mod signature;
pub mod twiml;
