//! The pipeline's ports over Twilio: recordings come from Twilio's REST API, and the live call
//! is steered by REST updates carrying the same TwiML the webhooks answer with.

use std::sync::Arc;

use application::ports::{
    Audio, CallControl, CallPlacer, Failure, PortError, RecordingSource, Service,
};
use application::{CallAnswer, Spoken};
use async_trait::async_trait;
use domain::call::RecordingUrl;
use domain::{CallId, CallSid, CallStatus, DialNumber, Language};

use super::answers::{twiml, Voice};
use super::rest::{TwilioError, TwilioRest};

/// A Twilio failure as a port's (`twilio_20429`, `twilio_http_500`, `twilio_unreachable`), the
/// Twilio error kept as its source.
fn class(error: TwilioError) -> PortError {
    let failure = match &error {
        TwilioError::Api {
            code: Some(code), ..
        } => Failure::Code(*code),
        TwilioError::Api { status, .. } => Failure::Status(*status),
        TwilioError::Transport(_) => Failure::Unreachable,
        TwilioError::ForeignUrl => Failure::ForeignRecordingUrl,
        TwilioError::Unreadable(_) => Failure::UnreadableAnswer,
    };
    PortError::new(Service::Twilio, failure).caused_by(error)
}

/// Recordings, downloaded from Twilio.
#[derive(Debug, Clone)]
pub struct TwilioRecordings(pub TwilioRest);

#[async_trait]
impl RecordingSource for TwilioRecordings {
    fn owns(&self, url: &RecordingUrl) -> bool {
        self.0.media_url(url).is_ok()
    }

    async fn fetch(&self, url: &RecordingUrl) -> Result<Audio, PortError> {
        let audio = self.0.get_audio_for_processing(url).await.map_err(class)?;
        Ok(Audio {
            bytes: audio.audio_data,
            content_type: audio.content_type,
        })
    }
}

/// The live call, steered through REST updates.
#[derive(Debug, Clone)]
pub struct TwilioCallControl {
    pub rest: TwilioRest,
    pub voice: Arc<Voice>,
}

#[async_trait]
impl CallControl for TwilioCallControl {
    async fn play_reply(
        &self,
        call_sid: &CallSid,
        call_id: CallId,
        text: &str,
        ask_question: bool,
        language: Language,
    ) -> Result<(), PortError> {
        let answer = if ask_question {
            CallAnswer::Question {
                reply: text.to_owned(),
            }
        } else {
            CallAnswer::Reply {
                text: text.to_owned(),
            }
        };
        let doc = twiml(&Spoken::new(answer, language), Some(call_id), &self.voice);
        self.rest.update_call(call_sid, &doc).await.map_err(class)
    }

    async fn connect_counselor(
        &self,
        call_sid: &CallSid,
        call_id: CallId,
        language: Language,
    ) -> Result<(), PortError> {
        let spoken = Spoken::new(CallAnswer::Escalating, language);
        let doc = twiml(&spoken, Some(call_id), &self.voice);
        self.rest.update_call(call_sid, &doc).await.map_err(class)
    }

    async fn call_status(
        &self,
        call_sid: &CallSid,
    ) -> Result<(CallStatus, Option<u32>), PortError> {
        let call = self.rest.fetch_call(call_sid).await.map_err(class)?;
        let duration = call.duration.and_then(|secs| secs.parse().ok());
        Ok((CallStatus::parse(&call.status), duration))
    }
}

/// Outbound calls through Twilio, answered by this service's own voice webhook.
#[async_trait]
impl CallPlacer for TwilioCallControl {
    async fn place_call(&self, to: &DialNumber, from: &DialNumber) -> Result<CallSid, PortError> {
        let base = &self.voice.public_base_url;
        self.rest
            .create_call(
                to,
                from,
                &format!("{base}/twilio/voice/"),
                &format!("{base}/twilio/status/"),
            )
            .await
            .map_err(class)
    }
}
