//! The spool on disk: an append-only journal of webhooks' commands, kept while the event store is
//! away (see `application::spool`).
//!
//! Layout, under its directory (by default `<data dir>/spool`, mode 0700):
//! - `id`: the spool's own id, made once, so that positions are unique across spools;
//! - `replayed`: the sequence of the last entry replayed into the store (written to a temporary
//!   file, synced and renamed over the old one, so it is always whole);
//! - `segment-<first sequence>.log`: the entries, each `[length u32][crc32 u32][sequence u64]`
//!   (little-endian) then the entry as JSON. The checksum covers the sequence and the JSON.
//!
//! Each entry is synced to disk (`fdatasync`) before `keep` returns: the caller is answered only
//! once their webhook would survive a crash. A torn last entry (the process died mid-write, so
//! its webhook was never answered) is cut off when the spool is opened; a corrupt entry
//! elsewhere is skipped and logged. Segments whose every entry was replayed are deleted.
//!
//! The spool holds what the store holds (numbers, words): it lives in the data directory, which
//! only the service's user may read. If the disk is lost while entries wait, those webhooks are
//! lost with it: `/health` shows how many wait.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use application::spool::{Spool, SpoolError, SpoolPosition, SpoolStats, Spooled};
use async_trait::async_trait;
use domain::CallId;
use tokio::sync::Notify;

/// How large one segment grows before the next is started.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

/// The largest entry the spool takes (a webhook's command is a few kilobytes).
const MAX_ENTRY_BYTES: usize = 1024 * 1024;

/// Above this share of its capacity, the spool warns (once, until it empties below half).
const WARN_AT: f64 = 0.8;

/// The default capacity: many hours of webhooks for a busy line.
pub const DEFAULT_CAPACITY_BYTES: u64 = 256 * 1024 * 1024;

const HEADER: usize = 16;

/// A spool in a directory. Cheap to clone: clones share it.
#[derive(Clone)]
pub struct FileSpool {
    inner: Arc<Mutex<Inner>>,
    wake: Arc<Notify>,
    id: String,
    /// Held (locked) while the spool is open: one process per spool directory.
    _lock: Arc<File>,
}

impl std::fmt::Debug for FileSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSpool")
            .field("id", &self.id)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct Inner {
    dir: PathBuf,
    capacity: u64,
    /// Entries not yet replayed, oldest first, with their size on disk.
    pending: VecDeque<(u64, Spooled, u64)>,
    /// How many pending entries each call has.
    holds: HashMap<CallId, u32>,
    /// Segments on disk: first sequence, last sequence, path.
    segments: Vec<Segment>,
    /// The segment appended to, open.
    current: Option<File>,
    next_sequence: u64,
    replayed_through: u64,
    stats: SpoolStats,
    warned: bool,
}

struct Segment {
    first: u64,
    last: Option<u64>,
    path: PathBuf,
    bytes: u64,
}

impl FileSpool {
    /// Opens the spool in `dir` (made if missing), holding at most `capacity` bytes of entries
    /// waiting, and reads back what waits in it.
    pub fn open(dir: &Path, capacity: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        restrict(dir)?;
        // Two processes on one spool would number entries alike and delete each other's
        // segments: each instance needs a spool directory of its own.
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        if let Err(error) = lock.try_lock() {
            return Err(io::Error::other(format!(
                "the spool in {} is in use by another process ({error}): give each instance its own HOTLINE_SPOOL_DIR",
                dir.display()
            )));
        }
        let id = read_or_make_id(dir)?;
        let replayed_through = match fs::read_to_string(dir.join("replayed")) {
            Ok(text) => text.trim().parse().unwrap_or(0),
            Err(error) if error.kind() == io::ErrorKind::NotFound => 0,
            Err(error) => return Err(error),
        };
        let mut inner = Inner {
            dir: dir.to_owned(),
            capacity,
            pending: VecDeque::new(),
            holds: HashMap::new(),
            segments: Vec::new(),
            current: None,
            next_sequence: replayed_through + 1,
            replayed_through,
            stats: SpoolStats {
                capacity_bytes: capacity,
                ..SpoolStats::default()
            },
            warned: false,
        };
        inner.read_back()?;
        inner.drop_replayed_segments();
        if !inner.pending.is_empty() {
            tracing::warn!(
                pending = inner.pending.len(),
                "the spool holds webhooks the store has not taken yet; they are replayed when it answers"
            );
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
            wake: Arc::new(Notify::new()),
            id,
            _lock: Arc::new(lock),
        })
    }

    fn position(&self, sequence: u64) -> SpoolPosition {
        SpoolPosition {
            spool: self.id.clone(),
            sequence,
        }
    }

    fn locked<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> Result<T, SpoolError> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| SpoolError::Io("the spool's lock was poisoned".into()))?;
        Ok(f(&mut inner))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Inner) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, SpoolError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.locked(f)?)
            .await
            .map_err(|error| SpoolError::Io(error.to_string()))?
    }
}

