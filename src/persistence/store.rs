//! The state store: a key-value map for the node and the application, with `get`, `put`,
//! `delete`, atomic batches and prefix scans, behind the [`Store`] trait.
//!
//! [`WalStore`] writes every change to the WAL first and applies it to its in-memory map once
//! the WAL acknowledged it; on open the map is rebuilt from the newest snapshot plus the WAL
//! records after it. A snapshot is written atomically (temp file, flush, rename, directory flush)
//! and then lets the WAL drop the segments behind it. [`MemStore`] is the in-memory twin.
//!
//! ```
//! use distributed_core::persistence::store::{Batch, Store, StoreConfig, WalStore};
//! let dir = std::env::temp_dir().join(format!("store-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let store = WalStore::open(&dir, StoreConfig::default())?;
//! store.put(b"node/id", b"n1")?;
//! store.write(Batch::new().put(b"member/a", b"alive").put(b"member/b", b"dead"))?;
//! assert_eq!(store.get(b"node/id")?, Some(b"n1".to_vec()));
//! assert_eq!(store.scan_prefix(b"member/")?.len(), 2);
//! drop(store);
//! let again = WalStore::open(&dir, StoreConfig::default())?; // rebuilt from disk
//! assert_eq!(again.get(b"member/b")?, Some(b"dead".to_vec()));
//! # drop(again);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), distributed_core::persistence::store::StoreError>(())
//! ```
//!
//! Directory layout: `DIR/wal/` holds the log (and its `LOCK`: one process per store),
//! `DIR/snapshot-{index:020}.snap` the newest snapshot.

use super::wal::fs::{make_private_dir, Fs, OsFs};
use super::wal::{RecordType, Wal, WalConfig, WalError};
use crate::common::ConfigError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The WAL record type the store writes (a batch of operations).
pub const STORE_RECORD: RecordType = RecordType::DATA;
/// Subdirectory of the store directory that holds the WAL.
pub const WAL_DIR: &str = "wal";
const SNAP_PREFIX: &str = "snapshot-";
const SNAP_SUFFIX: &str = ".snap";
const SNAP_MAGIC: [u8; 8] = *b"DCSNAP01";
const SNAP_HEADER_LEN: usize = 32;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove `key` (no error if it is absent).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

/// Changes applied all together or not at all, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }
    /// Adds a put.
    pub fn put(mut self, key: &[u8], value: &[u8]) -> Self {
        self.ops.push(Op::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        });
        self
    }
    /// Adds a delete.
    pub fn delete(mut self, key: &[u8]) -> Self {
        self.ops.push(Op::Delete { key: key.to_vec() });
        self
    }
    /// The operations, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }
    /// Whether the batch has no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    /// Its size as one WAL record, to compare with [`Store::batch_bytes_max`].
    pub fn encoded_len(&self) -> usize {
        BATCH_HEADER_LEN + self.ops.iter().map(op_len).sum::<usize>()
    }
    /// The same operations, in order, as consecutive batches of at most `bytes_max` encoded
    /// bytes each (an operation too large to fit alone gets a batch of its own, which a write
    /// then refuses). Each batch is atomic on its own; together they are not.
    pub fn split(self, bytes_max: usize) -> Vec<Batch> {
        let mut out = Vec::new();
        let mut cur = Batch::new();
        let mut len = BATCH_HEADER_LEN;
        for op in self.ops {
            let n = op_len(&op);
            if !cur.is_empty() && len + n > bytes_max {
                out.push(std::mem::take(&mut cur));
                len = BATCH_HEADER_LEN;
            }
            len += n;
            cur.ops.push(op);
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }

    fn apply(self, map: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
        for op in self.ops {
            match op {
                Op::Put { key, value } => {
                    map.insert(key, value);
                }
                Op::Delete { key } => {
                    map.remove(&key);
                }
            }
        }
    }
}

