//! Sample files the tests read from `tests/fixtures/` (a test that wants the text at compile
//! time uses `include_str!("fixtures/NAME")`).

use std::path::PathBuf;

/// The path of `tests/fixtures/NAME`.
pub fn fixture(name: &str) -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", name]
        .iter()
        .collect()
}
