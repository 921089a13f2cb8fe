//! Tools for looking at a running node and for breaking it on purpose.
//!
//! - [`chaos`]: fault injection in the transport stack (drop, delay, jitter, duplication,
//!   reordering, partitions), configurable at start-up and at runtime, every fault counted.
//!
//! This module sits beside `metrics` between `node` and `transport`: it wraps a
//! [`crate::transport::Transport`] and never imports `cluster`.

pub mod chaos;