#[async_trait]
impl Spool for FileSpool {
    async fn keep(&self, entry: Spooled) -> Result<SpoolPosition, SpoolError> {
        let payload = serde_json::to_vec(&entry).map_err(|e| SpoolError::Io(e.to_string()))?;
        if payload.len() > MAX_ENTRY_BYTES {
            return Err(SpoolError::Io(format!(
                "an entry of {} bytes is larger than the spool takes",
                payload.len()
            )));
        }
        let sequence = self
            .blocking(move |inner| inner.append(entry, &payload))
            .await?;
        self.wake.notify_one();
        Ok(self.position(sequence))
    }

    fn holds(&self, id: CallId) -> bool {
        self.locked(|inner| inner.holds.contains_key(&id))
            .unwrap_or(false)
    }

    async fn oldest(&self, limit: usize) -> Result<Vec<(SpoolPosition, Spooled)>, SpoolError> {
        let entries = self.locked(|inner| {
            inner
                .pending
                .iter()
                .take(limit)
                .map(|(sequence, entry, _)| (*sequence, entry.clone()))
                .collect::<Vec<_>>()
        })?;
        Ok(entries
            .into_iter()
            .map(|(sequence, entry)| (self.position(sequence), entry))
            .collect())
    }

    async fn replayed(&self, through: &SpoolPosition, refused: u64) -> Result<(), SpoolError> {
        if through.spool != self.id {
            return Err(SpoolError::Io("a position of another spool".into()));
        }
        let sequence = through.sequence;
        self.blocking(move |inner| inner.mark_replayed(sequence, refused))
            .await
    }

    fn stats(&self) -> SpoolStats {
        self.locked(|inner| inner.stats).unwrap_or_default()
    }

    async fn kept(&self) {
        self.wake.notified().await;
    }
}