/// Errors of the store. Each variant says whether the store changed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The WAL failed (see [`WalError`]: an I/O error during a write poisons the store until it
    /// is reopened, and that write is not applied).
    #[error("store: {0}")]
    Wal(#[from] WalError),
    /// An I/O error on a snapshot file. The store's contents did not change.
    #[error("store: {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A snapshot file is not valid; open refuses the store.
    #[error("store: corrupt snapshot {}: {reason}", path.display())]
    CorruptSnapshot {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// A WAL record is not a valid batch (its checksum matched, so it was written so); open
    /// refuses the store.
    #[error("store: WAL record {index} is not a valid batch: {reason}")]
    CorruptRecord {
        /// The record's index.
        index: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The WAL starts after the snapshot ends: records are missing; open refuses the store.
    #[error("store: the snapshot ends at record {snapshot} but the WAL starts at {wal_first}")]
    MissingRecords {
        /// Last index in the snapshot.
        snapshot: u64,
        /// First index in the WAL.
        wal_first: u64,
    },
    /// The WAL ends before the snapshot does; open refuses the store.
    #[error("store: the snapshot holds records to {snapshot} but the WAL ends at {wal_last}")]
    WalBehindSnapshot {
        /// Last index in the snapshot.
        snapshot: u64,
        /// Last index in the WAL.
        wal_last: u64,
    },
    /// A key, a value or a whole batch is over its limit, or a key is empty. Nothing changed.
    #[error("store: {what} of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// "key", "value" or "batch".
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An empty key. Nothing changed.
    #[error("store: empty key")]
    EmptyKey,
    /// A config field is out of range. Nothing changed.
    #[error("store: invalid config: {0}")]
    Config(ConfigError),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Key-value pairs, in key order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A key-value store. Every method takes `&self`; implementations are safe to share between
/// threads. Writes are atomic: a batch is applied whole or not at all.
pub trait Store: Send + Sync {
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Applies `batch`; returns once it is durable (as the store's durability mode says).
    fn write(&self, batch: Batch) -> Result<(), StoreError>;
    /// The pairs whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError>;
    /// Writes a snapshot now, letting the log drop what it covers (a no-op where there is no
    /// log).
    fn snapshot(&self) -> Result<(), StoreError>;
    /// The largest batch [`Store::write`] accepts, in [`Batch::encoded_len`] bytes (a batch is
    /// one WAL record); split larger changes with [`Batch::split`].
    fn batch_bytes_max(&self) -> usize;

    /// Sets `key` to `value`.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.write(Batch::new().put(key, value))
    }
    /// Removes `key`.
    fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        self.write(Batch::new().delete(key))
    }
}

/// Size limits of keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest key in bytes. Default 1 KiB; at least 1.
    pub key_bytes_max: usize,
    /// Largest value in bytes. Default 64 KiB.
    pub value_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            key_bytes_max: 1 << 10,
            value_bytes_max: 64 << 10,
        }
    }
}

impl Limits {
    fn check(&self, batch: &Batch) -> Result<(), StoreError> {
        for op in &batch.ops {
            let (Op::Put { key, .. } | Op::Delete { key }) = op;
            if key.is_empty() {
                return Err(StoreError::EmptyKey);
            }
            too_large("key", key.len(), self.key_bytes_max)?;
            if let Op::Put { value, .. } = op {
                too_large("value", value.len(), self.value_bytes_max)?;
            }
        }
        Ok(())
    }
}

fn too_large(what: &'static str, len: usize, max: usize) -> Result<(), StoreError> {
    if len > max {
        return Err(StoreError::TooLarge { what, len, max });
    }
    Ok(())
}

/// Settings of a [`WalStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The WAL's settings (default: [`WalConfig::default`], `Always` durability). A batch must
    /// fit in one record of `wal.record_bytes_max` bytes.
    pub wal: WalConfig,
    /// Key and value limits (default: [`Limits::default`]); one key plus one value (plus 17
    /// bytes of framing) must fit in a WAL record.
    pub limits: Limits,
    /// Write a snapshot after this many writes since the last one (the write that reaches it
    /// pays for it); 0: only when [`Store::snapshot`] is called. Default 10,000.
    pub snapshot_every: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            wal: WalConfig::default(),
            limits: Limits::default(),
            snapshot_every: 10_000,
        }
    }
}

