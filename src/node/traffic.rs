//! Counters of what a node sent, received and rejected, shared by its tasks.

use crate::cluster::message::msg_type;
use crate::cluster::Message;
use crate::transport::frame::OpenFrameError;
use crate::transport::replay::ReplayError;
use crate::transport::TransportStats;
use std::sync::atomic::{AtomicU64, Ordering};

crate::common::counters! {
    /// Live counters of what a node sent, received and rejected.
    pub(crate) struct TrafficCounters;
    /// What a node sent and received so far. Bytes are frame bytes (no IP/UDP/TCP headers).
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
    pub struct TrafficStats {
        /// Datagrams sent (before the chaos layer, if any).
        datagrams_out,
        /// Protocol messages sent (a compound datagram of 3 counts 3).
        msgs_out,
        /// Stream messages sent.
        streams_out,
        /// Direct messages (`Node::send`, `send_reliable`) handed to the network or queued on
        /// the member's connection (refused ones, whose caller got an error, are not counted).
        direct_sent,
        /// Queries taken for a handler (`Node::query_handler`) whose queue was full: not
        /// handed to it, so not answered.
        queries_unhandled,
        /// Datagrams received (after the chaos layer, if any).
        datagrams_in,
        /// Bytes of datagrams received.
        datagram_bytes_in,
        /// Bytes of datagrams sent.
        datagram_bytes_out,
        /// Bytes of stream records received.
        stream_bytes_in,
        /// Bytes of stream records sent (with their 4-byte length prefix).
        stream_bytes_out,
        /// Datagrams and records refused for a malformed frame header.
        rejected_frame,
        /// Datagrams and records that did not decrypt: unknown key id, wrong key or cluster
        /// label, tampering, or encrypted while this node has no key.
        rejected_key,
        /// Plain datagrams and records refused because encryption is on.
        rejected_plain,
        /// Plain datagrams and records of another cluster: their label tag (or its lack)
        /// does not match this node's label.
        rejected_label,
        /// Sealed datagrams and records that authenticated but were sealed longer ago (or
        /// further ahead) than the clock-skew tolerance, or below the replay window's floor.
        rejected_stale,
        /// Sealed datagrams and records opened once before: replays.
        rejected_replayed,
        /// Datagrams whose packet did not decode.
        rejected_packet,
        /// Stream records whose sender address or packet did not decode (the transport counts
        /// oversized and stalled records, in `transport`).
        rejected_stream,
        /// Stream records whose claimed sender address has another IP than the connection's
        /// peer: their answer could be steered to a third address.
        rejected_spoofed,
    }
    extra {
        /// Bytes of datagrams and stream records received: `datagram_bytes_in +
        /// stream_bytes_in`.
        pub bytes_in: u64,
        /// Bytes of datagrams and stream records sent: `datagram_bytes_out +
        /// stream_bytes_out`.
        pub bytes_out: u64,
        /// The transport's own counters: connections, drops, limits hit.
        pub transport: TransportStats,
    }
}

/// A node's traffic counters, shared by its tasks: totals, and messages by kind.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    /// Totals.
    pub counts: TrafficCounters,
    /// Messages by `[direction * 2 + channel][msg_type]` (direction 0 = in; channel 0 = udp).
    kinds: [[AtomicU64; KINDS]; 4],
    /// Encoded bytes of those messages (type byte and body; no frame or packet header).
    kind_bytes: [[AtomicU64; KINDS]; 4],
}

/// Message type bytes counted by kind (type 0 is unused; unknown types are not counted).
const KINDS: usize = crate::cluster::message::msg_type::QUERY_RESPONSE as usize + 1;

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
    /// Counts a frame that did not open, by reason.
    pub fn frame_refused(&self, e: &OpenFrameError) {
        let counter = match e {
            OpenFrameError::Header(_) => &self.counts.rejected_frame,
            OpenFrameError::Crypto(_) | OpenFrameError::NoKeyring => &self.counts.rejected_key,
            OpenFrameError::PlaintextRefused => &self.counts.rejected_plain,
            OpenFrameError::Label => &self.counts.rejected_label,
            OpenFrameError::Replay(ReplayError::Stale { .. }) => &self.counts.rejected_stale,
            OpenFrameError::Replay(ReplayError::Replayed) => &self.counts.rejected_replayed,
        };
        counter.add(1);
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
                let Some(kind) = msg_type::name(ty as u8).filter(|_| n > 0) else {
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

    /// The totals, with the transport's own counters.
    pub fn snapshot(&self, transport: TransportStats) -> TrafficStats {
        let mut t = self.counts.snapshot();
        t.bytes_in = t.datagram_bytes_in + t.stream_bytes_in;
        t.bytes_out = t.datagram_bytes_out + t.stream_bytes_out;
        t.transport = transport;
        t
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::message::Ack;

    #[test]
    fn every_named_kind_has_a_counter() {
        for ty in 0..=u8::MAX {
            if let Some(kind) = msg_type::name(ty) {
                assert!(
                    usize::from(ty) < KINDS,
                    "{kind} (type {ty}) is never counted"
                );
            }
        }
    }

    #[test]
    fn messages_are_counted_by_direction_channel_and_kind() {
        let t = Traffic::default();
        let ack = Message::Ack(Ack { seq: 7 });
        t.message(Dir::Out, Chan::Tcp, &ack);
        t.message(Dir::Out, Chan::Tcp, &ack);
        let rows = t.by_kind();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!((r.direction, r.transport, r.kind), ("out", "tcp", "ack"));
        assert_eq!((r.messages, r.bytes), (2, 2 * ack.encoded_len() as u64));
    }
}
