//! Hostile nodes: members that join like any other and then send random but well-formed
//! messages with extreme values, at a bounded rate, by datagram and by stream.
//!
//! A hostile node runs the normal core (it answers probes and stays a member), and beside it an
//! [`Attacker`] draws one message per tick from its own seeded RNG: alive, suspect and dead
//! claims about real and invented members at incarnations near `u64::MAX` and at small or
//! just-allowed jumps; push-pulls with many rows, long names and odd addresses; user events at
//! extreme Lamport times; pings, ping-reqs, acks and nacks with random sequence numbers and third
//! addresses; and replays of messages it received. Every message is one the wire can carry:
//! names are 1-128 bytes (the decoder's rule), a datagram fits `packet_bytes_max`, a stream
//! record [`STREAM_RECORD_BYTES_MAX`]; values inside (tags, payloads, incarnations) are free.
//! The same seed gives the same attack.

use super::net::addr;
use crate::cluster::message::{
    packet_len, Ack, Alive, Dead, Nack, Ping, PingReq, PushMember, PushPull, Suspect, Sync,
    SyncStep, UserEvent,
};
use crate::cluster::vivaldi::Coordinate;
use crate::cluster::{Config, Digest, Direct, MemberState, Message, Swim};
use crate::identity::{Incarnation, NodeId, NodeInfo, Tags, NODE_ID_BYTES_MAX};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The transport's default `stream_record_bytes_max`: a larger stream record never reaches the
/// core of a real node, so a hostile one stays under it.
pub const STREAM_RECORD_BYTES_MAX: usize = 4 << 20;
/// Messages a hostile node keeps to replay.
const SEEN_MAX: usize = 64;

/// One kind of hostile message; each can be switched off (`--hostile-kinds all,-suspect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostileKind {
    /// `Alive` about real and invented members: extreme incarnations, odd addresses, tags.
    Alive,
    /// `Suspect` about real and invented members, from anyone.
    Suspect,
    /// `Dead` about real and invented members, from anyone.
    Dead,
    /// `PushPull` with many rows, long names, odd addresses, extreme clocks.
    PushPull,
    /// `Sync`: answers to the syncs honest nodes start with it (so their rows count as asked
    /// for: up to `members_admit_per_push_pull` invented members each), and forged starts,
    /// answers and finishes with odd digests (none, empty, all ones, 0 or 255 hash functions).
    Sync,
    /// `UserEvent` at extreme Lamport times, oversized or not.
    UserEvent,
    /// `Ping` with random sequence numbers and names.
    Ping,
    /// `PingReq` naming third addresses.
    PingReq,
    /// `Ack` with a random sequence number.
    Ack,
    /// `Nack` with a random sequence number.
    Nack,
    /// A message this hostile node received, sent again to someone else.
    Replay,
    /// `Direct` messages in any member's name (real, hostile or invented), some over
    /// `direct_bytes_max`.
    Direct,
    /// `Coord` with extreme values: not finite, huge, negative error or height, or plausible.
    Coord,
}

impl HostileKind {
    /// Every kind, in report order.
    pub const ALL: [HostileKind; 13] = [
        HostileKind::Alive,
        HostileKind::Suspect,
        HostileKind::Dead,
        HostileKind::PushPull,
        HostileKind::Sync,
        HostileKind::UserEvent,
        HostileKind::Ping,
        HostileKind::PingReq,
        HostileKind::Ack,
        HostileKind::Nack,
        HostileKind::Replay,
        HostileKind::Direct,
        HostileKind::Coord,
    ];

    /// Its name in flags and reports.
    pub fn name(self) -> &'static str {
        match self {
            HostileKind::Alive => "alive",
            HostileKind::Suspect => "suspect",
            HostileKind::Dead => "dead",
            HostileKind::PushPull => "push_pull",
            HostileKind::Sync => "sync",
            HostileKind::UserEvent => "user_event",
            HostileKind::Ping => "ping",
            HostileKind::PingReq => "ping_req",
            HostileKind::Ack => "ack",
            HostileKind::Nack => "nack",
            HostileKind::Replay => "replay",
            HostileKind::Direct => "direct",
            HostileKind::Coord => "coord",
        }
    }

    /// A comma-separated list: kind names, `all`, and `-kind` to take one out again
    /// (`all,-dead,-suspect`). Applied left to right; the result must not be empty.
    pub fn parse_list(list: &str) -> Result<Vec<HostileKind>, String> {
        let mut kinds = Vec::new();
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let (remove, name) = match word.strip_prefix('-') {
                Some(n) => (true, n),
                None => (false, word),
            };
            let named: Vec<HostileKind> = if name == "all" {
                Self::ALL.to_vec()
            } else {
                let k = Self::ALL.iter().find(|k| k.name() == name).ok_or_else(|| {
                    format!(
                        "unknown hostile kind '{name}' (all, {})",
                        Self::ALL.map(Self::name).join(", ")
                    )
                })?;
                vec![*k]
            };
            kinds.retain(|k| !named.contains(k));
            if !remove {
                kinds.extend(named);
            }
        }
        kinds.sort_unstable();
        if kinds.is_empty() {
            return Err("--hostile-kinds leaves no kind".into());
        }
        Ok(kinds)
    }
}

