//! The WAL broken on purpose: cut at every byte of the tail, every bit of a record flipped, the
//! disk filled, fsync failing, segments removed or repeated; plus group commit, truncation,
//! locking and the `dcore wal` commands.

mod harness;

use distributed_core::persistence::wal::{
    self, BadRecord, Corruption, Durability, RecordType, Wal, WalConfig, WalError,
};
use distributed_core::testing::FaultPlan;
use harness::{dcore, faulty_fs, modes_under, wal_records};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// 4 KiB segments: a few dozen records make several of them.
fn small() -> WalConfig {
    WalConfig {
        segment_bytes: 4096,
        record_bytes_max: 1024,
        durability: Durability::Never,
    }
}

/// A log of 4 KiB segments with `durability`, on a filesystem that fails on demand.
fn faulty_small(dir: &Path, durability: Durability) -> (Arc<FaultPlan>, Wal) {
    let (plan, fs) = faulty_fs();
    let config = WalConfig {
        durability,
        ..small()
    };
    (plan, Wal::open_with_fs(dir, config, fs).unwrap())
}

fn payload(i: u64) -> Vec<u8> {
    let len = 40 + (i * 37 % 90) as usize;
    (0..len).map(|j| (i as usize * 7 + j) as u8).collect()
}

fn append_n(log: &Wal, from: u64, n: u64) {
    for i in from..from + n {
        assert_eq!(log.append(RecordType::DATA, &payload(i)).unwrap(), i);
    }
}

fn check_prefix(log: &Wal, n: u64) {
    assert_eq!(log.last_index(), n, "last index");
    let got = wal_records(log);
    assert_eq!(got.len() as u64, n);
    for (i, p) in got {
        assert_eq!(p, payload(i), "payload of {i}");
    }
}

#[derive(Debug, Clone)]
struct Loc {
    path: PathBuf,
    offset: u64,
    payload_len: u64,
}

impl Loc {
    fn end_of_payload(&self) -> u64 {
        self.offset + 24 + self.payload_len
    }
    fn end(&self) -> u64 {
        (self.offset + 24 + self.payload_len).div_ceil(8) * 8
    }
}

/// Where every record is, by index.
fn locate(dir: &Path) -> BTreeMap<u64, Loc> {
    let mut found = Vec::new();
    let fs = wal::fs::OsFs;
    let r = wal::scan(&fs, dir, &mut |v| {
        found.push((v.index, v.offset, v.payload.len() as u64))
    })
    .unwrap();
    assert!(r.problem.is_none(), "{:?}", r.problem);
    found
        .into_iter()
        .map(|(index, offset, payload_len)| {
            let seg = r.segments.iter().rfind(|s| s.first_index <= index).unwrap();
            let path = seg.path.clone();
            (
                index,
                Loc {
                    path,
                    offset,
                    payload_len,
                },
            )
        })
        .collect()
}

fn open(dir: &Path) -> Result<Wal, WalError> {
    Wal::open(dir, small())
}

/// Overwrites `path` with `bytes`, and sets its length to theirs.
fn restore(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

/// Removes the segments that were not in `keep` (made by a previous round of a test).
fn remove_segments_but(dir: &Path, keep: &[&Path]) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if wal::parse_segment_name(&p).is_some() && !keep.contains(&p.as_path()) {
            std::fs::remove_file(&p).unwrap();
        }
    }
}

/// What `dcore wal verify` and `dump` read: every record's index, type, offset, checksum
/// and payload, in order, across segments.
#[test]
fn a_scan_visits_every_record_with_its_payload() {
    let dir = tmp();
    let log = Wal::open(dir.path(), small()).unwrap();
    append_n(&log, 1, 60);
    log.append(RecordType::new(7).unwrap(), b"seven").unwrap();
    log.sync().unwrap();
    drop(log);
    let mut seen = Vec::new();
    let r = wal::scan(&wal::fs::OsFs, dir.path(), &mut |v| {
        assert_eq!(
            v.payload_crc,
            crc32c::crc32c(v.payload),
            "record {}",
            v.index
        );
        seen.push((v.index, v.kind.get(), v.offset, v.payload.to_vec()));
    })
    .unwrap();
    assert!(r.problem.is_none(), "{:?}", r.problem);
    assert!(r.segments.len() > 1, "several segments");
    assert_eq!(
        (r.records, r.first_index(), r.last_index()),
        (61, Some(1), Some(61))
    );
    assert_eq!(seen.len(), 61);
    for (i, (index, kind, offset, bytes)) in seen.iter().enumerate() {
        let i = i as u64 + 1;
        assert_eq!(*index, i);
        if i <= 60 {
            assert_eq!((*kind, bytes), (RecordType::DATA.get(), &payload(i)));
        } else {
            assert_eq!((*kind, &bytes[..]), (7, &b"seven"[..]));
        }
        assert_eq!(offset % 8, 0);
    }
    let on_disk: u64 = (r.segments.iter()).map(|s| s.file_bytes).sum();
    assert_eq!(r.bytes_scanned, on_disk);
}

#[test]
fn cut_at_every_byte_of_the_last_record_keeps_exactly_the_complete_records() {
    let d = tmp();
    let n = 20;
    append_n(&open(d.path()).unwrap(), 1, n);
    let last = locate(d.path())[&n].clone();
    let original = std::fs::read(&last.path).unwrap();
    for cut in last.offset..last.end() {
        for truncate_file in [false, true] {
            let mut bytes = original.clone();
            if truncate_file {
                bytes.truncate(cut as usize);
            } else {
                bytes[cut as usize..].fill(0);
            }
            restore(&last.path, &bytes);
            remove_segments_but(d.path(), &[&last.path]);
            let complete = !truncate_file && cut >= last.end_of_payload();
            let keep = if complete { n } else { n - 1 };
            let log = open(d.path()).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            check_prefix(&log, keep);
            let torn = cut > last.offset && !complete;
            assert_eq!(log.recovery().torn_tail.is_some(), torn, "cut {cut}");
            assert_eq!(log.stats().torn_tails_truncated, u64::from(torn));
            // The log goes on cleanly from there, and reopens the same.
            append_n(&log, keep + 1, 2);
            drop(log);
            let log = open(d.path()).unwrap();
            check_prefix(&log, keep + 2);
            assert!(log.recovery().torn_tail.is_none());
        }
    }
}

