//! Getting bytes between nodes.
//!
//! - [`Transport`]: what the node runtime needs from a network: datagrams (best effort) and
//!   stream records (reliable and ordered per peer while a connection lives). Two
//!   implementations: [`net::NetTransport`] (tokio UDP + TCP, with a connection cache) and
//!   [`mem::MemNetwork`] (in-process, for tests). `diagnostics::chaos::ChaosLayer` wraps either.
//! - [`frame`]: the versioned frame around every packet and stream record, and its sealing
//!   with [`crypto`] (XChaCha20-Poly1305 keyring).
//! - Backoff for reconnects is [`crate::common::Backoff`].
//!
//! This module imports only `common` and `identity` from the crate: it carries opaque bodies,
//! and meets `cluster` in `node/` (and in the simulator, which uses the frame's size to count
//! honest bytes).

pub mod crypto;
pub mod frame;
pub mod mem;
pub mod net;
pub mod replay;

use crate::common::ConfigError;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// Something a transport received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A datagram and its source address.
    Packet {
        /// Where it came from (the socket address, not a claimed one).
        from: SocketAddr,
        /// The datagram's bytes (one frame).
        bytes: Vec<u8>,
    },
    /// One stream record (one frame). The sender's claimed identity is inside the frame: a
    /// stream's source port says nothing about the peer's listening address, but its IP is the
    /// peer's real one, which the runtime holds the claim to.
    Stream {
        /// The connection's peer address (the socket's, not a claimed one; its port is the
        /// peer's outgoing port, not its listening one).
        from: SocketAddr,
        /// The record's bytes.
        bytes: Vec<u8>,
    },
}

/// Why a stream record was not queued (also counted in `streams_out_dropped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefused {
    /// Longer than `stream_record_bytes_max`.
    #[error("record over stream_record_bytes_max")]
    TooLarge,
    /// The queue of records to this peer (`outbound_queue`) is full.
    #[error("the stream queue to this peer is full")]
    QueueFull,
    /// The last connection to this peer failed and its reconnect backoff is not over, or the
    /// peer is not there.
    #[error("the peer is unreachable")]
    Unreachable,
}

/// What the node runtime needs from a network.
///
/// `recv` must be cancel-safe: the runtime waits on it in a `select!` beside its timers and
/// requests, so a cancelled call must not lose what it had received.
pub trait Transport: Send + 'static {
    /// The address this transport is bound to.
    fn local_addr(&self) -> SocketAddr;
    /// The next datagram or stream record; `None` once the transport is closed.
    fn recv(&mut self) -> impl Future<Output = Option<Incoming>> + Send;
    /// Sends one datagram, best effort (a failure is counted, not returned).
    fn send_packet(&mut self, to: SocketAddr, bytes: &[u8]) -> impl Future<Output = ()> + Send;
    /// Queues one stream record to `to` without waiting: delivered in order with the other
    /// records to `to` while the connection lives. A record that cannot be queued is dropped,
    /// counted, and the reason returned (the core's own records ignore it: each is repaired by
    /// a later one); one queued is lost, and counted, if the connection fails before it is
    /// written.
    fn send_stream(&mut self, to: SocketAddr, record: Vec<u8>) -> Result<(), StreamRefused>;
    /// The transport's counters, shared: they stay readable while the runtime owns it.
    fn counters(&self) -> std::sync::Arc<TransportCounters>;
    /// Stops every task of the transport and waits for them; sockets are closed on return.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// Limits and timeouts of a transport. Every field has a default (see each) and
/// [`TransportConfig::validate`] checks them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// Largest stream record accepted; a longer one closes the connection. Default 4 MiB
    /// (a push-pull of 10,000 members is about 600 KB).
    pub stream_record_bytes_max: usize,
    /// Inbound stream connections served at once; more are closed on accept. Default 512.
    pub inbound_streams_max: usize,
    /// Inbound stream connections served at once from one IP address; more from it are closed
    /// on accept, so one host cannot take every slot of `inbound_streams_max`. A peer node
    /// keeps one cached connection to us, so this is about the number of nodes that may share
    /// one address (several agents on a host, or behind one NAT address). 1 to
    /// `inbound_streams_max`. Default 64.
    pub inbound_streams_per_ip_max: usize,
    /// An inbound connection idle this long after a complete record is closed. Must exceed
    /// `outbound_idle`, so the sender, not the receiver, closes an idle connection. A new
    /// connection gets `read_timeout`, not this, for its first record. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub inbound_idle: Duration,
    /// Bytes of inbound records being read or waiting for the runtime, over all connections.
    /// Room for a whole record is taken once its length is read (before its body) and given
    /// back once the runtime takes the record, so hostile peers cannot make the node hold more
    /// than this in records; a peer that declares a length and trickles holds that room until
    /// `read_timeout` closes it. At least `stream_record_bytes_max`. Default 32 MiB.
    pub inbound_bytes_max: usize,
    /// A new connection's first record must be complete within this of the accept, and any
    /// later record within this of its first byte; otherwise the connection is closed
    /// (counted `stalled`). Default 10 s.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Outgoing connections kept open for reuse; past this the least recently used one is
    /// closed. Default 64.
    pub outbound_cached_max: usize,
    /// A cached outgoing connection unused this long is closed. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub outbound_idle: Duration,
    /// Records queued per outgoing connection; more are dropped and counted. Default 64.
    pub outbound_queue: usize,
    /// Connecting, and writing one record, may each take this long. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// After a failed connect to a peer, records to it are dropped for a backoff with full
    /// jitter starting at this cap and doubling up to `reconnect_max`. Default 100 ms.
    #[serde(with = "humantime_serde")]
    pub reconnect_base: Duration,
    /// See `reconnect_base`. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// With encryption on, a sealed frame stamped more than this before or after this node's
    /// wall clock is refused as stale (see [`replay`]): the members' clocks must agree within
    /// it, in-flight time included. 1 s to 1 h. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub clock_skew_max: Duration,
    /// With encryption on, sealed frames remembered to refuse replays (about 40 bytes each);
    /// at the bound the oldest is forgotten and frames as old are refused as stale. 1,024 to
    /// 16,777,216. Default 65,536 (2.5 MiB).
    pub replay_cache_max: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            stream_record_bytes_max: 4 << 20,
            inbound_streams_max: 512,
            inbound_streams_per_ip_max: 64,
            inbound_idle: Duration::from_secs(60),
            inbound_bytes_max: 32 << 20,
            read_timeout: Duration::from_secs(10),
            outbound_cached_max: 64,
            outbound_idle: Duration::from_secs(30),
            outbound_queue: 64,
            write_timeout: Duration::from_secs(5),
            reconnect_base: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
            clock_skew_max: replay::CLOCK_SKEW_MAX_DEFAULT,
            replay_cache_max: replay::REPLAY_CACHE_MAX_DEFAULT,
        }
    }
}

