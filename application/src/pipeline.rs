//! The conversation pipeline: one turn of a call, from the caller's recording to the answer they
//! hear. Runs in a worker (never inside a webhook), and is safe to run again: a turn already
//! analysed is not analysed twice, and an answer already played is not played twice.
//!
//! download → speech-to-text → screen (+ the model's opinion) → assess → reply (+ guard) → record
//! → deliver. Only a turn with no sign of risk gets an automated reply; any risk, whatever its
//! level, and anything unknown goes to a person, and so does every turn after one that did (risk
//! over a call only rises). Once the caller was sent to a person, nothing here touches the live
//! call again; a late analysis that warrants a person still reaches the caller.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use cqrs_es::EventStore;
use domain::call::{
    Analysis, Escalate, EscalationReason, PlayResponse, PlayedVia, RecordAnalysis, RecordFailure,
    Stage, StageTimings,
};
use domain::call::{KeepCallRecording, RecordingUrl};
use domain::risk::{self, RiskLevel, Route};
use domain::{Call, CallCommand, CallId, CallSid, RecordingSid};

use crate::calls::Lines;
use crate::dispatch::CommandDispatcher;
use crate::error::AppError;
use crate::metadata::CommandMetadata;
use crate::ports::{
    Audio, AudioStore, CallControl, LanguageModel, PortError, RecordingSource, SpeechToText,
};
use crate::responder::{elapsed_ms, Responder, Words};

/// How long keeping a turn's recording may delay its answer.
pub const KEEP_RECORDING_TIMEOUT: Duration = Duration::from_secs(2);

pub use crate::responder::MODEL_TIMEOUT;

/// Why a turn could not be processed this time. The job is retried while `retryable`; when its
/// attempts run out, `give_up` takes the caller to a person.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{stage:?} failed: {error}")]
    Stage {
        stage: Stage,
        #[source]
        error: PortError,
    },
    /// Without a speech-to-text service the turn waits for Twilio's transcription, which has not
    /// arrived yet.
    #[error("Twilio's transcription of the turn has not arrived yet")]
    TranscriptionPending,
    /// Re-processing audio needs a speech-to-text service, and none is configured.
    #[error("no speech-to-text service is configured")]
    SpeechToTextNotConfigured,
    #[error(transparent)]
    App(#[from] AppError),
    #[error("the call has no turn {0} to process")]
    NoSuchTurn(u32),
    #[error("no such call")]
    NoSuchCall,
    #[error("the URL is not one of this account's recordings")]
    ForeignRecording,
    /// The audio store did not take a recording.
    #[error("the audio store failed: {0}")]
    Keep(#[source] PortError),
    /// Twilio could not say how the call stands.
    #[error("asking Twilio about the call failed: {0}")]
    Reconcile(#[source] PortError),
}

impl PipelineError {
    /// The stage of the turn that failed; what is not a service's failure counts as delivery.
    pub fn stage(&self) -> Stage {
        match self {
            Self::Stage { stage, .. } => *stage,
            Self::TranscriptionPending | Self::SpeechToTextNotConfigured => Stage::Transcription,
            Self::App(_)
            | Self::NoSuchTurn(_)
            | Self::NoSuchCall
            | Self::ForeignRecording
            | Self::Keep(_)
            | Self::Reconcile(_) => Stage::Delivery,
        }
    }

    /// The class of failure as it is stored with a failed turn: safe to show to an operator.
    pub fn class(&self) -> Cow<'static, str> {
        match self {
            Self::Stage { error, .. } | Self::Keep(error) | Self::Reconcile(error) => error.class(),
            Self::TranscriptionPending => "transcription_pending".into(),
            Self::SpeechToTextNotConfigured => "speech_to_text_not_configured".into(),
            Self::App(_) => "event_store".into(),
            Self::NoSuchTurn(_) => "no_such_turn".into(),
            Self::NoSuchCall => "no_such_call".into(),
            Self::ForeignRecording => "foreign_recording_url".into(),
        }
    }

    /// Whether another attempt could succeed: a missing call or turn, a refused URL or a missing
    /// service stay so, and the caller should reach a person at once.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Stage { error, .. } | Self::Keep(error) | Self::Reconcile(error) => {
                error.retryable()
            }
            Self::TranscriptionPending | Self::App(_) => true,
            Self::SpeechToTextNotConfigured
            | Self::NoSuchTurn(_)
            | Self::NoSuchCall
            | Self::ForeignRecording => false,
        }
    }
}

/// What `process_caller_audio` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessedAudio {
    pub analysis: Analysis,
    /// Always `None`: replies are spoken with Twilio's text-to-speech.
    pub response_audio_url: Option<String>,
    /// The reply; `None` when the risk sends the caller to a person.
    pub response_text: Option<String>,
    pub risk_level: RiskLevel,
}

/// What became of a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnOutcome {
    /// The reply was played through the live call.
    Replied,
    /// The caller was connected to a person.
    Escalated,
    /// The answer is ready but the webhook path plays it (the REST path failed, or it was there
    /// first).
    LeftToWebhook,
    /// The call ended before an answer could be played.
    CallOver,
}

/// Runs turns.
pub struct Pipeline<ES: EventStore<Call>> {
    dispatcher: CommandDispatcher<ES>,
    recordings: Arc<dyn RecordingSource>,
    /// A speech-to-text service; without one, Twilio's transcription of the turn is used.
    speech: Option<Arc<dyn SpeechToText>>,
    responder: Responder,
    control: Arc<dyn CallControl>,
    lines: Lines,
    /// Where recordings are kept; without one they stay with Twilio only.
    audio_store: Option<Arc<dyn AudioStore>>,
    /// The webhooks' spool: a call with webhooks waiting in it may have been put through to a
    /// person the store does not know of yet, so nothing is played to it until they are on record.
    spool: Option<Arc<dyn crate::spool::Spool>>,
}

impl<ES: EventStore<Call>> std::fmt::Debug for Pipeline<ES> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("model", &self.responder.model_name())
            .finish_non_exhaustive()
    }
}

fn metadata() -> CommandMetadata {
    CommandMetadata {
        request_id: uuid::Uuid::new_v4().to_string(),
        idempotency_token: None,
        actor: "pipeline".to_owned(),
        received_at: Utc::now(),
        spool_entry: None,
    }
}

