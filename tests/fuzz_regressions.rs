//! Replays every input under `fuzz/regressions/<target>/` through the target's check (the same
//! code the fuzz targets run, `fuzz/checks.rs`), on the stable toolchain. Each file there is an
//! input a fuzzer once found failing (or a seed worth keeping); its name says what it was.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

#[test]
fn every_regression_input_passes_its_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut ran = 0;
    for (target, check) in checks::TARGETS {
        for file in checks::regressions(&root, target) {
            let data = std::fs::read(&file).expect("read a regression input");
            eprintln!("replaying {}", file.display());
            check(&data);
            ran += 1;
        }
    }
    eprintln!("{ran} regression inputs replayed");
    // Every target directory exists and holds at least one input.
    for (target, _) in checks::TARGETS {
        assert!(
            !checks::regressions(&root, target).is_empty(),
            "fuzz/regressions/{target}/ is empty"
        );
    }
}

/// The WAL input builder makes what it says: valid records recover in full, and a cut inside
/// the last one is a torn tail cleared on open.
#[test]
fn wal_inputs_recover_to_a_prefix() {
    // Mode 3: header, records of 3 and 5 bytes, no damage (cut and flip past the end).
    let input = [
        3u8, 0xff, 0xff, 0xff, 0xff, 3, b'a', b'b', b'c', 5, 1, 2, 3, 4, 5,
    ];
    let seg = checks::wal_segment(&input);
    assert_eq!(&seg[..32], &checks::segment_header(1)[..]);
    checks::wal_recovery_check(&input);
    // The same, cut in the middle of the second record: a torn tail, recovered to the first.
    let cut = (32 + 32 + 10) as u16;
    let mut torn = input;
    torn[1..3].copy_from_slice(&cut.to_le_bytes());
    checks::wal_recovery_check(&torn);
}

/// The stream-record seed is a real record (so the fuzzer starts past the frame and address):
/// it opens to one Ping from 127.0.0.1:7946.
#[test]
fn the_stream_record_seed_opens() {
    use distributed_core::testing::open_record;
    use distributed_core::transport::frame::FrameSealer;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/stream_record");
    let data = std::fs::read(root.join("seed-plain-ping")).unwrap();
    let msgs = open_record(&data, &FrameSealer::new(None, String::new())).expect("opens");
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].0, "127.0.0.1:7946".parse().unwrap());
}