impl StoreConfig {
    /// Checks every field and the rules between them.
    pub fn validate(&self) -> Result<(), StoreError> {
        self.wal.validate()?;
        if self.limits.key_bytes_max == 0 {
            return Err(StoreError::Config(ConfigError::new(
                "store",
                "limits.key_bytes_max",
                "must be at least 1",
            )));
        }
        let one = 17 + self.limits.key_bytes_max + self.limits.value_bytes_max;
        if one > self.wal.record_bytes_max as usize {
            return Err(StoreError::Config(ConfigError::new(
                "store",
                "limits",
                format!(
                    "a put of the largest key and value takes {one} bytes, over \
                     wal.record_bytes_max {}",
                    self.wal.record_bytes_max
                ),
            )));
        }
        Ok(())
    }
}

/// The in-memory store: a `BTreeMap` behind a lock, with the same limits and behaviour as
/// [`WalStore`] but nothing on disk. For tests.
#[derive(Debug, Default)]
pub struct MemStore {
    limits: Limits,
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemStore {
    /// An empty store with the default limits.
    pub fn new() -> Self {
        MemStore::default()
    }
    /// An empty store with these limits.
    pub fn with_limits(limits: Limits) -> Self {
        MemStore {
            limits,
            map: Mutex::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn scan(map: &BTreeMap<Vec<u8>, Vec<u8>>, prefix: &[u8]) -> Pairs {
    map.range(prefix.to_vec()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl Store for MemStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(lock(&self.map).get(key).cloned())
    }
    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        self.limits.check(&batch)?;
        too_large("batch", batch.encoded_len(), self.batch_bytes_max())?;
        batch.apply(&mut lock(&self.map));
        Ok(())
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        Ok(scan(&lock(&self.map), prefix))
    }
    fn snapshot(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// The default WAL record limit, as a [`WalStore`] with the default config.
    fn batch_bytes_max(&self) -> usize {
        WalConfig::default().record_bytes_max as usize
    }
}

#[derive(Debug, Default)]
struct State {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Index of the last WAL record applied to `map`.
    applied: u64,
    /// Acknowledged-or-not batches by WAL index, applied in index order once acknowledged.
    pending: BTreeMap<u64, Batch>,
    /// Index the newest snapshot covers.
    snapshot_index: u64,
    /// Writes since that snapshot.
    since_snapshot: u64,
}

/// The durable store: WAL first, then the in-memory map; snapshots bound the replay on open.
#[derive(Debug)]
pub struct WalStore {
    dir: PathBuf,
    config: StoreConfig,
    wal: Wal,
    fs: Arc<dyn Fs>,
    state: Mutex<State>,
    snapshotting: Mutex<()>,
}

impl WalStore {
    /// Opens (or creates) the store in `dir` on the real filesystem.
    pub fn open(dir: impl AsRef<Path>, config: StoreConfig) -> Result<WalStore, StoreError> {
        Self::open_with_fs(dir, config, Arc::new(OsFs))
    }

    /// [`WalStore::open`] through a given filesystem (tests inject faults this way).
    pub fn open_with_fs(
        dir: impl AsRef<Path>,
        config: StoreConfig,
        fs: Arc<dyn Fs>,
    ) -> Result<WalStore, StoreError> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        // The data directory itself: private, flushed into its parent when new (the WAL does the
        // same for `wal/` inside it).
        make_private_dir(&*fs, &dir).map_err(io_err("create dir", &dir))?;
        let wal = Wal::open_with_fs(dir.join(WAL_DIR), config.wal.clone(), fs.clone())?;
        for tmp in snapshot_files(&*fs, &dir, true)? {
            fs.remove_file(&tmp.1).map_err(io_err("remove", &tmp.1))?;
        }
        let mut state = State::default();
        if let Some((index, path)) = snapshot_files(&*fs, &dir, false)?.pop() {
            state.map = read_snapshot(&*fs, &path, index)?;
            state.applied = index;
            state.snapshot_index = index;
        }
        replay(&wal, &mut state)?;
        Ok(WalStore {
            dir,
            config,
            wal,
            fs,
            state: Mutex::new(state),
            snapshotting: Mutex::new(()),
        })
    }

    /// The WAL under the store (for its stats and recovery report).
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        lock(&self.state).map.len()
    }

    /// Whether the store has no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The WAL index the newest snapshot covers (0: none yet).
    pub fn snapshot_index(&self) -> u64 {
        lock(&self.state).snapshot_index
    }

    fn apply_acknowledged(&self, upto: u64) -> bool {
        let mut st = lock(&self.state);
        while let Some(entry) = st.pending.first_entry() {
            if *entry.key() > upto {
                break;
            }
            let (index, batch) = entry.remove_entry();
            batch.apply(&mut st.map);
            st.applied = index;
            st.since_snapshot += 1;
        }
        self.config.snapshot_every > 0 && st.since_snapshot >= self.config.snapshot_every
    }

    fn write_snapshot(&self) -> Result<(), StoreError> {
        let _one = lock(&self.snapshotting);
        let (bytes, index) = {
            let st = lock(&self.state);
            if st.applied == st.snapshot_index {
                return Ok(());
            }
            (encode_snapshot(&st.map, st.applied), st.applied)
        };
        // Every record the snapshot covers must be on disk before the snapshot says so.
        self.wal.sync()?;
        let path = self.dir.join(snapshot_name(index));
        write_atomically(&*self.fs, &self.dir, &path, &bytes)?;
        for (old, p) in snapshot_files(&*self.fs, &self.dir, false)? {
            if old < index {
                self.fs.remove_file(&p).map_err(io_err("remove", &p))?;
            }
        }
        self.fs
            .sync_dir(&self.dir)
            .map_err(io_err("fsync dir", &self.dir))?;
        {
            let mut st = lock(&self.state);
            st.snapshot_index = index;
            st.since_snapshot = st.applied - index;
        }
        self.wal.truncate_prefix(index)?;
        Ok(())
    }
}

impl Store for WalStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(lock(&self.state).map.get(key).cloned())
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        self.config.limits.check(&batch)?;
        if batch.is_empty() {
            return Ok(());
        }
        let payload = encode_batch(&batch);
        too_large(
            "batch",
            payload.len(),
            self.config.wal.record_bytes_max as usize,
        )?;
        let ticket = {
            let mut st = lock(&self.state);
            // Indexes are taken under the state lock, so `pending` holds every submitted batch
            // that is not applied yet and an acknowledgement of index i applies all up to i.
            let t = self.wal.submit(&[(STORE_RECORD, &payload)])?;
            st.pending.insert(t.0.start, batch);
            t
        };
        if let Err(e) = self.wal.wait(&ticket) {
            lock(&self.state).pending.remove(&ticket.0.start);
            return Err(e.into());
        }
        if self.apply_acknowledged(ticket.0.start) {
            if let Err(e) = self.write_snapshot() {
                // The write itself is durable; the snapshot is retried after the next write.
                tracing::warn!(error = %e, "store: automatic snapshot failed");
            }
        }
        Ok(())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        Ok(scan(&lock(&self.state).map, prefix))
    }

