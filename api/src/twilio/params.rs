//! Webhook parameters turned into the use cases' inputs: parse, don't validate.

use application::{
    CallRecordingReport, ChoiceInput, DialOutcome, DialReport, DialStatus, DialedLine,
    IncomingCall, RecordingDone, SpeechInput, StatusReport, TranscriptionReport,
};
use domain::call::RecordingUrl;
use domain::{AccountSid, CallSid, CallStatus, CallerId, RecordingSid};

use super::extract::Params;
use crate::error::ApiError;

/// The longest value each parameter may have: Twilio's SIDs are 34 characters, numbers (SIP
/// addresses among them) a few hundred, statuses a few dozen; the free text (what the caller
/// said, Twilio's transcription, the relay's handoff) is bounded by what a turn can hold. Any
/// other parameter: `MAX_OTHER_CHARS`.
const MAX_CHARS: &[(&str, usize)] = &[
    ("CallSid", 34),
    ("AccountSid", 34),
    ("ParentCallSid", 34),
    ("RecordingSid", 34),
    ("From", 256),
    ("To", 256),
    ("Caller", 256),
    ("Called", 256),
    ("Direction", 32),
    ("CallStatus", 32),
    ("DialCallStatus", 32),
    ("RecordingStatus", 32),
    ("TranscriptionStatus", 32),
    ("SessionStatus", 32),
    ("Digits", 32),
    ("SequenceNumber", 10),
    ("CallDuration", 10),
    ("RecordingDuration", 10),
    ("DialCallDuration", 10),
    ("Confidence", 24),
    ("ErrorCode", 16),
    ("RecordingUrl", 512),
    ("SpeechResult", 4096),
    ("HandoffData", 8192),
    ("TranscriptionText", 16384),
];

/// The longest value of a parameter not listed in `MAX_CHARS`: none is stored, and some are
/// large (the JSON of Voice Add-ons' `AddOns`), so only the body's own limit bounds them.
const MAX_OTHER_CHARS: usize = crate::MAX_BODY_BYTES;

/// The statuses Twilio reports for a call (`CallStatus`) and for a `<Dial>` (`DialCallStatus`).
const CALL_STATUSES: &[&str] = &[
    "queued",
    "initiated",
    "ringing",
    "in-progress",
    "completed",
    "busy",
    "failed",
    "no-answer",
    "canceled",
];
const DIAL_STATUSES: &[&str] = &[
    "completed",
    "answered",
    "busy",
    "no-answer",
    "failed",
    "canceled",
];

/// Whether `value` is keys a caller pressed (`0`–`9`, `*`, `#`), or Twilio's `hangup` (a
/// `<Record>` the caller ended by hanging up). `1 OR 1=1` is not keys.
fn is_keys(value: &str) -> bool {
    value == "hangup"
        || value
            .chars()
            .all(|c| c.is_ascii_digit() || c == '*' || c == '#')
}

/// Checks every parameter of a signed webhook before any is read: none repeated, none longer
/// than its bound, `Digits` keys only, the statuses Twilio's. A request that breaks any of this
/// is not one Twilio sends, signed or not.
pub fn strict(params: &Params) -> Result<(), ApiError> {
    let pairs = params.pairs();
    for (index, (name, value)) in pairs.iter().enumerate() {
        let known = MAX_CHARS.iter().find(|(n, _)| n == name);
        let label = known.map_or("a parameter", |(n, _)| *n);
        if pairs[..index].iter().any(|(earlier, _)| earlier == name) {
            return Err(ApiError::InvalidParameter {
                name: label,
                reason: "is repeated".into(),
            });
        }
        let max = known.map_or(MAX_OTHER_CHARS, |(_, max)| *max);
        if value.chars().count() > max || name.chars().count() > 64 {
            return Err(ApiError::InvalidParameter {
                name: label,
                reason: format!("is longer than {max} characters"),
            });
        }
        let valid = match name.as_str() {
            "Digits" => is_keys(value),
            "CallStatus" => value.is_empty() || CALL_STATUSES.contains(&value.as_str()),
            "DialCallStatus" => value.is_empty() || DIAL_STATUSES.contains(&value.as_str()),
            _ => true,
        };
        if !valid {
            return Err(ApiError::InvalidParameter {
                name: label,
                reason: "is not a value Twilio sends".into(),
            });
        }
    }
    Ok(())
}

fn required<'a>(params: &'a Params, name: &'static str) -> Result<&'a str, ApiError> {
    params.non_empty(name).ok_or(ApiError::InvalidParameter {
        name,
        reason: "is required".into(),
    })
}

