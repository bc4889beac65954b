//! The vetted words Hotline says. Every sentence a caller can hear that is not generated lives here,
//! so that it can be reviewed by clinicians in one place. Numbers are passed in, never hard-coded,
//! except where a sentence must still make sense when configuration is unavailable.

use crate::phone::DialNumber;
use crate::risk::RiskLevel;

/// The greeting: who we are, that the line is automated and recorded, and the way to a human.
pub fn greeting() -> &'static str {
    "Thank you for calling. You've reached an automated support line, and this call is recorded \
     so we can help you. You can press 0 at any time to talk with a counselor. \
     After the tone, tell me what's on your mind, and press the pound key when you're done."
}

/// Said while the caller's words are being listened to and an answer prepared.
pub fn holding() -> &'static str {
    "Thank you. I'm listening to what you said. Please stay on the line."
}

/// Said on each further wait, so the caller never sits in silence.
pub fn still_holding() -> &'static str {
    "I'm still here with you. Just a moment more."
}

/// The scripted reply used until a generated one is available.
pub fn scripted_reply() -> &'static str {
    "Thank you for telling me. What you're feeling matters, and you don't have to face it alone. \
     I'm here to listen for as long as you need."
}

/// The choice offered after every reply.
pub fn choice_prompt() -> &'static str {
    "Press 1 to keep talking, press 2 to end the call, or press 0 to talk with a counselor. \
     You can also say continue, goodbye, or counselor."
}

/// The direct question, asked of every caller whose first turn showed no sign of risk. Crisis
/// lines ask it plainly: asking does not put the idea in anyone's head, and it opens the door.
pub fn direct_question() -> &'static str {
    "I ask everyone who calls: are you having thoughts of suicide? You can say yes, no, or not \
     sure. Or press 1 for yes, or 2 for no."
}

/// Said after a clear "no" to the direct question.
pub fn after_no() -> &'static str {
    "Thank you for answering. If that changes, a counselor is always one key away."
}

/// Said when the choice was not understood.
pub fn choice_not_understood() -> &'static str {
    "Sorry, I didn't catch that."
}

/// The prompt before another turn is recorded.
pub fn listen_again() -> &'static str {
    "I'm listening. Tell me more after the tone, and press the pound key when you're done."
}

/// Said when the caller said nothing at all.
pub fn silence(crisis_line: &DialNumber) -> String {
    format!(
        "I didn't hear anything, and that's okay. Press 1 to try again, or press 0 to talk with a \
         counselor. If you are in danger right now, you can call {}.",
        crisis_line.spoken()
    )
}

/// Said before dialling the counselor line.
pub fn connecting_counselor() -> &'static str {
    "I'm connecting you with a counselor now. Please stay on the line."
}

/// Said before dialling the crisis line when the counselor line did not answer.
pub fn connecting_crisis_line() -> &'static str {
    "Our counselors aren't available right this moment, so I'm connecting you to the crisis line. \
     Please stay on the line."
}

/// The goodbye, with the resources a caller needs to come back.
pub fn goodbye(crisis_line: &DialNumber) -> String {
    format!(
        "Thank you for calling. If you need to talk again, you can call this line any time, or call \
         or text {} to reach the crisis line, day or night. Take care of yourself. Goodbye.",
        crisis_line.spoken()
    )
}

/// What the caller hears when something on our side failed: short, human, and with the way out.
pub fn trouble(crisis_line: &DialNumber) -> String {
    format!(
        "I'm sorry, I'm having trouble right now, but you are not alone. I'm connecting you with a \
         person. If the call drops, please call {}.",
        crisis_line.spoken()
    )
}

/// Said when neither the counselor line nor the crisis line answered; the caller can go on talking.
pub fn last_resort(crisis_line: &DialNumber) -> String {
    format!(
        "I'm sorry, I couldn't connect you with someone just now. You can call {} at any time, day \
         or night. You are not alone, and I'm still here: after the tone, you can keep talking with me.",
        crisis_line.spoken()
    )
}

/// After a connected call with a counselor ends.
pub fn farewell() -> &'static str {
    "Thank you for calling. Take care of yourself. Goodbye."
}

/// The vetted reply for a turn assessed at `level`: the default responder, used whenever no
/// generated reply is available or the guard blocked one. High and imminent risk get no reply at
/// all (see `escalating`).
pub fn reply_for(level: RiskLevel) -> &'static str {
    match level {
        RiskLevel::None | RiskLevel::Low => scripted_reply(),
        RiskLevel::Moderate | RiskLevel::High | RiskLevel::Imminent => {
            "Thank you for trusting me with that. It sounds like you are in a lot of pain right now, \
             and you deserve support with it. I'm here with you, and a counselor is one key away: \
             press 0 at any time."
        }
    }
}

/// Said instead of a reply when the risk is high, imminent or unknown, before a person is dialled.
pub fn escalating() -> &'static str {
    "What you've shared matters, and I want you to be able to talk with a person right now. \
     I'm connecting you with a counselor. Please stay on the line."
}
