//! Counters of what a node sent, received and rejected, shared by its tasks.

use crate::cluster::Message;
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
    /// Bytes of stream records in and out (also counted in `bytes_in` / `bytes_out`).
    pub stream_bytes_in: AtomicU64,
    pub stream_bytes_out: AtomicU64,
    /// Messages by `[direction * 2 + channel][msg_type]` (direction 0 = in; channel 0 = udp).
    pub kinds: [[AtomicU64; KINDS]; 4],
    /// Encoded bytes of those messages (type byte and body; no frame or packet header).
    pub kind_bytes: [[AtomicU64; KINDS]; 4],
}

/// Message type bytes counted by kind (type 0 is unused; unknown types are not counted).
const KINDS: usize = 10;

/// Direction of a message.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dir {
    In = 0,
    Out = 1,
}

/// Channel of a message.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Chan {
    Udp = 0,
    Tcp = 1,
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

    /// Counts one message of `kind` (its type byte).
    pub fn message(&self, dir: Dir, chan: Chan, msg: &Message) {
        let row = dir as usize * 2 + chan as usize;
        let ty = msg.msg_type() as usize;
        if let (Some(c), Some(b)) = (self.kinds[row].get(ty), self.kind_bytes[row].get(ty)) {
            c.fetch_add(1, Ordering::Relaxed);
            b.fetch_add(msg.encoded_len() as u64, Ordering::Relaxed);
        }
    }

    /// Messages counted by direction, channel and kind (non-zero ones).
    pub fn by_kind(&self) -> Vec<KindCount> {
        let mut out = Vec::new();
        for (row, counters) in self.kinds.iter().enumerate() {
            for (ty, c) in counters.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                let bytes = self.kind_bytes[row][ty].load(Ordering::Relaxed);
                let Some(kind) = kind_name(ty as u8).filter(|_| n > 0) else {
                    continue;
                };
                out.push(KindCount {
                    direction: if row / 2 == 0 { "in" } else { "out" },
                    transport: if row % 2 == 0 { "udp" } else { "tcp" },
                    kind,
                    messages: n,
                    bytes,
                });
            }
        }
        out
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
            stream_bytes_in: g(&self.stream_bytes_in),
            stream_bytes_out: g(&self.stream_bytes_out),
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
    /// Bytes of stream records received (included in `bytes_in`).
    pub stream_bytes_in: u64,
    /// Bytes of stream records sent (included in `bytes_out`).
    pub stream_bytes_out: u64,
    /// The transport's own counters: connections, drops, limits hit.
    pub transport: TransportStats,
}

/// Messages of one kind, direction and transport.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KindCount {
    /// `in` or `out`.
    pub direction: &'static str,
    /// `udp` or `tcp`.
    pub transport: &'static str,
    /// The message kind (`ping`, `ack`, `alive`, `push_pull`, ...).
    pub kind: &'static str,
    /// Messages so far.
    pub messages: u64,
    /// Their encoded bytes (type byte and body; frame and packet headers are not counted
    /// here: they are in `dcore_transport_bytes_total`).
    pub bytes: u64,
}

fn kind_name(ty: u8) -> Option<&'static str> {
    use crate::cluster::msg_type as t;
    Some(match ty {
        t::PING => "ping",
        t::PING_REQ => "ping_req",
        t::ACK => "ack",
        t::NACK => "nack",
        t::ALIVE => "alive",
        t::SUSPECT => "suspect",
        t::DEAD => "dead",
        t::PUSH_PULL => "push_pull",
        t::USER_EVENT => "user_event",
        _ => return None,
    })
}