#[test]
fn cut_at_every_byte_of_a_multi_record_tail() {
    let d = tmp();
    let log = open(d.path()).unwrap();
    append_n(&log, 1, 10);
    let batch: Vec<Vec<u8>> = (11..15).map(payload).collect();
    let recs: Vec<(RecordType, &[u8])> = batch
        .iter()
        .map(|p| (RecordType::DATA, p.as_slice()))
        .collect();
    assert_eq!(log.append_batch(&recs).unwrap(), 11..15);
    drop(log);
    let locs = locate(d.path());
    assert_eq!(
        locs[&11].path, locs[&14].path,
        "the tail sits in one segment"
    );
    let path = locs[&14].path.clone();
    let original = std::fs::read(&path).unwrap();
    for cut in locs[&11].offset..locs[&14].end() {
        let mut bytes = original.clone();
        bytes[cut as usize..].fill(0);
        restore(&path, &bytes);
        let complete = (11..15).filter(|i| locs[i].end_of_payload() <= cut).count() as u64;
        let log = open(d.path()).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        check_prefix(&log, 10 + complete);
    }
}

fn flip(path: &Path, bit: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[(bit / 8) as usize] ^= 1 << (bit % 8);
    std::fs::write(path, b).unwrap();
}

#[test]
fn flipping_any_bit_of_a_middle_record_refuses_the_log_naming_file_and_offset() {
    let d = tmp();
    append_n(&open(d.path()).unwrap(), 1, 100);
    let locs = locate(d.path());
    let last_seg = locs[&100].path.clone();
    let in_last = *locs.iter().find(|(_, l)| l.path == last_seg).unwrap().0 + 1;
    // A record in the middle of the last segment, and one in an earlier segment.
    for victim in [in_last, 30] {
        let l = locs[&victim].clone();
        assert!(victim < 100);
        for bit in l.offset * 8..l.end() * 8 {
            flip(&l.path, bit);
            match open(d.path()) {
                Err(WalError::Corrupt { path, offset, what }) => {
                    assert_eq!((path, offset), (l.path.clone(), l.offset), "bit {bit}");
                    let msg = WalError::Corrupt {
                        path: l.path.clone(),
                        offset,
                        what,
                    }
                    .to_string();
                    assert!(msg.contains(&format!("offset {}", l.offset)), "{msg}");
                }
                other => panic!("record {victim} bit {bit}: opened: {other:?}"),
            }
            flip(&l.path, bit);
        }
    }
    check_prefix(&open(d.path()).unwrap(), 100);
}

#[test]
fn flipping_any_bit_of_the_tail_record_truncates_it() {
    let d = tmp();
    append_n(&open(d.path()).unwrap(), 1, 40);
    let l = locate(d.path())[&40].clone();
    let original = std::fs::read(&l.path).unwrap();
    for bit in l.offset * 8..l.end() * 8 {
        flip(&l.path, bit);
        let log = open(d.path()).unwrap_or_else(|e| panic!("bit {bit}: {e}"));
        check_prefix(&log, 39);
        let torn = log.recovery().torn_tail.clone().expect("a torn tail");
        assert_eq!((&torn.path, torn.offset), (&l.path, l.offset));
        // Why (the record's own fault, not stray bytes), and how much was zeroed: at least
        // the header (its checksum is never all zeros), at most the record.
        assert_ne!(torn.reason, BadRecord::StrayBytes, "bit {bit}");
        let len = std::fs::metadata(&l.path).unwrap().len();
        assert_eq!(
            len,
            original.len() as u64,
            "bit {bit}: zeroed in place, not grown"
        );
        assert!(
            (24..=l.end() - l.offset).contains(&torn.bytes),
            "bit {bit}: {torn:?}"
        );
        drop(log);
        restore(&l.path, &original);
    }
}

/// A torn tail far into its segment is zeroed in place: the segment keeps its size and its
/// bytes before the tail.
#[test]
fn a_torn_tail_is_zeroed_in_place() {
    let d = tmp();
    let log = open(d.path()).unwrap();
    for i in 1..=3u8 {
        log.append(RecordType::DATA, &[i; 1000]).unwrap();
    }
    drop(log);
    let l = locate(d.path())[&3].clone();
    assert!(l.offset > 2000, "{l:?}");
    let original = std::fs::read(&l.path).unwrap();
    let mut bytes = original.clone();
    bytes[l.offset as usize + 500] ^= 1;
    restore(&l.path, &bytes);
    let log = open(d.path()).unwrap();
    let torn = log.recovery().torn_tail.clone().expect("a torn tail");
    assert_eq!((torn.offset, torn.bytes), (l.offset, l.end() - l.offset));
    let after = std::fs::read(&l.path).unwrap();
    assert_eq!(after.len(), original.len());
    assert_eq!(after[..l.offset as usize], original[..l.offset as usize]);
    assert!(after[l.offset as usize..].iter().all(|&b| b == 0));
    assert_eq!(
        wal_records(&log),
        vec![(1, vec![1; 1000]), (2, vec![2; 1000])]
    );
}

