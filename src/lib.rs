//! distributed-core (in progress)
pub mod cluster;
pub mod identity;
pub mod transport;
