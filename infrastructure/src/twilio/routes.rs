//! The webhooks Twilio calls, spelled once: the router serves these paths, and the TwiML that
//! names a webhook (a `<Gather>`'s action, a `<Record>`'s) builds its URL from the same ones.

use domain::CallId;

/// Every webhook of the service, as Twilio calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Webhook {
    /// A call comes in (`/twilio/voice/`).
    Voice,
    /// A turn's recording ended.
    Recording,
    /// The holding prompt's redirect: is the answer ready?
    Continue,
    /// A key or words at a prompt.
    UserChoice,
    /// The answer to the direct question.
    Question,
    /// A `<Dial>` ended.
    DialStatus,
    /// Twilio's transcription of a turn.
    Transcription,
    /// The call's status changed (`/twilio/status/`).
    Status,
    /// A speech `<Gather>` ended: the caller's words, keys, or nothing.
    Speech,
    /// The call's ConversationRelay WebSocket.
    Relay,
    /// The `<Connect action>`: the live session ended.
    RelayEnded,
    /// The recording status callback of the call's own recording.
    CallRecording,
    /// A counselor picked up: what they hear before taking the call (`<Number url>`).
    Whisper,
    /// The counselor's key after the whisper.
    WhisperAnswer,
}

/// Who hears what a webhook answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The caller: the answer is TwiML run on their call.
    Caller,
    /// A counselor picking up: the answer runs on their leg, before they are bridged.
    Counselor,
    /// Nobody: a callback whose answer Twilio only logs, or the relay's WebSocket.
    Nobody,
}

impl Webhook {
    pub const ALL: [Self; 14] = [
        Self::Voice,
        Self::Recording,
        Self::Continue,
        Self::UserChoice,
        Self::Question,
        Self::DialStatus,
        Self::Transcription,
        Self::Status,
        Self::Speech,
        Self::Relay,
        Self::RelayEnded,
        Self::CallRecording,
        Self::Whisper,
        Self::WhisperAnswer,
    ];

    /// The webhook a request path is for, if it is one of ours (with or without a call).
    pub fn of_path(path: &str) -> Option<Self> {
        let name = path.strip_prefix(PREFIX)?.split('/').next()?;
        Self::ALL.into_iter().find(|webhook| webhook.name() == name)
    }

    /// Who hears this webhook's answer.
    pub fn listener(self) -> Listener {
        match self {
            Self::Voice
            | Self::Recording
            | Self::Continue
            | Self::UserChoice
            | Self::Question
            | Self::DialStatus
            | Self::Speech
            | Self::RelayEnded => Listener::Caller,
            Self::Whisper | Self::WhisperAnswer => Listener::Counselor,
            // A relay session that cannot start sends Twilio on to the `<Connect action>`.
            Self::Transcription | Self::Status | Self::CallRecording | Self::Relay => {
                Listener::Nobody
            }
        }
    }

    /// The path segment after `/twilio/`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Voice => "voice",
            Self::Recording => "recording",
            Self::Continue => "continue",
            Self::UserChoice => "user-choice",
            Self::Question => "question",
            Self::DialStatus => "dial-status",
            Self::Transcription => "transcription",
            Self::Status => "status",
            Self::Speech => "speech",
            Self::Relay => "relay",
            Self::RelayEnded => "relay-ended",
            Self::CallRecording => "call-recording",
            Self::Whisper => "whisper",
            Self::WhisperAnswer => "whisper-answer",
        }
    }

    /// The path of this webhook for call `id`, or without a call (`/twilio/status/`).
    pub fn path(self, id: Option<CallId>) -> String {
        match id {
            Some(id) => format!("/twilio/{}/{id}/", self.name()),
            None => format!("/twilio/{}/", self.name()),
        }
    }

    /// The router's pattern for the per-call form (`/twilio/recording/{call_id}/`).
    pub fn per_call_route(self) -> String {
        format!("/twilio/{}/{{call_id}}/", self.name())
    }

    /// The router's pattern without a call, with and without the trailing slash Twilio's console
    /// may leave off.
    pub fn routes(self) -> [String; 2] {
        [
            format!("/twilio/{}/", self.name()),
            format!("/twilio/{}", self.name()),
        ]
    }
}

/// Every webhook path starts with this.
pub const PREFIX: &str = "/twilio/";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_per_call_path_is_what_its_route_matches() {
        let id = CallId::parse("7b0d0f7e-8d6c-4d1e-9a53-0a1f0f0e0d0c").expect("a UUID");
        assert_eq!(
            Webhook::Recording.path(Some(id)),
            "/twilio/recording/7b0d0f7e-8d6c-4d1e-9a53-0a1f0f0e0d0c/"
        );
        assert_eq!(
            Webhook::Recording.per_call_route(),
            "/twilio/recording/{call_id}/"
        );
        assert_eq!(
            Webhook::Status.routes(),
            ["/twilio/status/", "/twilio/status"]
        );
        assert!(Webhook::UserChoice.path(None).starts_with(PREFIX));
    }

    #[test]
    fn every_webhook_is_found_by_its_own_paths_and_nothing_else_is() {
        let id = CallId::parse("7b0d0f7e-8d6c-4d1e-9a53-0a1f0f0e0d0c").expect("a UUID");
        for webhook in Webhook::ALL {
            assert_eq!(Webhook::of_path(&webhook.path(Some(id))), Some(webhook));
            assert_eq!(Webhook::of_path(&webhook.path(None)), Some(webhook));
        }
        assert_eq!(Webhook::of_path("/twilio/status"), Some(Webhook::Status));
        assert_eq!(Webhook::of_path("/twilio/voices/"), None);
        assert_eq!(Webhook::of_path("/api/calls"), None);
    }
}