    fn snapshot(&self) -> Result<(), StoreError> {
        self.write_snapshot()
    }

    fn batch_bytes_max(&self) -> usize {
        self.config.wal.record_bytes_max as usize
    }
}

fn replay(wal: &Wal, st: &mut State) -> Result<(), StoreError> {
    let (first, last) = (wal.first_index(), wal.last_index());
    if first > st.applied + 1 {
        return Err(StoreError::MissingRecords {
            snapshot: st.applied,
            wal_first: first,
        });
    }
    if last < st.applied {
        return Err(StoreError::WalBehindSnapshot {
            snapshot: st.applied,
            wal_last: last,
        });
    }
    for entry in wal.read_from(st.applied + 1)? {
        let entry = entry?;
        let batch = decode_batch(&entry.payload).map_err(|reason| StoreError::CorruptRecord {
            index: entry.index,
            reason,
        })?;
        batch.apply(&mut st.map);
        st.applied = entry.index;
        st.since_snapshot += 1;
    }
    Ok(())
}

/// The op count in front of a batch's operations.
const BATCH_HEADER_LEN: usize = 4;

/// Bytes one operation takes in [`encode_batch`]: its tag, then each byte string with a u32
/// length.
fn op_len(op: &Op) -> usize {
    match op {
        Op::Put { key, value } => 1 + 4 + key.len() + 4 + value.len(),
        Op::Delete { key } => 1 + 4 + key.len(),
    }
}

