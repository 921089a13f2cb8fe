//! Protocol settings: documented defaults, presets, and a `validate()` that checks the rules
//! between fields before a core is built.
//!
//! The same struct is read from the `[protocol]` table of a TOML file (`dcore sim --config`,
//! later `dcore agent --config`); durations are written as in `"500ms"` or `"2s"`.

use crate::common::ConfigError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Smallest packet budget that still fits a ping plus one full-size alive message.
pub const PACKET_BYTES_MIN: usize = 512;
/// Largest number of indirect probers per failed probe.
pub const INDIRECT_CHECKS_MAX: usize = 16;

fn bad(
    field: &'static str,
    rule: impl Into<std::borrow::Cow<'static, str>>,
) -> Result<(), ConfigError> {
    ConfigError::fail("protocol", field, rule)
}

/// Settings of the SWIM/Lifeguard core. Every field has a default (see [`Config::lan`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Time between two probes of this node (one member per interval, round-robin over a shuffled
    /// list). Scaled up by the local health multiplier when Lifeguard is on. Default 500 ms.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// How long to wait for a direct ack before asking `indirect_checks` members to probe.
    /// Must be shorter than `probe_interval`. Default 200 ms.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// Members asked to probe on our behalf (ping-req) after a missed direct ack. Default 5
    /// (memberlist: 3): at 10 % loss it cuts false suspicions about eightfold, and it costs
    /// nothing while probes succeed (see `docs/tuning.md`).
    pub indirect_checks: usize,
    /// Also send a ping over the stream (TCP) channel when the direct ack is missed, so a node
    /// whose UDP is blocked but TCP works is not declared failed. Default true.
    pub tcp_fallback_probe: bool,
    /// Lifeguard: local health awareness, nacks, buddy system and the dynamic suspicion timeout.
    /// Off, the core behaves as plain SWIM with a fixed suspicion timeout. Default true.
    pub lifeguard: bool,
    /// Highest local health multiplier: probe interval and timeout stretch up to
    /// `(awareness_max + 1)` times when this node is itself slow. Default 8.
    pub awareness_max: u32,
    /// Suspicion timeout multiplier: `min = suspicion_mult * log10(max(n, 10)) * probe_interval`.
    /// Default 3 (memberlist: 4; failure news and refutations here are gossiped as soon as
    /// they are heard, not at the next gossip tick: see `docs/tuning.md`).
    pub suspicion_mult: u32,
    /// The suspicion timeout starts at `suspicion_max_mult * min` and shrinks towards `min` as
    /// independent members confirm the suspicion (Lifeguard). Default 6.
    pub suspicion_max_mult: u32,
    /// Time between two gossip rounds (piggyback queue flushed to `gossip_fanout` members).
    /// Default 200 ms.
    #[serde(with = "humantime_serde")]
    pub gossip_interval: Duration,
    /// Random members sent a gossip packet each round. Default 3.
    pub gossip_fanout: usize,
    /// Dead members still receive gossip for this long (it helps them learn and refute).
    /// Default 30 s.
    #[serde(with = "humantime_serde")]
    pub gossip_to_the_dead: Duration,
    /// Each broadcast is sent `retransmit_mult * ceil(log10(n + 1))` times. Default 4.
    pub retransmit_mult: u32,
    /// Base time between two syncs (delta anti-entropy) with a random member; grows with cluster
    /// size (`x (ceil(log2 n - log2 8192) + 1)` above 8,192 members). Default 30 s.
    #[serde(with = "humantime_serde")]
    pub push_pull_interval: Duration,
    /// After its join, while its member table keeps growing or syncs keep moving rows (the
    /// cluster is forming), a node syncs (delta anti-entropy) with a random alive member this
    /// often; once quiet, at doubling intervals up to 16 times this, then only
    /// `push_pull_interval` applies. Thousands of nodes joining at once spread mostly this way:
    /// gossip carries only the newest joins (see `docs/protocol.md`). 0 turns it off.
    /// Default 250 ms (`wan`: 2 s, `local`: 250 ms).
    #[serde(with = "humantime_serde")]
    pub join_sync_interval: Duration,
    /// Time between attempts to reach a failed member (healing of partitions). Each attempt is
    /// made with probability `failed / alive`, capped at 1. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub reconnect_interval: Duration,
    /// Failed and left members are forgotten after this long. Default 24 h.
    #[serde(with = "humantime_serde")]
    pub dead_retention: Duration,
    /// Bytes available for messages in one packet (the transport's datagram limit minus frame
    /// and encryption overhead). Default 1,350.
    pub packet_bytes_max: usize,
    /// Largest tag set, counted by [`crate::identity::tags_len`]. Default 512.
    pub tags_bytes_max: usize,
    /// Largest user event, name plus payload. Default 512.
    pub user_event_bytes_max: usize,
    /// User events remembered for dedup, in Lamport time slots; older events are dropped.
    /// Default 512.
    pub user_event_buffer: usize,
    /// Largest payload of a direct message sent over a stream (`Node::send_reliable`); larger
    /// ones are refused to the sender and dropped (counted) by the receiver. A best-effort one
    /// (`Node::send`) must fit a packet. 1 KiB to 64 MiB; the transport's
    /// `stream_record_bytes_max` must hold it with 1 KiB to spare. Default 1 MiB.
    pub direct_bytes_max: usize,
    /// Keep a network coordinate (Vivaldi, as serf): each ack carries the acking node's
    /// coordinate (46 bytes), each acked probe moves ours, and `rtt_estimate` predicts the
    /// round trip to any member whose coordinate this node has. Default true.
    pub coordinates: bool,
    /// A query's timeout when its origin names none: `gossip_interval` times this times
    /// ceil(log10(N + 1)) for N live members (serf's rule: 6.4 s for 50 members with the LAN
    /// preset). Default 16.
    pub query_timeout_mult: u32,
    /// Largest query, its whole message (name, payload, filters, origin) in bytes, at least
    /// 256; `packet_bytes_max` less 64 caps it. Larger ones are refused to the asker and
    /// dropped (counted) on receipt. Default 1,024, as serf's `QuerySizeLimit`.
    pub query_bytes_max: usize,
    /// Largest answer to a query, its whole message in bytes, at least 256;
    /// `packet_bytes_max` less 64 caps it. Default 1,024, as serf's `QueryResponseSizeLimit`.
    pub query_response_bytes_max: usize,
    /// Queries this node waits on at once (those it started and not yet timed out); more are
    /// refused. Queries it answers are remembered up to four times as many. Default 64.
    pub queries_max: usize,
    /// New queries this node takes per second (a token bucket holding one second's worth);
    /// past it a query is neither answered nor passed on, and counted. Default 32.
    pub queries_per_sec: u32,
    /// Broadcasts waiting in the piggyback queue at most; beyond it the most sent are dropped
    /// (push-pull repairs what they would have told). Default 4,096, as serf's queue depth.
    pub broadcast_queue_max: usize,
    /// Members accepted from one push-pull message at most. Default 65,536.
    pub push_pull_members_max: usize,
    /// Indirect probes this node runs for others at once; further ping-reqs are dropped.
    /// Default 1,024.
    pub indirect_pending_max: usize,
    /// First wait before a join is retried when no seed answered; doubles up to
    /// `join_retry_max`, with full jitter. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub join_retry_base: Duration,
    /// Longest wait between join retries. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub join_retry_max: Duration,
    /// Rows in the member table at most, this node and failed or left members included; a new
    /// member past it is refused and counted until reaping makes room. Default 65,536. Measured
    /// (resident memory of a core fed 65,535 new members, table and gossip queue included):
    /// about 850 bytes a member with 40-byte names and 40 bytes of tags, 1.4 KB with 128-byte
    /// names and full 512-byte tags, so a full default table costs 53 to 90 MiB.
    pub members_max: usize,
    /// New members taken from one push-pull, other than the answer to this node's own join
    /// (which may bring the whole cluster). A full state this node did not ask for introduces
    /// only its sender; see `docs/protocol.md`. Default 1,024.
    pub members_admit_per_push_pull: usize,
    /// New members admitted per second, from gossip and push-pulls alike (the answer to this
    /// node's own join excepted): a token bucket holding one second's worth. Default 2,048,
    /// enough for a thousand nodes starting within half a second.
    pub members_admit_per_sec: u32,
    /// A failed member's name may be taken by a node at another address once it has been
    /// failed this long; before, such a claim is a conflict (refused, counted, reported as
    /// `Event::MemberConflict`). A member that left may come back at another address at once.
    /// Default 30 s.
    #[serde(with = "humantime_serde")]
    pub dead_reclaim_time: Duration,
    /// Networks that may take part, as CIDRs (`10.0.0.0/8`, `fd00::/8`); empty (the default)
    /// allows every address. Checked on the source of every packet and stream message and on
    /// every address inside a claim: a member at an address outside is never added, pinged or
    /// gossiped to.
    pub allowed_cidrs: Vec<ipnet::IpNet>,
}

