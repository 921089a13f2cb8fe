//! [`Wal`]: the writer. Appenders put encoded records in a shared batch; one of them (the leader)
//! takes the batch, writes it with one write per segment, flushes once if the mode asks, and
//! acknowledges everyone in it (group commit, in `group.rs`). Two locks: the group commit's
//! (the batch, the counters of what is acknowledged, the poison) is held only briefly; `io` (the
//! files) is held by whoever writes, flushes or truncates. Lock order: `io` before the group
//! commit's, never the other way.

use super::format::{encode_record, record_len, RecordType, SEGMENT_HEADER_LEN};
use super::fs::{make_private_dir, Fs, FsFile, OsFs, FILE_MODE};
use super::group::{GroupCommit, Pending, WaitError};
use super::reader::WalReader;
use super::recovery::{recover, RecoveryReport};
use super::segment::{create_segment, read_segment, segment_name, zero_range, SegmentRef};
use super::{Durability, WalConfig, WalError};
use crate::common::Histogram;
use crate::persistence::wal::format::{read_slot, Slot};
use std::fs::{File, OpenOptions, TryLockError};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Name of the lock file in a log directory.
pub const LOCK_FILE: &str = "LOCK";

crate::common::counters! {
    /// Live counters of a [`Wal`].
    struct WalCounters;
    /// Counters of a [`Wal`] since it was opened.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
    pub struct WalStats {
        /// `append`/`append_batch` calls acknowledged.
        appends,
        /// Records acknowledged.
        records,
        /// Bytes written for records (headers and padding included).
        bytes,
        /// Data flushes (fdatasync of a segment), the preallocation flush of new segments excluded.
        fsyncs,
        /// Batches written by a leader (in `Always` mode, flushes shared by the batch's appenders).
        batches,
        /// Segments created.
        segments_created,
    }
    extra {
        /// Torn tails truncated when the log was opened (0 or 1).
        pub torn_tails_truncated: u64,
    }
}

/// A [`Wal`]'s figures for metrics: its counters and how long its data flushes took.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WalFigures {
    /// The counters since open.
    pub stats: WalStats,
    /// How long each data flush took.
    pub fsync_duration: Histogram,
}

#[derive(Debug, Default)]
struct Counters {
    /// How long each data flush took.
    fsync_time: Mutex<Histogram>,
    counts: WalCounters,
}

impl Counters {
    fn fsynced(&self, took: std::time::Duration) {
        self.counts.fsyncs.add(1);
        lock(&self.fsync_time).observe(took);
    }
}

/// Encoded records waiting for a leader. Indexes are dense from `first`.
#[derive(Debug, Default)]
struct Batch {
    first: u64,
    buf: Vec<u8>,
    lens: Vec<u32>,
}

impl Pending for Batch {
    fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }
}

#[derive(Debug)]
struct Io {
    /// All segments, oldest first; the last is the active one.
    segments: Vec<SegmentRef>,
    file: Arc<dyn FsFile>,
    size: u64,
    offset: u64,
    written: u64,
    durable: u64,
    dirty: bool,
}

impl Io {
    fn active_path(&self) -> PathBuf {
        self.segments
            .last()
            .expect("at least one segment")
            .path
            .clone()
    }
}

pub(crate) use super::group::Ticket;

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    config: WalConfig,
    fs: Arc<dyn Fs>,
    commit: GroupCommit<Batch>,
    io: Mutex<Io>,
    counters: Counters,
    recovery: RecoveryReport,
    _lock: File,
}

#[derive(Debug)]
struct Syncer {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<()>,
}

/// A write-ahead log in one directory. Share it between threads with an `Arc`; every method
/// takes `&self`.
#[derive(Debug)]
pub struct Wal {
    inner: Arc<Inner>,
    syncer: Option<Syncer>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves nothing half-written in memory that matters: the
    // state on disk is re-derived on open. Keep going rather than cascade panics.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(|e| WalError::io("open", &path, e))?;
    // The lock (flock) belongs to the open file, which a child process forked by another
    // thread shares until it execs: a lock released a moment ago can still look taken. So a
    // few tries, 10 ms apart, before calling the directory locked.
    for _ in 0..LOCK_TRIES - 1 {
        match f.try_lock() {
            Err(TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(10)),
            other => return lock_result(other, f, dir, &path),
        }
    }
    lock_result(f.try_lock(), f, dir, &path)
}

const LOCK_TRIES: usize = 20;

