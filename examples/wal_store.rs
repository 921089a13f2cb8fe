//! The crash-safe storage under a node: the key-value [`WalStore`] and the raw [`Wal`] it is
//! built on.
//!
//! Part 1 opens a store in a temporary directory, writes keys one by one and an atomic
//! [`Batch`], takes a snapshot, writes once more, then drops the store and opens it again: the
//! snapshot plus the log records after it bring back every key. Part 2 opens a bare log,
//! appends records (one at a time and in a batch), reads them back with `read_from` and prints
//! the log's counters. The program checks what it reads and exits 1 with the reason if
//! anything differs. The temporary directory is removed at the end.
//!
//! ```text
//! cargo run --release --example wal_store
//! ```
//!
//! It prints:
//!
//! ```text
//! == store in /tmp/.tmpggURN9/store
//! put node/id, node/role, member/old; batch: 3 members in, member/old out
//! members: member/a=alive member/b=alive member/c=suspect
//! refused, nothing written: store: empty key
//! snapshot covers WAL record 4; one more write after it (member/c=alive)
//! reopened: 5 keys (snapshot at 4 + 1 WAL record replayed), same contents: yes
//! == log in /tmp/.tmpggURN9/log
//! appended records 1..=5: two one by one, 3..=5 in one batch
//!   #1 join  n1
//!   #2 join  n2
//!   #3 join  n3
//!   #4 leave n1
//!   #5 join  n4
//! stats: 3 appends, 5 records, 160 bytes, 3 fsyncs, 3 batches, 1 segments created
//! reopened: records 1..=5, torn tail cut: no
//! ok
//! ```

use distributed_core::persistence::wal::RecordType;
use distributed_core::{Batch, Durability, Store, StoreConfig, Wal, WalConfig, WalStore};
use std::error::Error;
use std::path::Path;
use std::process::ExitCode;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wal_store: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    // Removed with everything in it when `dir` is dropped, also on an early error return.
    let dir = tempfile::tempdir()?;
    store_survives_a_reopen(&dir.path().join("store"))?;
    wal_appends_and_reads(&dir.path().join("log"))?;
    println!("ok");
    Ok(())
}

/// Log settings for a small demo: 1 MiB segments instead of 64 MiB (each segment file is
/// preallocated), and records up to 128 KiB, enough for the store's largest put (1 KiB key +
/// 64 KiB value). `Always`: every acknowledged write is on disk (fdatasync).
fn small_wal() -> WalConfig {
    WalConfig {
        segment_bytes: 1 << 20,
        record_bytes_max: 128 << 10,
        durability: Durability::Always,
    }
}

// ---------------------------------------------------------------------------------------------
// Part 1: the store.

fn store_survives_a_reopen(dir: &Path) -> Result<()> {
    println!("== store in {}", dir.display());
    let config = StoreConfig {
        wal: small_wal(),
        // Snapshots only when asked, so the demo decides when one is taken.
        snapshot_every: 0,
        ..StoreConfig::default()
    };
    let store = WalStore::open(dir, config.clone())?;
    write_some(&store)?;

    store.snapshot()?;
    let snapshot_at = store.snapshot_index();
    // A write after the snapshot lives only in the log: the reopen must replay it.
    store.put(b"member/c", b"alive")?;
    println!("snapshot covers WAL record {snapshot_at}; one more write after it (member/c=alive)");

    let before = store.scan_prefix(b"")?;
    drop(store); // releases the directory lock, as a process exit would
    let store = WalStore::open(dir, config)?;
    let after = store.scan_prefix(b"")?;
    let replayed = store.wal().last_index() - snapshot_at;
    println!(
        "reopened: {} keys (snapshot at {snapshot_at} + {replayed} WAL record replayed), \
         same contents: {}",
        store.len(),
        if before == after { "yes" } else { "no" }
    );
    if before != after {
        return Err(format!("contents changed across the reopen:\n{before:?}\n{after:?}").into());
    }
    expect_value(&store, b"member/c", b"alive")?;
    expect_value(&store, b"node/id", b"n1")
}

/// Two single puts, then a batch that adds members and removes one in a single log record.
fn write_some(store: &WalStore) -> Result<()> {
    store.put(b"node/id", b"n1")?;
    store.put(b"node/role", b"media")?;
    store.put(b"member/old", b"left")?;
    // All or nothing: a crash during the write leaves either none or all of it.
    let batch = Batch::new()
        .put(b"member/a", b"alive")
        .put(b"member/b", b"alive")
        .put(b"member/c", b"suspect")
        .delete(b"member/old");
    store.write(batch)?;
    println!("put node/id, node/role, member/old; batch: 3 members in, member/old out");
    println!("members: {}", pairs(&store.scan_prefix(b"member/")?));

    // Bad input is refused with a reason, and nothing is written.
    if let Err(e) = store.put(b"", b"value") {
        println!("refused, nothing written: {e}");
    }
    Ok(())
}

fn expect_value(store: &WalStore, key: &[u8], want: &[u8]) -> Result<()> {
    let got = store.get(key)?;
    if got.as_deref() != Some(want) {
        let key = String::from_utf8_lossy(key);
        return Err(format!("{key}: expected {want:?}, found {got:?}").into());
    }
    Ok(())
}

fn pairs(pairs: &[(Vec<u8>, Vec<u8>)]) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let shown: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", text(k), text(v)))
        .collect();
    shown.join(" ")
}

// ---------------------------------------------------------------------------------------------
// Part 2: the raw log.

/// Record types are the caller's: any non-zero byte. The store uses `RecordType::DATA` (1).
const JOIN: RecordType = RecordType::DATA;
const LEAVE: RecordType = match RecordType::new(2) {
    Some(t) => t,
    None => panic!("record types are non-zero"),
};

fn wal_appends_and_reads(dir: &Path) -> Result<()> {
    println!("== log in {}", dir.display());
    let wal = Wal::open(dir, small_wal())?;
    let first = wal.append(JOIN, b"n1")?;
    wal.append(JOIN, b"n2")?;
    // Consecutive indexes, one flush for the whole batch.
    let range = wal.append_batch(&[(JOIN, b"n3"), (LEAVE, b"n1"), (JOIN, b"n4")])?;
    let (from, to) = (range.start, range.end - 1);
    println!("appended records {first}..={to}: two one by one, {from}..={to} in one batch");

    let mut read = 0;
    for entry in wal.read_from(first)? {
        let entry = entry?; // each record is checked (CRC32C) again as it is read
        let kind = if entry.kind == LEAVE { "leave" } else { "join" };
        let payload = String::from_utf8_lossy(&entry.payload);
        println!("  #{} {kind:<5} {payload}", entry.index);
        read += 1;
    }
    if read != 5 {
        return Err(format!("read {read} records back, expected 5").into());
    }

    let s = wal.stats();
    println!(
        "stats: {} appends, {} records, {} bytes, {} fsyncs, {} batches, {} segments created",
        s.appends, s.records, s.bytes, s.fsyncs, s.batches, s.segments_created
    );

    drop(wal);
    let wal = Wal::open(dir, small_wal())?;
    let torn = wal.recovery().torn_tail.is_some();
    println!(
        "reopened: records {}..={}, torn tail cut: {}",
        wal.first_index(),
        wal.last_index(),
        if torn { "yes" } else { "no" }
    );
    if wal.last_index() != to {
        return Err(format!(
            "the log ends at {} after a reopen, not {to}",
            wal.last_index()
        )
        .into());
    }
    Ok(())
}