/// What the hostile nodes of a run do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostileSpec {
    /// Hostile nodes, on top of the honest ones (0: none; the run is exactly as without).
    pub count: usize,
    /// Hostile messages each hostile node sends per virtual second (1..=10,000; default 20).
    pub rate: u32,
    /// The kinds drawn from, evenly (default: all).
    pub kinds: Vec<HostileKind>,
    /// Rows in one hostile push-pull at most (default 1,024; up to 131,072). Most carry a few.
    pub rows_max: usize,
}

impl Default for HostileSpec {
    fn default() -> Self {
        HostileSpec {
            count: 0,
            rate: 20,
            kinds: HostileKind::ALL.to_vec(),
            rows_max: 1024,
        }
    }
}

impl HostileSpec {
    /// Checks the ranges; `Err` names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.count > 1024 {
            return Err("--hostile must be at most 1024".into());
        }
        if !(1..=10_000).contains(&self.rate) {
            return Err("--hostile-rate must be 1..=10000 messages per second".into());
        }
        if self.kinds.is_empty() {
            return Err("--hostile-kinds leaves no kind".into());
        }
        if !(1..=1 << 17).contains(&self.rows_max) {
            return Err("--hostile-rows-max must be 1..=131072".into());
        }
        Ok(())
    }
}

/// How a hostile message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel {
    Datagram,
    Stream,
}

/// What the attacker can see: its own core (incarnations and the event clock it knows) and
/// the shape of the run.
pub(crate) struct Ctx<'a> {
    pub swim: &'a Swim,
    pub config: &'a Config,
    /// Honest nodes are `0..honest`, hostile ones `honest..total`.
    pub honest: usize,
    pub total: usize,
    /// This hostile node's index.
    pub me: usize,
}

/// One hostile node's message generator.
pub(crate) struct Attacker {
    rng: ChaCha8Rng,
    seen: VecDeque<Message>,
    /// Honest nodes that started a sync with this one and are owed an answer (bounded).
    sync_starts: VecDeque<usize>,
}

impl Attacker {
    pub fn new(seed: u64) -> Self {
        Attacker {
            rng: ChaCha8Rng::seed_from_u64(seed),
            seen: VecDeque::with_capacity(SEEN_MAX),
            sync_starts: VecDeque::new(),
        }
    }

    /// Remembers what it received from honest node `from`, for replays and sync answers.
    pub fn see(&mut self, from: usize, msgs: &[Message]) {
        for m in msgs {
            if matches!(m, Message::Sync(s) if s.step == SyncStep::Start) {
                if self.sync_starts.len() == SEEN_MAX {
                    self.sync_starts.pop_front();
                }
                self.sync_starts.push_back(from);
            }
            if self.seen.len() == SEEN_MAX {
                self.seen.pop_front();
            }
            self.seen.push_back(m.clone());
        }
    }

    /// The pause before the next message: `1 / rate`, jittered by ±50 %.
    pub fn interval(&mut self, rate: u32) -> Duration {
        let mean = 1_000_000 / u64::from(rate.max(1));
        Duration::from_micros(self.rng.gen_range(mean / 2..=mean + mean / 2).max(1))
    }