impl Inner {
    /// Reads every segment's entries; those after the replayed mark wait.
    fn read_back(&mut self) -> io::Result<()> {
        let mut paths: Vec<(u64, PathBuf)> = fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let first = name
                    .strip_prefix("segment-")?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()?;
                Some((first, entry.path()))
            })
            .collect();
        paths.sort();
        let count = paths.len();
        for (index, (first, path)) in paths.into_iter().enumerate() {
            let last_segment = index + 1 == count;
            let mut segment = Segment {
                first,
                last: None,
                path,
                bytes: 0,
            };
            self.read_segment(&mut segment, last_segment)?;
            self.segments.push(segment);
        }
        Ok(())
    }

    fn read_segment(&mut self, segment: &mut Segment, last_segment: bool) -> io::Result<()> {
        let mut bytes = Vec::new();
        File::open(&segment.path)?.read_to_end(&mut bytes)?;
        let mut offset = 0;
        while offset < bytes.len() {
            let record = decode(&bytes[offset..]);
            if let Decoded::Damaged { size } = record {
                // Whole but failing its checksum: skipped, and the entries after it kept.
                tracing::error!(
                    offset,
                    "a spooled entry is damaged (its checksum fails); skipped"
                );
                offset += size;
                continue;
            }
            let Decoded::Whole(sequence, entry, size) = record else {
                if last_segment {
                    tracing::warn!(
                        offset,
                        "the spool's last entry is incomplete (the process stopped while writing it); cut off"
                    );
                    OpenOptions::new()
                        .write(true)
                        .open(&segment.path)?
                        .set_len(offset as u64)?;
                } else {
                    tracing::error!(
                        offset,
                        "a spool segment holds a damaged entry; the rest of that segment is skipped"
                    );
                }
                break;
            };
            offset += size;
            segment.last = Some(sequence);
            self.next_sequence = self.next_sequence.max(sequence + 1);
            if sequence > self.replayed_through {
                if let Some(entry) = entry {
                    self.hold(sequence, *entry, size as u64);
                }
            }
        }
        segment.bytes = offset as u64;
        Ok(())
    }

    fn hold(&mut self, sequence: u64, entry: Spooled, size: u64) {
        *self.holds.entry(entry.call_id).or_default() += 1;
        self.pending.push_back((sequence, entry, size));
        self.stats.pending += 1;
        self.stats.bytes += size;
    }

    fn append(&mut self, entry: Spooled, payload: &[u8]) -> Result<u64, SpoolError> {
        let size = (HEADER + payload.len()) as u64;
        if self.stats.bytes + size > self.capacity {
            self.stats.full += 1;
            return Err(SpoolError::Full {
                capacity_bytes: self.capacity,
            });
        }
        let sequence = self.next_sequence;
        let record = encode(sequence, payload);
        self.write(sequence, &record)
            .map_err(|error| SpoolError::Io(error.to_string()))?;
        self.next_sequence += 1;
        self.hold(sequence, entry, size);
        self.stats.kept += 1;
        let filled = self.stats.bytes as f64 / self.capacity.max(1) as f64;
        if filled >= WARN_AT && !self.warned {
            self.warned = true;
            tracing::warn!(
                bytes = self.stats.bytes,
                capacity = self.capacity,
                "the spool is filling up: the store has been away a long time; once full, webhooks are answered and lost"
            );
        }
        Ok(sequence)
    }

    /// Appends `record` to the current segment (a new one when it is full) and syncs it.
    fn write(&mut self, sequence: u64, record: &[u8]) -> io::Result<()> {
        let full = self
            .segments
            .last()
            .is_none_or(|segment| segment.bytes + record.len() as u64 > SEGMENT_BYTES);
        if self.current.is_none() || full {
            let reuse = !full && self.segments.last().is_some();
            let path = match (reuse, self.segments.last()) {
                (true, Some(segment)) => segment.path.clone(),
                _ => {
                    let path = self.dir.join(format!("segment-{sequence:020}.log"));
                    self.segments.push(Segment {
                        first: sequence,
                        last: None,
                        path: path.clone(),
                        bytes: 0,
                    });
                    path
                }
            };
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            sync_dir(&self.dir)?;
            self.current = Some(file);
        }
        let file = self
            .current
            .as_mut()
            .ok_or_else(|| io::Error::other("no segment"))?;
        let written = file.write_all(record).and_then(|()| file.sync_data());
        if let Err(error) = written {
            // What was half written is cut off at once, so that the next entry follows the last
            // whole one; if even that fails, the next entry starts a segment of its own.
            let whole = self.segments.last().map_or(0, |segment| segment.bytes);
            if file.set_len(whole).and_then(|()| file.sync_data()).is_err() {
                if let Some(segment) = self.segments.last_mut() {
                    segment.bytes = SEGMENT_BYTES;
                }
            }
            self.current = None;
            return Err(error);
        }
        if let Some(segment) = self.segments.last_mut() {
            segment.bytes += record.len() as u64;
            segment.last = Some(sequence);
        }
        Ok(())
    }

    fn mark_replayed(&mut self, through: u64, refused: u64) -> Result<(), SpoolError> {
        if through <= self.replayed_through {
            return Ok(());
        }
        let tmp = self.dir.join("replayed.tmp");
        let written = (|| -> io::Result<()> {
            let mut file = File::create(&tmp)?;
            writeln!(file, "{through}")?;
            file.sync_all()?;
            fs::rename(&tmp, self.dir.join("replayed"))?;
            sync_dir(&self.dir)
        })();
        written.map_err(|error| SpoolError::Io(error.to_string()))?;
        self.replayed_through = through;
        while self
            .pending
            .front()
            .is_some_and(|(sequence, _, _)| *sequence <= through)
        {
            if let Some((_, entry, size)) = self.pending.pop_front() {
                if let Some(count) = self.holds.get_mut(&entry.call_id) {
                    *count -= 1;
                    if *count == 0 {
                        self.holds.remove(&entry.call_id);
                    }
                }
                self.stats.pending -= 1;
                self.stats.bytes -= size;
                self.stats.replayed += 1;
            }
        }
        self.stats.refused += refused;
        self.stats.replayed -= refused.min(self.stats.replayed);
        if (self.stats.bytes as f64) < self.capacity as f64 / 2.0 {
            self.warned = false;
        }
        self.drop_replayed_segments();
        Ok(())
    }

    /// Deletes the segments whose every entry was replayed, but the one appended to.
    fn drop_replayed_segments(&mut self) {
        let through = self.replayed_through;
        let count = self.segments.len();
        let mut kept = Vec::with_capacity(count);
        for (index, segment) in std::mem::take(&mut self.segments).into_iter().enumerate() {
            let done = segment.last.is_none_or(|last| last <= through) && segment.first <= through;
            let appended_to = index + 1 == count && self.current.is_some();
            if done && !appended_to {
                if let Err(error) = fs::remove_file(&segment.path) {
                    tracing::warn!(%error, "could not delete a replayed spool segment");
                    kept.push(segment);
                }
            } else {
                kept.push(segment);
            }
        }
        self.segments = kept;
    }
}