fn encode_batch(batch: &Batch) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch.encoded_len());
    out.extend_from_slice(&(batch.ops.len() as u32).to_le_bytes());
    for op in &batch.ops {
        match op {
            Op::Put { key, value } => {
                out.push(OP_PUT);
                put_bytes(&mut out, key);
                put_bytes(&mut out, value);
            }
            Op::Delete { key } => {
                out.push(OP_DELETE);
                put_bytes(&mut out, key);
            }
        }
    }
    out
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// A cursor over bytes that refuses to read past the end.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.0.len() {
            return Err("truncated");
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, &'static str> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
}

fn decode_batch(b: &[u8]) -> Result<Batch, &'static str> {
    let mut c = Cursor(b);
    let n = c.u32()?;
    let mut ops = Vec::with_capacity((n as usize).min(b.len()));
    for _ in 0..n {
        let op = match c.take(1)?[0] {
            OP_PUT => Op::Put {
                key: c.bytes()?,
                value: c.bytes()?,
            },
            OP_DELETE => Op::Delete { key: c.bytes()? },
            _ => return Err("unknown operation"),
        };
        ops.push(op);
    }
    if !c.0.is_empty() {
        return Err("trailing bytes");
    }
    Ok(Batch { ops })
}

fn snapshot_name(index: u64) -> String {
    format!("{SNAP_PREFIX}{index:020}{SNAP_SUFFIX}")
}

/// Snapshot files (or, with `temp`, leftover temp files) in `dir`, sorted by index.
fn snapshot_files(fs: &dyn Fs, dir: &Path, temp: bool) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let files = fs.list_files(dir).map_err(io_err("list", dir))?;
    let suffix = if temp { ".snap.tmp" } else { SNAP_SUFFIX };
    let mut out: Vec<(u64, PathBuf)> = files
        .into_iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let digits = name.strip_prefix(SNAP_PREFIX)?.strip_suffix(suffix)?;
            let index = (digits.len() == 20).then(|| digits.parse().ok())??;
            Some((index, p))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Header: magic, version u16, reserved u16 + u32, index u64, entries u64; then per entry key
/// length u32, value length u32, key, value; then the CRC32C of everything before it.
fn encode_snapshot(map: &BTreeMap<Vec<u8>, Vec<u8>>, index: u64) -> Vec<u8> {
    let body: usize = map.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(SNAP_HEADER_LEN + body + 4);
    out.extend_from_slice(&SNAP_MAGIC);
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&(map.len() as u64).to_le_bytes());
    for (k, v) in map {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(v);
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn read_snapshot(
    fs: &dyn Fs,
    path: &Path,
    named: u64,
) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
    let file = fs.open_read(path).map_err(io_err("open", path))?;
    let len = file.size().map_err(io_err("stat", path))? as usize;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, 0)
        .map_err(io_err("read", path))?;
    decode_snapshot(&bytes, named).map_err(|reason| StoreError::CorruptSnapshot {
        path: path.to_path_buf(),
        reason,
    })
}