impl Default for Config {
    fn default() -> Self {
        Config::lan()
    }
}

impl Config {
    /// Defaults for a data-centre network (round trips of a few ms), tuned with the simulator:
    /// see `docs/tuning.md`.
    pub fn lan() -> Self {
        Config {
            probe_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(200),
            indirect_checks: 5,
            tcp_fallback_probe: true,
            lifeguard: true,
            awareness_max: 8,
            suspicion_mult: 3,
            suspicion_max_mult: 6,
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: 3,
            gossip_to_the_dead: Duration::from_secs(30),
            retransmit_mult: 4,
            push_pull_interval: Duration::from_secs(30),
            join_sync_interval: Duration::from_millis(250),
            reconnect_interval: Duration::from_secs(10),
            dead_retention: Duration::from_secs(24 * 3600),
            packet_bytes_max: 1350,
            tags_bytes_max: 512,
            user_event_bytes_max: 512,
            user_event_buffer: 512,
            direct_bytes_max: 1 << 20,
            coordinates: true,
            query_timeout_mult: 16,
            query_bytes_max: 1024,
            query_response_bytes_max: 1024,
            queries_max: 64,
            queries_per_sec: 32,
            broadcast_queue_max: 4096,
            push_pull_members_max: 65_536,
            indirect_pending_max: 1024,
            join_retry_base: Duration::from_secs(1),
            join_retry_max: Duration::from_secs(30),
            members_max: 65_536,
            members_admit_per_push_pull: 1024,
            members_admit_per_sec: 2048,
            dead_reclaim_time: Duration::from_secs(30),
            allowed_cidrs: Vec::new(),
        }
    }