impl<ES: EventStore<Call>> Pipeline<ES> {
    /// A pipeline over `store`; without `speech`, Twilio's transcription of each turn is used;
    /// without a `model`, the screener and the vetted script answer.
    pub fn new(
        store: ES,
        recordings: Arc<dyn RecordingSource>,
        speech: Option<Arc<dyn SpeechToText>>,
        model: Option<Arc<dyn LanguageModel>>,
        control: Arc<dyn CallControl>,
        lines: Lines,
    ) -> Self {
        Self {
            dispatcher: CommandDispatcher::new(store),
            recordings,
            speech,
            responder: Responder::new(model),
            control,
            lines,
            audio_store: None,
            spool: None,
        }
    }

    /// Plays nothing to a call whose webhooks wait in `spool` (see the field).
    #[must_use]
    pub fn with_spool(mut self, spool: Arc<dyn crate::spool::Spool>) -> Self {
        self.spool = Some(spool);
        self
    }

    /// Keeps every turn's recording in `store`.
    #[must_use]
    pub fn with_audio_store(mut self, store: Arc<dyn AudioStore>) -> Self {
        self.audio_store = Some(store);
        self
    }

    /// Sets how long the model may take (tests use short timeouts).
    #[must_use]
    pub fn with_model_timeout(mut self, timeout: Duration) -> Self {
        self.responder = self.responder.with_model_timeout(timeout);
        self
    }

    async fn execute(&self, id: CallId, command: CallCommand) -> Result<Call, AppError> {
        self.dispatcher.execute(id, command, &metadata()).await
    }

    /// Processes turn `turn` of call `id`.
    #[tracing::instrument(skip_all, fields(call_id = %id, turn))]
    pub async fn process_turn(&self, id: CallId, turn: u32) -> Result<TurnOutcome, PipelineError> {
        let call = self.dispatcher.load(id).await?;
        let call_sid = call
            .call_sid()
            .cloned()
            .ok_or(PipelineError::NoSuchTurn(turn))?;
        let current = call
            .turn_number(turn)
            .ok_or(PipelineError::NoSuchTurn(turn))?;
        let analysis = match &current.analysis {
            Some(done) => done.clone(),
            None => {
                let analysis = self.analyse(id, current, call.language()).await?;
                let command = CallCommand::RecordAnalysis(RecordAnalysis {
                    turn,
                    analysis: analysis.clone(),
                    at: Utc::now(),
                });
                self.execute(id, command).await?;
                analysis
            }
        };
        // The caller may have heard the fallback and be ringing a counselor, recorded only in
        // the spool for now: the turn is tried again once that is on record.
        if self.spool.as_ref().is_some_and(|spool| spool.holds(id)) {
            return Err(PipelineError::App(AppError::StoreSkipped));
        }
        self.deliver(id, &call_sid, turn, &analysis, call.language())
            .await
    }

    async fn analyse(
        &self,
        id: CallId,
        turn: &domain::call::Turn,
        language: domain::Language,
    ) -> Result<Analysis, PipelineError> {
        let stage = |stage| move |error| PipelineError::Stage { stage, error };
        let mut timings = StageTimings::default();

        let (transcript, words, audio) = match (&turn.recording, &self.speech) {
            // Twilio recognised the words itself (a speech turn whose answer was deferred).
            (None, _) => {
                let (text, _) = turn
                    .transcription
                    .clone()
                    .ok_or(PipelineError::TranscriptionPending)?;
                (text, Words::Readable, None)
            }
            (Some(recording), Some(speech)) => {
                let started = Instant::now();
                let audio = self
                    .recordings
                    .fetch(&recording.url)
                    .await
                    .map_err(stage(Stage::Download))?;
                timings.download_ms = elapsed_ms(started);
                let started = Instant::now();
                let text = speech
                    .transcribe(&audio)
                    .await
                    .map_err(stage(Stage::Transcription))?;
                timings.transcription_ms = elapsed_ms(started);
                (text, Words::Readable, Some(audio))
            }
            // Twilio transcribed the turn; its callback stored the text on the call.
            (Some(_), None) => {
                let (text, understood) = turn
                    .transcription
                    .clone()
                    .ok_or(PipelineError::TranscriptionPending)?;
                let words = if understood {
                    Words::Readable
                } else {
                    Words::Unreadable(risk::Unreadable::FailedTranscription)
                };
                (text, words, None)
            }
        };

        let mut analysis = self
            .responder
            .understand(transcript, words, language, timings)
            .await;
        // Keeping the recording runs before the answer is played, so it gets a short bound: a
        // slow download or store must not hold the caller's answer back.
        analysis.recording_key =
            tokio::time::timeout(KEEP_RECORDING_TIMEOUT, self.keep_recording(id, turn, audio))
                .await
                .unwrap_or_else(|_| {
                    tracing::warn!("keeping the recording took too long; the turn goes on");
                    None
                });
        Ok(analysis)
    }

    /// Keeps the turn's recording in the audio store, downloading it if the turn did not need to.
    /// Best effort: the caller's answer matters more than the archive, and Twilio keeps its own
    /// copy, so a failure is logged and the turn goes on.
    async fn keep_recording(
        &self,
        id: CallId,
        turn: &domain::call::Turn,
        audio: Option<Audio>,
    ) -> Option<String> {
        let store = self.audio_store.as_ref()?;
        // A speech turn has no recording of its own: the call's recording holds its words.
        let recording = turn.recording.as_ref()?;
        let audio = match audio {
            Some(audio) => audio,
            None => match self.recordings.fetch(&recording.url).await {
                Ok(audio) => audio,
                Err(error) => {
                    tracing::warn!(error = %error, "could not download the recording to keep it");
                    return None;
                }
            },
        };
        match store.keep(id, turn.number, &audio).await {
            Ok(key) => Some(key),
            Err(error) => {
                tracing::warn!(error = %error, "could not keep the recording");
                None
            }
        }
    }

