//! What every fuzz target checks, shared by the targets (`fuzz_targets/*.rs`, nightly,
//! cargo-fuzz) and by the stable test that replays the inputs under `fuzz/regressions/`
//! (`tests/fuzz_regressions.rs`, run by `cargo test`). A check panics when it finds a bug.

use distributed_core::identity::{Key, KEY_BYTES};
use distributed_core::persistence::wal::{segment_name, Wal, WalConfig, WalError};
use distributed_core::testing::{
    decode_frame, decode_packet, encode_packet, open_record, seal_record,
};
use distributed_core::transport::frame::{FrameSealer, FRAME_HEADER_BYTES};
use distributed_core::Keyring;
use std::path::{Path, PathBuf};

/// A target's check: panics on a bug.
pub type Check = fn(&[u8]);

/// The targets, by name (the directory names under `fuzz/regressions/`).
pub const TARGETS: &[(&str, Check)] = &[
    ("decode_packet", decode_packet_check),
    ("decode_frame", decode_frame_check),
    ("stream_record", stream_record_check),
    ("wal_recovery", wal_recovery_check),
];

/// Any bytes: the packet decoder returns an error or messages that re-encode to a packet that
/// decodes to the same messages.
pub fn decode_packet_check(data: &[u8]) {
    if let Ok(p) = decode_packet(data) {
        let again = decode_packet(&encode_packet(&p.messages)).expect("re-encoded packet decodes");
        assert_eq!(again.messages, p.messages);
    }
}

/// Any bytes: the frame header decoder returns an error or a body inside the input.
pub fn decode_frame_check(data: &[u8]) {
    if let Ok((_, body)) = decode_frame(data) {
        assert_eq!(body.len() + FRAME_HEADER_BYTES, data.len());
    }
}

/// Any bytes as one stream record (what a TCP peer sends after the length prefix), opened as
/// the node opens them: frame, then the sender's address and a packet. On a plain cluster an
/// error or messages that seal into a record that opens to the same; on an encrypted one the
/// same bytes never open (no key forged) and never panic.
pub fn stream_record_check(data: &[u8]) {
    let plain = FrameSealer::new(None, String::new());
    if let Ok(msgs) = open_record(data, &plain) {
        for (from, msg) in msgs {
            let again = open_record(&seal_record(from, &msg, &plain), &plain)
                .expect("a record sealed from what was opened opens");
            assert_eq!(again, vec![(from, msg)]);
        }
    }
    let keyed = FrameSealer::new(
        Some(Keyring::new(Key::from_bytes([7; KEY_BYTES]))),
        String::new(),
    );
    assert!(
        open_record(data, &keyed).is_err(),
        "arbitrary bytes opened under a key"
    );
}

/// The segment header for a segment whose first index is `first` (docs/wal.md).
pub fn segment_header(first: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(32);
    h.extend_from_slice(b"DCOREWAL");
    h.extend_from_slice(&1u16.to_le_bytes()); // version
    h.extend_from_slice(&0u16.to_le_bytes()); // flags
    h.extend_from_slice(&0u32.to_le_bytes()); // reserved
    h.extend_from_slice(&first.to_le_bytes());
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h
}

/// A valid record (type 1) for `index` with `payload`, padded to 8 bytes.
pub fn record_bytes(index: u64, payload: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(24 + payload.len() + 8);
    r.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    r.extend_from_slice(&[1, 0, 0, 0]);
    r.extend_from_slice(&index.to_le_bytes());
    r.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let crc = crc32c::crc32c(&r);
    r.extend_from_slice(&crc.to_le_bytes());
    r.extend_from_slice(payload);
    r.resize(r.len().next_multiple_of(8), 0);
    r
}

/// The segment file a WAL input stands for. The first byte chooses how the rest is read:
/// - even: the rest is the whole file;
/// - 1 mod 4: a valid segment header, then the rest;
/// - 3 mod 4: a valid segment header, valid records made from the rest (a length byte, then
///   that many payload bytes, each record), then damage: the file cut after `cut` bytes (two
///   bytes, little-endian; none if past the end) and the byte at `flip` (two bytes) inverted.
pub fn wal_segment(data: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = data.split_first() else {
        return Vec::new();
    };
    if mode % 2 == 0 {
        return rest.to_vec();
    }
    let mut file = segment_header(1);
    if mode % 4 == 1 {
        file.extend_from_slice(rest);
        return file;
    }
    let (cut, flip, mut payloads) = match rest {
        [c0, c1, f0, f1, tail @ ..] => (
            u16::from_le_bytes([*c0, *c1]) as usize,
            u16::from_le_bytes([*f0, *f1]) as usize,
            tail,
        ),
        _ => (usize::MAX, usize::MAX, &[][..]),
    };
    let mut index = 1;
    while let Some((&n, tail)) = payloads.split_first() {
        let n = (n as usize).min(tail.len());
        file.extend_from_slice(&record_bytes(index, &tail[..n]));
        index += 1;
        payloads = &tail[n..];
    }
    // The preallocated, zeroed rest of a segment.
    file.resize(file.len() + 64, 0);
    if flip < file.len() {
        file[flip] ^= 0xff;
    }
    file.truncate(cut.max(1));
    file
}

/// A directory of this call's own for a WAL input, under the system's temp dir (tests run
/// checks on several threads at once).
fn wal_dir() -> PathBuf {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("dcore-fuzz-wal-{}-{n}", std::process::id()))
}

/// Opening a log directory whose one segment holds the input's bytes: never a panic and never
/// an allocation beyond the file's size (libFuzzer's `-malloc_limit_mb` catches one); either
/// refused with a reason, or recovered to a prefix: every record kept reads back with dense
/// indexes, and opening again finds the log clean with the same records.
pub fn wal_recovery_check(data: &[u8]) {
    let dir = wal_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join(segment_name(1)), wal_segment(data)).expect("write segment");
    let config = WalConfig {
        segment_bytes: 4096,
        record_bytes_max: 1024,
        ..WalConfig::default()
    };
    match Wal::open(&dir, config.clone()) {
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert!(
                matches!(e, WalError::Corrupt { .. }),
                "a segment's bytes are refused only as corruption: {e}"
            );
        }
        Ok(wal) => {
            let records = read_all(&wal);
            let torn = wal.recovery().torn_tail.is_some();
            drop(wal);
            let again = Wal::open(&dir, config).expect("a recovered log opens again");
            assert!(
                again.recovery().torn_tail.is_none(),
                "recovery left a torn tail"
            );
            assert_eq!(
                read_all(&again),
                records,
                "records changed on reopen (torn: {torn})"
            );
            // The log goes on: an append gets the next index.
            let next = again.append(distributed_core::persistence::wal::RecordType::DATA, b"x");
            assert_eq!(
                next.expect("append"),
                again.first_index() + records.len() as u64
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn read_all(wal: &Wal) -> Vec<Vec<u8>> {
    let first = wal.first_index();
    let mut out = Vec::new();
    for (i, r) in wal
        .read_from(first)
        .expect("read from the first index")
        .enumerate()
    {
        let e = r.expect("a kept record reads back");
        assert_eq!(e.index, first + i as u64, "indexes dense");
        out.push(e.payload);
    }
    assert_eq!(first + out.len() as u64, wal.last_index() + 1);
    out
}

/// The regression inputs of `target` (files under `fuzz/regressions/<target>/`), sorted.
pub fn regressions(root: &Path, target: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(target))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file());
    files.sort();
    files
}
