//! What a counselor hears when they pick up, before they take the call: why the caller is being
//! put through, in plain words, with their language, how long they have been on the line and
//! whether they asked for a person. It holds no number and no words of the caller's.

use chrono::{DateTime, Utc};
use domain::call::EscalationReason;
use domain::risk::RiskLevel;
use domain::{Call, Language};

/// How the whisper ends: the counselor's choice.
pub const TAKE_THE_CALL: &str = "Press 1 to take the call, or hang up to pass it on.";

/// The whisper for `call`, as of `now`.
pub fn summary(call: &Call, now: DateTime<Utc>) -> String {
    let mut lines = vec!["A caller from the hotline.".to_owned()];
    let risk = match call.highest_risk() {
        Some(RiskLevel::Imminent) => Some("Risk: imminent."),
        Some(RiskLevel::High) => Some("Risk: high."),
        Some(RiskLevel::Moderate) => Some("Risk: moderate."),
        Some(RiskLevel::Low) => Some("Risk: low, so far."),
        Some(RiskLevel::None) | None => None,
    };
    if let Some(risk) = risk {
        lines.push(risk.to_owned());
    }
    let reasons: Vec<&str> = call
        .escalation_reasons()
        .filter_map(|reason| match reason {
            EscalationReason::RiskAssessed => Some("signs of risk in what they said"),
            EscalationReason::DirectQuestion => {
                Some("they did not say no when asked about suicide")
            }
            EscalationReason::EarlierRisk => Some("risk earlier in the call"),
            EscalationReason::Silence => Some("they have not spoken"),
            EscalationReason::ProcessingFailed
            | EscalationReason::SessionLost
            | EscalationReason::StoreUnavailable => {
                Some("the automated line could not follow them")
            }
            EscalationReason::CallerRequested | EscalationReason::CounselorUnavailable => None,
        })
        .collect();
    if !reasons.is_empty() {
        lines.push(format!("Why: {}.", dedup(reasons).join("; ")));
    }
    if call.asked_for_a_person() {
        lines.push("They asked for a person.".to_owned());
    }
    if call.language() == Language::Spanish {
        lines.push("They speak Spanish.".to_owned());
    }
    if let Some(started) = call.started_at() {
        let minutes = (now - started).num_minutes().max(0);
        lines.push(match minutes {
            0 => "On the line for less than a minute.".to_owned(),
            1 => "On the line for 1 minute.".to_owned(),
            n => format!("On the line for {n} minutes."),
        });
    }
    lines.push(TAKE_THE_CALL.to_owned());
    lines.join(" ")
}

/// The whisper when the call's history cannot be read: the counselor still gets the call.
pub fn unknown() -> String {
    format!("A caller from the hotline. {TAKE_THE_CALL}")
}

fn dedup(mut items: Vec<&str>) -> Vec<&str> {
    let mut seen = Vec::new();
    items.retain(|item| {
        let new = !seen.contains(item);
        seen.push(*item);
        new
    });
    items
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use cqrs_es::Aggregate;
    use domain::{fixtures, CallEvent, CallSid, DialNumber};

    use super::*;

    #[test]
    fn the_whisper_says_why_how_long_and_no_more() {
        let sid = CallSid::parse("CA0123456789abcdef0123456789abcdef").expect("valid");
        let started = Utc::now();
        let mut call = Call::default();
        call.apply(fixtures::call_started(&sid, started));
        call.apply(CallEvent::Escalated {
            reason: EscalationReason::CallerRequested,
            target: DialNumber::parse("+15005550001").expect("valid"),
            at: started,
        });
        let said = summary(&call, started + Duration::minutes(4));
        assert_eq!(
            said,
            "A caller from the hotline. They asked for a person. On the line for 4 minutes. \
             Press 1 to take the call, or hang up to pass it on."
        );
        assert!(!said.contains(fixtures::CALLER));
    }
}
