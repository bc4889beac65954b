//! The calls every layer's tests start with: one account, one caller, one hotline number, so that a
//! test reads as the rule it checks rather than as the set-up of a call. Built only for the tests
//! (`cfg(test)` here, the `test-fixtures` feature for the other crates' tests).

use chrono::{DateTime, Utc};

use crate::call::StartCall;
use crate::ids::{AccountSid, CallSid};
use crate::phone::CallerId;
use crate::{CallCommand, CallEvent};

/// The test account.
pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
/// The test caller.
pub const CALLER: &str = "+14155550123";
/// The number the test caller dialled.
pub const HOTLINE_NUMBER: &str = "+15005550006";

/// The test account, parsed.
pub fn account_sid() -> AccountSid {
    AccountSid::parse(ACCOUNT_SID).expect("a valid account SID")
}

/// The test caller's inbound call `sid`, answered `at`.
pub fn start_call(sid: &CallSid, at: DateTime<Utc>) -> CallCommand {
    CallCommand::StartCall(StartCall {
        call_sid: sid.clone(),
        account_sid: account_sid(),
        from: CallerId::new(CALLER),
        to: HOTLINE_NUMBER.into(),
        direction: "inbound".into(),
        at,
    })
}

/// What `start_call(sid, at)` records.
pub fn call_started(sid: &CallSid, at: DateTime<Utc>) -> CallEvent {
    CallEvent::CallStarted {
        call_sid: sid.clone(),
        account_sid: account_sid(),
        from: CallerId::new(CALLER),
        to: HOTLINE_NUMBER.into(),
        direction: "inbound".into(),
        started_at: at,
    }
}
