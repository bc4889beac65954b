//! The service's configuration: one typed struct, read once at start from flags and the
//! environment (`.env.sample` lists every variable). Anything invalid stops the service at start
//! with a message naming the variable, rather than surfacing later during a call.

use std::net::SocketAddr;
use std::path::PathBuf;

use domain::{AccountSid, DialNumber};
use secrecy::SecretString;

use crate::twilio::answers::{Conversation, Ring};

/// Every environment variable the service reads. A `HOTLINE_*` variable not listed here is a typo
/// and stops the service.
pub const KNOWN_VARIABLES: &[&str] = &[
    "DATABASE_URL",
    "HOTLINE_ADDR",
    "HOTLINE_DATA_DIR",
    "HOTLINE_DB_MAX_CONNECTIONS",
    "HOTLINE_JOB_LEASE_SECS",
    "HOTLINE_LOG_FORMAT",
    "PUBLIC_BASE_URL",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_PHONE_NUMBER",
    "COUNSELOR_NUMBER",
    "CRISIS_LINE_NUMBER",
    "TWILIO_API_BASE",
    "STT_BASE_URL",
    "STT_API_KEY",
    "STT_MODEL",
    "LLM_BASE_URL",
    "LLM_API_KEY",
    "LLM_MODEL",
    "AUDIO_STORE_URL",
    "TEST_CALL_ALLOWED_NUMBERS",
    "HOTLINE_CONVERSATION",
    "HOTLINE_SPEECH_BUDGET_MS",
    "HOTLINE_VOICE_EN",
    "HOTLINE_VOICE_ES",
    "HOTLINE_GREETING_AUDIO_EN",
    "HOTLINE_GREETING_AUDIO_ES",
    "COUNSELOR_NUMBER_ES",
    "HOTLINE_RECORD_CALLS",
    "COUNSELOR_NUMBERS",
    "COUNSELOR_NUMBERS_ES",
    "HOTLINE_WHISPER",
    "HOTLINE_COUNSELOR_RING",
    "HOTLINE_ALERT_URL",
    "HOTLINE_ALERT_SECRET",
    "HOTLINE_ALERT_PERSON_WAIT_SECS",
    "HOTLINE_RELAY_TTS_PROVIDER",
    "HOTLINE_RELAY_VOICE_EN",
    "HOTLINE_RELAY_VOICE_ES",
    "HOTLINE_SPOOL_DIR",
    "HOTLINE_SPOOL_MAX_BYTES",
    "HOTLINE_RECONCILE_AFTER_SECS",
    "HOTLINE_HEADER_READ_TIMEOUT_SECS",
    "HOTLINE_BODY_TIMEOUT_SECS",
    "HOTLINE_REQUEST_TIMEOUT_SECS",
    "HOTLINE_MAX_CONNECTIONS",
];