/// One record: header, then the payload.
fn encode(sequence: u64, payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER + payload.len());
    let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    record.extend_from_slice(&length.to_le_bytes());
    record.extend_from_slice(&checksum(sequence, payload).to_le_bytes());
    record.extend_from_slice(&sequence.to_le_bytes());
    record.extend_from_slice(payload);
    record
}

/// What the start of a segment's remaining bytes holds.
enum Decoded {
    /// A whole record: its sequence, its entry (`None` if it no longer reads as an entry, from an
    /// older version), and its size.
    Whole(u64, Option<Box<Spooled>>, usize),
    /// A record of `size` bytes whose checksum fails.
    Damaged { size: usize },
    /// Less than a record: the tail of a write that never finished, or a length that is itself
    /// damaged (nothing after it can be found).
    Incomplete,
}

fn decode(bytes: &[u8]) -> Decoded {
    let Some(header) = bytes.get(..HEADER) else {
        return Decoded::Incomplete;
    };
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let mut sequence = [0u8; 8];
    sequence.copy_from_slice(&header[8..16]);
    let sequence = u64::from_le_bytes(sequence);
    if length > MAX_ENTRY_BYTES {
        return Decoded::Incomplete;
    }
    let Some(payload) = bytes.get(HEADER..HEADER + length) else {
        return Decoded::Incomplete;
    };
    if checksum(sequence, payload) != crc {
        return Decoded::Damaged {
            size: HEADER + length,
        };
    }
    // The parser's message may quote the entry (a caller's words): only the sequence is logged.
    let entry = serde_json::from_slice(payload).ok().map(Box::new);
    if entry.is_none() {
        tracing::error!(sequence, "a spooled entry no longer reads as one; skipped");
    }
    Decoded::Whole(sequence, entry, HEADER + length)
}

fn checksum(sequence: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&sequence.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

fn read_or_make_id(dir: &Path) -> io::Result<String> {
    let path = dir.join("id");
    match fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        Ok(_) => make_id(dir, &path),
        Err(error) if error.kind() == io::ErrorKind::NotFound => make_id(dir, &path),
        Err(error) => Err(error),
    }
}

fn make_id(dir: &Path, path: &Path) -> io::Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    let mut file = File::create(path)?;
    writeln!(file, "{id}")?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(id)
}