fn parsed<T, E: std::fmt::Display>(
    params: &Params,
    name: &'static str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, ApiError> {
    parse(required(params, name)?).map_err(|e| ApiError::InvalidParameter {
        name,
        reason: e.to_string(),
    })
}

fn seconds(params: &Params, name: &'static str) -> Result<Option<u32>, ApiError> {
    params
        .non_empty(name)
        .map(|v| {
            v.parse::<u32>().map_err(|_| ApiError::InvalidParameter {
                name,
                reason: "must be whole seconds".into(),
            })
        })
        .transpose()
}

/// The `CallSid`.
pub fn call_sid(params: &Params) -> Result<CallSid, ApiError> {
    parsed(params, "CallSid", CallSid::parse)
}

/// The incoming-call webhook.
pub fn incoming_call(params: &Params) -> Result<IncomingCall, ApiError> {
    Ok(IncomingCall {
        call_sid: call_sid(params)?,
        account_sid: parsed(params, "AccountSid", AccountSid::parse)?,
        // A withheld number may come empty; it is still a caller.
        from: CallerId::new(params.get("From").unwrap_or_default()),
        to: params.get("To").unwrap_or_default().to_owned(),
        direction: params
            .non_empty("Direction")
            .unwrap_or("inbound")
            .to_owned(),
    })
}

/// The recording webhook.
pub fn recording_done(params: &Params) -> Result<RecordingDone, ApiError> {
    Ok(RecordingDone {
        call_sid: call_sid(params)?,
        recording_sid: parsed(params, "RecordingSid", RecordingSid::parse)?,
        recording_url: parsed(params, "RecordingUrl", RecordingUrl::parse)?,
        duration_secs: seconds(params, "RecordingDuration")?,
        digits: params.non_empty("Digits").map(str::to_owned),
    })
}

/// The choice webhook: keys or words, either may be absent, and the turn its prompt was offered
/// at when its URL names it (`?turn=N`).
pub fn choice_input(params: &Params, query: Option<&str>) -> ChoiceInput {
    ChoiceInput {
        digits: params.non_empty("Digits").map(str::to_owned),
        speech: params.non_empty("SpeechResult").map(str::to_owned),
        turn: query
            .unwrap_or_default()
            .split('&')
            .find_map(|pair| pair.strip_prefix("turn="))
            .and_then(|n| n.parse().ok()),
    }
}

/// A speech `<Gather>`'s action: words with Twilio's confidence, keys, or nothing. A
/// `Confidence` that is not a number in 0..=1 is taken as no confidence at all (the words are
/// then not trusted).
pub fn speech_input(params: &Params) -> Result<SpeechInput, ApiError> {
    let confidence = params.non_empty("Confidence").map(|c| {
        c.parse::<f64>()
            .ok()
            .filter(|c| (0.0..=1.0).contains(c))
            .unwrap_or(0.0)
    });
    Ok(SpeechInput {
        call_sid: call_sid(params)?,
        speech: params.non_empty("SpeechResult").map(str::to_owned),
        confidence,
        digits: params.non_empty("Digits").map(str::to_owned),
    })
}

/// The `<Connect action>` webhook after a ConversationRelay session.
#[derive(Debug, Clone)]
pub struct RelayEnded {
    pub status: String,
    pub error_code: Option<String>,
    pub handoff: Option<String>,
}

/// Reads `SessionStatus`, `ErrorCode` and `HandoffData`; a missing status reads as `failed`, so
/// that a session nobody can tell the end of is treated as lost.
pub fn relay_ended(params: &Params) -> RelayEnded {
    RelayEnded {
        status: params
            .non_empty("SessionStatus")
            .unwrap_or("failed")
            .to_owned(),
        error_code: params.non_empty("ErrorCode").map(str::to_owned),
        handoff: params.non_empty("HandoffData").map(str::to_owned),
    }
}

/// The `<Dial action>` webhook, for a call nothing is known of.
pub fn dial_outcome(params: &Params) -> DialOutcome {
    dial_status(params).into()
}

/// How the `<Dial>` ended. When the caller hung up while it rang, Twilio's action request
/// reports the caller's own call as `completed`.
fn dial_status(params: &Params) -> DialStatus {
    match params.get("DialCallStatus") {
        Some("completed" | "answered") => DialStatus::Completed,
        _ if params.get("CallStatus") == Some("completed") => DialStatus::CallerHungUp,
        Some("busy") => DialStatus::Busy,
        Some("no-answer") => DialStatus::NoAnswer,
        _ => DialStatus::Failed,
    }
}