    /// `process_caller_audio(audio_data, call_id)`: transcribes, assesses and answers a caller's
    /// audio for call `id`, as a turn would be, and returns the result without recording anything
    /// or playing anything to the call (operators use it to re-process a recording).
    pub async fn process_caller_audio(
        &self,
        audio: &crate::ports::Audio,
        id: CallId,
    ) -> Result<ProcessedAudio, PipelineError> {
        let call = self.dispatcher.load(id).await?;
        if !call.is_started() {
            return Err(PipelineError::NoSuchCall);
        }
        let speech = self
            .speech
            .as_ref()
            .ok_or(PipelineError::SpeechToTextNotConfigured)?;
        let mut timings = StageTimings::default();
        let started = Instant::now();
        let transcript = speech
            .transcribe(audio)
            .await
            .map_err(|error| PipelineError::Stage {
                stage: Stage::Transcription,
                error,
            })?;
        timings.transcription_ms = elapsed_ms(started);
        let analysis = self
            .responder
            .understand(transcript, Words::Readable, call.language(), timings)
            .await;
        Ok(ProcessedAudio {
            risk_level: analysis.assessment.level,
            response_text: analysis.reply.clone(),
            // Replies are spoken by Twilio's text-to-speech; no audio file is produced.
            response_audio_url: None,
            analysis,
        })
    }

    /// Copies the recording `recording` of the whole call `id` (Twilio's, at `url`) into the
    /// audio store and records where it is kept. Safe to run again: the same key records nothing
    /// new. Without an audio store the recording stays with Twilio only, and nothing is done.
    #[tracing::instrument(skip_all, fields(call_id = %id))]
    pub async fn keep_call_recording(
        &self,
        id: CallId,
        recording: RecordingSid,
        url: &RecordingUrl,
    ) -> Result<Option<String>, PipelineError> {
        let Some(store) = &self.audio_store else {
            return Ok(None);
        };
        let audio = self.download_owned(url).await?;
        let key = store
            .keep_call(id, &recording, &audio)
            .await
            .map_err(PipelineError::Keep)?;
        let command = CallCommand::KeepCallRecording(KeepCallRecording {
            recording_sid: recording,
            key: key.clone(),
            at: Utc::now(),
        });
        self.execute(id, command).await?;
        Ok(Some(key))
    }

    /// Asks Twilio how call `id` stands when its end was never recorded (its status callback
    /// lost), and records the end Twilio reports. Returns the status recorded, if any: a call
    /// still live, or already over on record, records nothing.
    #[tracing::instrument(skip_all, fields(call_id = %id))]
    pub async fn reconcile(&self, id: CallId) -> Result<Option<domain::CallStatus>, PipelineError> {
        let call = self.dispatcher.load(id).await?;
        if call.ended().is_some() {
            return Ok(None);
        }
        let sid = call.call_sid().cloned().ok_or(PipelineError::NoSuchCall)?;
        let (status, duration_secs) = self
            .control
            .call_status(&sid)
            .await
            .map_err(PipelineError::Reconcile)?;
        if !status.is_terminal() {
            return Ok(None);
        }
        let command = CallCommand::UpdateStatus(domain::call::UpdateStatus {
            call_sid: sid,
            status: status.clone(),
            sequence_number: None,
            duration_secs,
            at: Utc::now(),
        });
        let metadata = CommandMetadata {
            actor: "reconciliation".to_owned(),
            ..metadata()
        };
        self.dispatcher.execute(id, command, &metadata).await?;
        Ok(Some(status))
    }

    /// Re-processes the recording at `url` for call `id` (an operator's request): the recording
    /// must be one of the account's own and the call must exist. Nothing is recorded on the call
    /// and nothing is played to it.
    pub async fn reprocess(
        &self,
        url: &domain::call::RecordingUrl,
        id: CallId,
    ) -> Result<ProcessedAudio, PipelineError> {
        if !self.recordings.owns(url) {
            return Err(PipelineError::ForeignRecording);
        }
        let call = self.dispatcher.load(id).await?;
        if !call.is_started() {
            return Err(PipelineError::NoSuchCall);
        }
        let audio = self.download_owned(url).await?;
        self.process_caller_audio(&audio, id).await
    }

    /// Downloads the recording at `url`, which must be one of this account's.
    async fn download_owned(&self, url: &RecordingUrl) -> Result<Audio, PipelineError> {
        if !self.recordings.owns(url) {
            return Err(PipelineError::ForeignRecording);
        }
        self.recordings
            .fetch(url)
            .await
            .map_err(|error| PipelineError::Stage {
                stage: Stage::Download,
                error,
            })
    }

    /// Claims the turn for the REST path and plays it; a failed delivery hands it back to the
    /// continue webhook. A turn that warrants a person reaches one even when the webhook path
    /// already played the fallback, or the caller has moved on: a late analysis is never left
    /// unheard. Once the caller was sent to a person, nothing is played.
    async fn deliver(
        &self,
        id: CallId,
        call_sid: &CallSid,
        turn: u32,
        analysis: &Analysis,
        language: domain::Language,
    ) -> Result<TurnOutcome, PipelineError> {
        let claim = CallCommand::PlayResponse(PlayResponse {
            turn: Some(turn),
            via: PlayedVia::RestUpdate,
            counselor_line: self.lines.counselor_for(language).clone(),
            at: Utc::now(),
        });
        let claimed = self
            .dispatcher
            .execute_counting(id, claim, &metadata())
            .await;
        let (state, appended) = match claimed {
            Ok(result) => result,
            Err(AppError::Rule(domain::CallError::StaleTurn(_))) => {
                let state = self.dispatcher.load(id).await?;
                return self.late(id, call_sid, &state, turn, analysis).await;
            }
            Err(error) => return Err(error.into()),
        };
        if state.ended().is_some() {
            return Ok(TurnOutcome::CallOver);
        }
        // Only the command that appended the claim plays the turn: the webhook path, another
        // worker, or an earlier run of this job may hold it; a turn during which the caller asked
        // for a person, or any turn once a person was reached, is never played (the aggregate
        // appends nothing for it).
        if appended == 0 {
            return self.late(id, call_sid, &state, turn, analysis).await;
        }
        let escalate = state
            .turn_number(turn)
            .and_then(|t| state.route_for(t))
            .unwrap_or(analysis.assessment.route)
            == Route::Escalate;
        // An escalation was recorded by the claim itself, before the caller is put through: a
        // counselor who answers and ends the call at once would end it before the record, and an
        // ended call takes no more events. Should the update fail, the continue webhook puts the
        // caller through.
        let delivered = match (&analysis.reply, escalate) {
            (Some(reply), false) => {
                let ask = state.asks_question_after(turn);
                self.control
                    .play_reply(call_sid, id, reply, ask, state.language())
                    .await
            }
            _ => {
                self.control
                    .connect_counselor(call_sid, id, state.language())
                    .await
            }
        };
        match delivered {
            Ok(()) if escalate => Ok(TurnOutcome::Escalated),
            Ok(()) => Ok(TurnOutcome::Replied),
            Err(error) => {
                tracing::warn!(error = %error, "REST delivery failed; the continue webhook will play the answer");
                let command = CallCommand::RecordFailure(RecordFailure {
                    turn,
                    stage: Stage::Delivery,
                    error_class: error.to_string(),
                    at: Utc::now(),
                });
                self.execute(id, command).await?;
                Ok(TurnOutcome::LeftToWebhook)
            }
        }
    }

