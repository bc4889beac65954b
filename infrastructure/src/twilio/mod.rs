//! Twilio: webhook signatures and the TwiML we answer with.

pub mod rest;
pub mod signature;
pub mod twiml;