#[test]
fn a_hole_or_a_repeat_is_corruption_even_at_the_tail() {
    let d = tmp();
    let n = 100;
    append_n(&open(d.path()).unwrap(), 1, n);
    let locs = locate(d.path());
    // Repeat: the last record's bytes replaced by a copy of a record with the same length.
    let same = (1..n).rfind(|i| payload(*i).len() == payload(n).len());
    if let Some(twin) = same {
        let (a, b) = (locs[&twin].clone(), locs[&n].clone());
        let original = std::fs::read(&b.path).unwrap();
        let src = std::fs::read(&a.path).unwrap();
        let mut bytes = original.clone();
        bytes[b.offset as usize..b.end() as usize]
            .copy_from_slice(&src[a.offset as usize..a.end() as usize]);
        restore(&b.path, &bytes);
        match open(d.path()) {
            Err(WalError::Corrupt {
                what:
                    Corruption::Record {
                        reason: BadRecord::UnexpectedIndex { expected, .. },
                        ..
                    },
                ..
            }) => assert_eq!(expected, n),
            other => panic!("repeat accepted: {other:?}"),
        }
        restore(&b.path, &original);
    }
    // Hole: a whole middle segment removed.
    let segs: Vec<PathBuf> = {
        let mut v: Vec<_> = locs.values().map(|l| l.path.clone()).collect();
        v.dedup();
        v
    };
    assert!(segs.len() >= 3, "{segs:?}");
    std::fs::remove_file(&segs[1]).unwrap();
    match open(d.path()) {
        Err(WalError::Corrupt {
            what: Corruption::IndexGap { .. },
            path,
            ..
        }) => {
            assert_eq!(path, segs[2])
        }
        other => panic!("hole accepted: {other:?}"),
    }
}

/// A lost write: the next-to-last record zeroed whole. The one valid record after the hole
/// makes it corruption in the middle, found at its exact offset, and open refuses the log
/// instead of cutting the last record off as a torn tail.
#[test]
fn a_zeroed_record_before_the_last_is_found_by_the_look_ahead() {
    let d = tmp();
    let n = 100;
    append_n(&open(d.path()).unwrap(), 1, n);
    let locs = locate(d.path());
    let (hole, last) = (locs[&(n - 1)].clone(), locs[&n].clone());
    assert_eq!(hole.path, last.path, "the two last records share a segment");
    assert_eq!(hole.end(), last.offset);
    assert!(hole.end() - hole.offset >= 64, "a hole wider than a header");
    let mut bytes = std::fs::read(&last.path).unwrap();
    bytes[hole.offset as usize..hole.end() as usize].fill(0);
    restore(&last.path, &bytes);
    match open(d.path()) {
        Err(WalError::Corrupt {
            path,
            offset,
            what:
                Corruption::Record {
                    reason: BadRecord::StrayBytes,
                    expected_index,
                    valid_record_after,
                },
        }) => {
            assert_eq!((path, offset), (last.path.clone(), hole.offset));
            assert_eq!(expected_index, n - 1);
            assert_eq!(valid_record_after, Some(last.offset));
        }
        other => panic!("a hole before the last record accepted: {other:?}"),
    }
}

/// A segment's first record, empty, claiming a later index (its header checksum made good):
/// the look-ahead names that very record as the valid one after the problem (its first
/// non-zero byte is its type, four bytes in, near the segment header).
#[test]
fn a_later_index_at_the_start_of_a_segment_is_named_at_its_offset() {
    let d = tmp();
    let log = open(d.path()).unwrap();
    for _ in 0..3 {
        log.append(RecordType::DATA, b"").unwrap();
    }
    drop(log);
    let locs = locate(d.path());
    let first = locs[&1].clone();
    assert_eq!(first.offset, 32, "right after the segment header");
    let mut bytes = std::fs::read(&first.path).unwrap();
    let h = first.offset as usize;
    bytes[h + 8..h + 16].copy_from_slice(&5u64.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[h..h + 20]);
    bytes[h + 20..h + 24].copy_from_slice(&crc.to_le_bytes());
    restore(&first.path, &bytes);
    match open(d.path()) {
        Err(WalError::Corrupt {
            offset,
            what:
                Corruption::Record {
                    reason: BadRecord::UnexpectedIndex { expected, found },
                    valid_record_after,
                    ..
                },
            ..
        }) => {
            assert_eq!((offset, expected, found), (32, 1, 5));
            assert_eq!(valid_record_after, Some(32));
        }
        other => panic!("a record out of order accepted: {other:?}"),
    }
}

/// Segment files in `dir`.
fn segment_files(dir: &Path) -> usize {
    (std::fs::read_dir(dir).unwrap())
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("wal".as_ref()))
        .count()
}

/// Appends until the disk is full; returns how many were acknowledged.
fn fill_disk(log: &Wal) -> u64 {
    for i in 1..10_000 {
        match log.append(RecordType::DATA, &payload(i)) {
            Ok(idx) => assert_eq!(idx, i),
            Err(e) => {
                assert!(matches!(e, WalError::Io { .. }), "{e}");
                assert!(matches!(
                    log.append(RecordType::DATA, b"x"),
                    Err(WalError::Poisoned(_))
                ));
                return i - 1;
            }
        }
    }
    panic!("the disk never filled up");
}

