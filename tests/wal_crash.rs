//! kill -9 in the middle of appends, many times: every record the child acknowledged (printed
//! after `append` returned in `Always` mode) is there after reopen, with its payload.

mod harness;

use distributed_core::persistence::wal::{Durability, Wal, WalConfig};
use harness::{dcore_command, wal_records, wal_segments};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;

const SEGMENT_BYTES: u64 = 16 << 10;
const RECORD_SIZE: usize = 64;

/// The payload `dcore bench wal` appends for writer `id`'s record `seq`.
fn expected_payload(id: u64, seq: u64) -> Vec<u8> {
    let mut b = vec![(id.wrapping_mul(31).wrapping_add(seq) % 251) as u8; RECORD_SIZE];
    b[0..8].copy_from_slice(&id.to_le_bytes());
    b[8..16].copy_from_slice(&seq.to_le_bytes());
    b
}

fn parse(line: &str) -> (u64, u64, u64) {
    let v: Vec<u64> = line
        .split(' ')
        .map(|x| {
            x.parse()
                .unwrap_or_else(|_| panic!("bad ack line {line:?}"))
        })
        .collect();
    (v[0], v[1], v[2])
}

/// Runs the child until it has acknowledged `wait_for` records, kills it, returns every ack it
/// printed (complete lines only).
fn run_and_kill(dir: &std::path::Path, wait_for: usize) -> Vec<(u64, u64, u64)> {
    let mut child = dcore_command()
        .args([
            "bench",
            "wal",
            "--dir",
            dir.to_str().unwrap(),
            "--writers",
            "4",
        ])
        .args([
            "--records",
            "100000000",
            "--record-size",
            &RECORD_SIZE.to_string(),
        ])
        .args([
            "--durability",
            "always",
            "--segment-bytes",
            &SEGMENT_BYTES.to_string(),
        ])
        .arg("--print-acks")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dcore");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut acks = Vec::new();
    let mut line = String::new();
    while acks.len() < wait_for {
        line.clear();
        let n = out.read_line(&mut line).unwrap();
        assert!(n > 0, "child exited early: {:?}", child.wait());
        acks.push(parse(line.trim_end()));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let complete = rest.rfind('\n').map_or("", |i| &rest[..i]);
    acks.extend(complete.lines().map(parse));
    acks
}

#[test]
fn kill_9_during_always_appends_loses_no_acknowledged_record() {
    let d = tempfile::tempdir().unwrap();
    let config = WalConfig {
        segment_bytes: SEGMENT_BYTES,
        record_bytes_max: RECORD_SIZE as u32,
        durability: Durability::Always,
    };
    let mut acked: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let rounds = 30;
    for round in 0..rounds {
        let wait_for = 20 + (round * 397) % 1500;
        for (index, id, seq) in run_and_kill(d.path(), wait_for) {
            assert!(
                acked.insert(index, (id, seq)).is_none(),
                "index {index} acknowledged twice"
            );
        }
        let log = Wal::open(d.path(), config.clone())
            .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        let have: BTreeMap<u64, Vec<u8>> = wal_records(&log).into_iter().collect();
        for (index, (id, seq)) in &acked {
            let got = have
                .get(index)
                .unwrap_or_else(|| panic!("round {round}: acknowledged record {index} lost"));
            assert_eq!(
                *got,
                expected_payload(*id, *seq),
                "round {round}: record {index}"
            );
        }
        // Every record in the log, acknowledged or not, is one the child wrote.
        for (index, p) in &have {
            let id = u64::from_le_bytes(p[0..8].try_into().unwrap());
            let seq = u64::from_le_bytes(p[8..16].try_into().unwrap());
            assert_eq!(
                *p,
                expected_payload(id, seq),
                "round {round}: record {index}"
            );
        }
    }
    assert!(acked.len() > rounds * 20);
    let segments = wal_segments(d.path());
    assert!(
        segments > 10,
        "only {segments} segments: the kills never met a segment roll"
    );
}
