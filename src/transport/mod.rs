//! Getting bytes between nodes. Today: the frame that wraps every packet and stream message
//! (`frame`), and its authenticated encryption with a rotating keyring (`crypto`). The sockets
//! and caches arrive with the runtime.
//!
//! This module never imports `cluster`: it carries opaque bodies. The two meet in `node/` (and in
//! the simulator, which uses the frame's size to count honest bytes).

pub mod crypto;
pub mod faults;
pub mod frame;