    /// Wide-area settings (round trips up to a few hundred ms), after memberlist's WAN preset.
    pub fn wan() -> Self {
        Config {
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            suspicion_mult: 6,
            gossip_interval: Duration::from_millis(500),
            gossip_fanout: 4,
            gossip_to_the_dead: Duration::from_secs(60),
            push_pull_interval: Duration::from_secs(60),
            join_sync_interval: Duration::from_secs(2),
            reconnect_interval: Duration::from_secs(30),
            ..Config::lan()
        }
    }

    /// One host (loopback): short timeouts, after memberlist's local preset; suspicion and join
    /// syncs as on a LAN.
    pub fn local() -> Self {
        Config {
            probe_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(100),
            gossip_interval: Duration::from_millis(100),
            push_pull_interval: Duration::from_secs(15),
            reconnect_interval: Duration::from_secs(5),
            ..Config::lan()
        }
    }

    /// Preset by name: `lan`, `wan` or `local`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "lan" => Some(Self::lan()),
            "wan" => Some(Self::wan()),
            "local" => Some(Self::local()),
            _ => None,
        }
    }

    /// Checks each field and the rules between fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_durations()?;
        self.validate_counts()?;
        self.validate_limits()
    }

    fn validate_durations(&self) -> Result<(), ConfigError> {
        if self.probe_interval < Duration::from_millis(10) {
            return bad("probe_interval", "must be at least 10ms");
        }
        if self.probe_timeout.is_zero() || self.probe_timeout >= self.probe_interval {
            return bad(
                "probe_timeout",
                "must be above zero and below probe_interval",
            );
        }
        if self.gossip_interval < Duration::from_millis(1) {
            return bad("gossip_interval", "must be at least 1ms");
        }
        if self.push_pull_interval < self.probe_interval {
            return bad("push_pull_interval", "must be at least probe_interval");
        }
        if !self.join_sync_interval.is_zero() && self.join_sync_interval < Duration::from_millis(10)
        {
            return bad("join_sync_interval", "must be 0 (off) or at least 10ms");
        }
        if self.reconnect_interval < self.probe_interval {
            return bad("reconnect_interval", "must be at least probe_interval");
        }
        if self.dead_retention < self.gossip_to_the_dead {
            return bad("dead_retention", "must be at least gossip_to_the_dead");
        }
        if self.join_retry_base.is_zero() || self.join_retry_max < self.join_retry_base {
            return bad(
                "join_retry_base",
                "must be above zero and at most join_retry_max",
            );
        }
        Ok(())
    }

    fn validate_counts(&self) -> Result<(), ConfigError> {
        if self.indirect_checks > INDIRECT_CHECKS_MAX {
            return bad(
                "indirect_checks",
                format!("must be at most {INDIRECT_CHECKS_MAX}"),
            );
        }
        if self.suspicion_mult == 0 {
            return bad("suspicion_mult", "must be at least 1");
        }
        if self.suspicion_max_mult == 0 {
            return bad(
                "suspicion_max_mult",
                "must be at least 1 (1 disables the shrinking)",
            );
        }
        if self.awareness_max > 64 {
            return bad("awareness_max", "must be at most 64");
        }
        if self.gossip_fanout == 0 || self.gossip_fanout > 64 {
            return bad("gossip_fanout", "must be 1..=64");
        }
        if self.retransmit_mult == 0 {
            return bad("retransmit_mult", "must be at least 1");
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        if !(PACKET_BYTES_MIN..=65_000).contains(&self.packet_bytes_max) {
            return bad(
                "packet_bytes_max",
                format!("must be {PACKET_BYTES_MIN}..=65000"),
            );
        }
        // An Alive claim carries the tags; it must fit a packet with a ping beside it.
        if self.tags_bytes_max + 200 > self.packet_bytes_max {
            return bad(
                "tags_bytes_max",
                "tags_bytes_max + 200 must fit in packet_bytes_max",
            );
        }
        if self.user_event_bytes_max + 64 > self.packet_bytes_max {
            return bad(
                "user_event_bytes_max",
                "user_event_bytes_max + 64 must fit a packet",
            );
        }
        for (field, value) in [
            ("query_bytes_max", self.query_bytes_max),
            ("query_response_bytes_max", self.query_response_bytes_max),
        ] {
            if value < 256 {
                return bad(field, "must be at least 256");
            }
        }
        if !(1..=1000).contains(&self.query_timeout_mult) {
            return bad("query_timeout_mult", "must be 1..=1000");
        }
        if !(1024..=64 << 20).contains(&self.direct_bytes_max) {
            return bad("direct_bytes_max", "must be 1 KiB to 64 MiB");
        }
        let nonzero = [
            ("user_event_buffer", self.user_event_buffer),
            ("broadcast_queue_max", self.broadcast_queue_max),
            ("push_pull_members_max", self.push_pull_members_max),
            ("indirect_pending_max", self.indirect_pending_max),
            (
                "members_admit_per_push_pull",
                self.members_admit_per_push_pull,
            ),
            ("members_admit_per_sec", self.members_admit_per_sec as usize),
            ("queries_max", self.queries_max),
            ("queries_per_sec", self.queries_per_sec as usize),
        ];
        for (field, value) in nonzero {
            if value == 0 {
                return bad(field, "must be at least 1");
            }
        }
        if !(2..=1 << 24).contains(&self.members_max) {
            return bad("members_max", "must be 2..=16777216");
        }
        Ok(())
    }

    /// The largest query message in force: `query_bytes_max`, capped so that it fits a packet
    /// with a ping beside it.
    pub fn query_len_max(&self) -> usize {
        self.query_bytes_max.min(self.packet_bytes_max - 64)
    }

    /// The largest query answer message in force: `query_response_bytes_max`, capped as
    /// [`Config::query_len_max`].
    pub fn query_response_len_max(&self) -> usize {
        self.query_response_bytes_max
            .min(self.packet_bytes_max - 64)
    }

    /// Whether `ip` may take part (see `allowed_cidrs`).
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        self.allowed_cidrs.is_empty() || self.allowed_cidrs.iter().any(|n| n.contains(&ip))
    }

    /// The probe interval and timeout stretched by the local health multiplier `awareness`.
    pub fn scaled(&self, d: Duration, awareness: u32) -> Duration {
        d * (awareness + 1)
    }

    /// How many times a broadcast is sent in a cluster of `n` members.
    pub fn retransmit_limit(&self, n: usize) -> u32 {
        let n = n as f64 + 1.0;
        self.retransmit_mult * n.log10().ceil().max(1.0) as u32
    }

    /// The sync (anti-entropy) interval for a cluster of `n` members: above 8,192 members it
    /// grows by one base interval per doubling, so that large clusters do not storm. (memberlist
    /// scales from 32 members, as its push-pulls send full states; a sync sends two digests of
    /// under a byte a row, about a twentieth of that, and syncing often is what closes the last
    /// gaps after a partition heals.)
    pub fn push_pull_interval_for(&self, n: usize) -> Duration {
        const BASE: f64 = 8192.0;
        if n as f64 <= BASE {
            return self.push_pull_interval;
        }
        let mult = ((n as f64).log2() - BASE.log2()).ceil() + 1.0;
        self.push_pull_interval.mul_f64(mult)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate() {
        for name in ["lan", "wan", "local"] {
            Config::preset(name).unwrap().validate().unwrap();
        }
        assert!(Config::preset("moon").is_none());
    }

    #[test]
    fn rules_between_fields_are_checked() {
        let mut c = Config::lan();
        c.probe_timeout = c.probe_interval;
        assert_eq!(c.validate().unwrap_err().field, "probe_timeout");
        let mut c = Config::lan();
        c.tags_bytes_max = c.packet_bytes_max;
        assert_eq!(c.validate().unwrap_err().field, "tags_bytes_max");
        let mut c = Config::lan();
        c.broadcast_queue_max = 0;
        assert_eq!(c.validate().unwrap_err().field, "broadcast_queue_max");
    }

    /// Every bound at its edge: the last value accepted and the first refused, naming the field.
    #[test]
    fn bounds_are_checked_at_their_edges() {
        type Set = fn(&mut Config);
        let ok: &[(&str, Set)] = &[
            ("probe_interval 10ms", |c| {
                c.probe_interval = Duration::from_millis(10);
                c.probe_timeout = Duration::from_millis(5);
            }),
            ("probe_timeout just below", |c| {
                c.probe_timeout = c.probe_interval - Duration::from_nanos(1)
            }),
            ("gossip_interval 1ms", |c| {
                c.gossip_interval = Duration::from_millis(1)
            }),
            ("push_pull_interval = probe", |c| {
                c.push_pull_interval = c.probe_interval
            }),
            ("join_sync_interval off", |c| {
                c.join_sync_interval = Duration::ZERO
            }),
            ("join_sync_interval 10ms", |c| {
                c.join_sync_interval = Duration::from_millis(10)
            }),
            ("reconnect_interval = probe", |c| {
                c.reconnect_interval = c.probe_interval
            }),
            ("dead_retention = gossip_to_the_dead", |c| {
                c.dead_retention = c.gossip_to_the_dead
            }),
            ("join_retry_base = max", |c| {
                c.join_retry_base = c.join_retry_max
            }),
            ("indirect_checks max", |c| {
                c.indirect_checks = INDIRECT_CHECKS_MAX
            }),
            ("suspicion_mult 1", |c| c.suspicion_mult = 1),
            ("suspicion_max_mult 1", |c| c.suspicion_max_mult = 1),
            ("awareness_max 64", |c| c.awareness_max = 64),
            ("gossip_fanout 1", |c| c.gossip_fanout = 1),
            ("gossip_fanout 64", |c| c.gossip_fanout = 64),
            ("retransmit_mult 1", |c| c.retransmit_mult = 1),
            ("packet_bytes_max min", |c| {
                c.packet_bytes_max = PACKET_BYTES_MIN;
                c.tags_bytes_max = PACKET_BYTES_MIN - 200;
                c.user_event_bytes_max = PACKET_BYTES_MIN - 64;
            }),
            ("packet_bytes_max max", |c| c.packet_bytes_max = 65_000),
            ("tags_bytes_max fits", |c| {
                c.tags_bytes_max = c.packet_bytes_max - 200
            }),
            ("user_event_bytes_max fits", |c| {
                c.user_event_bytes_max = c.packet_bytes_max - 64
            }),
            ("query_bytes_max 256", |c| c.query_bytes_max = 256),
            ("query_response_bytes_max 256", |c| {
                c.query_response_bytes_max = 256
            }),
            ("query_timeout_mult 1", |c| c.query_timeout_mult = 1),
            ("query_timeout_mult 1000", |c| c.query_timeout_mult = 1000),
            ("direct_bytes_max 1 KiB", |c| c.direct_bytes_max = 1024),
            ("direct_bytes_max 64 MiB", |c| c.direct_bytes_max = 64 << 20),
            ("members_max 2", |c| c.members_max = 2),
            ("members_max 2^24", |c| c.members_max = 1 << 24),
            ("ones", |c| {
                c.user_event_buffer = 1;
                c.broadcast_queue_max = 1;
                c.push_pull_members_max = 1;
                c.indirect_pending_max = 1;
                c.members_admit_per_push_pull = 1;
                c.members_admit_per_sec = 1;
                c.queries_max = 1;
                c.queries_per_sec = 1;
            }),
        ];
        for (what, set) in ok {
            let mut c = Config::lan();
            set(&mut c);
            assert_eq!(c.validate(), Ok(()), "{what}");
        }
        let refused: &[(&str, Set)] = &[
            ("probe_interval", |c| {
                c.probe_interval = Duration::from_millis(9);
                c.probe_timeout = Duration::from_millis(5);
            }),
            ("probe_timeout", |c| c.probe_timeout = Duration::ZERO),
            ("gossip_interval", |c| {
                c.gossip_interval = Duration::from_millis(1) - Duration::from_nanos(1)
            }),
            ("push_pull_interval", |c| {
                c.push_pull_interval = c.probe_interval - Duration::from_nanos(1)
            }),
            ("join_sync_interval", |c| {
                c.join_sync_interval = Duration::from_millis(10) - Duration::from_nanos(1)
            }),
            ("reconnect_interval", |c| {
                c.reconnect_interval = c.probe_interval - Duration::from_nanos(1)
            }),
            ("dead_retention", |c| {
                c.dead_retention = c.gossip_to_the_dead - Duration::from_nanos(1)
            }),
            ("join_retry_base", |c| c.join_retry_base = Duration::ZERO),
            ("join_retry_base", |c| {
                c.join_retry_base = c.join_retry_max + Duration::from_nanos(1)
            }),
            ("indirect_checks", |c| {
                c.indirect_checks = INDIRECT_CHECKS_MAX + 1
            }),
            ("suspicion_mult", |c| c.suspicion_mult = 0),
            ("suspicion_max_mult", |c| c.suspicion_max_mult = 0),
            ("awareness_max", |c| c.awareness_max = 65),
            ("gossip_fanout", |c| c.gossip_fanout = 0),
            ("gossip_fanout", |c| c.gossip_fanout = 65),
            ("retransmit_mult", |c| c.retransmit_mult = 0),
            ("packet_bytes_max", |c| {
                c.packet_bytes_max = PACKET_BYTES_MIN - 1;
                c.tags_bytes_max = 8;
                c.user_event_bytes_max = 8;
            }),
            ("packet_bytes_max", |c| c.packet_bytes_max = 65_001),
            ("tags_bytes_max", |c| {
                c.tags_bytes_max = c.packet_bytes_max - 199
            }),
            ("user_event_bytes_max", |c| {
                c.user_event_bytes_max = c.packet_bytes_max - 63
            }),
            ("query_bytes_max", |c| c.query_bytes_max = 255),
            ("query_response_bytes_max", |c| {
                c.query_response_bytes_max = 255
            }),
            ("query_timeout_mult", |c| c.query_timeout_mult = 0),
            ("query_timeout_mult", |c| c.query_timeout_mult = 1001),
            ("direct_bytes_max", |c| c.direct_bytes_max = 1023),
            ("direct_bytes_max", |c| c.direct_bytes_max = (64 << 20) + 1),
            ("user_event_buffer", |c| c.user_event_buffer = 0),
            ("push_pull_members_max", |c| c.push_pull_members_max = 0),
            ("indirect_pending_max", |c| c.indirect_pending_max = 0),
            ("members_admit_per_push_pull", |c| {
                c.members_admit_per_push_pull = 0
            }),
            ("members_admit_per_sec", |c| c.members_admit_per_sec = 0),
            ("queries_max", |c| c.queries_max = 0),
            ("queries_per_sec", |c| c.queries_per_sec = 0),
            ("members_max", |c| c.members_max = 1),
            ("members_max", |c| c.members_max = (1 << 24) + 1),
        ];
        for (field, set) in refused {
            let mut c = Config::lan();
            set(&mut c);
            assert_eq!(c.validate().unwrap_err().field, *field);
        }
    }

    #[test]
    fn largest_queries_fit_a_packet_and_awareness_stretches_timeouts() {
        let mut c = Config::lan();
        assert_eq!(
            (c.query_len_max(), c.query_response_len_max()),
            (1024, 1024)
        );
        c.query_bytes_max = 4000;
        c.query_response_bytes_max = 3000;
        assert_eq!(c.query_len_max(), 1350 - 64);
        assert_eq!(c.query_response_len_max(), 1350 - 64);
        let d = Duration::from_millis(500);
        assert_eq!(c.scaled(d, 0), d);
        assert_eq!(c.scaled(d, 3), d * 4);
    }

    #[test]
    fn retransmit_limit_table() {
        let c = Config::lan();
        for (n, want) in [
            (0, 4),
            (1, 4),
            (9, 4),
            (10, 8),
            (99, 8),
            (100, 12),
            (1000, 16),
        ] {
            assert_eq!(c.retransmit_limit(n), want, "n={n}");
        }
    }

    #[test]
    fn push_pull_interval_grows_with_size() {
        let c = Config::lan();
        let base = c.push_pull_interval;
        for (n, mult) in [
            (1, 1),
            (1000, 1),
            (8192, 1),
            (8193, 2),
            (10_000, 2),
            (16_385, 3),
            (65_536, 4),
        ] {
            assert_eq!(c.push_pull_interval_for(n), base * mult, "n={n}");
        }
    }

    /// The settings a passage of docs/operations.md names, as TOML: each field's first mention
    /// and the value written after it (`500ms`, `1 MiB`, `true`, `[]`).
    fn documented(passage: &str) -> String {
        let fields = toml::Value::try_from(Config::lan()).unwrap();
        let fields = fields.as_table().unwrap();
        let pieces: Vec<&str> = passage.split('`').collect();
        let mut seen = std::collections::HashSet::new();
        let mut text = String::new();
        for (i, name) in pieces.iter().enumerate().skip(1).step_by(2) {
            if !fields.contains_key(*name) || !seen.insert(*name) {
                continue;
            }
            let after = pieces.get(i + 1).copied().unwrap_or("");
            let value = after
                .split([',', '(', '.', ';'])
                .next()
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let value = match value.strip_suffix(" MiB") {
                Some(n) => (n.parse::<u64>().unwrap() << 20).to_string(),
                None if value.ends_with(|c: char| c.is_ascii_alphabetic())
                    && value.starts_with(|c: char| c.is_ascii_digit()) =>
                {
                    format!("\"{value}\"")
                }
                None => value,
            };
            text += &format!("{name} = {value}\n");
        }
        text
    }

    /// docs/operations.md gives every default and each preset's changes; they are the code's.
    #[test]
    fn documented_defaults_and_presets_are_the_codes() {
        let doc = include_str!("../../docs/operations.md");
        let defaults = doc
            .split("`[protocol]` (defaults are the LAN preset")
            .nth(1)
            .unwrap()
            .split("\n\n")
            .next()
            .unwrap();
        let text = documented(defaults);
        let all = toml::Value::try_from(Config::lan()).unwrap();
        assert_eq!(
            text.lines().count(),
            all.as_table().unwrap().len(),
            "a field without its default in docs/operations.md:\n{text}"
        );
        assert_eq!(
            toml::from_str::<Config>(&text).unwrap(),
            Config::lan(),
            "{text}"
        );
        for name in ["wan", "local"] {
            let marker = format!("\n- `{name}` (");
            let passage = doc
                .split(&marker)
                .nth(1)
                .unwrap()
                .split("\n- ")
                .next()
                .unwrap();
            // Fields left out of a `[protocol]` table take the LAN default.
            let preset: Config = toml::from_str(&documented(passage)).unwrap();
            assert_eq!(Config::preset(name).unwrap(), preset, "preset {name}");
        }
    }

    #[test]
    fn toml_round_trip_and_unknown_keys_refused() {
        let c = Config::lan();
        let text = toml::to_string(&c).unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        let partial: Config = toml::from_str("probe_interval = \"1s\"").unwrap();
        assert_eq!(partial.probe_interval, Duration::from_secs(1));
        assert_eq!(partial.gossip_fanout, 3);
        assert!(toml::from_str::<Config>("probe_intervall = \"1s\"").is_err());
    }
}