    /// The turn was answered without this analysis (the webhook path played the fallback, or
    /// the caller moved on). If the analysis warrants a person and nobody has sent the caller to
    /// one yet, they are put through now by REST update, and the escalation recorded first.
    /// Otherwise the analysis is kept for the record and nothing is played.
    async fn late(
        &self,
        id: CallId,
        call_sid: &CallSid,
        state: &Call,
        turn: u32,
        analysis: &Analysis,
    ) -> Result<TurnOutcome, PipelineError> {
        if state.ended().is_some() {
            return Ok(TurnOutcome::CallOver);
        }
        let warrants_person =
            analysis.assessment.route == Route::Escalate || state.warrants_person();
        if !warrants_person || state.is_escalated() {
            return Ok(TurnOutcome::LeftToWebhook);
        }
        // Recorded only if nobody sent the caller to a person meanwhile (the aggregate decides,
        // on the latest state): whoever recorded an escalation has put the caller through.
        let command = CallCommand::Escalate(Escalate {
            reason: EscalationReason::RiskAssessed,
            target: self.lines.counselor_for(state.language()).clone(),
            unless_escalated: true,
            at: Utc::now(),
        });
        let (_, appended) = self
            .dispatcher
            .execute_counting(id, command, &metadata())
            .await?;
        // Whoever recorded the escalation puts the caller through; a webhook that did it first
        // answered with the counselor's `<Dial>` itself.
        if appended == 0 {
            return Ok(TurnOutcome::LeftToWebhook);
        }
        tracing::info!(
            turn,
            "a late analysis warrants a person; connecting the caller"
        );
        match self
            .control
            .connect_counselor(call_sid, id, state.language())
            .await
        {
            Ok(()) => Ok(TurnOutcome::Escalated),
            Err(error) => {
                // The next webhook (the choice after the fallback) puts the caller through: the
                // call warrants a person from now on.
                tracing::warn!(error = %error, "could not connect the caller after a late analysis");
                Ok(TurnOutcome::LeftToWebhook)
            }
        }
    }

