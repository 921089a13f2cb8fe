//! Fuzz target `wal_recovery`: the check is `checks::wal_recovery_check` (fuzz/checks.rs), which
//! `tests/fuzz_regressions.rs` also runs over `fuzz/regressions/wal_recovery/` on stable.
#![no_main]
#[path = "../checks.rs"]
#[allow(dead_code)]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::wal_recovery_check(data));