/// Makes a new or renamed file's name durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(unix)]
fn restrict(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn restrict(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use application::CommandMetadata;
    use chrono::Utc;
    use domain::CallSid;

    fn entry(n: u32) -> Spooled {
        let sid = CallSid::parse(&format!("CA{n:032x}")).expect("valid");
        Spooled {
            call_id: CallId::for_call_sid(&sid),
            command: domain::fixtures::start_call(&sid, Utc::now()),
            metadata: CommandMetadata {
                request_id: format!("req-{n}"),
                idempotency_token: None,
                actor: "twilio".into(),
                received_at: Utc::now(),
                spool_entry: None,
            },
        }
    }

    async fn requests(spool: &FileSpool) -> Vec<String> {
        spool
            .oldest(100)
            .await
            .expect("reads")
            .into_iter()
            .map(|(_, e)| e.metadata.request_id)
            .collect()
    }

    #[tokio::test]
    async fn what_is_kept_survives_a_restart_in_order_until_replayed() {
        let dir = tempfile::tempdir().expect("a directory");
        let spool = FileSpool::open(dir.path(), DEFAULT_CAPACITY_BYTES).expect("opens");
        let mut positions = Vec::new();
        for n in 1..=3 {
            positions.push(spool.keep(entry(n)).await.expect("kept"));
        }
        assert!(spool.holds(entry(2).call_id));
        drop(spool);

        let spool = FileSpool::open(dir.path(), DEFAULT_CAPACITY_BYTES).expect("opens again");
        assert_eq!(requests(&spool).await, ["req-1", "req-2", "req-3"]);
        spool.replayed(&positions[1], 0).await.expect("marked");
        assert!(!spool.holds(entry(2).call_id));
        assert_eq!(spool.stats().pending, 1);
        drop(spool);

        let spool = FileSpool::open(dir.path(), DEFAULT_CAPACITY_BYTES).expect("opens again");
        assert_eq!(requests(&spool).await, ["req-3"]);
        let next = spool.keep(entry(4)).await.expect("kept");
        assert_eq!(next.sequence, 4, "sequences go on after a restart");
        assert_eq!(positions[0].spool, next.spool, "the same spool");
    }

    #[tokio::test]
    async fn a_torn_last_entry_is_cut_off_and_a_damaged_one_never_replayed() {
        let dir = tempfile::tempdir().expect("a directory");
        let spool = FileSpool::open(dir.path(), DEFAULT_CAPACITY_BYTES).expect("opens");
        spool.keep(entry(1)).await.expect("kept");
        spool.keep(entry(2)).await.expect("kept");
        drop(spool);
        let segment = fs::read_dir(dir.path())
            .expect("lists")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "log"))
            .expect("a segment");
        // The process died while writing the second entry.
        let length = fs::metadata(&segment).expect("exists").len();
        OpenOptions::new()
            .write(true)
            .open(&segment)
            .expect("opens")
            .set_len(length - 5)
            .expect("cut");
        let spool = FileSpool::open(dir.path(), DEFAULT_CAPACITY_BYTES).expect("opens");
        assert_eq!(requests(&spool).await, ["req-1"]);
        // What comes next is written after the whole entries, and reads back.
        spool.keep(entry(3)).await.expect("kept");
        drop(spool);
        let spool = FileSpool::open(dir.path(), DEFAULT_CAPACITY_BYTES).expect("opens");
        assert_eq!(requests(&spool).await, ["req-1", "req-3"]);
        drop(spool);

        // A flipped byte in the first entry: it fails its checksum and is not replayed; the
        // entry after it is.
        let mut bytes = fs::read(&segment).expect("reads");
        bytes[HEADER + 3] ^= 0xff;
        fs::write(&segment, &bytes).expect("writes");
        let spool = FileSpool::open(dir.path(), DEFAULT_CAPACITY_BYTES).expect("opens");
        assert_eq!(requests(&spool).await, ["req-3"]);
    }

    #[tokio::test]
    async fn a_full_spool_refuses_and_says_so() {
        let dir = tempfile::tempdir().expect("a directory");
        let one = (HEADER + serde_json::to_vec(&entry(1)).expect("json").len()) as u64;
        let spool = FileSpool::open(dir.path(), one * 2).expect("opens");
        spool.keep(entry(1)).await.expect("kept");
        spool.keep(entry(2)).await.expect("kept");
        assert!(matches!(
            spool.keep(entry(3)).await,
            Err(SpoolError::Full { .. })
        ));
        let stats = spool.stats();
        assert_eq!((stats.pending, stats.kept, stats.full), (2, 2, 1));
        let oldest = spool.oldest(1).await.expect("reads");
        spool.replayed(&oldest[0].0, 0).await.expect("marked");
        spool.keep(entry(3)).await.expect("room again");
    }

    #[tokio::test]
    async fn a_spool_in_use_is_not_opened_twice() {
        let dir = tempfile::tempdir().expect("a directory");
        let spool = FileSpool::open(dir.path(), DEFAULT_CAPACITY_BYTES).expect("opens");
        let again = FileSpool::open(dir.path(), DEFAULT_CAPACITY_BYTES);
        assert!(again.is_err());
        drop(spool);
        FileSpool::open(dir.path(), DEFAULT_CAPACITY_BYTES).expect("free again");
    }

    #[tokio::test]
    async fn replayed_segments_are_deleted() {
        let dir = tempfile::tempdir().expect("a directory");
        let spool = FileSpool::open(dir.path(), DEFAULT_CAPACITY_BYTES).expect("opens");
        let mut last = None;
        for n in 1..=3 {
            last = Some(spool.keep(entry(n)).await.expect("kept"));
        }
        spool
            .replayed(&last.expect("kept"), 1)
            .await
            .expect("marked");
        assert_eq!(spool.stats().refused, 1);
        assert_eq!(spool.stats().replayed, 2);
        drop(spool);
        // Reopened, nothing waits and the old segment goes.
        let spool = FileSpool::open(dir.path(), DEFAULT_CAPACITY_BYTES).expect("opens");
        assert_eq!(spool.stats().pending, 0);
        let segments = fs::read_dir(dir.path())
            .expect("lists")
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .count();
        assert_eq!(segments, 0);
    }
}