#[test]
fn disk_full_during_append_loses_nothing_acknowledged_and_reopens_cleanly() {
    for durability in [Durability::Never, Durability::Always] {
        // Budgets that run out inside the first segment's records, at the second segment's
        // preallocation, and inside later records.
        for budget in (4096..4096 + 3000)
            .step_by(97)
            .chain((8192..8192 + 900).step_by(131))
        {
            let d = tmp();
            let (plan, fs) = faulty_fs();
            plan.set_write_budget(budget);
            let config = WalConfig {
                durability,
                ..small()
            };
            let log = Wal::open_with_fs(d.path(), config.clone(), fs).unwrap();
            let acked = fill_disk(&log);
            drop(log);
            let log = Wal::open(d.path(), config).unwrap_or_else(|e| panic!("{budget}: {e}"));
            let kept = log.last_index();
            // A record whose bytes all made it may survive unacknowledged; nothing else may.
            assert!(
                kept == acked || kept == acked + 1,
                "budget {budget}: {kept} vs {acked}"
            );
            check_prefix(&log, kept);
            append_n(&log, kept + 1, 50);
            drop(log);
            check_prefix(&open(d.path()).unwrap(), kept + 50);
        }
    }
}

/// `segments_created` counts the first segment of a new log and every roll, never the
/// segments an open found.
#[test]
fn segments_created_counts_new_segments_only() {
    let d = tmp();
    let log = open(d.path()).unwrap();
    assert_eq!(log.stats().segments_created, 1, "a new log");
    append_n(&log, 1, 3);
    drop(log);
    let log = open(d.path()).unwrap();
    assert_eq!(log.stats().segments_created, 0, "one segment found");
    append_n(&log, 4, 60);
    let rolls = log.stats().segments_created;
    drop(log);
    let segments = locate(d.path())
        .values()
        .map(|l| l.path.clone())
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(rolls, segments.len() as u64 - 1);
    assert_eq!(
        open(d.path()).unwrap().stats().segments_created,
        0,
        "several found"
    );
}

/// A segment larger than the preallocation chunk (1 MiB) and not a multiple of it is made
/// exactly `segment_bytes` long.
#[test]
fn a_segment_is_preallocated_to_its_exact_size() {
    let d = tmp();
    let config = WalConfig {
        segment_bytes: (1 << 20) + 4096,
        ..small()
    };
    let log = Wal::open(d.path(), config).unwrap();
    append_n(&log, 1, 3);
    drop(log);
    let seg = locate(d.path())[&1].path.clone();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), (1 << 20) + 4096);
}

/// The figures for metrics: one flush duration per data flush, and the counters.
#[test]
fn figures_hold_one_duration_per_flush() {
    let d = tmp();
    let (plan, log) = faulty_small(d.path(), Durability::Always);
    plan.set_sync_delay(Duration::from_millis(2));
    append_n(&log, 1, 5);
    let f = log.figures();
    assert_eq!(f.stats, log.stats());
    assert_eq!(f.stats.fsyncs, 5);
    assert_eq!(f.fsync_duration.count(), 5);
    assert_eq!(log.fsync_durations().count(), 5);
    assert!(f.fsync_duration.sum_seconds() >= 0.010, "{f:?}");
}

/// With an interval flusher, closing the log stops it and flushes what is left, once; the
/// log keeps the config it was opened with.
#[test]
fn closing_an_interval_log_flushes_what_is_left() {
    let d = tmp();
    let interval = Durability::Interval(Duration::from_secs(60));
    let (plan, log) = faulty_small(d.path(), interval);
    assert_eq!(
        log.config(),
        &WalConfig {
            durability: interval,
            ..small()
        }
    );
    append_n(&log, 1, 3);
    let before = plan.syncs();
    drop(log);
    assert_eq!(plan.syncs(), before + 1, "one flush at close");
}

/// Every segment removed by a truncation is made durable with a flush of the directory.
#[test]
fn removing_segments_flushes_the_directory_each_time() {
    let d = tmp();
    let (plan, log) = faulty_small(d.path(), Durability::Never);
    append_n(&log, 1, 150);
    let n = segment_files(d.path());
    assert!(n >= 4, "{n} segments");
    let dir_syncs = || plan.synced_dirs().iter().filter(|p| *p == d.path()).count();
    let before = dir_syncs();
    let first = log.truncate_prefix(log.first_index() + 40).unwrap();
    let dropped = n - segment_files(d.path());
    assert!(dropped >= 1 && first > 1);
    assert_eq!(dir_syncs(), before + dropped);
    let (before, n) = (dir_syncs(), segment_files(d.path()));
    log.truncate_suffix(first).unwrap();
    assert_eq!(segment_files(d.path()), 1);
    assert_eq!(dir_syncs(), before + n - 1);
}

/// Records fill a segment to its last byte, and a batch spanning several segments lays them
/// out exactly as the same records appended one at a time.
#[test]
fn segments_are_filled_exactly_and_batches_lay_out_like_single_appends() {
    // 32 header bytes + 4 records of 1016 bytes (992 of payload) = 4096.
    let d = tmp();
    let log = open(d.path()).unwrap();
    for i in 0..5u8 {
        log.append(RecordType::DATA, &[i + 1; 992]).unwrap();
    }
    drop(log);
    let locs = locate(d.path());
    assert_eq!(
        locs[&4].path, locs[&1].path,
        "the fourth fills the first segment"
    );
    assert_eq!(locs[&4].end(), 4096);
    assert_ne!(locs[&5].path, locs[&1].path);

    let one = tmp();
    let batch = tmp();
    let log = open(one.path()).unwrap();
    append_n(&log, 1, 120);
    drop(log);
    let payloads: Vec<Vec<u8>> = (1..=120).map(payload).collect();
    let records: Vec<(RecordType, &[u8])> = payloads
        .iter()
        .map(|p| (RecordType::DATA, &p[..]))
        .collect();
    let log = open(batch.path()).unwrap();
    assert_eq!(log.append_batch(&records).unwrap(), 1..121);
    drop(log);
    let layout = |d: &Path| {
        (locate(d).into_iter())
            .map(|(i, l)| (i, l.path.file_name().unwrap().to_owned(), l.offset))
            .collect::<Vec<_>>()
    };
    let (a, b) = (layout(one.path()), layout(batch.path()));
    assert!(a.last().unwrap().1 != a[0].1, "several segments");
    assert_eq!(a, b);
}