    /// The next message: its kind, the honest node it goes to, how, and what.
    pub fn next(&mut self, c: &Ctx, spec: &HostileSpec) -> (HostileKind, usize, Channel, Message) {
        let mut to = self.rng.gen_range(0..c.honest);
        let mut kind = spec.kinds[self.rng.gen_range(0..spec.kinds.len())];
        if kind == HostileKind::Replay && self.seen.is_empty() {
            kind = HostileKind::Ping;
        }
        let msg = match kind {
            HostileKind::Alive => self.alive(c),
            HostileKind::Suspect => Message::Suspect(Suspect {
                incarnation: self.incarnation_of(c, None),
                node: self.name(c, to),
                from: self.name(c, to),
            }),
            HostileKind::Dead => Message::Dead(Dead {
                incarnation: self.incarnation_of(c, None),
                node: self.name(c, to),
                from: self.name(c, to),
            }),
            HostileKind::PushPull => self.push_pull(c, spec.rows_max),
            HostileKind::Sync => {
                let owed = self.sync_starts.pop_front().filter(|&n| n < c.honest);
                if let Some(n) = owed {
                    to = n;
                }
                self.sync(c, owed.is_some(), spec.rows_max)
            }
            HostileKind::UserEvent => self.user_event(c, to),
            HostileKind::Ping => Message::Ping(Ping {
                seq: self.rng.gen(),
                target: self.name(c, to),
                source: self.name(c, to),
            }),
            HostileKind::PingReq => Message::PingReq(Box::new(PingReq {
                seq: self.rng.gen(),
                target: self.name(c, to),
                target_addr: self.addr(c),
                source: self.name(c, to),
                nack: self.rng.gen(),
            })),
            HostileKind::Ack => Message::Ack(Ack {
                seq: self.rng.gen(),
            }),
            HostileKind::Nack => Message::Nack(Nack {
                seq: self.rng.gen(),
            }),
            HostileKind::Replay => self.seen[self.rng.gen_range(0..self.seen.len())].clone(),
            HostileKind::Direct => {
                let max = c.config.direct_bytes_max;
                let len = match self.rng.gen_range(0..8) {
                    0 => max + self.rng.gen_range(1..64),
                    _ => self.rng.gen_range(0..2048),
                };
                Message::Direct(Box::new(Direct {
                    from: self.name(c, to),
                    payload: vec![0xCD; len],
                }))
            }
            HostileKind::Coord => Message::Coord(Box::new(self.coordinate())),
        };
        let fits = packet_len(std::slice::from_ref(&msg)) <= c.config.packet_bytes_max;
        let channel = if fits && self.rng.gen_bool(0.75) {
            Channel::Datagram
        } else {
            Channel::Stream
        };
        (kind, to, channel, msg)
    }

    /// A real honest name (the receiver's too), a hostile one, or an invented one.
    fn name(&mut self, c: &Ctx, to: usize) -> NodeId {
        let i = match self.rng.gen_range(0..10) {
            0..=2 => self.rng.gen_range(0..c.honest),
            3 => to,
            4 => c.me,
            5 => self.rng.gen_range(c.honest..c.total),
            _ => return self.invented(),
        };
        NodeId::new(&format!("n{i}")).expect("short")
    }

    /// A name no node has: starts with `~` (never `n<digits>`), 1-128 bytes, any UTF-8,
    /// control characters included; short ones repeat often, long ones rarely.
    fn invented(&mut self) -> NodeId {
        const CHARS: [char; 8] = ['~', 'a', 'Z', '9', 'é', '\u{1b}', '\n', '\u{10ffff}'];
        let len_max = if self.rng.gen_bool(0.2) {
            NODE_ID_BYTES_MAX
        } else {
            self.rng.gen_range(1..=8)
        };
        let mut s = String::from("~");
        loop {
            let ch = CHARS[self.rng.gen_range(0..CHARS.len())];
            if s.len() + ch.len_utf8() > len_max {
                break;
            }
            s.push(ch);
        }
        NodeId::new(&s).expect("1-128 bytes")
    }

    /// An incarnation near the one this node knows for `id` (small and just-allowed jumps),
    /// or an extreme one.
    fn incarnation_of(&mut self, c: &Ctx, id: Option<&NodeId>) -> Incarnation {
        let known = id
            .and_then(|id| c.swim.member(id))
            .map_or(0, |m| m.incarnation.0);
        Incarnation(match self.rng.gen_range(0..9) {
            0 => u64::MAX,
            1 => u64::MAX - self.rng.gen_range(1..4),
            2 => 0,
            3 => known.saturating_add(self.rng.gen_range(1..=3)),
            4 => known.saturating_add(1 << 16),
            5 => known.saturating_add((1 << 16) + 1),
            6 => self.rng.gen(),
            7 => known.saturating_sub(1),
            _ => known,
        })
    }

