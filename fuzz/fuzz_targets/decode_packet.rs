//! Fuzz target `decode_packet`: the check is `checks::decode_packet_check` (fuzz/checks.rs), which
//! `tests/fuzz_regressions.rs` also runs over `fuzz/regressions/decode_packet/` on stable.
#![no_main]
#[path = "../checks.rs"]
#[allow(dead_code)]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::decode_packet_check(data));
