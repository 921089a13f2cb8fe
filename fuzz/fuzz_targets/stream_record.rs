//! Fuzz target `stream_record`: the check is `checks::stream_record_check` (fuzz/checks.rs), which
//! `tests/fuzz_regressions.rs` also runs over `fuzz/regressions/stream_record/` on stable.
#![no_main]
#[path = "../checks.rs"]
#[allow(dead_code)]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::stream_record_check(data));
