//! Reading a log directory back: every record verified, the first problem classified.
//!
//! [`scan`] is read-only (used by `dcore wal inspect|verify` and by open). At the first record
//! that is not valid (or stray bytes after the end of the data), the rest of that segment is
//! searched for a valid record with a higher index. The problem is a *torn tail* only if it is
//! in the last segment, nothing valid follows, and it is not a valid record with the wrong index;
//! anything else is corruption. [`recover`] (on open) clears a torn tail, counted and logged, and
//! refuses corruption, naming the file and offset. Nothing is ever skipped silently.

use super::format::{
    decode_segment_header, read_slot, record_len, BadRecord, RecordType, Slot, ALIGN,
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use super::fs::Fs;
use super::segment::{list_segments, read_segment, temp_files, zero_range};
use super::WalError;
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What is wrong with a log, beyond a single record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Corruption {
    /// The segment header is not valid.
    SegmentHeader {
        /// Why.
        reason: &'static str,
    },
    /// The file name and the header disagree on the first index.
    SegmentName {
        /// Index in the name.
        named: u64,
        /// Index in the header.
        header: u64,
    },
    /// A segment does not start where the previous one ended (a hole or a repeat).
    IndexGap {
        /// The index the segment should start with.
        expected: u64,
        /// The index it starts with.
        found: u64,
    },
    /// A segment other than the last holds no record.
    EmptySegment,
    /// A record (or the bytes where one should be) is not valid.
    Record {
        /// Why.
        #[serde(serialize_with = "display")]
        reason: BadRecord,
        /// The index that should be at this offset.
        expected_index: u64,
        /// Offset of a valid record with a higher index further on in the segment, if any (which
        /// makes this corruption in the middle rather than a torn tail).
        valid_record_after: Option<u64>,
    },
}

fn display<S: serde::Serializer>(v: &BadRecord, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::SegmentHeader { reason } => write!(f, "segment header: {reason}"),
            Corruption::SegmentName { named, header } => {
                write!(
                    f,
                    "file name says first index {named}, header says {header}"
                )
            }
            Corruption::IndexGap { expected, found } => {
                write!(f, "segment starts at index {found}, {expected} expected")
            }
            Corruption::EmptySegment => write!(f, "empty segment before the last one"),
            Corruption::Record {
                reason,
                expected_index,
                valid_record_after,
            } => {
                write!(f, "{reason} (record {expected_index})")?;
                if let Some(at) = valid_record_after {
                    write!(
                        f,
                        "; a valid record with a higher index follows at offset {at}"
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// The first problem of a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The segment file.
    pub path: PathBuf,
    /// Byte offset in it.
    pub offset: u64,
    /// What is wrong.
    pub what: Corruption,
    /// True if this is a torn tail that open truncates; false if open refuses the log.
    pub torn_tail: bool,
    /// End (exclusive, 8-aligned) of the non-zero bytes from `offset` on in that segment.
    pub garbage_end: u64,
}

/// One segment as a scan found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentSummary {
    /// The file.
    pub path: PathBuf,
    /// Index of the first record (from the header).
    pub first_index: u64,
    /// Valid records read.
    pub records: u64,
    /// End of the valid records (byte offset).
    pub data_end: u64,
    /// File size.
    pub file_bytes: u64,
}

impl SegmentSummary {
    /// Index of the last valid record, if there is one.
    pub fn last_index(&self) -> Option<u64> {
        (self.records > 0).then(|| self.first_index + self.records - 1)
    }
}

/// A valid record as a scan saw it.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// Index.
    pub index: u64,
    /// Type.
    pub kind: RecordType,
    /// Byte offset of the record header in its segment.
    pub offset: u64,
    /// CRC32C of the payload.
    pub payload_crc: u32,
    /// The payload.
    pub payload: &'a [u8],
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanReport {
    /// Segments scanned, in order (the scan stops after the one with the problem).
    pub segments: Vec<SegmentSummary>,
    /// Valid records read.
    pub records: u64,
    /// Bytes read from disk.
    pub bytes_scanned: u64,
    /// Wall time of the scan.
    pub elapsed: Duration,
    /// The first problem, if any.
    pub problem: Option<Problem>,
}

impl ScanReport {
    /// Index of the first record, if there is one.
    pub fn first_index(&self) -> Option<u64> {
        self.segments.first().map(|s| s.first_index)
    }
    /// Index of the last valid record, if there is one.
    pub fn last_index(&self) -> Option<u64> {
        self.segments.iter().rev().find_map(|s| s.last_index())
    }
    /// Scan speed in MB/s (10^6 bytes).
    pub fn mb_per_s(&self) -> f64 {
        let s = self.elapsed.as_secs_f64().max(1e-9);
        self.bytes_scanned as f64 / 1e6 / s
    }
}

/// Records and extent of one segment.
struct SegScan {
    records: u64,
    data_end: usize,
    bad: Option<BadRecord>,
    garbage_end: usize,
    valid_after: Option<usize>,
    next_index: u64,
}

fn scan_segment(bytes: &[u8], first: u64, visit: &mut dyn FnMut(&RecordView<'_>)) -> SegScan {
    let (mut off, mut expect, mut records) = (SEGMENT_HEADER_LEN, first, 0u64);
    let bad = loop {
        match read_slot(bytes, off, Some(expect)) {
            Slot::Record(h) => {
                let start = off + RECORD_HEADER_LEN;
                visit(&RecordView {
                    index: h.index,
                    kind: h.kind,
                    offset: off as u64,
                    payload_crc: h.payload_crc,
                    payload: &bytes[start..start + h.len as usize],
                });
                off += record_len(h.len as usize);
                expect += 1;
                records += 1;
            }
            Slot::End => break None,
            Slot::Bad(r) => break Some(r),
        }
    };
    let garbage_end = bytes[off..].iter().rposition(|&b| b != 0).map_or(off, |p| {
        (off + p + 1).next_multiple_of(ALIGN).min(bytes.len())
    });
    let valid_after = if garbage_end > off {
        look_ahead(bytes, off, garbage_end, expect)
    } else {
        None
    };
    SegScan {
        records,
        data_end: off,
        bad,
        garbage_end,
        valid_after,
        next_index: expect,
    }
}

/// Offset of a valid record with index `>= min_index` starting in `[from, to)`. Only offsets
/// near non-zero bytes are tried: a valid header is never all zeros.
fn look_ahead(bytes: &[u8], from: usize, to: usize, min_index: u64) -> Option<usize> {
    let mut o = from;
    while o < to {
        let p = o + bytes[o..to].iter().position(|&b| b != 0)?;
        let lo = (p.saturating_sub(RECORD_HEADER_LEN - 1) / ALIGN * ALIGN).max(o);
        let mut c = lo;
        while c <= p {
            if let Slot::Record(h) = read_slot(bytes, c, None) {
                if h.index >= min_index {
                    return Some(c);
                }
            }
            c += ALIGN;
        }
        o = p / ALIGN * ALIGN + ALIGN;
    }
    None
}

/// Scans the log in `dir` without changing anything, calling `visit` for each valid record.
/// Corruption is reported in [`ScanReport::problem`]; `Err` only for I/O errors.
pub fn scan(
    fs: &dyn Fs,
    dir: &Path,
    visit: &mut dyn FnMut(&RecordView<'_>),
) -> Result<ScanReport, WalError> {
    let started = Instant::now();
    let segs = list_segments(fs, dir)?;
    let mut report = ScanReport {
        segments: Vec::with_capacity(segs.len()),
        records: 0,
        bytes_scanned: 0,
        elapsed: Duration::ZERO,
        problem: None,
    };
    let mut buf = Vec::new();
    let mut expect: Option<u64> = None;
    for (i, (named, path)) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        read_segment(fs, path, None, &mut buf)?;
        report.bytes_scanned += buf.len() as u64;
        let problem = |what, offset| Problem {
            path: path.clone(),
            offset,
            what,
            torn_tail: false,
            garbage_end: offset,
        };
        let first = match decode_segment_header(&buf) {
            Ok(first) => first,
            Err(reason) => {
                report.problem = Some(problem(Corruption::SegmentHeader { reason }, 0));
                break;
            }
        };
        if first != *named {
            let what = Corruption::SegmentName {
                named: *named,
                header: first,
            };
            report.problem = Some(problem(what, 0));
            break;
        }
        if let Some(expected) = expect.filter(|&e| e != first) {
            let what = Corruption::IndexGap {
                expected,
                found: first,
            };
            report.problem = Some(problem(what, 0));
            break;
        }
        let s = scan_segment(&buf, first, visit);
        report.records += s.records;
        report.segments.push(SegmentSummary {
            path: path.clone(),
            first_index: first,
            records: s.records,
            data_end: s.data_end as u64,
            file_bytes: buf.len() as u64,
        });
        if s.garbage_end > s.data_end {
            report.problem = Some(classify(path, &s, last));
            break;
        }
        if s.records == 0 && !last {
            report.problem = Some(problem(Corruption::EmptySegment, s.data_end as u64));
            break;
        }
        expect = Some(s.next_index);
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

fn classify(path: &Path, s: &SegScan, last: bool) -> Problem {
    let reason = s.bad.unwrap_or(BadRecord::StrayBytes);
    let wrong_index = matches!(reason, BadRecord::UnexpectedIndex { .. });
    Problem {
        path: path.to_path_buf(),
        offset: s.data_end as u64,
        what: Corruption::Record {
            reason,
            expected_index: s.next_index,
            valid_record_after: s.valid_after.map(|o| o as u64),
        },
        torn_tail: last && s.valid_after.is_none() && !wrong_index,
        garbage_end: s.garbage_end as u64,
    }
}

/// A torn tail that open cleared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TornTail {
    /// The segment.
    pub path: PathBuf,
    /// Where the valid records ended.
    pub offset: u64,
    /// Bytes zeroed.
    pub bytes: u64,
    /// What was found there.
    #[serde(serialize_with = "display")]
    pub reason: BadRecord,
}

/// What open did to get the log into shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// The scan (before the torn tail, if any, was cleared).
    pub scan: ScanReport,
    /// The torn tail cleared, if there was one.
    pub torn_tail: Option<TornTail>,
    /// Leftover temp segments removed (a crash while creating a segment).
    pub temp_files_removed: usize,
}

/// Scans the log in `dir`; clears a torn tail (zeros from the last valid record to the last
/// non-zero byte, flushed) and removes leftover temp segments. Corruption is an error.
pub fn recover(fs: &dyn Fs, dir: &Path) -> Result<RecoveryReport, WalError> {
    let temps = temp_files(fs, dir)?;
    for t in &temps {
        fs.remove_file(t)
            .map_err(|e| WalError::io("remove", t, e))?;
    }
    if !temps.is_empty() {
        fs.sync_dir(dir)
            .map_err(|e| WalError::io("fsync dir", dir, e))?;
    }
    let scan = scan(fs, dir, &mut |_| {})?;
    let mut torn_tail = None;
    if let Some(p) = &scan.problem {
        if !p.torn_tail {
            return Err(WalError::Corrupt {
                path: p.path.clone(),
                offset: p.offset,
                what: p.what.clone(),
            });
        }
        torn_tail = Some(clear_tail(fs, p)?);
    }
    Ok(RecoveryReport {
        scan,
        torn_tail,
        temp_files_removed: temps.len(),
    })
}

fn clear_tail(fs: &dyn Fs, p: &Problem) -> Result<TornTail, WalError> {
    let file = fs
        .open_write(&p.path)
        .map_err(|e| WalError::io("open", &p.path, e))?;
    zero_range(&*file, &p.path, p.offset, p.garbage_end, false)?;
    file.sync_data()
        .map_err(|e| WalError::io("fsync", &p.path, e))?;
    let reason = match p.what {
        Corruption::Record { reason, .. } => reason,
        _ => BadRecord::StrayBytes,
    };
    let bytes = p.garbage_end - p.offset;
    tracing::warn!(
        path = %p.path.display(),
        offset = p.offset,
        bytes,
        %reason,
        "wal: torn tail truncated"
    );
    Ok(TornTail {
        path: p.path.clone(),
        offset: p.offset,
        bytes,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(first_index: u64, records: u64) -> SegmentSummary {
        SegmentSummary {
            path: PathBuf::from(format!("{first_index:020}.wal")),
            first_index,
            records,
            data_end: 0,
            file_bytes: 0,
        }
    }

    /// The first and last index `dcore wal verify` prints, and its speed.
    #[test]
    fn a_report_gives_its_first_and_last_index_and_its_speed() {
        assert_eq!(summary(7, 0).last_index(), None);
        assert_eq!(summary(1, 0).last_index(), None);
        assert_eq!(summary(7, 1).last_index(), Some(7));
        assert_eq!(summary(7, 5).last_index(), Some(11));

        let mut report = ScanReport {
            segments: vec![],
            records: 0,
            bytes_scanned: 0,
            elapsed: Duration::ZERO,
            problem: None,
        };
        assert_eq!(report.first_index(), None);
        assert_eq!(report.last_index(), None);
        report.segments = vec![summary(42, 3), summary(45, 0)];
        assert_eq!(report.first_index(), Some(42));
        assert_eq!(report.last_index(), Some(44));

        report.bytes_scanned = 6_000_000;
        report.elapsed = Duration::from_millis(1_500);
        assert!(
            (report.mb_per_s() - 4.0).abs() < 1e-9,
            "{}",
            report.mb_per_s()
        );
        report.bytes_scanned = 3_000_000;
        report.elapsed = Duration::from_secs(2);
        assert!(
            (report.mb_per_s() - 1.5).abs() < 1e-9,
            "{}",
            report.mb_per_s()
        );
        // A scan too quick to time is fast, not a division by zero.
        report.elapsed = Duration::ZERO;
        assert!(report.mb_per_s().is_finite() && report.mb_per_s() > 1e6);
    }

    /// What `dcore wal verify` and an open refused for corruption print.
    #[test]
    fn every_corruption_says_what_it_is() {
        let cases = [
            (
                Corruption::SegmentHeader {
                    reason: "bad magic",
                },
                "segment header: bad magic",
            ),
            (
                Corruption::SegmentName {
                    named: 5,
                    header: 9,
                },
                "file name says first index 5, header says 9",
            ),
            (
                Corruption::IndexGap {
                    expected: 10,
                    found: 12,
                },
                "segment starts at index 12, 10 expected",
            ),
            (
                Corruption::EmptySegment,
                "empty segment before the last one",
            ),
            (
                Corruption::Record {
                    reason: BadRecord::PayloadChecksum,
                    expected_index: 3,
                    valid_record_after: None,
                },
                "record payload checksum mismatch (record 3)",
            ),
            (
                Corruption::Record {
                    reason: BadRecord::Padding,
                    expected_index: 4,
                    valid_record_after: Some(96),
                },
                "non-zero padding after the record payload (record 4); a valid record with a \
                 higher index follows at offset 96",
            ),
        ];
        for (c, says) in cases {
            assert_eq!(c.to_string(), says);
        }
    }
}