    /// An honest node's, its own, an unroutable one, or an odd one.
    fn addr(&mut self, c: &Ctx) -> SocketAddr {
        match self.rng.gen_range(0..10) {
            0..=2 => addr(self.rng.gen_range(0..c.honest)),
            3 => addr(c.me),
            4 => addr(c.total + self.rng.gen_range(0..1000)),
            5 => SocketAddr::from(([0, 0, 0, 0], 0)),
            6 => SocketAddr::from(([255, 255, 255, 255], 65535)),
            7 => "[::1]:7946".parse().expect("v6"),
            8 => SocketAddr::from(([127, 0, 0, 1], 7946)),
            _ => SocketAddr::from((self.rng.gen::<[u8; 4]>(), self.rng.gen::<u16>())),
        }
    }

    /// None, some, exactly `tags_bytes_max`, or over it.
    fn tags(&mut self, c: &Ctx) -> Tags {
        let mut t = Tags::new();
        let bytes = match self.rng.gen_range(0..6) {
            0..=2 => return t,
            3 => self.rng.gen_range(3..=c.config.tags_bytes_max),
            4 => c.config.tags_bytes_max,
            _ => c.config.tags_bytes_max + self.rng.gen_range(1..64),
        };
        t.insert("k".into(), "v".repeat(bytes.saturating_sub(3)));
        t
    }

    fn info(&mut self, c: &Ctx, id: NodeId) -> Arc<NodeInfo> {
        let mut info = NodeInfo::new(id, self.addr(c));
        info.tags = self.tags(c);
        Arc::new(info)
    }

    fn alive(&mut self, c: &Ctx) -> Message {
        let to = self.rng.gen_range(0..c.honest);
        let id = self.name(c, to);
        let incarnation = self.incarnation_of(c, Some(&id));
        Message::Alive(Alive {
            incarnation,
            info: self.info(c, id),
        })
    }

    fn row(&mut self, c: &Ctx, to: usize) -> PushMember {
        let id = self.name(c, to);
        const STATES: [MemberState; 4] = [
            MemberState::Alive,
            MemberState::Suspect,
            MemberState::Dead,
            MemberState::Left,
        ];
        PushMember {
            incarnation: self.incarnation_of(c, Some(&id)),
            info: self.info(c, id),
            state: STATES[self.rng.gen_range(0..STATES.len())],
        }
    }

    fn push_pull(&mut self, c: &Ctx, rows_max: usize) -> Message {
        let to = self.rng.gen_range(0..c.honest);
        let rows = match self.rng.gen_range(0..20) {
            0..=13 => self.rng.gen_range(0..=16),
            14..=18 => self.rng.gen_range(0..=256),
            _ => self.rng.gen_range(0..=rows_max),
        }
        .min(rows_max);
        let clock = c.swim.event_clock();
        let event_ltime = self.ltime(clock);
        let mut pp = PushPull {
            join: self.rng.gen(),
            reply: self.rng.gen(),
            event_ltime,
            members: Vec::with_capacity(rows),
        };
        let mut bytes = 64;
        for _ in 0..rows {
            let row = self.row(c, to);
            // About a row's size (postcard is compact); stay under the stream record limit.
            bytes += 32 + row.info.id.as_str().len() + crate::identity::tags_len(&row.info.tags);
            if bytes > STREAM_RECORD_BYTES_MAX {
                break;
            }
            pp.members.push(row);
        }
        Message::PushPull(pp)
    }

    /// A sync message: the answer its receiver is owed (`owed`) or a forged step.
    fn sync(&mut self, c: &Ctx, owed: bool, rows_max: usize) -> Message {
        let step = if owed {
            SyncStep::Answer
        } else {
            [SyncStep::Start, SyncStep::Answer, SyncStep::Finish][self.rng.gen_range(0..3)]
        };
        let digest = match self.rng.gen_range(0..6) {
            0 => None,
            1 => Some(Digest::build(self.rng.gen(), 0, std::iter::empty())),
            2 => Some(Digest {
                salt: self.rng.gen(),
                hashes: 4,
                bits: vec![0xFF; self.rng.gen_range(1..=4096)],
            }),
            3 => Some(Digest {
                salt: self.rng.gen(),
                hashes: [0, 255][self.rng.gen_range(0..2)],
                bits: vec![0; 64],
            }),
            _ => Some(Digest::build(self.rng.gen(), 64, std::iter::empty())),
        };
        let rows = if step == SyncStep::Start && self.rng.gen_bool(0.75) {
            Vec::new()
        } else {
            match self.push_pull(c, rows_max) {
                Message::PushPull(pp) => pp.members,
                _ => unreachable!("push_pull builds a PushPull"),
            }
        };
        let event_ltime = self.ltime(c.swim.event_clock());
        Message::Sync(Box::new(Sync {
            step,
            event_ltime,
            digest,
            rows,
        }))
    }