impl TransportConfig {
    /// Checks every field and the rules between fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, rule: &'static str| ConfigError::fail("transport", field, rule);
        if !(1024..=1 << 30).contains(&self.stream_record_bytes_max) {
            return err("stream_record_bytes_max", "must be 1 KiB to 1 GiB");
        }
        if self.inbound_bytes_max < self.stream_record_bytes_max || self.inbound_bytes_max > 1 << 31
        {
            return err(
                "inbound_bytes_max",
                "must be at least stream_record_bytes_max and at most 2 GiB",
            );
        }
        if self.inbound_streams_max == 0 {
            return err("inbound_streams_max", "must be at least 1");
        }
        if !(1..=self.inbound_streams_max).contains(&self.inbound_streams_per_ip_max) {
            return err(
                "inbound_streams_per_ip_max",
                "must be 1 to inbound_streams_max",
            );
        }
        if self.outbound_cached_max == 0 || self.outbound_queue == 0 {
            return err(
                "outbound_cached_max",
                "and outbound_queue must be at least 1",
            );
        }
        if self.read_timeout.is_zero() || self.write_timeout.is_zero() {
            return err("read_timeout", "and write_timeout must be above zero");
        }
        if self.outbound_idle.is_zero() || self.inbound_idle <= self.outbound_idle {
            return err(
                "inbound_idle",
                "must exceed outbound_idle, which must be above zero",
            );
        }
        if self.reconnect_base.is_zero() || self.reconnect_max < self.reconnect_base {
            return err(
                "reconnect_base",
                "must be above zero and at most reconnect_max",
            );
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.clock_skew_max) {
            return err("clock_skew_max", "must be 1 s to 1 h");
        }
        if !(1024..=1 << 24).contains(&self.replay_cache_max) {
            return err("replay_cache_max", "must be 1,024 to 16,777,216");
        }
        Ok(())
    }
}

crate::common::counters! {
    /// Live counters of a transport, shared with whoever reads them (see [`Transport::counters`]).
    pub struct TransportCounters;
    /// The counters a transport keeps, as numbers.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
    pub struct TransportStats {
        /// Datagrams handed to the network.
        packets_out,
        /// Datagrams the network refused to send.
        packets_out_failed,
        /// Stream records written.
        streams_out,
        /// Stream records dropped: peer in reconnect backoff, queue full, write failed.
        streams_out_dropped,
        /// Outgoing connections opened.
        connections_opened,
        /// Outgoing connects that failed or timed out.
        connections_failed,
        /// Cached outgoing connections closed to stay within the cache cap.
        connections_evicted,
        /// Stream records received.
        streams_in,
        /// Inbound connections refused over `inbound_streams_max`.
        inbound_refused,
        /// Inbound connections refused over `inbound_streams_per_ip_max`.
        inbound_refused_ip,
        /// Inbound connections closed for a record that cannot be ours: zero bytes long, or
        /// not starting with our frame header (magic, version, known flags).
        stream_invalid,
        /// Inbound records over `stream_record_bytes_max` (connection closed unread).
        stream_oversized,
        /// Inbound connections closed for a stalled record (or no complete first record within
        /// `read_timeout` of the accept).
        stream_timeouts,
        /// Datagrams too large to deliver (in-memory network).
        packets_oversized,
        /// Received datagrams or records dropped because the runtime's queue was full.
        queue_full,
    }
    extra {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        TransportConfig::default().validate().unwrap();
        let bad = TransportConfig {
            inbound_idle: Duration::from_secs(5),
            ..TransportConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "inbound_idle");
        for per_ip in [0, 513] {
            let bad = TransportConfig {
                inbound_streams_per_ip_max: per_ip,
                ..TransportConfig::default()
            };
            assert_eq!(
                bad.validate().unwrap_err().field,
                "inbound_streams_per_ip_max"
            );
        }
        let bad = TransportConfig {
            stream_record_bytes_max: 10,
            ..TransportConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("stream_record_bytes_max"));
        let bad = TransportConfig {
            clock_skew_max: Duration::from_millis(10),
            ..TransportConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "clock_skew_max");
        let bad = TransportConfig {
            replay_cache_max: 0,
            ..TransportConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "replay_cache_max");
        let parsed: TransportConfig = toml::from_str("outbound_idle = \"5s\"").unwrap();
        assert_eq!(parsed.outbound_idle, Duration::from_secs(5));
        assert!(toml::from_str::<TransportConfig>("no_such_key = 1").is_err());
    }
}