/// Hotline's configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// How logs are written (always to stderr): text, coloured when stderr is a terminal; or json,
    /// one object per line, for production. RUST_LOG chooses what is logged.
    #[arg(long, env = "HOTLINE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// PostgreSQL connection URL. When absent, Hotline starts a private PostgreSQL from the
    /// installed binaries under HOTLINE_DATA_DIR.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Address the HTTP server listens on.
    #[arg(long, env = "HOTLINE_ADDR", default_value = "127.0.0.1:8000")]
    pub addr: SocketAddr,

    /// Where Hotline keeps its own files (the embedded database, the development auth token).
    #[arg(long, env = "HOTLINE_DATA_DIR", default_value = ".hotline")]
    pub data_dir: PathBuf,

    /// Where webhooks are kept while the database is away, until it takes them (by default
    /// `spool` under HOTLINE_DATA_DIR). On a disk that survives the process: see the README.
    #[arg(long, env = "HOTLINE_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,

    /// The most the spool holds, in bytes; when full, webhooks are still answered but not kept.
    #[arg(long, env = "HOTLINE_SPOOL_MAX_BYTES", default_value_t = crate::spool::DEFAULT_CAPACITY_BYTES,
          value_parser = clap::value_parser!(u64).range(4096..))]
    pub spool_max_bytes: u64,

    /// How long after its start a call with no end on record (its status callback lost) is
    /// looked up with Twilio, and its end recorded as Twilio reports it; asked again as often
    /// while it stays live.
    #[arg(long, env = "HOTLINE_RECONCILE_AFTER_SECS", default_value_t = 14_400,
          value_parser = clap::value_parser!(u64).range(60..))]
    pub reconcile_after_secs: u64,

    /// How long a client may take to send a request's headers, and how long a kept-alive
    /// connection may sit idle, before the server closes it. Twilio sends its headers at once.
    #[arg(long, env = "HOTLINE_HEADER_READ_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub header_read_timeout_secs: u64,

    /// How long a request's body may take to arrive.
    #[arg(long, env = "HOTLINE_BODY_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub body_timeout_secs: u64,

    /// How long any request may take to be answered (Twilio itself gives up after 15 s; the
    /// read API's exports are the slowest requests).
    #[arg(long, env = "HOTLINE_REQUEST_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub request_timeout_secs: u64,

    /// The most HTTP connections open at once; past it the oldest is closed (at once if idle).
    /// Keep it well under the process's descriptor limit (`ulimit -n`).
    #[arg(long, env = "HOTLINE_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = parse_max_connections)]
    pub max_connections: usize,

    /// The most database connections the service holds.
    #[arg(long, env = "HOTLINE_DB_MAX_CONNECTIONS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_max_connections: u32,

    /// How long a pipeline worker holds a job before another may take it over (a worker that
    /// died leaves its turn for this long). Longer than the slowest turn should take.
    #[arg(long, env = "HOTLINE_JOB_LEASE_SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub job_lease_secs: u64,

    /// The URL Twilio calls, as configured in the Twilio console (scheme, host, port if not the
    /// default, no trailing slash). Signatures are checked against it and every URL in TwiML starts
    /// with it. Defaults to http://HOTLINE_ADDR.
    #[arg(long, env = "PUBLIC_BASE_URL", value_parser = parse_base_url)]
    pub public_base_url: Option<String>,

    /// The Twilio account that owns the phone number (AC…).
    #[arg(long, env = "TWILIO_ACCOUNT_SID", value_parser = parse_account_sid)]
    pub twilio_account_sid: Option<AccountSid>,

    /// The Twilio auth token; several, comma-separated, while rotating tokens.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<String>,

    /// The Twilio phone number callers dial (E.164).
    #[arg(long, env = "TWILIO_PHONE_NUMBER", value_parser = parse_dial_number)]
    pub twilio_phone_number: Option<DialNumber>,

    /// The counselor line a caller is connected to when they ask for a person (E.164). When
    /// absent, callers are connected to the crisis line.
    #[arg(long, env = "COUNSELOR_NUMBER", value_parser = parse_dial_number)]
    pub counselor_number: Option<DialNumber>,

    /// More counselors (E.164, comma-separated), rung one after another, in this order, after
    /// COUNSELOR_NUMBER when it does not take the call.
    #[arg(long, env = "COUNSELOR_NUMBERS", value_delimiter = ',', value_parser = parse_dial_number)]
    pub counselor_numbers: Vec<DialNumber>,

    /// The same for Spanish callers, after COUNSELOR_NUMBER_ES.
    #[arg(long, env = "COUNSELOR_NUMBERS_ES", value_delimiter = ',', value_parser = parse_dial_number)]
    pub counselor_numbers_es: Vec<DialNumber>,

    /// Counselors hear a short whisper when they pick up (the caller's risk and its reasons,
    /// language, time on the line) and press 1 to take the call: true or false.
    #[arg(long, env = "HOTLINE_WHISPER", default_value_t = true, action = clap::ArgAction::Set)]
    pub whisper: bool,

    /// Where alerts are sent (JSON, signed as Standard Webhooks sign theirs): a caller at risk
    /// who has not reached a person in time, every line failing, the pipeline stalled, a broken
    /// history. Off when absent.
    #[arg(long, env = "HOTLINE_ALERT_URL")]
    pub alert_url: Option<String>,

    /// The alerts' signing secret, `whsec_` followed by base64 (required with HOTLINE_ALERT_URL).
    #[arg(long, env = "HOTLINE_ALERT_SECRET", hide_env_values = true)]
    pub alert_secret: Option<String>,

    /// How long a caller at risk may wait for a person before an alert, in seconds.
    #[arg(long, env = "HOTLINE_ALERT_PERSON_WAIT_SECS", default_value_t = 120)]
    pub alert_person_wait_secs: u64,

    /// How several counselors are rung: order (one after another, each when the one before did
    /// not take the call) or together (all at once; the first to take the call wins).
    #[arg(long, env = "HOTLINE_COUNSELOR_RING", default_value = "order", value_parser = parse_ring)]
    pub counselor_ring: Ring,

    /// The crisis line: dialled when no counselor answers, and read out to every caller.
    #[arg(long, env = "CRISIS_LINE_NUMBER", default_value = "988", value_parser = parse_dial_number)]
    pub crisis_line_number: DialNumber,

    /// Twilio's REST API (a stand-in's in tests). Only recordings under it are ever fetched.
    #[arg(long, env = "TWILIO_API_BASE", default_value = "https://api.twilio.com", value_parser = parse_base_url)]
    pub twilio_api_base: String,

    /// An OpenAI-compatible speech-to-text service (`/v1/audio/transcriptions`). Without it, the
    /// pipeline (which runs whenever Twilio credentials are set) uses Twilio's transcription.
    #[arg(long, env = "STT_BASE_URL", value_parser = parse_base_url)]
    pub stt_base_url: Option<String>,

    /// The speech-to-text service's API key.
    #[arg(long, env = "STT_API_KEY", hide_env_values = true)]
    pub stt_api_key: Option<String>,

    /// The speech-to-text model.
    #[arg(long, env = "STT_MODEL", default_value = "whisper-1")]
    pub stt_model: String,

    /// An OpenAI-compatible chat model (`/v1/chat/completions`): a second opinion on risk (it can
    /// raise the screener's level, never lower it) and replies that pass the safe-messaging guard.
    /// Without it, the vetted script answers.
    #[arg(long, env = "LLM_BASE_URL", value_parser = parse_base_url)]
    pub llm_base_url: Option<String>,

    /// The chat model's API key.
    #[arg(long, env = "LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<String>,

    /// The chat model.
    #[arg(long, env = "LLM_MODEL", default_value = "gpt-4o-mini")]
    pub llm_model: String,

    /// Where callers' recordings are kept, per call and turn: a directory, or an S3 bucket as
    /// s3://bucket/prefix (credentials, region and endpoint from the usual AWS_* variables).
    /// Defaults to HOTLINE_DATA_DIR/recordings.
    #[arg(long, env = "AUDIO_STORE_URL")]
    pub audio_store_url: Option<String>,

    /// The numbers `POST /api/test-call/` may call (E.164, comma-separated). Empty: no test calls.
    #[arg(long, env = "TEST_CALL_ALLOWED_NUMBERS", value_delimiter = ',', value_parser = parse_dial_number)]
    pub test_call_allowed_numbers: Vec<DialNumber>,

    /// How the caller's turns are heard: speech (Twilio recognises the words and the answer comes
    /// back in the same response), record (each turn recorded, transcribed and answered by a REST
    /// update), or relay (a live ConversationRelay session over a WebSocket).
    #[arg(long, env = "HOTLINE_CONVERSATION", default_value = "speech", value_parser = parse_conversation)]
    pub conversation: Conversation,

    /// How long a speech turn's answer (the model included) may take while Twilio waits, in
    /// milliseconds; a slower answer is left to the pipeline while the caller hears a holding line.
    #[arg(long, env = "HOTLINE_SPEECH_BUDGET_MS", default_value_t = 2500,
          value_parser = clap::value_parser!(u64).range(100..=10_000))]
    pub speech_budget_ms: u64,

    /// The text-to-speech voice for English (`<Say voice>`).
    #[arg(long, env = "HOTLINE_VOICE_EN", default_value = "Polly.Joanna")]
    pub voice_en: String,

    /// The text-to-speech voice for Spanish.
    #[arg(long, env = "HOTLINE_VOICE_ES", default_value = "Polly.Lupe")]
    pub voice_es: String,

    /// The live session's text-to-speech provider (`Google`, `Amazon`, `ElevenLabs`); Twilio's
    /// default when absent.
    #[arg(long, env = "HOTLINE_RELAY_TTS_PROVIDER")]
    pub relay_tts_provider: Option<String>,

    /// The live session's English voice, as its provider names it; the provider's default
    /// English voice when absent.
    #[arg(long, env = "HOTLINE_RELAY_VOICE_EN")]
    pub relay_voice_en: Option<String>,

    /// The live session's Spanish voice, as its provider names it.
    #[arg(long, env = "HOTLINE_RELAY_VOICE_ES")]
    pub relay_voice_es: Option<String>,

    /// A pre-recorded English greeting (an audio URL Twilio can fetch), played instead of the
    /// spoken one.
    #[arg(long, env = "HOTLINE_GREETING_AUDIO_EN", value_parser = parse_base_url)]
    pub greeting_audio_en: Option<String>,

    /// A pre-recorded Spanish greeting.
    #[arg(long, env = "HOTLINE_GREETING_AUDIO_ES", value_parser = parse_base_url)]
    pub greeting_audio_es: Option<String>,

    /// The counselor line for callers who speak Spanish (E.164). Defaults to COUNSELOR_NUMBER.
    #[arg(long, env = "COUNSELOR_NUMBER_ES", value_parser = parse_dial_number)]
    pub counselor_number_es: Option<DialNumber>,

    /// Record each whole call (Twilio's `<Start><Recording>`, kept in the audio store): true or
    /// false. By default calls are recorded in speech and relay modes, where no turn has a
    /// recording of its own, and not in record mode, where every turn is recorded already.
    #[arg(long, env = "HOTLINE_RECORD_CALLS", action = clap::ArgAction::Set)]
    pub record_calls: Option<bool>,
}