fn decode_snapshot(bytes: &[u8], named: u64) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, &'static str> {
    if bytes.len() < SNAP_HEADER_LEN + 4 {
        return Err("shorter than a header");
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4")) {
        return Err("checksum mismatch");
    }
    let mut c = Cursor(body);
    if c.take(8)? != SNAP_MAGIC || c.take(2)? != [1, 0] || c.take(6)? != [0; 6] {
        return Err("bad magic, version or reserved bytes");
    }
    if c.u64()? != named {
        return Err("index differs from the file name");
    }
    let n = c.u64()?;
    let mut map = BTreeMap::new();
    for _ in 0..n {
        let (kl, vl) = (c.u32()? as usize, c.u32()? as usize);
        let k = c.take(kl)?.to_vec();
        let v = c.take(vl)?.to_vec();
        if map.insert(k, v).is_some() {
            return Err("duplicate key");
        }
    }
    if !c.0.is_empty() {
        return Err("trailing bytes");
    }
    Ok(map)
}

/// Temp file, flush, rename, directory flush: after a crash the file is either absent or whole.
fn write_atomically(fs: &dyn Fs, dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    if fs.list_files(dir).is_ok_and(|f| f.contains(&tmp)) {
        fs.remove_file(&tmp).map_err(io_err("remove", &tmp))?;
    }
    let file = fs.create_new(&tmp).map_err(io_err("create", &tmp))?;
    let written = file
        .write_all_at(bytes, 0)
        .and_then(|()| file.sync_data())
        .map_err(io_err("write", &tmp));
    if let Err(e) = written {
        let _ = fs.remove_file(&tmp); // best effort: open removes leftovers too
        return Err(e);
    }
    fs.rename(&tmp, path).map_err(io_err("rename", &tmp))?;
    fs.sync_dir(dir).map_err(io_err("fsync dir", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_and_snapshot_codecs_round_trip_and_refuse_damage() {
        let b = Batch::new().put(b"k", b"v").delete(b"gone").put(b"", b"");
        let enc = encode_batch(&b);
        assert_eq!(enc.len(), b.encoded_len());
        assert_eq!(decode_batch(&enc).unwrap(), b);
        for cut in 0..enc.len() {
            assert!(decode_batch(&enc[..cut]).is_err(), "cut {cut}");
        }
        let map: BTreeMap<_, _> = [(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), vec![])]
            .into_iter()
            .collect();
        let snap = encode_snapshot(&map, 9);
        assert_eq!(decode_snapshot(&snap, 9).unwrap(), map);
        assert!(decode_snapshot(&snap, 8).is_err());
        for bit in 0..snap.len() * 8 {
            let mut s = snap.clone();
            s[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_snapshot(&s, 9).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn split_keeps_the_order_and_every_part_under_the_limit() {
        let mut b = Batch::new();
        for i in 0..100u32 {
            let k = format!("k{i}");
            b = if i % 3 == 0 {
                b.delete(k.as_bytes())
            } else {
                b.put(k.as_bytes(), &vec![7; i as usize])
            };
        }
        for max in [20, 64, 300, 1 << 20] {
            let parts = b.clone().split(max);
            for p in &parts {
                assert!(p.encoded_len() <= max || p.ops().len() == 1, "max {max}");
            }
            let joined: Vec<Op> = parts.iter().flat_map(|p| p.ops().to_vec()).collect();
            assert_eq!(joined, b.ops(), "max {max}");
        }
        assert_eq!(b.clone().split(1 << 20).len(), 1);
        assert!(Batch::new().split(10).is_empty());
    }

    #[test]
    fn config_rules_between_fields() {
        assert!(StoreConfig::default().validate().is_ok());
        let c = StoreConfig {
            wal: WalConfig::for_test(),
            ..StoreConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("record_bytes_max"), "{e}");
    }
}
