//! Small pieces that several layers share: the monotonic [`Time`] the core is handed, a
//! fixed-bucket [`Histogram`] of durations, exponential [`Backoff`] with full jitter, live
//! [`Counter`]s with the crate's `counters!` macro that pairs them with a plain
//! snapshot, and the one shape of a refused setting, [`ConfigError`].
//!
//! This module imports nothing else of the crate: every other module may use it.

pub mod backoff;
mod config;
mod counters;
pub(crate) use counters::counters;
pub mod histogram;
pub mod time;

pub use backoff::Backoff;
pub use config::ConfigError;
pub use counters::Counter;
pub use histogram::Histogram;
pub use time::{Now, Time};