/// Truncating at a segment boundary: keeping the first record of the last segment keeps
/// that segment; keeping only what is before it empties the segment in place (no file
/// removed or created); later segments go whole.
#[test]
fn truncate_suffix_at_a_segment_boundary() {
    let d = tmp();
    let log = open(d.path()).unwrap();
    append_n(&log, 1, 150);
    // The first index of each segment, from the scan `dcore wal verify` uses.
    let firsts = |d: &Path| {
        let r = wal::scan(&wal::fs::OsFs, d, &mut |_| {}).unwrap();
        r.segments.iter().map(|s| s.first_index).collect::<Vec<_>>()
    };
    let before = firsts(d.path());
    assert!(before.len() >= 4, "{before:?}");
    let (third, fourth) = (before[2], before[3]);
    // Keep the first record of the fourth segment: the fourth stays, later ones go.
    log.truncate_suffix(fourth).unwrap();
    assert_eq!(log.last_index(), fourth);
    assert_eq!(segment_files(d.path()), 4);
    // Keep everything before it: the fourth is emptied, not removed.
    log.truncate_suffix(fourth - 1).unwrap();
    assert_eq!(log.last_index(), fourth - 1);
    assert_eq!(segment_files(d.path()), 4);
    check_prefix(&log, fourth - 1);
    // And before the third's first: the fourth goes, the third is emptied.
    log.truncate_suffix(third - 1).unwrap();
    assert_eq!(segment_files(d.path()), 3);
    assert_eq!(
        log.append(RecordType::DATA, &payload(third)).unwrap(),
        third
    );
    drop(log);
    check_prefix(&open(d.path()).unwrap(), third);
}

/// A record damaged on disk under an open log, met by a truncation that reads up to it:
/// refused as corruption naming the record's own fault, and the log is poisoned.
#[test]
fn a_truncation_that_meets_a_damaged_record_names_it() {
    let d = tmp();
    let log = open(d.path()).unwrap();
    append_n(&log, 1, 40);
    let l = locate(d.path())[&38].clone();
    flip(&l.path, (l.offset + 30) * 8);
    match log.truncate_suffix(39) {
        Err(WalError::Corrupt {
            path,
            offset,
            what:
                Corruption::Record {
                    reason: BadRecord::PayloadChecksum,
                    expected_index: 38,
                    ..
                },
        }) => assert_eq!((path, offset), (l.path.clone(), l.offset)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        log.append(RecordType::DATA, b"x"),
        Err(WalError::Poisoned(_))
    ));
}