    fn ltime(&mut self, clock: u64) -> u64 {
        match self.rng.gen_range(0..8) {
            0 => u64::MAX,
            1 => u64::MAX - 1,
            2 => clock.saturating_add(1 << 20),
            3 => clock.saturating_add((1 << 20) + 1),
            4 => clock.saturating_add(self.rng.gen_range(1..=3)),
            5 => 0,
            6 => self.rng.gen(),
            _ => clock,
        }
    }

    /// A coordinate: one extreme value among plausible ones, or all plausible.
    fn coordinate(&mut self) -> Coordinate {
        let mut c = Coordinate {
            vec: std::array::from_fn(|_| self.rng.gen_range(-1.0..1.0)),
            error: self.rng.gen_range(0.0..1.5),
            adjustment: self.rng.gen_range(-0.1..0.1),
            height: self.rng.gen_range(0.0..0.1),
        };
        let extreme = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            -f32::MAX,
            1.0e9,
        ];
        let v = extreme[self.rng.gen_range(0..extreme.len())];
        match self.rng.gen_range(0..6) {
            0 => c.vec[self.rng.gen_range(0..c.vec.len())] = v,
            1 => c.error = v,
            2 => c.height = -c.height - 1.0,
            3 => c.adjustment = v,
            4 => c.height = v,
            _ => {}
        }
        c
    }

    fn user_event(&mut self, c: &Ctx, to: usize) -> Message {
        let max = c.config.user_event_bytes_max;
        let payload = match self.rng.gen_range(0..4) {
            0 => 0,
            1 => self.rng.gen_range(0..=max / 2),
            2 => max.saturating_sub(16),
            _ => max + self.rng.gen_range(1..256),
        };
        let name_len = self.rng.gen_range(0..=32);
        Message::UserEvent(Box::new(UserEvent {
            ltime: self.ltime(c.swim.event_clock()),
            origin: self.name(c, to),
            wall_ms: self.rng.gen(),
            name: "e".repeat(name_len),
            payload: vec![0xAB; payload],
        }))
    }
}

/// Counts of what the hostile nodes sent, for the report.
#[derive(Debug, Default, Clone)]
pub(crate) struct Sent {
    pub by_kind: BTreeMap<&'static str, u64>,
    pub datagrams: u64,
    pub streams: u64,
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_lists_add_and_remove_left_to_right() {
        assert_eq!(HostileKind::parse_list("all").unwrap().len(), 13);
        assert_eq!(
            HostileKind::parse_list("all,-dead,-suspect").unwrap().len(),
            11
        );
        assert_eq!(
            HostileKind::parse_list("ping, alive").unwrap(),
            [HostileKind::Alive, HostileKind::Ping]
        );
        assert!(HostileKind::parse_list("all,-all").is_err());
        assert!(HostileKind::parse_list("pong").is_err());
    }

    #[test]
    fn messages_are_well_formed_and_the_same_seed_draws_the_same() {
        let config = Config::lan();
        let me = NodeInfo::new(NodeId::new("n12").unwrap(), addr(12));
        let swim = Swim::new(config.clone(), me, Incarnation(0), 7).unwrap();
        let c = Ctx {
            swim: &swim,
            config: &config,
            honest: 10,
            total: 13,
            me: 12,
        };
        let spec = HostileSpec {
            rows_max: 4096,
            ..HostileSpec::default()
        };
        let draw = |seed| {
            let mut a = Attacker::new(seed);
            a.see(0, &[Message::Ack(Ack { seq: 1 })]);
            (0..2000).map(|_| a.next(&c, &spec)).collect::<Vec<_>>()
        };
        let (one, two) = (draw(5), draw(5));
        assert_eq!(one, two);
        for (_, to, channel, msg) in &one {
            assert!(*to < 10, "only honest nodes are attacked");
            let len = packet_len(std::slice::from_ref(msg));
            match channel {
                Channel::Datagram => assert!(len <= config.packet_bytes_max),
                Channel::Stream => assert!(len <= STREAM_RECORD_BYTES_MAX),
            }
            // Round-trips through the codec: what a real node would decode.
            let mut bytes = Vec::new();
            msg.encode_into(&mut bytes);
            assert_eq!(Message::decode(&bytes).unwrap().as_ref(), Some(msg));
        }
        for k in HostileKind::ALL {
            assert!(one.iter().any(|x| x.0 == k), "{k:?} never drawn");
        }
    }
}
