//! A node's figures at one moment, for metrics and the admin API.

use super::traffic::{KindCount, TrafficStats};
use crate::cluster::Stats;
use crate::common::Histogram;
use serde::Serialize;

/// Other members by state, as this node sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MemberCounts {
    /// Alive.
    pub alive: usize,
    /// Suspected.
    pub suspect: usize,
    /// Declared failed (kept until reaped).
    pub failed: usize,
    /// Left gracefully (kept until reaped).
    pub left: usize,
}

/// What [`super::Node::stats`] returns.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStats {
    /// This node's name.
    pub name: String,
    /// Its incarnation now.
    pub incarnation: u64,
    /// Lifeguard local health: 0 is healthy; each step stretches probe timeouts.
    pub health: u32,
    /// Other members by state.
    pub members: MemberCounts,
    /// Claims and events waiting to be piggybacked.
    pub broadcast_queue: usize,
    /// The protocol core's counters and histograms.
    pub core: Stats,
    /// Round trip of every ping answered by the node pinged (probes, fallback and last-chance
    /// pings, pings run for others' ping-reqs; UDP or TCP, each timed from its own send).
    /// Unlike `core.probe_rtt` it leaves out acks relayed through ping-req.
    pub ping_rtt: Histogram,
    /// Messages by direction, transport and kind.
    pub messages: Vec<KindCount>,
    /// Bytes, datagrams, records, rejections, transport counters.
    pub traffic: TrafficStats,
}