fn lock_result(
    r: Result<(), TryLockError>,
    f: File,
    dir: &Path,
    path: &Path,
) -> Result<File, WalError> {
    match r {
        Ok(()) => Ok(f),
        Err(TryLockError::WouldBlock) => Err(WalError::Locked(dir.to_path_buf())),
        Err(TryLockError::Error(e)) => Err(WalError::io("lock", path, e)),
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir` on the real filesystem, recovering it (see
    /// [`super::scan`] and `docs/wal.md`): a torn tail is truncated, corruption is an error.
    pub fn open(dir: impl AsRef<Path>, config: WalConfig) -> Result<Wal, WalError> {
        Self::open_with_fs(dir, config, Arc::new(OsFs))
    }

    /// [`Wal::open`] through a given filesystem (tests inject faults this way).
    pub fn open_with_fs(
        dir: impl AsRef<Path>,
        config: WalConfig,
        fs: Arc<dyn Fs>,
    ) -> Result<Wal, WalError> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        // Private (0700), and a new directory's entry flushed into its parent so it survives a
        // power loss too.
        make_private_dir(&*fs, &dir).map_err(|e| WalError::io("create dir", &dir, e))?;
        let lock_file = lock_dir(&dir)?;
        let recovery = recover(&*fs, &dir)?;
        let io = open_io(&*fs, &dir, &config, &recovery)?;
        let counters = Counters::default();
        if io.segments.len() == 1 && recovery.scan.segments.is_empty() {
            counters.counts.segments_created.add(1);
        }
        let commit = GroupCommit::new(io.written);
        let inner = Arc::new(Inner {
            dir,
            config,
            fs,
            commit,
            io: Mutex::new(io),
            counters,
            recovery,
            _lock: lock_file,
        });
        let syncer = match inner.config.durability {
            Durability::Interval(every) => Some(spawn_syncer(inner.clone(), every)?),
            _ => None,
        };
        Ok(Wal { inner, syncer })
    }

    /// Appends one record; returns its index once it is acknowledged (see [`Durability`]).
    pub fn append(&self, kind: RecordType, payload: &[u8]) -> Result<u64, WalError> {
        Ok(self.append_batch(&[(kind, payload)])?.start)
    }

    /// Appends records atomically with respect to other appenders (their indexes are
    /// consecutive); returns their indexes once all are acknowledged. A crash may keep a prefix
    /// of an unacknowledged batch.
    pub fn append_batch(&self, records: &[(RecordType, &[u8])]) -> Result<Range<u64>, WalError> {
        let ticket = self.submit(records)?;
        self.wait(&ticket)?;
        Ok(ticket.0)
    }

    /// Assigns indexes and queues the records for the next leader; does not wait.
    pub(crate) fn submit(&self, records: &[(RecordType, &[u8])]) -> Result<Ticket, WalError> {
        let max = self.inner.config.record_bytes_max;
        if let Some((_, p)) = records.iter().find(|(_, p)| p.len() > max as usize) {
            return Err(WalError::RecordTooLarge { len: p.len(), max });
        }
        let crcs: Vec<u32> = records.iter().map(|(_, p)| crc32c::crc32c(p)).collect();
        let count = records.len() as u64;
        self.inner
            .commit
            .submit(count, |batch, first| {
                if batch.lens.is_empty() {
                    batch.first = first;
                }
                for (i, ((kind, payload), crc)) in records.iter().zip(crcs).enumerate() {
                    encode_record(&mut batch.buf, *kind, first + i as u64, payload, crc);
                    batch.lens.push(record_len(payload.len()) as u32);
                }
            })
            .map_err(WalError::Poisoned)
    }

    /// Waits until the ticket's records are acknowledged, leading a batch when no one else is.
    pub(crate) fn wait(&self, ticket: &Ticket) -> Result<(), WalError> {
        let inner = &*self.inner;
        match inner.commit.wait(ticket, |batch| inner.write_batch(batch)) {
            Ok(()) => {
                inner.counters.counts.appends.add(1);
                Ok(())
            }
            Err(WaitError::Poisoned(p)) => Err(WalError::Poisoned(p)),
            Err(WaitError::Failed(e)) => Err(e),
        }
    }

    /// Flushes every acknowledged record to disk. An error poisons the log.
    pub fn sync(&self) -> Result<(), WalError> {
        self.inner.sync()
    }

    /// Reads the acknowledged records from `index` on (`last_index() + 1` gives an empty
    /// reader). The reader sees the segments as they are now; a concurrent `truncate_*` may make
    /// it fail with an error (never return a wrong record).
    pub fn read_from(&self, index: u64) -> Result<WalReader, WalError> {
        let io = lock(&self.inner.io);
        let last = self.inner.commit.lock().acked;
        let first = io.segments[0].first;
        if index < first || index > last + 1 {
            return Err(WalError::IndexOutOfRange { index, first, last });
        }
        let mut segments = io.segments.clone();
        segments.last_mut().expect("a segment").data_end = io.offset;
        let from = segments.partition_point(|s| s.first <= index).max(1) - 1;
        segments.drain(..from);
        Ok(WalReader::new(self.inner.fs.clone(), segments, index, last))
    }

    /// Drops the whole segments all of whose records have an index `<= index` (those behind a
    /// snapshot), oldest first; the active segment is never dropped, so the log may keep some
    /// records at or below `index`. Returns the new first index.
    pub fn truncate_prefix(&self, index: u64) -> Result<u64, WalError> {
        let inner = &*self.inner;
        let mut io = lock(&inner.io);
        inner.check_poisoned()?;
        while io.segments.len() > 1 && io.segments[1].first <= index.saturating_add(1) {
            let path = io.segments[0].path.clone();
            let removed = inner
                .fs
                .remove_file(&path)
                .map_err(|e| WalError::io("remove", &path, e))
                .and_then(|()| inner.sync_dir());
            if let Err(e) = removed {
                return Err(inner.poison(e));
            }
            io.segments.remove(0);
        }
        Ok(io.segments[0].first)
    }

    /// Removes every record with an index `> index` (zeroed on disk from the end backwards,
    /// whole segments removed newest first), so the next append gets `index + 1`. Refused while
    /// appends are in flight. `index` may be `first_index() - 1` (empties the log).
    pub fn truncate_suffix(&self, index: u64) -> Result<(), WalError> {
        let inner = &*self.inner;
        let mut io = lock(&inner.io);
        let mut s = inner.commit.lock();
        if let Some(p) = &s.poisoned {
            return Err(WalError::Poisoned(p.clone()));
        }
        if s.leader || !s.batch.lens.is_empty() {
            return Err(WalError::AppendsInFlight);
        }
        let first = io.segments[0].first;
        if index >= io.written {
            return Ok(());
        }
        if index + 1 < first {
            let last = io.written;
            return Err(WalError::IndexOutOfRange { index, first, last });
        }
        if let Err(e) = inner.cut(&mut io, index) {
            s.poisoned.get_or_insert_with(|| e.to_string());
            return Err(e);
        }
        s.next_index = index + 1;
        s.acked = index;
        s.truncations += 1;
        Ok(())
    }

    /// Index of the oldest record kept (the next index if the log is empty).
    pub fn first_index(&self) -> u64 {
        lock(&self.inner.io).segments[0].first
    }

    /// Index of the newest acknowledged record (`first_index() - 1` if the log is empty).
    pub fn last_index(&self) -> u64 {
        self.inner.commit.lock().acked
    }

    /// How long the data flushes since open took.
    pub fn fsync_durations(&self) -> Histogram {
        lock(&self.inner.counters.fsync_time).clone()
    }

    /// The counters since open.
    pub fn stats(&self) -> WalStats {
        let mut s = self.inner.counters.counts.snapshot();
        s.torn_tails_truncated = u64::from(self.inner.recovery.torn_tail.is_some());
        s
    }

    /// The counters and the flush durations, for metrics.
    pub fn figures(&self) -> WalFigures {
        WalFigures {
            stats: self.stats(),
            fsync_duration: self.fsync_durations(),
        }
    }

    /// What open found and did.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The config the log was opened with.
    pub fn config(&self) -> &WalConfig {
        &self.inner.config
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Some(s) = self.syncer.take() {
            let _ = s.stop.send(());
            let _ = s.handle.join();
            let _ = self.inner.sync(); // best effort: an error here has no one to go to
        }
    }
}

fn spawn_syncer(inner: Arc<Inner>, every: Duration) -> Result<Syncer, WalError> {
    let (stop, rx) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("wal-sync".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                if inner.sync().is_err() {
                    return; // poisoned: appends fail from now on, nothing left to flush
                }
            }
        })
        .map_err(|e| WalError::io("spawn sync thread", Path::new("wal-sync"), e))?;
    Ok(Syncer { stop, handle })
}

/// The active segment after recovery: the last one, or a new first one in an empty directory.
fn open_io(
    fs: &dyn Fs,
    dir: &Path,
    config: &WalConfig,
    rec: &RecoveryReport,
) -> Result<Io, WalError> {
    let mut segments: Vec<SegmentRef> = rec
        .scan
        .segments
        .iter()
        .map(|s| SegmentRef {
            first: s.first_index,
            path: s.path.clone(),
            data_end: s.data_end,
        })
        .collect();
    let (file, size, offset, written) = match rec.scan.segments.last() {
        Some(last) => {
            let file = fs
                .open_write(&last.path)
                .map_err(|e| WalError::io("open", &last.path, e))?;
            let written = last.first_index + last.records - 1;
            (Arc::from(file), last.file_bytes, last.data_end, written)
        }
        None => {
            let file = Arc::from(create_segment(fs, dir, 1, config.segment_bytes)?);
            segments.push(SegmentRef {
                first: 1,
                path: dir.join(segment_name(1)),
                data_end: SEGMENT_HEADER_LEN as u64,
            });
            (file, config.segment_bytes, SEGMENT_HEADER_LEN as u64, 0)
        }
    };
    Ok(Io {
        segments,
        file,
        size,
        offset,
        written,
        durable: written,
        dirty: false,
    })
}

impl Inner {
    fn check_poisoned(&self) -> Result<(), WalError> {
        match self.commit.poisoned() {
            Some(p) => Err(WalError::Poisoned(p)),
            None => Ok(()),
        }
    }

    fn poison(&self, e: WalError) -> WalError {
        self.commit.poison(&e);
        e
    }

    fn sync_dir(&self) -> Result<(), WalError> {
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| WalError::io("fsync dir", &self.dir, e))
    }

    /// Flushes what is written, outside the `io` lock so appends go on meanwhile. A segment
    /// sealed in the meantime was flushed by `roll` itself, which does not rely on `dirty`.
    fn sync(&self) -> Result<(), WalError> {
        let (file, path, upto) = {
            let mut io = lock(&self.io);
            self.check_poisoned()?;
            if !io.dirty {
                return Ok(());
            }
            io.dirty = false;
            (io.file.clone(), io.active_path(), io.written)
        };
        let t = std::time::Instant::now();
        if let Err(e) = file.sync_data() {
            return Err(self.poison(WalError::io("fsync", &path, e)));
        }
        self.counters.fsynced(t.elapsed());
        let mut io = lock(&self.io);
        io.durable = io.durable.max(upto);
        Ok(())
    }

    /// Writes a batch (rolling segments as needed) and, in `Always` mode, flushes it. Returns
    /// the highest index that may now be acknowledged.
    fn write_batch(&self, b: &Batch) -> Result<u64, WalError> {
        let mut io = lock(&self.io);
        let (mut chunk, mut pos, mut index) = (0usize, 0usize, b.first);
        for &len in &b.lens {
            if io.offset + (pos - chunk) as u64 + u64::from(len) > io.size {
                self.write(&mut io, &b.buf[chunk..pos], index - 1)?;
                chunk = pos;
                self.roll(&mut io, index)?;
            }
            pos += len as usize;
            index += 1;
        }
        self.write(&mut io, &b.buf[chunk..pos], index - 1)?;
        let c = &self.counters.counts;
        c.batches.add(1);
        c.records.add(b.lens.len() as u64);
        c.bytes.add(b.buf.len() as u64);
        if self.config.durability == Durability::Always {
            self.flush(&mut io)?;
            return Ok(io.durable);
        }
        Ok(io.written)
    }

    fn write(&self, io: &mut Io, bytes: &[u8], last_index: u64) -> Result<(), WalError> {
        if bytes.is_empty() {
            return Ok(());
        }
        debug_assert!(io.offset + bytes.len() as u64 <= io.size);
        io.file
            .write_all_at(bytes, io.offset)
            .map_err(|e| WalError::io("write", &io.active_path(), e))?;
        io.offset += bytes.len() as u64;
        io.written = last_index;
        io.dirty = true;
        Ok(())
    }

    fn flush(&self, io: &mut Io) -> Result<(), WalError> {
        if !io.dirty {
            return Ok(());
        }
        self.flush_now(io)
    }

    fn flush_now(&self, io: &mut Io) -> Result<(), WalError> {
        let t = std::time::Instant::now();
        io.file
            .sync_data()
            .map_err(|e| WalError::io("fsync", &io.active_path(), e))?;
        self.counters.fsynced(t.elapsed());
        io.dirty = false;
        io.durable = io.written;
        Ok(())
    }

    /// Seals the active segment (flushed in every mode, so only the last segment can ever have
    /// a torn tail) and starts a new one at `first`.
    fn roll(&self, io: &mut Io, first: u64) -> Result<(), WalError> {
        self.flush_now(io)?;
        let active_end = io.offset;
        let active = io.segments.last_mut().expect("a segment");
        active.data_end = active_end;
        if active_end == SEGMENT_HEADER_LEN as u64 {
            // An empty segment too small for the record (the config changed): replace it.
            let path = active.path.clone();
            self.fs
                .remove_file(&path)
                .map_err(|e| WalError::io("remove", &path, e))?;
            self.sync_dir()?;
            io.segments.pop();
        }
        let size = self.config.segment_bytes;
        io.file = Arc::from(create_segment(&*self.fs, &self.dir, first, size)?);
        self.counters.counts.segments_created.add(1);
        io.segments.push(SegmentRef {
            first,
            path: self.dir.join(segment_name(first)),
            data_end: SEGMENT_HEADER_LEN as u64,
        });
        io.size = size;
        io.offset = SEGMENT_HEADER_LEN as u64;
        Ok(())
    }

    /// Removes the records after `index` (checked by the caller to be inside the log).
    fn cut(&self, io: &mut Io, index: u64) -> Result<(), WalError> {
        let mut reopen = false;
        while io.segments.len() > 1 && io.segments.last().expect("a segment").first > index + 1 {
            let path = io.segments.last().expect("a segment").path.clone();
            self.fs
                .remove_file(&path)
                .map_err(|e| WalError::io("remove", &path, e))?;
            self.sync_dir()?;
            io.segments.pop();
            reopen = true;
        }
        let seg = io.segments.last().expect("a segment").clone();
        let data_end = if reopen { seg.data_end } else { io.offset };
        if reopen {
            io.file = Arc::from(
                self.fs
                    .open_write(&seg.path)
                    .map_err(|e| WalError::io("open", &seg.path, e))?,
            );
            io.size = io
                .file
                .size()
                .map_err(|e| WalError::io("stat", &seg.path, e))?;
        }
        let cut_at = self.offset_of(&seg, data_end, index + 1)?;
        zero_range(&*io.file, &seg.path, cut_at, data_end, true)?;
        io.file
            .sync_data()
            .map_err(|e| WalError::io("fsync", &seg.path, e))?;
        io.offset = cut_at;
        io.written = index;
        io.durable = index;
        io.dirty = false;
        io.segments.last_mut().expect("a segment").data_end = cut_at;
        Ok(())
    }

    /// Byte offset of record `index` in `seg` (or the end of its data if `index` is one past).
    fn offset_of(&self, seg: &SegmentRef, data_end: u64, index: u64) -> Result<u64, WalError> {
        let mut buf = Vec::new();
        read_segment(&*self.fs, &seg.path, Some(data_end), &mut buf)?;
        let mut off = SEGMENT_HEADER_LEN;
        for i in seg.first..index {
            match read_slot(&buf, off, Some(i)) {
                Slot::Record(h) => off += record_len(h.len as usize),
                Slot::End | Slot::Bad(_) => {
                    let reason = match read_slot(&buf, off, Some(i)) {
                        Slot::Bad(r) => r,
                        _ => super::BadRecord::StrayBytes,
                    };
                    return Err(WalError::Corrupt {
                        path: seg.path.clone(),
                        offset: off as u64,
                        what: super::Corruption::Record {
                            reason,
                            expected_index: i,
                            valid_record_after: None,
                        },
                    });
                }
            }
        }
        Ok(off as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records submitted and not yet acknowledged make a truncation wait for them: it is
    /// refused, and the append lands once waited for. (From outside the crate the state is a
    /// race: a leader may finish first, and then the truncation is rightly allowed.)
    #[test]
    fn truncate_suffix_is_refused_while_appends_are_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let log = Wal::open(dir.path(), WalConfig::for_test()).unwrap();
        log.append(RecordType::DATA, b"one").unwrap();
        let ticket = log.submit(&[(RecordType::DATA, b"two")]).unwrap();
        assert!(matches!(
            log.truncate_suffix(0),
            Err(WalError::AppendsInFlight)
        ));
        log.wait(&ticket).unwrap();
        assert_eq!(log.last_index(), 2);
        log.truncate_suffix(1).unwrap();
        assert_eq!(log.last_index(), 1);
    }
}
