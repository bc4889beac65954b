//! Twilio: webhook signatures and the TwiML we answer with.

pub mod signature;
pub mod twiml;
