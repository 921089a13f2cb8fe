//! A crash-safe write-ahead log: append-only segment files of checksummed, densely indexed
//! records; group commit; recovery that truncates a torn tail and refuses corruption.
//!
//! ```
//! use distributed_core::persistence::wal::{RecordType, Wal, WalConfig};
//! let dir = std::env::temp_dir().join(format!("wal-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let wal = Wal::open(&dir, WalConfig::default())?; // fsync before every acknowledgement
//! let first = wal.append(RecordType::DATA, b"hello")?;
//! wal.append_batch(&[(RecordType::DATA, b"a"), (RecordType::DATA, b"b")])?;
//! let payloads: Vec<Vec<u8>> =
//!     wal.read_from(first)?.map(|r| r.map(|e| e.payload)).collect::<Result<_, _>>()?;
//! assert_eq!(payloads, [b"hello".to_vec(), b"a".to_vec(), b"b".to_vec()]);
//! # drop(wal);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), distributed_core::persistence::wal::WalError>(())
//! ```
//!
//! ## Layout
//! - `format.rs`: the bytes of segment and record headers, checked on every read.
//! - `segment.rs`: segment names, creation (preallocated, flushed, renamed, directory flushed).
//! - `recovery.rs`: [`scan`] (read-only verification) and the recovery done on open.
//! - `writer.rs`: [`Wal`]: appends, durability modes, truncation.
//! - `group.rs`: group commit: the batch, the leader handoff, the poison (model-checked with
//!   loom by `tests/wal_model.rs`).
//! - `reader.rs`: [`WalReader`], records from an index on.
//! - `repair.rs`: [`repair()`], truncation at the first problem, only on request.
//! - `fs.rs`: the filesystem trait, with a fault-injecting implementation for tests.
//!
//! The byte layout, the recovery rules and the durability modes are in `docs/wal.md`.

#[cfg(any(test, feature = "testing"))]
pub(crate) mod faulty;
mod format;
pub mod fs;
mod group;
mod reader;
mod recovery;
mod repair;
mod segment;
/// The locks the group commit uses: std's here (`tests/wal_model.rs` puts loom's in their place).
mod sync {
    pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};
}
mod writer;

pub use format::{BadRecord, RecordType, ALIGN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
pub use reader::{Entry, WalReader};
pub use recovery::{
    scan, Corruption, Problem, RecordView, RecoveryReport, ScanReport, SegmentSummary, TornTail,
};
pub use repair::{repair, RepairReport};
pub use segment::{parse_segment_name, segment_name};
pub use writer::{Wal, WalFigures, WalStats, LOCK_FILE};

use crate::common::ConfigError;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After its record is flushed to disk (fdatasync). Concurrent appenders share one flush
    /// (group commit). Nothing acknowledged is lost in a crash or a power loss.
    Always,
    /// After its record is written to the OS; a background thread flushes every interval. A
    /// power loss may lose up to one interval of acknowledged records; a process crash loses
    /// nothing. [`Wal::sync`] flushes on demand.
    Interval(Duration),
    /// After its record is written to the OS; flushed only when a segment is sealed or on
    /// [`Wal::sync`]. For tests and benchmarks.
    Never,
}

/// Settings of a [`Wal`]. Check with [`WalConfig::validate`] (open does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// Size of each segment file, preallocated with zeros; a new segment starts when the next
    /// record does not fit. Default 64 MiB; from 4 KiB to 1 GiB, a multiple of 8. Open reads a
    /// whole segment into memory, so this is also the memory a scan needs.
    pub segment_bytes: u64,
    /// Largest payload of one record, in bytes. Default 1 MiB; at least 1, and a record with
    /// its header must fit in an empty segment.
    pub record_bytes_max: u32,
    /// When appends are acknowledged. Default [`Durability::Always`]; an interval must be from
    /// 1 ms to 60 s.
    pub durability: Durability,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes: 64 << 20,
            record_bytes_max: 1 << 20,
            durability: Durability::Always,
        }
    }
}

/// Smallest segment size.
pub const SEGMENT_BYTES_MIN: u64 = 4 << 10;
/// Largest segment size.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;

impl WalConfig {
    /// Small segments and no flushes: for tests.
    pub fn for_test() -> Self {
        WalConfig {
            segment_bytes: 64 << 10,
            record_bytes_max: 16 << 10,
            durability: Durability::Never,
        }
    }

