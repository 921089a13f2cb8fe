//! Shared helpers for the system tests, by topic. Each test binary declares `mod harness;` and
//! uses only part of them.
#![allow(dead_code)]

mod node;
mod process;
mod sim;
mod wait;

// Each binary uses part of these, so an unused re-export is no mistake.
#[allow(unused_imports)]
pub use node::{alive_count, state_of, Net};
#[allow(unused_imports)]
pub use process::{dcore, dcore_command, KillOnDrop, Lines, Run, DCORE};
#[allow(unused_imports)]
pub use sim::{ensure, for_seeds};
#[allow(unused_imports)]
pub use wait::{eventually, eventually_blocking, serial};