fn parse_max_connections(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (16..=100_000).contains(&n) => Ok(n),
        _ => Err("a number of connections from 16 to 100000".into()),
    }
}

fn parse_ring(value: &str) -> Result<Ring, String> {
    Ring::parse(value).ok_or_else(|| format!("'{value}' is not one of order, together"))
}

fn parse_conversation(value: &str) -> Result<Conversation, String> {
    Conversation::parse(value)
        .ok_or_else(|| format!("'{value}' is not one of speech, record, relay"))
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown environment variable {0}: known ones are {known}", known = KNOWN_VARIABLES.join(", "))]
    UnknownVariable(String),
    #[error("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must be given together")]
    IncompleteTwilio,
    #[error("TWILIO_AUTH_TOKEN has an empty entry")]
    EmptyToken,
    #[error(transparent)]
    Alerts(#[from] crate::alerts::AlertConfigError),
}

impl Config {
    /// Where recordings are kept: `AUDIO_STORE_URL`, or a directory under the data directory.
    pub fn audio_store_url(&self) -> String {
        self.audio_store_url
            .clone()
            .unwrap_or_else(|| self.data_dir.join("recordings").display().to_string())
    }

    /// Where the spool lives: `HOTLINE_SPOOL_DIR`, or `spool` under the data directory.
    pub fn spool_dir(&self) -> PathBuf {
        self.spool_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("spool"))
    }

    /// Refuses variables that look like ours but are not, and settings that only work together.
    pub fn check(&self, environment: impl IntoIterator<Item = String>) -> Result<(), ConfigError> {
        for name in environment {
            if name.starts_with("HOTLINE_") && !KNOWN_VARIABLES.contains(&name.as_str()) {
                return Err(ConfigError::UnknownVariable(name));
            }
        }
        if self.twilio_account_sid.is_some() != self.twilio_auth_token.is_some() {
            return Err(ConfigError::IncompleteTwilio);
        }
        if self.auth_tokens().iter().any(|t| t.is_empty()) {
            return Err(ConfigError::EmptyToken);
        }
        self.alerts()?;
        Ok(())
    }

    /// Where alerts go, when `HOTLINE_ALERT_URL` is set.
    pub fn alerts(&self) -> Result<Option<crate::alerts::AlertConfig>, ConfigError> {
        let Some(url) = &self.alert_url else {
            return Ok(None);
        };
        let secret = self
            .alert_secret
            .as_deref()
            .ok_or(crate::alerts::AlertConfigError::Secret)?;
        let wait = std::time::Duration::from_secs(self.alert_person_wait_secs);
        Ok(Some(crate::alerts::AlertConfig::new(url, secret, wait)?))
    }

    /// The configured auth tokens, in order (the current one first).
    fn auth_tokens(&self) -> Vec<&str> {
        self.twilio_auth_token
            .as_deref()
            .map(|tokens| tokens.split(',').map(str::trim).collect())
            .unwrap_or_default()
    }

    /// The auth tokens as secrets, for the signature validator.
    pub fn secret_auth_tokens(&self) -> Vec<SecretString> {
        self.auth_tokens()
            .into_iter()
            .map(SecretString::from)
            .collect()
    }

    /// Whether real Twilio credentials are configured.
    pub fn has_twilio_credentials(&self) -> bool {
        self.twilio_auth_token.is_some()
    }

    /// Whether each whole call is recorded (see `record_calls`).
    pub fn records_calls(&self) -> bool {
        self.record_calls
            .unwrap_or(self.conversation != Conversation::Record)
    }

    /// The URL Twilio calls.
    pub fn public_base_url(&self) -> String {
        self.public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.addr))
    }

    /// The counselor line, or the crisis line when none is configured.
    pub fn counselor_line(&self) -> DialNumber {
        self.counselor_number
            .clone()
            .unwrap_or_else(|| self.crisis_line_number.clone())
    }
}

