//! Counters of what a node sent, received and rejected, shared by its tasks.

use crate::transport::frame::OpenFrameError;
use crate::transport::TransportStats;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters (relaxed atomics: each is exact, a snapshot is not a single instant).
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    pub datagrams_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub msgs_out: AtomicU64,
    pub streams_out: AtomicU64,
    pub datagrams_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub rejected_frame: AtomicU64,
    pub rejected_key: AtomicU64,
    pub rejected_plain: AtomicU64,
    pub rejected_packet: AtomicU64,
    pub rejected_stream: AtomicU64,
}

impl Traffic {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a frame that did not open, by reason.
    pub fn frame_refused(&self, e: &OpenFrameError) {
        let counter = match e {
            OpenFrameError::Header(_) => &self.rejected_frame,
            OpenFrameError::Crypto(_) | OpenFrameError::NoKeyring => &self.rejected_key,
            OpenFrameError::PlaintextRefused => &self.rejected_plain,
        };
        Self::add(counter, 1);
    }

    pub fn snapshot(&self) -> TrafficStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TrafficStats {
            datagrams_out: g(&self.datagrams_out),
            bytes_out: g(&self.bytes_out),
            msgs_out: g(&self.msgs_out),
            streams_out: g(&self.streams_out),
            datagrams_in: g(&self.datagrams_in),
            bytes_in: g(&self.bytes_in),
            rejected_frame: g(&self.rejected_frame),
            rejected_key: g(&self.rejected_key),
            rejected_plain: g(&self.rejected_plain),
            rejected_packet: g(&self.rejected_packet),
            rejected_stream: g(&self.rejected_stream),
            transport: TransportStats::default(),
        }
    }
}

/// What a node sent and received so far. Bytes are frame bytes (no IP/UDP/TCP headers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrafficStats {
    /// Datagrams sent (before the fault layer).
    pub datagrams_out: u64,
    /// Bytes of datagrams and stream records sent.
    pub bytes_out: u64,
    /// Protocol messages sent (a compound datagram of 3 counts 3).
    pub msgs_out: u64,
    /// Stream messages sent.
    pub streams_out: u64,
    /// Datagrams received (after the fault layer).
    pub datagrams_in: u64,
    /// Bytes of datagrams and stream records received.
    pub bytes_in: u64,
    /// Datagrams and records refused for a malformed frame header.
    pub rejected_frame: u64,
    /// Datagrams and records that did not decrypt: unknown key id, wrong key or cluster label,
    /// tampering, or encrypted while this node has no key.
    pub rejected_key: u64,
    /// Plain datagrams and records refused because encryption is on.
    pub rejected_plain: u64,
    /// Datagrams whose packet did not decode.
    pub rejected_packet: u64,
    /// Stream records whose sender address or packet did not decode (the transport counts
    /// oversized and stalled records, in `transport`).
    pub rejected_stream: u64,
    /// The transport's own counters: connections, drops, limits hit.
    pub transport: TransportStats,
}
