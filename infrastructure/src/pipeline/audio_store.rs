//! The audio store on `object_store`: callers' recordings kept per call and turn, in a local
//! directory by default or in an S3 bucket (or any S3-compatible service) when configured.
//!
//! Keys are `recordings/{call_id}/turn-{turn}.{ext}` for a turn and
//! `recordings/{call_id}/call-{RecordingSid}.{ext}` for the whole call: the extension carries the content type,
//! because not every backend stores attributes (the local filesystem does not).

use std::sync::Arc;

use application::ports::{Audio, AudioStore, Failure, PortError, Service};
use async_trait::async_trait;
use domain::{CallId, RecordingSid};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

/// Why an audio store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AudioStoreError {
    #[error("AUDIO_STORE_URL must be a directory path, file:// or s3:// URL, not '{0}'")]
    Scheme(String),
    #[error("could not create the recordings directory {path}: {source}")]
    Directory {
        path: String,
        source: std::io::Error,
    },
    #[error("could not open the audio store: {0}")]
    Open(#[from] object_store::Error),
}

/// Recordings in an object store.
#[derive(Debug, Clone)]
pub struct ObjectAudioStore {
    store: Arc<dyn ObjectStore>,
    /// Where under the store's root the recordings go (an S3 URL's path).
    prefix: Path,
}

impl ObjectAudioStore {
    /// Opens the store `url` names: a directory (a plain path or `file://`), or an S3 bucket
    /// (`s3://bucket/prefix`, with credentials, region and endpoint from the usual `AWS_*`
    /// variables).
    pub fn open(url: &str) -> Result<Self, AudioStoreError> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (_, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let store = AmazonS3Builder::from_env().with_url(url).build()?;
            return Ok(Self {
                store: Arc::new(store),
                prefix: Path::from(prefix),
            });
        }
        let dir = url.strip_prefix("file://").unwrap_or(url);
        if dir.is_empty() || url.contains("://") && !url.starts_with("file://") {
            return Err(AudioStoreError::Scheme(url.to_owned()));
        }
        Self::local(std::path::Path::new(dir))
    }

    /// Recordings under the directory `dir`, created if missing.
    pub fn local(dir: &std::path::Path) -> Result<Self, AudioStoreError> {
        std::fs::create_dir_all(dir).map_err(|source| AudioStoreError::Directory {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(Self {
            store: Arc::new(LocalFileSystem::new_with_prefix(dir)?),
            prefix: Path::default(),
        })
    }

    fn path(&self, key: &str) -> Path {
        self.prefix.parts().chain(Path::from(key).parts()).collect()
    }
}

/// The file extension for a content type, and back.
const EXTENSIONS: [(&str, &str); 3] = [
    ("audio/x-wav", "wav"),
    ("audio/wav", "wav"),
    ("audio/mpeg", "mp3"),
];

fn extension(content_type: &str) -> &'static str {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    EXTENSIONS
        .iter()
        .find(|(ct, _)| ct.eq_ignore_ascii_case(essence))
        .map_or("bin", |(_, ext)| ext)
}

/// The content type a key's extension stands for (the inverse of `extension`).
#[cfg(test)]
fn content_type(key: &str) -> &'static str {
    match key.rsplit_once('.').map(|(_, ext)| ext) {
        Some("wav") => "audio/x-wav",
        Some("mp3") => "audio/mpeg",
        _ => "application/octet-stream",
    }
}

/// The key of turn `turn` of call `call_id`.
pub fn recording_key(call_id: CallId, turn: u32, content_type: &str) -> String {
    format!(
        "recordings/{call_id}/turn-{turn:03}.{}",
        extension(content_type)
    )
}

/// The key of the recording `recording` of the whole call `call_id`.
pub fn call_recording_key(call_id: CallId, recording: &RecordingSid, content_type: &str) -> String {
    format!(
        "recordings/{call_id}/call-{}.{}",
        recording.as_str(),
        extension(content_type)
    )
}