    /// Checks every field and the rules between them.
    pub fn validate(&self) -> Result<(), WalError> {
        let bad = |field, rule: String| Err(WalError::Config(ConfigError::new("wal", field, rule)));
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return bad(
                "segment_bytes",
                format!(
                    "{} must be from {SEGMENT_BYTES_MIN} to {SEGMENT_BYTES_MAX}",
                    self.segment_bytes
                ),
            );
        }
        if !self.segment_bytes.is_multiple_of(ALIGN as u64) {
            return bad(
                "segment_bytes",
                format!("{} must be a multiple of {ALIGN}", self.segment_bytes),
            );
        }
        let room = self.segment_bytes - (SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + ALIGN) as u64;
        if self.record_bytes_max == 0 || u64::from(self.record_bytes_max) > room {
            return bad(
                "record_bytes_max",
                format!(
                    "{} must be from 1 to {room} (a record must fit in an empty \
                 segment of segment_bytes {})",
                    self.record_bytes_max, self.segment_bytes
                ),
            );
        }
        if let Durability::Interval(d) = self.durability {
            if d < Duration::from_millis(1) || d > Duration::from_secs(60) {
                return bad(
                    "durability",
                    format!("interval {d:?} must be from 1 ms to 60 s"),
                );
            }
        }
        Ok(())
    }
}

/// Errors of the log. Each variant says whether the log changed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An I/O error. During an append, a flush or a truncation it also poisons the log (the
    /// state on disk is unknown until it is reopened); while opening, nothing was acknowledged.
    #[error("wal: {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Another process (or another `Wal` in this one) has the directory open. Nothing changed.
    #[error("wal: {} is locked by another writer (one writer per directory)", .0.display())]
    Locked(PathBuf),
    /// A config field is out of range. Nothing changed.
    #[error("wal: invalid config: {0}")]
    Config(ConfigError),
    /// The log is corrupt at this place; open refuses it (nothing changed) and
    /// `dcore wal repair` can truncate it there.
    #[error("wal: corrupt log: {} at offset {offset}: {what}", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset in it.
        offset: u64,
        /// What is wrong.
        what: Corruption,
    },
    /// An earlier write or flush failed; no append is accepted until the log is reopened
    /// (a failed flush is never retried: the OS may have dropped the dirty pages).
    #[error("wal: poisoned by an earlier I/O error ({0}); reopen the log")]
    Poisoned(String),
    /// A payload is over [`WalConfig::record_bytes_max`]. Nothing was appended.
    #[error("wal: record of {len} bytes is over the limit of {max}")]
    RecordTooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// An index outside the log. Nothing changed.
    #[error("wal: index {index} is outside the log ({first}..={last})")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// First index in the log.
        first: u64,
        /// Last index in the log.
        last: u64,
    },
    /// `truncate_suffix` while appends are in flight. Nothing changed.
    #[error("wal: truncate_suffix refused while appends are in flight")]
    AppendsInFlight,
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        WalError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked_with_reasons() {
        assert!(WalConfig::default().validate().is_ok());
        assert!(WalConfig::for_test().validate().is_ok());
        let cases = [
            WalConfig {
                segment_bytes: 1000,
                ..WalConfig::default()
            },
            WalConfig {
                segment_bytes: (64 << 10) + 4,
                ..WalConfig::for_test()
            },
            WalConfig {
                record_bytes_max: 0,
                ..WalConfig::default()
            },
            WalConfig {
                segment_bytes: 64 << 10,
                ..WalConfig::default()
            },
            WalConfig {
                durability: Durability::Interval(Duration::ZERO),
                ..WalConfig::default()
            },
        ];
        for c in cases {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("must"), "{e}");
        }
    }

    /// Each bound is taken, one step past it is refused.
    #[test]
    fn config_bounds_are_inclusive() {
        let field = |c: WalConfig| match c.validate() {
            Ok(()) => None,
            Err(WalError::Config(e)) => Some(e.field),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(SEGMENT_BYTES_MIN, 4096);
        assert_eq!(SEGMENT_BYTES_MAX, 1 << 30);
        let small = |segment_bytes| WalConfig {
            segment_bytes,
            record_bytes_max: 1,
            durability: Durability::Never,
        };
        assert_eq!(field(small(SEGMENT_BYTES_MIN)), None);
        assert_eq!(
            field(small(SEGMENT_BYTES_MIN - ALIGN as u64)),
            Some("segment_bytes")
        );
        assert_eq!(field(small(SEGMENT_BYTES_MAX)), None);
        assert_eq!(
            field(small(SEGMENT_BYTES_MAX + ALIGN as u64)),
            Some("segment_bytes")
        );
        // The largest record fills an empty segment but for the headers and one alignment.
        let room = (64 << 10) - (SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + ALIGN) as u32;
        let with_record = |record_bytes_max| WalConfig {
            record_bytes_max,
            ..WalConfig::for_test()
        };
        assert_eq!(field(with_record(room)), None);
        assert_eq!(field(with_record(room + 1)), Some("record_bytes_max"));
        let every = |d| WalConfig {
            durability: Durability::Interval(d),
            ..WalConfig::for_test()
        };
        let ms = Duration::from_millis;
        assert_eq!(field(every(ms(1))), None);
        assert_eq!(
            field(every(ms(1) - Duration::from_nanos(1))),
            Some("durability")
        );
        assert_eq!(field(every(ms(60_000))), None);
        assert_eq!(
            field(every(ms(60_000) + Duration::from_nanos(1))),
            Some("durability")
        );
        assert_eq!(field(every(ms(500))), None);
    }
}
