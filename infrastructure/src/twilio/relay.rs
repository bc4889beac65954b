//! ConversationRelay's messages over the call's WebSocket, as Twilio sends and reads them: JSON
//! text frames tagged by `type`. Unknown types are read as `Unknown` and ignored, never an error
//! (Twilio adds types; an error frame back would only be logged by Twilio as 64107).

use serde::{Deserialize, Serialize};

/// What Twilio sends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum FromRelay {
    /// The first message: the session and the call it belongs to. `customParameters` are hints,
    /// never identity: the call is the one the signed URL names, and its `callSid` must match.
    #[serde(rename_all = "camelCase")]
    Setup {
        session_id: String,
        call_sid: String,
    },
    /// What the caller said; `last` is true on the final transcript of a turn.
    #[serde(rename_all = "camelCase")]
    Prompt {
        voice_prompt: String,
        #[serde(default)]
        lang: Option<String>,
        #[serde(default)]
        last: Option<bool>,
    },
    /// A key the caller pressed (with `dtmfDetection`).
    Dtmf { digit: String },
    /// The caller spoke over the reply: what they heard of it.
    #[serde(rename_all = "camelCase")]
    Interrupt {
        #[serde(default)]
        utterance_until_interrupt: Option<String>,
        #[serde(default, deserialize_with = "number_or_string")]
        duration_until_interrupt_ms: Option<u64>,
    },
    /// Twilio could not use a message we sent; logged, never answered.
    Error {
        #[serde(default)]
        description: Option<String>,
    },
    #[serde(other)]
    Unknown,
}

/// What Hotline sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ToRelay {
    /// Words to speak; `last` ends the reply.
    Text { token: String, last: bool },
    /// Switch speech recognition and the voice to another language.
    #[serde(rename_all = "camelCase")]
    Language {
        tts_language: String,
        transcription_language: String,
    },
    /// End the session; Twilio then requests the `<Connect action>` with `HandoffData`.
    #[serde(rename_all = "camelCase")]
    End { handoff_data: String },
}

/// `durationUntilInterruptMs` is a number in one rendering of Twilio's docs and a string in another.
fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(f64),
        Text(String),
    }
    Ok(match Option::<Either>::deserialize(d)? {
        Some(Either::Number(n)) if n >= 0.0 => Some(n as u64),
        Some(Either::Text(t)) => t.trim().parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilios_messages_are_read_and_unknown_ones_ignored() {
        let read = |json: &str| serde_json::from_str::<FromRelay>(json).expect("read");
        assert_eq!(
            read(
                r#"{"type":"setup","sessionId":"VX1","accountSid":"AC1","callSid":"CA1","from":"+1","customParameters":{}}"#
            ),
            FromRelay::Setup {
                session_id: "VX1".into(),
                call_sid: "CA1".into()
            }
        );
        assert_eq!(
            read(r#"{"type":"prompt","voicePrompt":"hello","lang":"en-US","last":true}"#),
            FromRelay::Prompt {
                voice_prompt: "hello".into(),
                lang: Some("en-US".into()),
                last: Some(true)
            }
        );
        for duration in ["460", "\"460\""] {
            assert_eq!(
                read(&format!(
                    r#"{{"type":"interrupt","utteranceUntilInterrupt":"Life is","durationUntilInterruptMs":{duration}}}"#
                )),
                FromRelay::Interrupt {
                    utterance_until_interrupt: Some("Life is".into()),
                    duration_until_interrupt_ms: Some(460)
                }
            );
        }
        assert_eq!(
            read(r#"{"type":"info","name":"configUpdated"}"#),
            FromRelay::Unknown
        );
    }

    #[test]
    fn hotlines_messages_are_written_as_twilio_reads_them() {
        let write = |m: &ToRelay| serde_json::to_string(m).expect("written");
        assert_eq!(
            write(&ToRelay::Text {
                token: "Hi.".into(),
                last: false
            }),
            r#"{"type":"text","token":"Hi.","last":false}"#
        );
        assert_eq!(
            write(&ToRelay::Language {
                tts_language: "es-US".into(),
                transcription_language: "es-US".into()
            }),
            r#"{"type":"language","ttsLanguage":"es-US","transcriptionLanguage":"es-US"}"#
        );
        assert_eq!(
            write(&ToRelay::End {
                handoff_data: "{}".into()
            }),
            r#"{"type":"end","handoffData":"{}"}"#
        );
    }
}