fn port_error(error: object_store::Error) -> PortError {
    // The class shows; the store's message, which can carry a bucket URL or a local path, is
    // only the source.
    let failure = match error {
        object_store::Error::NotFound { .. } => Failure::NotFound,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => Failure::Denied,
        _ => Failure::Failed,
    };
    PortError::new(Service::AudioStore, failure).caused_by(error)
}

impl ObjectAudioStore {
    async fn put(&self, key: String, audio: &Audio) -> Result<String, PortError> {
        let payload = PutPayload::from(bytes::Bytes::from(audio.bytes.clone()));
        self.store
            .put(&self.path(&key), payload)
            .await
            .map_err(|error| {
                tracing::warn!(error = %error, "audio store write failed");
                port_error(error)
            })?;
        Ok(key)
    }
}

#[async_trait]
impl AudioStore for ObjectAudioStore {
    async fn keep(&self, call_id: CallId, turn: u32, audio: &Audio) -> Result<String, PortError> {
        self.put(recording_key(call_id, turn, &audio.content_type), audio)
            .await
    }

    async fn keep_call(
        &self,
        call_id: CallId,
        recording: &RecordingSid,
        audio: &Audio,
    ) -> Result<String, PortError> {
        self.put(
            call_recording_key(call_id, recording, &audio.content_type),
            audio,
        )
        .await
    }
}

#[cfg(test)]
impl ObjectAudioStore {
    /// The audio kept under `key` (only the tests read recordings back; operators fetch them from
    /// the bucket or directory itself).
    async fn load(&self, key: &str) -> Result<Audio, PortError> {
        let got = self.store.get(&self.path(key)).await.map_err(port_error)?;
        let bytes = got.bytes().await.map_err(port_error)?;
        Ok(Audio {
            bytes: bytes.to_vec(),
            content_type: content_type(key).to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> CallId {
        CallId::for_call_sid(
            &domain::CallSid::parse("CA0123456789abcdef0123456789abcdef").expect("a sid"),
        )
    }

    #[test]
    fn keys_name_the_call_and_the_turn_and_keep_the_type() {
        let key = recording_key(call(), 2, "audio/x-wav");
        assert_eq!(key, format!("recordings/{}/turn-002.wav", call()));
        assert_eq!(content_type(&key), "audio/x-wav");
        assert_eq!(
            content_type(&recording_key(call(), 1, "audio/mpeg; q=1")),
            "audio/mpeg"
        );
        assert!(recording_key(call(), 1, "text/html").ends_with(".bin"));
        let recording = RecordingSid::parse("RE0123456789abcdef0123456789abcdef").expect("a sid");
        assert_eq!(
            call_recording_key(call(), &recording, "audio/x-wav"),
            format!("recordings/{}/call-{}.wav", call(), recording.as_str())
        );
    }

    #[test]
    fn unknown_schemes_are_refused() {
        assert!(matches!(
            ObjectAudioStore::open("gs://bucket/x"),
            Err(AudioStoreError::Scheme(_))
        ));
        assert!(matches!(
            ObjectAudioStore::open(""),
            Err(AudioStoreError::Scheme(_))
        ));
    }

    #[tokio::test]
    async fn a_kept_recording_reads_back_and_a_second_copy_replaces_it() {
        let dir = std::env::temp_dir().join(format!("hotline-audio-{}", uuid::Uuid::new_v4()));
        let store = ObjectAudioStore::open(&format!("file://{}", dir.display())).expect("opens");
        let first = Audio {
            bytes: b"RIFF-one".to_vec(),
            content_type: "audio/x-wav".into(),
        };
        let key = store.keep(call(), 1, &first).await.expect("kept");
        assert!(dir.join(&key).is_file(), "the file is under the directory");
        assert_eq!(store.load(&key).await.expect("loads"), first);

        let second = Audio {
            bytes: b"RIFF-two".to_vec(),
            content_type: "audio/x-wav".into(),
        };
        assert_eq!(store.keep(call(), 1, &second).await.expect("kept"), key);
        assert_eq!(store.load(&key).await.expect("loads"), second);
        assert_eq!(
            store.load("recordings/none.wav").await,
            Err(PortError::new(Service::AudioStore, Failure::NotFound))
        );
        std::fs::remove_dir_all(dir).expect("cleaned up");
    }
}