/// A failed flush names the operation and the segment it failed on (the active one).
#[test]
fn a_failed_flush_names_the_active_segment() {
    let d = tmp();
    let (plan, log) = faulty_small(d.path(), Durability::Never);
    append_n(&log, 1, 60);
    let active = locate(d.path())[&60].path.clone();
    assert_ne!(active, locate(d.path())[&1].path, "not the first segment");
    plan.fail_next_sync();
    match log.sync() {
        Err(WalError::Io { op, path, .. }) => assert_eq!((op, path), ("fsync", active)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failed_fsync_poisons_the_log_and_is_never_retried() {
    let d = tmp();
    let (plan, fs) = faulty_fs();
    let config = WalConfig {
        durability: Durability::Always,
        ..small()
    };
    let log = Arc::new(Wal::open_with_fs(d.path(), config.clone(), fs).unwrap());
    append_n(&log, 1, 5);
    // Concurrent appenders: all of them must come back with an error, none may hang.
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for _ in 0..10_000 {
                    match log.append(RecordType::DATA, b"concurrent") {
                        Ok(i) => acked.push(i),
                        Err(e) => return (acked, e),
                    }
                }
                panic!("no error within 10000 appends");
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    plan.fail_next_sync();
    let mut acked = vec![1, 2, 3, 4, 5];
    for w in writers {
        let (a, e) = w.join().unwrap();
        assert!(
            matches!(e, WalError::Io { .. } | WalError::Poisoned(_)),
            "{e}"
        );
        acked.extend(a);
    }
    assert_eq!(plan.sync_failures(), 1);
    let syncs = plan.syncs();
    assert!(matches!(
        log.append(RecordType::DATA, b"later"),
        Err(WalError::Poisoned(_))
    ));
    assert!(matches!(log.sync(), Err(WalError::Poisoned(_))));
    assert_eq!(plan.syncs(), syncs, "a failed fsync must never be retried");
    drop(log);
    let log = Wal::open(d.path(), config).unwrap();
    let have: std::collections::BTreeSet<u64> =
        wal_records(&log).into_iter().map(|(i, _)| i).collect();
    for i in acked {
        assert!(have.contains(&i), "acknowledged record {i} lost");
    }
}

#[test]
fn group_commit_shares_one_fsync_among_concurrent_appenders() {
    let d = tmp();
    let (plan, fs) = faulty_fs();
    plan.set_sync_delay(Duration::from_millis(2));
    let config = WalConfig {
        durability: Durability::Always,
        ..WalConfig::for_test()
    };
    let log = Arc::new(Wal::open_with_fs(d.path(), config, fs).unwrap());
    let (threads, each) = (8u64, 50u64);
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..each)
                    .map(|k| {
                        log.append(RecordType::DATA, &payload(t * 1000 + k))
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut idx: Vec<u64> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
    idx.sort();
    assert_eq!(
        idx,
        (1..=threads * each).collect::<Vec<_>>(),
        "dense, no repeats"
    );
    let s = log.stats();
    assert_eq!(s.records, threads * each);
    assert!(
        s.fsyncs * 2 < threads * each,
        "{} fsyncs for {} appends: no group commit",
        s.fsyncs,
        threads * each
    );
}

#[test]
fn interval_mode_flushes_in_the_background_and_stops_on_drop() {
    let d = tmp();
    let (plan, log) = faulty_small(d.path(), Durability::Interval(Duration::from_millis(5)));
    let before = log.stats().fsyncs;
    append_n(&log, 1, 3);
    let mut waited = 0;
    while log.stats().fsyncs == before && waited < 200 {
        std::thread::sleep(Duration::from_millis(5));
        waited += 1;
    }
    assert!(
        log.stats().fsyncs > before,
        "no background flush within a second"
    );
    drop(log);
    let after = plan.syncs();
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(plan.syncs(), after, "the flush thread outlived the log");
}

#[test]
fn truncate_suffix_and_prefix_then_reopen() {
    let d = tmp();
    let log = open(d.path()).unwrap();
    append_n(&log, 1, 100);
    // Back into an earlier segment, then go on with new records.
    log.truncate_suffix(37).unwrap();
    assert_eq!(log.last_index(), 37);
    append_n(&log, 38, 10);
    check_prefix(&log, 47);
    drop(log);
    let log = open(d.path()).unwrap();
    check_prefix(&log, 47);
    assert!(log.recovery().torn_tail.is_none());
    // Drop whole segments behind 40: the first index moves to a segment start <= 41.
    let first = log.truncate_prefix(40).unwrap();
    assert!(first > 1 && first <= 41, "{first}");
    assert_eq!(log.first_index(), first);
    assert!(matches!(
        log.read_from(first - 1),
        Err(WalError::IndexOutOfRange { .. })
    ));
    let got = wal_records(&log);
    assert_eq!(got.first().unwrap().0, first);
    assert_eq!(got.last().unwrap().0, 47);
    drop(log);
    let log = open(d.path()).unwrap();
    assert_eq!((log.first_index(), log.last_index()), (first, 47));
    // Emptying the log.
    log.truncate_suffix(first - 1).unwrap();
    assert_eq!(log.last_index(), first - 1);
    assert_eq!(
        log.append(RecordType::DATA, &payload(first)).unwrap(),
        first
    );
    drop(log);
    let log = open(d.path()).unwrap();
    assert_eq!(wal_records(&log), vec![(first, payload(first))]);
}

#[test]
fn readers_start_anywhere_and_cross_segments() {
    let d = tmp();
    let log = open(d.path()).unwrap();
    append_n(&log, 1, 80);
    for from in [1, 2, 31, 32, 33, 79, 80, 81] {
        let got: Vec<u64> = log
            .read_from(from)
            .unwrap()
            .map(|r| r.unwrap().index)
            .collect();
        assert_eq!(got, (from..=80).collect::<Vec<_>>(), "from {from}");
    }
    assert!(matches!(
        log.read_from(82),
        Err(WalError::IndexOutOfRange { .. })
    ));
}

#[test]
fn one_writer_per_directory_and_leftovers_are_cleaned() {
    let d = tmp();
    let log = open(d.path()).unwrap();
    assert!(matches!(open(d.path()), Err(WalError::Locked(_))));
    append_n(&log, 1, 3);
    drop(log);
    std::fs::write(d.path().join("00000000000000000004.wal.tmp"), b"half made").unwrap();
    std::fs::write(d.path().join("notes.txt"), b"not a segment").unwrap();
    let log = open(d.path()).unwrap();
    assert_eq!(log.recovery().temp_files_removed, 1);
    assert!(!d.path().join("00000000000000000004.wal.tmp").exists());
    check_prefix(&log, 3);
    drop(log);
    // The removal is made durable: one more directory flush than an open with nothing to
    // remove.
    let dir_syncs = |temp: bool| {
        if temp {
            std::fs::write(d.path().join("00000000000000000004.wal.tmp"), b"x").unwrap();
        }
        let (plan, log) = faulty_small(d.path(), Durability::Never);
        assert_eq!(log.recovery().temp_files_removed, usize::from(temp));
        plan.synced_dirs().len()
    };
    let (without, with) = (dir_syncs(false), dir_syncs(true));
    assert_eq!(with, without + 1);
}

#[test]
fn oversized_records_and_bad_configs_are_refused() {
    let d = tmp();
    let log = open(d.path()).unwrap();
    let big = vec![0u8; 1025];
    assert!(matches!(
        log.append(RecordType::DATA, &big),
        Err(WalError::RecordTooLarge {
            len: 1025,
            max: 1024
        })
    ));
    assert_eq!(log.last_index(), 0);
    drop(log);
    let bad = WalConfig {
        segment_bytes: 100,
        ..small()
    };
    assert!(matches!(Wal::open(d.path(), bad), Err(WalError::Config(_))));
}

#[test]
fn dcore_wal_verify_names_the_bad_record_and_repair_cuts_there_keeping_a_copy() {
    let d = tmp();
    append_n(&open(d.path()).unwrap(), 1, 60);
    let dir = d.path().to_str().unwrap();
    let ok = dcore(&["wal", "verify", dir, "--json"]);
    assert_eq!(ok.code(), Some(0), "{ok:?}");
    let v: serde_json::Value = serde_json::from_str(&ok.stdout).unwrap();
    assert_eq!(
        (v["records"].as_u64(), v["ok"].as_bool()),
        (Some(60), Some(true))
    );
    assert!(v["scan_mb_per_s"].as_f64().is_some());
    let l = locate(d.path())[&20].clone();
    flip(&l.path, l.offset * 8 + 3);
    let bad = dcore(&["wal", "verify", dir]);
    assert_eq!(bad.code(), Some(1));
    let text = &bad.stdout;
    let name = l.path.file_name().unwrap().to_str().unwrap();
    assert!(
        text.contains(name) && text.contains(&format!("offset {}", l.offset)),
        "{text}"
    );
    assert!(text.contains("corruption"), "{text}");
    let insp = dcore(&["wal", "inspect", dir, "--json", "--limit", "5"]);
    assert_eq!(insp.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(&insp.stdout).unwrap();
    assert_eq!(v["record_list"].as_array().unwrap().len(), 5);
    assert_eq!(v["problem"]["offset"].as_u64(), Some(l.offset));
    let backup = d.path().join("backup");
    let rep = dcore(&[
        "wal",
        "repair",
        dir,
        "--backup-dir",
        backup.to_str().unwrap(),
    ]);
    assert_eq!(rep.code(), Some(0), "{rep:?}");
    assert!(backup.join(name).exists(), "no copy kept");
    let (dirs, files) = modes_under(&backup);
    assert_eq!(dirs, [(backup.clone(), 0o700)], "the copy is private");
    assert!(files.iter().all(|(_, m)| *m == 0o600), "{files:?}");
    assert_eq!(dcore(&["wal", "verify", dir]).code(), Some(0));
    check_prefix(&open(d.path()).unwrap(), 19);
}

#[test]
fn a_new_log_directory_and_its_files_are_private() {
    let d = tmp();
    let dir = d.path().join("x").join("log");
    append_n(&open(&dir).unwrap(), 1, 60);
    let (dirs, files) = modes_under(&d.path().join("x"));
    assert_eq!(dirs.len(), 2);
    assert!(dirs.iter().all(|(_, m)| *m == 0o700), "{dirs:?}");
    assert!(files.len() > 2, "segments and LOCK: {files:?}");
    assert!(files.iter().all(|(_, m)| *m == 0o600), "{files:?}");
}

#[test]
fn dcore_bench_wal_prints_one_json_object_and_keeps_the_log_when_asked() {
    let d = tmp();
    let dir = d.path().join("bench");
    let dir_s = dir.to_str().unwrap();
    let args = [
        "bench",
        "wal",
        "--dir",
        dir_s,
        "--writers",
        "4",
        "--records",
        "400",
    ];
    let out = dcore(&[&args[..], &["--durability", "never", "--keep", "--json"]].concat());
    assert_eq!(out.code(), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    for k in [
        "writers",
        "records",
        "appends_per_s",
        "fsyncs_per_s",
        "mb_per_s",
        "p50_us",
        "p99_us",
    ] {
        assert!(v[k].is_number(), "{k} missing: {v}");
    }
    assert_eq!(dcore(&["wal", "verify", dir_s]).code(), Some(0));
    let again = dcore(&[&args[..], &["--json"]].concat());
    assert_eq!(
        again.code(),
        Some(2),
        "a directory holding a log must be refused"
    );
}

/// A record damaged under an open log (another process, a bad disk) is an error when read,
/// naming the file and offset, never a wrong record: read from the start, and from an index
/// past the damage in the same segment (the reader walks and checks the records before it).
#[test]
fn a_record_damaged_under_an_open_log_is_an_error_when_read() {
    let d = tmp();
    let log = open(d.path()).unwrap();
    append_n(&log, 1, 6);
    let locs = locate(d.path());
    let third = &locs[&3];
    assert_eq!(third.path, locs[&1].path, "one segment holds 1..=3");
    flip(&third.path, (third.offset + 30) * 8); // a payload byte of record 3
    let err = log.read_from(1).unwrap().nth(2).unwrap().unwrap_err();
    match &err {
        WalError::Corrupt {
            path, offset, what, ..
        } => {
            assert_eq!((path, *offset), (&third.path, third.offset), "{err}");
            assert!(matches!(
                what,
                Corruption::Record {
                    reason: BadRecord::PayloadChecksum,
                    expected_index: 3,
                    ..
                }
            ));
        }
        other => panic!("{other}"),
    }
    // Records before the damage still read; asking for one after it walks past the damaged
    // record, checking it, so that is the same error.
    assert_eq!(log.read_from(1).unwrap().next().unwrap().unwrap().index, 1);
    let err = log.read_from(5).unwrap_err_or_first();
    assert!(
        matches!(err, WalError::Corrupt { offset, .. } if offset == third.offset),
        "{err}"
    );
}

trait FirstError {
    fn unwrap_err_or_first(self) -> WalError;
}

impl FirstError for Result<wal::WalReader, WalError> {
    /// The error of `read_from`, or of the reader's first record.
    fn unwrap_err_or_first(self) -> WalError {
        match self {
            Err(e) => e,
            Ok(mut r) => r.next().expect("an item").expect_err("an error"),
        }
    }
}

#[test]
fn truncate_suffix_is_refused_out_of_range_and_once_poisoned() {
    let d = tmp();
    let (plan, log) = faulty_small(d.path(), Durability::Always);
    append_n(&log, 1, 100);
    let first = log.truncate_prefix(50).unwrap();
    assert!(first > 1 && first <= 51, "{first}");
    // Below what is kept: out of range, naming the range.
    match log.truncate_suffix(first - 2) {
        Err(WalError::IndexOutOfRange {
            index,
            first: f,
            last,
        }) => {
            assert_eq!((index, f, last), (first - 2, first, 100));
        }
        other => panic!("{other:?}"),
    }
    // At or past the end: nothing to do.
    log.truncate_suffix(100).unwrap();
    log.truncate_suffix(500).unwrap();
    assert_eq!(log.last_index(), 100);
    // The first kept index minus one empties the log.
    log.truncate_suffix(first - 1).unwrap();
    assert_eq!(log.last_index(), first - 1);
    assert_eq!(log.append(RecordType::DATA, b"again").unwrap(), first);
    // Poisoned: refused with the reason.
    plan.fail_next_sync();
    assert!(log.append(RecordType::DATA, b"x").is_err());
    assert!(matches!(
        log.truncate_suffix(first),
        Err(WalError::Poisoned(_))
    ));
    assert!(matches!(
        log.truncate_prefix(first),
        Err(WalError::Poisoned(_))
    ));
}

#[test]
fn an_interval_flush_that_fails_poisons_the_log() {
    let d = tmp();
    let (plan, log) = faulty_small(d.path(), Durability::Interval(Duration::from_millis(5)));
    plan.fail_next_sync();
    append_n(&log, 1, 1);
    // The background flush fails within a second; appends are refused from then on.
    let mut refused = None;
    for i in 2..=200 {
        std::thread::sleep(Duration::from_millis(5));
        if let Err(e) = log.append(RecordType::DATA, &payload(i)) {
            refused = Some(e);
            break;
        }
    }
    assert!(
        matches!(refused, Some(WalError::Poisoned(_))),
        "{refused:?}"
    );
    assert_eq!(plan.sync_failures(), 1);
    assert!(matches!(log.sync(), Err(WalError::Poisoned(_))));
}

/// A log whose active segment is empty and smaller than the new config's next record (the
/// segment size was raised): the empty segment is replaced, not left as an empty one in the
/// middle (which recovery would call corruption).
#[test]
fn an_empty_segment_too_small_for_the_next_record_is_replaced() {
    let d = tmp();
    drop(open(d.path()).unwrap()); // one empty 4 KiB segment
    let bigger = WalConfig {
        segment_bytes: 64 * 1024,
        record_bytes_max: 16 * 1024,
        durability: Durability::Never,
    };
    let log = Wal::open(d.path(), bigger.clone()).unwrap();
    let big = vec![7u8; 8 * 1024];
    assert_eq!(log.append(RecordType::DATA, &big).unwrap(), 1);
    drop(log);
    let segs: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
        .collect();
    assert_eq!(segs.len(), 1, "the empty segment was replaced");
    let log = Wal::open(d.path(), bigger).unwrap();
    assert_eq!(wal_records(&log), vec![(1, big)]);
}

#[test]
fn repair_of_a_clean_log_changes_nothing_and_a_dry_run_only_reports() {
    let d = tmp();
    let backup = tmp();
    let log = open(d.path()).unwrap();
    append_n(&log, 1, 40);
    drop(log);
    let fs = wal::fs::OsFs;
    let r = wal::repair(&fs, d.path(), backup.path(), false).unwrap();
    assert!(r.problem.is_none() && r.segments_removed.is_empty() && r.backup_dir.is_none());
    assert_eq!((r.bytes_zeroed, r.last_index_kept), (0, Some(40)));
    // Damage the middle of the last segment, then a dry run: a report, no change on disk.
    let locs = locate(d.path());
    let last = &locs[&40];
    let before = std::fs::read(&last.path).unwrap();
    let (&mid_index, mid) = locs
        .iter()
        .rfind(|(_, l)| l.path == last.path && l.offset < last.offset)
        .unwrap();
    assert!(
        locs.values()
            .any(|l| l.path == mid.path && l.offset < mid.offset),
        "a record before it in its segment"
    );
    flip(&mid.path, (mid.offset + 26) * 8);
    let damaged = std::fs::read(&last.path).unwrap();
    assert_ne!(before, damaged);
    let r = wal::repair(&fs, d.path(), backup.path(), true).unwrap();
    let p = r.problem.expect("the damage is found");
    assert_eq!(
        (p.path.as_path(), p.offset),
        (mid.path.as_path(), mid.offset)
    );
    assert!(r.segments_removed.is_empty());
    // From the bad record to the end of the last one; the records before it in its segment
    // are kept.
    assert_eq!(r.bytes_zeroed, last.end() - mid.offset);
    assert_eq!(r.last_index_kept, Some(mid_index - 1));
    assert_eq!(
        std::fs::read(&last.path).unwrap(),
        damaged,
        "a dry run changes nothing"
    );
    assert_eq!(
        std::fs::read_dir(backup.path()).unwrap().count(),
        0,
        "nor backs up"
    );
}

/// A segment's header must be valid and agree with its file name, wherever the segment is:
/// the open is refused at offset 0 of that file, and nothing after it is read.
#[test]
fn a_bad_segment_header_or_a_renamed_segment_is_corruption() {
    let d = tmp();
    append_n(&open(d.path()).unwrap(), 1, 100);
    let locs = locate(d.path());
    let mut segs: Vec<Loc> = locs.values().cloned().collect();
    segs.dedup_by(|a, b| a.path == b.path);
    assert!(segs.len() >= 3);
    let mid = segs[1].path.clone();
    let original = std::fs::read(&mid).unwrap();
    // A header byte changed: the checksum fails.
    flip(&mid, 17 * 8);
    match open(d.path()) {
        Err(WalError::Corrupt {
            what: Corruption::SegmentHeader { reason },
            path,
            offset: 0,
        }) => assert_eq!(
            (path, reason),
            (mid.clone(), "segment header checksum mismatch")
        ),
        other => panic!("bad header accepted: {other:?}"),
    }
    restore(&mid, &original);
    // The file renamed to claim a first index one higher than its header says.
    let named = wal::parse_segment_name(&mid).unwrap();
    let renamed = d.path().join(wal::segment_name(named + 1));
    std::fs::rename(&mid, &renamed).unwrap();
    match open(d.path()) {
        Err(WalError::Corrupt {
            what: Corruption::SegmentName { named: n, header },
            ..
        }) => assert_eq!((n, header), (named + 1, named)),
        other => panic!("renamed segment accepted: {other:?}"),
    }
}
