//! Local durability: a crash-safe write-ahead log ([`wal`]) and a key-value state store on top of
//! it ([`store`]).
//!
//! The node keeps what must survive a restart (its id, the highest incarnation it used, the last
//! members it knew) in a [`store::Store`]. [`store::WalStore`] writes every change to the log
//! before applying it; [`store::MemStore`] is the in-memory twin for tests. The on-disk format,
//! the recovery rules and the durability modes are described in `docs/wal.md`.
//!
//! This module knows nothing of `cluster` or `transport`; the node brings them together.

pub mod store;
pub mod wal;