/// The `<Dial action>` webhook: which dial it was (its URL's query, `?line=crisis` or
/// `?line=counselor&attempt=N`) and how it ended.
pub fn dial_report(params: &Params, query: Option<&str>) -> DialReport {
    let line = dialed_line(query);
    DialReport {
        line,
        attempt: match line {
            DialedLine::Counselor => attempt(query),
            DialedLine::CrisisLine => 0,
        },
        status: dial_status(params),
        talk_secs: seconds(params, "DialCallDuration").ok().flatten(),
    }
}

/// Which counselor in order a URL is about (`?attempt=N`, from 1; 1 when absent or unreadable).
pub fn attempt(query: Option<&str>) -> u32 {
    query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("attempt="))
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=100).contains(n))
        .unwrap_or(1)
}

/// Which line a `<Dial action>` reports on, from its URL's query (`?line=crisis`).
pub fn dialed_line(query: Option<&str>) -> DialedLine {
    let crisis = query
        .unwrap_or_default()
        .split('&')
        .any(|pair| pair == "line=crisis");
    if crisis {
        DialedLine::CrisisLine
    } else {
        DialedLine::Counselor
    }
}

/// Twilio's transcription callback.
pub fn transcription(params: &Params) -> Result<TranscriptionReport, ApiError> {
    Ok(TranscriptionReport {
        call_sid: call_sid(params)?,
        recording_sid: parsed(params, "RecordingSid", RecordingSid::parse)?,
        text: params
            .get("TranscriptionText")
            .unwrap_or_default()
            .to_owned(),
        completed: params.get("TranscriptionStatus") == Some("completed"),
    })
}

/// The recording status callback of the call's own recording.
pub fn call_recording(params: &Params) -> Result<CallRecordingReport, ApiError> {
    Ok(CallRecordingReport {
        call_sid: call_sid(params)?,
        recording_sid: parsed(params, "RecordingSid", RecordingSid::parse)?,
        recording_url: parsed(params, "RecordingUrl", RecordingUrl::parse)?,
        duration_secs: seconds(params, "RecordingDuration")?,
        status: parsed(params, "RecordingStatus", |status| match status {
            "in-progress" | "completed" | "absent" | "failed" => Ok(status.to_owned()),
            _ => Err("is not a recording status Twilio sends"),
        })?,
    })
}

/// How many times the caller has been held, from the continue URL's query (`?wait=N`).
pub fn waited(query: Option<&str>) -> u32 {
    query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("wait="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The status callback.
pub fn status_report(params: &Params) -> Result<StatusReport, ApiError> {
    Ok(StatusReport {
        call_sid: call_sid(params)?,
        status: CallStatus::parse(required(params, "CallStatus")?),
        sequence_number: seconds(params, "SequenceNumber").map_err(|_| {
            ApiError::InvalidParameter {
                name: "SequenceNumber",
                reason: "must be a whole number".into(),
            }
        })?,
        duration_secs: seconds(params, "CallDuration")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Params {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        Params::from_form(body.as_bytes())
    }

    #[test]
    fn what_twilio_sends_passes() {
        let sid = "CA0123456789abcdef0123456789abcdef";
        for params in [
            form(&[("CallSid", sid), ("Digits", "0")]),
            form(&[
                ("CallSid", sid),
                ("Digits", "12*#"),
                ("CallStatus", "in-progress"),
            ]),
            form(&[("CallSid", sid), ("Digits", "hangup"), ("Digits2", "x")]),
            form(&[
                ("CallSid", sid),
                ("Digits", ""),
                ("DialCallStatus", "no-answer"),
            ]),
        ] {
            assert!(strict(&params).is_ok(), "{params:?}");
        }
    }

    #[test]
    fn repeated_overlong_and_foreign_values_are_refused() {
        let sid = "CA0123456789abcdef0123456789abcdef";
        let long_status = "x".repeat(10_000);
        let long_other = "y".repeat(MAX_OTHER_CHARS + 1);
        for (params, name) in [
            (form(&[("Digits", "2"), ("Digits", "1")]), "Digits"),
            (form(&[("CallSid", sid), ("CallSid", sid)]), "CallSid"),
            (form(&[("Digits", "1 OR 1=1")]), "Digits"),
            (form(&[("CallStatus", &long_status)]), "CallStatus"),
            (form(&[("CallStatus", "hacked")]), "CallStatus"),
            (form(&[("DialCallStatus", "Completed")]), "DialCallStatus"),
            (form(&[("Unknown", &long_other)]), "a parameter"),
        ] {
            match strict(&params) {
                Err(ApiError::InvalidParameter { name: refused, .. }) => {
                    assert_eq!(refused, name, "{params:?}");
                }
                other => panic!("{params:?} gave {other:?}"),
            }
        }
    }
}