    /// The turn's job ran out of attempts: record why, and put the caller through to a person.
    pub async fn give_up(&self, id: CallId, turn: u32, stage: Stage, error_class: &str) {
        let command = CallCommand::RecordFailure(RecordFailure {
            turn,
            stage,
            error_class: error_class.to_owned(),
            at: Utc::now(),
        });
        if let Err(error) = self.execute(id, command).await {
            tracing::error!(error = %error, "could not record the failed turn");
        }
        let Ok(call) = self.dispatcher.load(id).await else {
            return;
        };
        let (Some(sid), None) = (call.call_sid(), call.ended()) else {
            return;
        };
        // A caller already with a person (or being put through) is never re-dialled: a REST
        // update would end the counselor's leg. The escalation is recorded first, and only if
        // none was; the caller is dialled only by the command that recorded it.
        let command = CallCommand::Escalate(Escalate {
            reason: EscalationReason::ProcessingFailed,
            target: self.lines.counselor_for(call.language()).clone(),
            unless_escalated: true,
            at: Utc::now(),
        });
        match self
            .dispatcher
            .execute_counting(id, command, &metadata())
            .await
        {
            Ok((_, 0)) => {}
            Ok(_) => {
                if let Err(error) = self
                    .control
                    .connect_counselor(sid, id, call.language())
                    .await
                {
                    tracing::error!(error = %error, "could not connect the caller; the continue webhook's fallback remains");
                }
            }
            Err(error) => tracing::error!(error = %error, "could not record the escalation"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use cqrs_es::mem_store::MemStore;
    use domain::call::{ReceiveRecording, RecordingUrl};
    use domain::{DialNumber, RecordingSid};

    use super::*;
    use crate::ports::Audio;
    use domain::call::ReplySource;
    use domain::{script, Language};

    use crate::ports::{Failure, Service};

    struct Recordings(Result<Audio, Failure>);
    #[async_trait]
    impl RecordingSource for Recordings {
        fn owns(&self, url: &RecordingUrl) -> bool {
            url.as_str().starts_with("https://api.twilio.com/")
        }
        async fn fetch(&self, _url: &RecordingUrl) -> Result<Audio, PortError> {
            self.0
                .clone()
                .map_err(|f| PortError::new(Service::Twilio, f))
        }
    }

    struct Speech(Result<String, Failure>);
    #[async_trait]
    impl SpeechToText for Speech {
        async fn transcribe(&self, _audio: &Audio) -> Result<String, PortError> {
            self.0.clone().map_err(|f| PortError::new(Service::Ai, f))
        }
    }

    struct Model {
        risk: Result<RiskLevel, Failure>,
        reply: Result<String, Failure>,
        delay: Duration,
        /// The language each reply was asked for in.
        asked_in: Arc<Mutex<Vec<Language>>>,
    }
    #[async_trait]
    impl LanguageModel for Model {
        fn name(&self) -> &str {
            "test-model"
        }
        async fn assess_risk(&self, _t: &str) -> Result<RiskLevel, PortError> {
            tokio::time::sleep(self.delay).await;
            self.risk.map_err(|f| PortError::new(Service::Ai, f))
        }
        async fn compose_reply(
            &self,
            _t: &str,
            _l: RiskLevel,
            language: Language,
        ) -> Result<String, PortError> {
            self.asked_in.lock().expect("not poisoned").push(language);
            self.reply
                .clone()
                .map_err(|f| PortError::new(Service::Ai, f))
        }
    }

    #[derive(Default)]
    struct Control {
        fail: bool,
        played: Mutex<Vec<String>>,
        /// Whether each reply played asked the direct question.
        asked: Mutex<Vec<bool>>,
        connected: Mutex<u32>,
    }
    #[async_trait]
    impl CallControl for Control {
        async fn play_reply(
            &self,
            _s: &CallSid,
            _id: CallId,
            text: &str,
            ask: bool,
            _language: domain::Language,
        ) -> Result<(), PortError> {
            if self.fail {
                return Err(PortError::new(Service::Twilio, Failure::Status(500)));
            }
            self.played
                .lock()
                .expect("not poisoned")
                .push(text.to_owned());
            self.asked.lock().expect("not poisoned").push(ask);
            Ok(())
        }
        async fn connect_counselor(
            &self,
            _s: &CallSid,
            _id: CallId,
            _language: domain::Language,
        ) -> Result<(), PortError> {
            if self.fail {
                return Err(PortError::new(Service::Twilio, Failure::Status(500)));
            }
            *self.connected.lock().expect("not poisoned") += 1;
            Ok(())
        }
        async fn call_status(
            &self,
            _s: &CallSid,
        ) -> Result<(domain::CallStatus, Option<u32>), PortError> {
            if self.fail {
                return Err(PortError::new(Service::Twilio, Failure::Status(500)));
            }
            Ok((domain::CallStatus::Completed, Some(61)))
        }
    }

    const SID: &str = "CA0123456789abcdef0123456789abcdef";

    fn lines() -> Lines {
        Lines {
            counselor: DialNumber::parse("+15005550001").expect("valid"),
            crisis: DialNumber::parse("988").expect("valid"),
            counselor_es: None,
            more: Vec::new(),
            more_es: Vec::new(),
        }
    }

    /// A started call with one recorded turn, in a store the pipeline shares.
    async fn call_with_one_turn(store: &MemStore<Call>) -> CallId {
        let sid = CallSid::parse(SID).expect("valid");
        let id = CallId::for_call_sid(&sid);
        let dispatcher = CommandDispatcher::new(store.clone());
        let start = domain::fixtures::start_call(&sid, Utc::now());
        dispatcher
            .execute(id, start, &metadata())
            .await
            .expect("starts");
        let recording = CallCommand::ReceiveRecording(ReceiveRecording {
            call_sid: sid,
            recording_sid: RecordingSid::parse("RE0123456789abcdef0123456789abcdef")
                .expect("valid"),
            recording_url: RecordingUrl::parse("https://api.twilio.com/x").expect("valid"),
            duration_secs: Some(5),
            digits: None,
            counselor_line: lines().counselor,
            at: Utc::now(),
        });
        dispatcher
            .execute(id, recording, &metadata())
            .await
            .expect("records");
        id
    }

    struct Harness {
        store: MemStore<Call>,
        control: Arc<Control>,
        pipeline: Pipeline<MemStore<Call>>,
    }

    fn harness(
        transcript: Result<&str, Failure>,
        model: Option<Model>,
        control: Control,
    ) -> Harness {
        let store = MemStore::<Call>::default();
        let control = Arc::new(control);
        let audio = Audio {
            bytes: b"RIFF".to_vec(),
            content_type: "audio/x-wav".into(),
        };
        let pipeline = Pipeline::new(
            store.clone(),
            Arc::new(Recordings(Ok(audio))),
            Some(Arc::new(Speech(transcript.map(str::to_owned)))),
            model.map(|m| Arc::new(m) as Arc<dyn LanguageModel>),
            control.clone(),
            lines(),
        )
        .with_model_timeout(Duration::from_millis(50));
        Harness {
            store,
            control,
            pipeline,
        }
    }

    async fn event_types(store: &MemStore<Call>, id: CallId) -> Vec<String> {
        use cqrs_es::DomainEvent;
        store
            .load_events(&id.to_string())
            .await
            .expect("loads")
            .iter()
            .map(|e| e.payload.event_type())
            .collect()
    }

    async fn analysis(store: &MemStore<Call>, id: CallId) -> Analysis {
        let mut ctx = store.load_aggregate(&id.to_string()).await.expect("loads");
        let call = cqrs_es::AggregateContext::aggregate(&mut ctx).clone();
        call.turn_number(1)
            .and_then(|t| t.analysis.clone())
            .expect("analysed")
    }

    fn model(risk: RiskLevel, reply: &str) -> Model {
        Model {
            risk: Ok(risk),
            reply: Ok(reply.into()),
            delay: Duration::ZERO,
            asked_in: Arc::default(),
        }
    }

    #[tokio::test]
    async fn a_low_risk_turn_is_answered_with_the_script_through_the_live_call() {
        let h = harness(Ok("I had a rough day at work."), None, Control::default());
        let id = call_with_one_turn(&h.store).await;
        assert_eq!(
            h.pipeline.process_turn(id, 1).await.expect("runs"),
            TurnOutcome::Replied
        );
        assert_eq!(
            *h.control.played.lock().expect("ok"),
            [script::scripted_reply(domain::Language::English)]
        );
        // The first automated reply is followed by the direct question, asked once per call.
        assert_eq!(
            event_types(&h.store, id).await,
            [
                "CallStarted",
                "RecordingReceived",
                "Analyzed",
                "ResponsePlayed",
                "DirectQuestionAsked"
            ]
        );
        assert_eq!(*h.control.asked.lock().expect("ok"), [true]);
        let analysis = analysis(&h.store, id).await;
        assert_eq!(analysis.assessment.level, RiskLevel::None);
        assert_eq!(analysis.reply_source, Some(ReplySource::Script));
        assert_eq!(analysis.screening.version, risk::SCREENER_VERSION);
    }

    #[tokio::test]
    async fn a_high_risk_turn_gets_no_automated_reply_and_goes_to_a_person() {
        let h = harness(
            Ok("I'm going to kill myself tonight."),
            Some(model(RiskLevel::Low, "It will pass.")),
            Control::default(),
        );
        let id = call_with_one_turn(&h.store).await;
        assert_eq!(
            h.pipeline.process_turn(id, 1).await.expect("runs"),
            TurnOutcome::Escalated
        );
        assert!(h.control.played.lock().expect("ok").is_empty());
        assert_eq!(*h.control.connected.lock().expect("ok"), 1);
        let analysis = analysis(&h.store, id).await;
        assert!(
            analysis.assessment.level >= RiskLevel::High,
            "the model's 'low' cannot lower it"
        );
        assert_eq!(analysis.reply, None);
        assert_eq!(
            event_types(&h.store, id).await,
            [
                "CallStarted",
                "RecordingReceived",
                "Analyzed",
                "ResponsePlayed",
                "Escalated"
            ]
        );
    }

    #[tokio::test]
    async fn the_model_can_raise_the_risk_to_a_person() {
        let h = harness(
            Ok("Things are fine, I guess."),
            Some(model(RiskLevel::High, "ok")),
            Control::default(),
        );
        let id = call_with_one_turn(&h.store).await;
        assert_eq!(
            h.pipeline.process_turn(id, 1).await.expect("runs"),
            TurnOutcome::Escalated
        );
        assert_eq!(
            analysis(&h.store, id).await.assessment.level,
            RiskLevel::High
        );
    }

    #[tokio::test]
    async fn a_model_that_fails_or_is_slow_makes_the_risk_unknown_and_goes_to_a_person() {
        for failing in [
            Model {
                risk: Err(Failure::Status(503)),
                ..model(RiskLevel::None, "x")
            },
            Model {
                delay: Duration::from_secs(5),
                ..model(RiskLevel::None, "x")
            },
        ] {
            let h = harness(Ok("I had a rough day."), Some(failing), Control::default());
            let id = call_with_one_turn(&h.store).await;
            assert_eq!(
                h.pipeline.process_turn(id, 1).await.expect("runs"),
                TurnOutcome::Escalated
            );
            let analysis = analysis(&h.store, id).await;
            assert!(analysis.assessment.unknown);
            assert_eq!(analysis.reply, None);
        }
    }

    #[tokio::test]
    async fn a_model_reply_that_fails_the_guard_is_replaced_by_the_script() {
        let unsafe_reply = model(RiskLevel::None, "Maybe take a few extra pills to sleep.");
        let h = harness(Ok("I can't sleep."), Some(unsafe_reply), Control::default());
        let id = call_with_one_turn(&h.store).await;
        h.pipeline.process_turn(id, 1).await.expect("runs");
        assert_eq!(
            *h.control.played.lock().expect("ok"),
            [script::scripted_reply(domain::Language::English)]
        );
        assert_eq!(
            analysis(&h.store, id).await.reply_source,
            Some(ReplySource::ScriptAfterGuard)
        );
    }

    #[tokio::test]
    async fn a_safe_model_reply_is_played() {
        let kind = "That sounds exhausting. I'm glad you called, and I'm here to listen.";
        let h = harness(
            Ok("I can't sleep."),
            Some(model(RiskLevel::None, kind)),
            Control::default(),
        );
        let id = call_with_one_turn(&h.store).await;
        h.pipeline.process_turn(id, 1).await.expect("runs");
        assert_eq!(*h.control.played.lock().expect("ok"), [kind]);
        assert_eq!(
            analysis(&h.store, id).await.model.as_deref(),
            Some("test-model")
        );
    }

    #[tokio::test]
    async fn the_reply_is_asked_for_in_the_language_the_turn_was_read_in() {
        for (transcript, language) in [
            ("No puedo dormir, tengo mucha ansiedad.", Language::Spanish),
            ("I can't sleep.", Language::English),
        ] {
            let kind = model(RiskLevel::None, "I'm here to listen.");
            let asked_in = kind.asked_in.clone();
            let h = harness(Ok(transcript), Some(kind), Control::default());
            let id = call_with_one_turn(&h.store).await;
            h.pipeline.process_turn(id, 1).await.expect("runs");
            assert_eq!(
                analysis(&h.store, id).await.screening.language,
                Some(language)
            );
            assert_eq!(*asked_in.lock().expect("ok"), [language], "{transcript}");
        }
    }

    #[tokio::test]
    async fn a_failed_stage_records_nothing_and_is_retried() {
        let h = harness(Err(Failure::Status(503)), None, Control::default());
        let id = call_with_one_turn(&h.store).await;
        let error = h.pipeline.process_turn(id, 1).await.expect_err("fails");
        assert!(
            matches!(
                error,
                PipelineError::Stage {
                    stage: Stage::Transcription,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            event_types(&h.store, id).await,
            ["CallStarted", "RecordingReceived"]
        );
    }

    #[tokio::test]
    async fn a_failed_delivery_leaves_the_answer_to_the_continue_webhook() {
        let h = harness(
            Ok("I had a rough day."),
            None,
            Control {
                fail: true,
                ..Control::default()
            },
        );
        let id = call_with_one_turn(&h.store).await;
        assert_eq!(
            h.pipeline.process_turn(id, 1).await.expect("runs"),
            TurnOutcome::LeftToWebhook
        );
        assert_eq!(
            event_types(&h.store, id).await,
            [
                "CallStarted",
                "RecordingReceived",
                "Analyzed",
                "ResponsePlayed",
                "DirectQuestionAsked",
                "ProcessingFailed"
            ]
        );
        let mut ctx = h
            .store
            .load_aggregate(&id.to_string())
            .await
            .expect("loads");
        let call = cqrs_es::AggregateContext::aggregate(&mut ctx).clone();
        assert_eq!(
            call.turn_number(1).and_then(|t| t.played),
            None,
            "handed back"
        );
    }

    #[tokio::test]
    async fn running_a_turn_again_plays_nothing_twice() {
        let h = harness(Ok("I had a rough day."), None, Control::default());
        let id = call_with_one_turn(&h.store).await;
        h.pipeline.process_turn(id, 1).await.expect("runs");
        assert_eq!(
            h.pipeline.process_turn(id, 1).await.expect("runs"),
            TurnOutcome::LeftToWebhook
        );
        assert_eq!(h.control.played.lock().expect("ok").len(), 1);
        assert_eq!(event_types(&h.store, id).await.len(), 5);
    }

    async fn run(store: &MemStore<Call>, id: CallId, command: CallCommand) -> Call {
        CommandDispatcher::new(store.clone())
            .execute(id, command, &metadata())
            .await
            .expect("runs")
    }

    fn play_via_webhook() -> CallCommand {
        CallCommand::PlayResponse(PlayResponse {
            turn: Some(1),
            via: PlayedVia::Twiml,
            counselor_line: lines().counselor,
            at: Utc::now(),
        })
    }

    #[tokio::test]
    async fn a_late_analysis_that_warrants_a_person_puts_the_caller_through_by_rest_update() {
        let h = harness(Ok("i took 30 tylenol"), None, Control::default());
        let id = call_with_one_turn(&h.store).await;
        // The caller waited too long: the continue webhook played the vetted fallback.
        run(&h.store, id, play_via_webhook()).await;
        assert_eq!(
            h.pipeline.process_turn(id, 1).await.expect("runs"),
            TurnOutcome::Escalated
        );
        assert_eq!(*h.control.connected.lock().expect("ok"), 1);
        assert!(h.control.played.lock().expect("ok").is_empty());
        let types = event_types(&h.store, id).await;
        assert_eq!(
            types.last().map(String::as_str),
            Some("Escalated"),
            "{types:?}"
        );
        // Run again (a retried job): nobody is dialled twice.
        h.pipeline.process_turn(id, 1).await.expect("runs");
        assert_eq!(*h.control.connected.lock().expect("ok"), 1);
    }

    #[tokio::test]
    async fn a_caller_with_a_person_gets_no_automation_whatever_the_pipeline_does() {
        for transcript in ["I had a rough day.", "i want to die"] {
            let h = harness(Ok(transcript), None, Control::default());
            let id = call_with_one_turn(&h.store).await;
            // The webhook path sent the caller to a counselor (a key, or a fallback).
            run(
                &h.store,
                id,
                CallCommand::Escalate(Escalate {
                    reason: EscalationReason::CallerRequested,
                    target: lines().counselor,
                    unless_escalated: false,
                    at: Utc::now(),
                }),
            )
            .await;
            assert_eq!(
                h.pipeline.process_turn(id, 1).await.expect("runs"),
                TurnOutcome::LeftToWebhook,
                "{transcript}"
            );
            h.pipeline
                .give_up(id, 1, Stage::Delivery, "twilio_http_500")
                .await;
            assert!(
                h.control.played.lock().expect("ok").is_empty(),
                "{transcript}"
            );
            assert_eq!(*h.control.connected.lock().expect("ok"), 0, "{transcript}");
        }
    }

    #[tokio::test]
    async fn after_a_turn_that_warranted_a_person_no_later_turn_gets_the_bot() {
        let h = harness(Ok("I had a rough day."), None, Control::default());
        let id = call_with_one_turn(&h.store).await;
        // Turn 1 was analysed as risky and its answer already given by the webhook.
        let mut risky = Responder::new(None)
            .understand(
                "i want to die".into(),
                Words::Readable,
                domain::Language::English,
                StageTimings::default(),
            )
            .await;
        risky.recording_key = None;
        run(
            &h.store,
            id,
            CallCommand::RecordAnalysis(RecordAnalysis {
                turn: 1,
                analysis: risky,
                at: Utc::now(),
            }),
        )
        .await;
        run(&h.store, id, play_via_webhook()).await;
        let recording = CallCommand::ReceiveRecording(ReceiveRecording {
            call_sid: CallSid::parse(SID).expect("valid"),
            recording_sid: RecordingSid::parse("RE0123456789abcdef0123456789abcdee")
                .expect("valid"),
            recording_url: RecordingUrl::parse("https://api.twilio.com/y").expect("valid"),
            duration_secs: Some(5),
            digits: None,
            counselor_line: lines().counselor,
            at: Utc::now(),
        });
        run(&h.store, id, recording).await;
        // Turn 2 (the caller is back after nobody answered) shows no risk at all: no automated
        // reply is played, and its answer is a person, which the continue webhook gives.
        assert_eq!(
            h.pipeline.process_turn(id, 2).await.expect("runs"),
            TurnOutcome::LeftToWebhook
        );
        assert!(h.control.played.lock().expect("ok").is_empty());
        let call = run(&h.store, id, play_via_webhook_turn(2)).await;
        let turn = call.turn_number(2).expect("turn 2");
        assert_eq!(call.route_for(turn), Some(Route::Escalate));
        assert!(call.warrants_person());
    }

    fn play_via_webhook_turn(turn: u32) -> CallCommand {
        CallCommand::PlayResponse(PlayResponse {
            turn: Some(turn),
            via: PlayedVia::Twiml,
            counselor_line: lines().counselor,
            at: Utc::now(),
        })
    }

    #[tokio::test]
    async fn giving_up_records_why_and_connects_a_person() {
        let h = harness(Err(Failure::Status(503)), None, Control::default());
        let id = call_with_one_turn(&h.store).await;
        h.pipeline
            .give_up(id, 1, Stage::Transcription, "http_503")
            .await;
        assert_eq!(*h.control.connected.lock().expect("ok"), 1);
        assert_eq!(
            event_types(&h.store, id).await,
            [
                "CallStarted",
                "RecordingReceived",
                "ProcessingFailed",
                "Escalated"
            ]
        );
    }

    #[tokio::test]
    async fn process_caller_audio_answers_without_touching_the_call() {
        let h = harness(Ok("I had a rough day."), None, Control::default());
        let id = call_with_one_turn(&h.store).await;
        let audio = Audio {
            bytes: b"RIFF".to_vec(),
            content_type: "audio/x-wav".into(),
        };
        let processed = h
            .pipeline
            .process_caller_audio(&audio, id)
            .await
            .expect("runs");
        assert_eq!(processed.risk_level, RiskLevel::None);
        assert_eq!(
            processed.response_text.as_deref(),
            Some(script::scripted_reply(domain::Language::English))
        );
        assert_eq!(processed.response_audio_url, None);
        assert_eq!(processed.analysis.transcript, "I had a rough day.");
        assert_eq!(
            event_types(&h.store, id).await,
            ["CallStarted", "RecordingReceived"]
        );
        assert!(h.control.played.lock().expect("ok").is_empty());
    }

    #[tokio::test]
    async fn process_caller_audio_sends_high_risk_to_a_person_and_refuses_unknown_calls() {
        let h = harness(Ok("I'm going to kill myself."), None, Control::default());
        let id = call_with_one_turn(&h.store).await;
        let audio = Audio {
            bytes: b"RIFF".to_vec(),
            content_type: "audio/x-wav".into(),
        };
        let processed = h
            .pipeline
            .process_caller_audio(&audio, id)
            .await
            .expect("runs");
        assert_eq!(processed.risk_level, RiskLevel::High);
        assert_eq!(processed.response_text, None);
        let unknown = CallId::for_call_sid(
            &CallSid::parse("CAffffffffffffffffffffffffffffffff").expect("valid"),
        );
        assert!(matches!(
            h.pipeline.process_caller_audio(&audio, unknown).await,
            Err(PipelineError::NoSuchCall)
        ));
    }

    #[tokio::test]
    async fn reprocessing_refuses_foreign_urls_and_unknown_calls_before_fetching() {
        let h = harness(Ok("I had a rough day."), None, Control::default());
        let id = call_with_one_turn(&h.store).await;
        let foreign = RecordingUrl::parse("https://evil.example.org/x.wav").expect("a URL");
        assert!(matches!(
            h.pipeline.reprocess(&foreign, id).await,
            Err(PipelineError::ForeignRecording)
        ));
        let own = RecordingUrl::parse("https://api.twilio.com/RE1.wav").expect("a URL");
        let unknown = CallId::for_call_sid(
            &CallSid::parse("CAffffffffffffffffffffffffffffffff").expect("valid"),
        );
        assert!(matches!(
            h.pipeline.reprocess(&own, unknown).await,
            Err(PipelineError::NoSuchCall)
        ));
        let processed = h.pipeline.reprocess(&own, id).await.expect("runs");
        assert_eq!(processed.analysis.transcript, "I had a rough day.");
        assert_eq!(
            event_types(&h.store, id).await,
            ["CallStarted", "RecordingReceived"],
            "nothing recorded on the call"
        );
    }

    /// An audio store that never answers.
    struct StuckStore;
    #[async_trait]
    impl crate::ports::AudioStore for StuckStore {
        async fn keep(&self, _id: CallId, _turn: u32, _audio: &Audio) -> Result<String, PortError> {
            std::future::pending().await
        }
        async fn keep_call(
            &self,
            _id: CallId,
            _recording: &RecordingSid,
            _audio: &Audio,
        ) -> Result<String, PortError> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_stuck_audio_store_delays_the_answer_a_bounded_time_and_no_more() {
        let mut h = harness(Ok("I had a rough day."), None, Control::default());
        h.pipeline = h.pipeline.with_audio_store(Arc::new(StuckStore));
        let id = call_with_one_turn(&h.store).await;
        let outcome = tokio::time::timeout(
            KEEP_RECORDING_TIMEOUT + Duration::from_secs(3),
            h.pipeline.process_turn(id, 1),
        )
        .await
        .expect("the answer is not held back by the store");
        assert_eq!(outcome.expect("runs"), TurnOutcome::Replied);
        assert_eq!(analysis(&h.store, id).await.recording_key, None);
    }

    /// An audio store in memory: what it holds, by key.
    #[derive(Default)]
    struct KeptAudio(Mutex<Vec<(String, Audio)>>);
    #[async_trait]
    impl crate::ports::AudioStore for KeptAudio {
        async fn keep(&self, id: CallId, turn: u32, audio: &Audio) -> Result<String, PortError> {
            let key = format!("{id}/turn-{turn}");
            self.0
                .lock()
                .expect("not poisoned")
                .push((key.clone(), audio.clone()));
            Ok(key)
        }
        async fn keep_call(
            &self,
            id: CallId,
            recording: &RecordingSid,
            audio: &Audio,
        ) -> Result<String, PortError> {
            let key = format!("{id}/call-{}", recording.as_str());
            self.0
                .lock()
                .expect("not poisoned")
                .push((key.clone(), audio.clone()));
            Ok(key)
        }
    }

    #[tokio::test]
    async fn the_calls_own_recording_is_kept_once_and_only_from_this_account() {
        let mut h = harness(Ok("I had a rough day."), None, Control::default());
        let kept = Arc::new(KeptAudio::default());
        h.pipeline = h.pipeline.with_audio_store(kept.clone());
        let id = call_with_one_turn(&h.store).await;
        let recording = RecordingSid::parse("RE00000000000000000000000000000009").expect("valid");
        let url =
            RecordingUrl::parse("https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE9")
                .expect("valid");
        run(
            &h.store,
            id,
            CallCommand::ReceiveCallRecording(domain::call::ReceiveCallRecording {
                call_sid: CallSid::parse(SID).expect("valid"),
                recording_sid: recording.clone(),
                recording_url: url.clone(),
                duration_secs: Some(42),
                status: "completed".into(),
                at: Utc::now(),
            }),
        )
        .await;

        let key = h
            .pipeline
            .keep_call_recording(id, recording.clone(), &url)
            .await
            .expect("kept");
        assert_eq!(key, Some(format!("{id}/call-{}", recording.as_str())));
        // Run again (a retried job): the same copy is written, nothing new is recorded.
        h.pipeline
            .keep_call_recording(id, recording.clone(), &url)
            .await
            .expect("kept again");
        let types = event_types(&h.store, id).await;
        assert_eq!(
            types.iter().filter(|t| *t == "CallRecordingKept").count(),
            1,
            "{types:?}"
        );
        assert_eq!(kept.0.lock().expect("not poisoned").len(), 2);

        let foreign = RecordingUrl::parse("https://example.org/RE9").expect("valid");
        assert!(matches!(
            h.pipeline
                .keep_call_recording(id, recording, &foreign)
                .await,
            Err(PipelineError::ForeignRecording)
        ));
    }
}