fn parse_base_url(value: &str) -> Result<String, String> {
    let value = value.trim_end_matches('/');
    let Some((scheme, rest)) = value.split_once("://") else {
        return Err("must start with http:// or https://".into());
    };
    if !matches!(scheme, "http" | "https") {
        return Err("must start with http:// or https://".into());
    }
    if rest.is_empty() || rest.contains(['?', '#', ' ']) {
        return Err(
            "must be scheme://host[:port][/prefix] with no query, fragment or spaces".into(),
        );
    }
    Ok(value.to_owned())
}

fn parse_account_sid(value: &str) -> Result<AccountSid, String> {
    AccountSid::parse(value).map_err(|e| e.to_string())
}

fn parse_dial_number(value: &str) -> Result<DialNumber, String> {
    DialNumber::parse(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Cli::try_parse_from(std::iter::once("hotline").chain(args.iter().copied()))
            .map(|c| c.config)
    }

    #[test]
    fn defaults_need_no_setup() {
        let config = parse(&[]).expect("parses");
        assert_eq!(config.addr.to_string(), "127.0.0.1:8000");
        assert_eq!(config.public_base_url(), "http://127.0.0.1:8000");
        assert_eq!(config.counselor_line().as_str(), "988");
        assert!(!config.has_twilio_credentials());
        assert!(config.check(Vec::new()).is_ok());
    }

    #[test]
    fn invalid_values_are_refused_with_the_reason() {
        for args in [
            &["--addr", "nowhere"][..],
            &["--public-base-url", "ftp://x"],
            &["--public-base-url", "https://x/?a=1"],
            &["--counselor-number", "call me"],
            &["--twilio-account-sid", "AC123"],
            &["--db-max-connections", "0"],
        ] {
            assert!(parse(args).is_err(), "{args:?} was accepted");
        }
    }

    #[test]
    fn unknown_hotline_variables_and_half_credentials_are_refused() {
        let config = parse(&[]).expect("parses");
        assert!(matches!(
            config.check(vec!["HOTLINE_ADRR".to_owned(), "PATH".to_owned()]),
            Err(ConfigError::UnknownVariable(name)) if name == "HOTLINE_ADRR"
        ));
        let half = parse(&["--twilio-auth-token", "x"]).expect("parses");
        assert!(matches!(
            half.check(Vec::new()),
            Err(ConfigError::IncompleteTwilio)
        ));
    }

    #[test]
    fn several_tokens_are_accepted_for_rotation() {
        let config = parse(&[
            "--twilio-account-sid",
            "AC0123456789abcdef0123456789abcdef",
            "--twilio-auth-token",
            "new, old",
            "--public-base-url",
            "https://hotline.example.org/",
        ])
        .expect("parses");
        assert!(config.check(Vec::new()).is_ok());
        assert_eq!(config.secret_auth_tokens().len(), 2);
        assert_eq!(config.public_base_url(), "https://hotline.example.org");
    }
}
