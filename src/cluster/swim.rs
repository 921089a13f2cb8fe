//! The state machine: dispatch of inputs, commands, gossip rounds and anti-entropy.
//! Probing lives in `probe.rs`, the merge rules for claims in `merge.rs`.

use super::broadcast::{BroadcastKey, BroadcastQueue};
use super::digest::Digest;
use super::members::{Member, Members};
use super::message::{
    item_len, packet_header_len, Alive, Dead, MemberState, Message, PushMember, PushPull, Sync,
    SyncStep, UserEvent, PACKET_MESSAGES_MAX,
};
use super::probe::ProbeState;
use super::suspicion::{Awareness, Suspicion};
use super::user_events::{digest, UserEvents, Verdict};
use super::{Command, Config, Event, Input, MemberView, Output, Timer};
use crate::common::Backoff;
use crate::common::Histogram;
use crate::common::{ConfigError, Now, Time};
use crate::identity::Incarnation;
use crate::identity::{tags_len, NodeId, NodeInfo, Tags};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Which full-state exchange a push-pull message is (the wire keeps two flags, `join` and
/// `reply`; never both). This build sends push-pulls only to join (anti-entropy goes by
/// [`Sync`]) but answers any, as older builds sent them periodically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushPullKind {
    /// A joiner asks a seed for the whole table.
    Join,
    /// The answer to a push-pull.
    Reply,
}

/// Why a command was refused. The state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// `Join` with no seed address.
    #[error("join needs at least one seed address")]
    NoSeeds,
    /// Tags over `tags_bytes_max`.
    #[error("tags take {len} bytes, more than tags_bytes_max = {max}")]
    TagsTooLarge {
        /// Bytes the tags take.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A user event over `user_event_bytes_max`.
    #[error("user event takes {len} bytes, more than user_event_bytes_max = {max}")]
    EventTooLarge {
        /// Bytes of name and payload.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The node has left; it takes no more commands.
    #[error("the node has left the cluster")]
    Left,
    /// A direct message to a member this node does not know.
    #[error("no member named {0}")]
    UnknownMember(NodeId),
    /// A direct message to a member that failed or left.
    #[error("member {member} is {state}")]
    MemberGone {
        /// The member.
        member: NodeId,
        /// Its state here (`failed` or `left`).
        state: &'static str,
    },
    /// More queries running than `queries_max`.
    #[error("{max} queries are running already (queries_max)")]
    TooManyQueries {
        /// The limit.
        max: usize,
    },
    /// A query with a bad relay factor, filter or timeout.
    #[error("bad query: {0}")]
    BadQuery(String),
    /// A query over `query_bytes_max`.
    #[error("query takes {len} bytes, more than the {max} it may (query_bytes_max)")]
    QueryTooLarge {
        /// Bytes of the query message.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An answer over `query_response_bytes_max`.
    #[error("answer takes {len} bytes, more than the {max} it may (query_response_bytes_max)")]
    ResponseTooLarge {
        /// Bytes of the answer message.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An answer to a query this node did not take, or has forgotten.
    #[error("no such query to answer")]
    QueryUnknown,
    /// An answer after the query's deadline.
    #[error("the query's deadline has passed")]
    QueryExpired,
    /// A second answer to one query.
    #[error("the query is answered already")]
    QueryAnswered,
    /// A direct message over its limit (`direct_bytes_max`, or a packet for `send`).
    #[error("message payload takes {len} bytes, more than the {max} it may")]
    MessageTooLarge {
        /// Bytes of payload.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Counters kept by the core for the runtime's metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Probes started.
    pub probes: u64,
    /// Probes that ended without any ack.
    pub probes_failed: u64,
    /// Probes with a timer this node handled a whole ack wait (`probe_timeout`) late (it was
    /// not running): its health multiplier went up, and a missing ack raised no suspicion.
    pub probes_late: u64,
    /// Ping-reqs sent.
    pub indirect_probes: u64,
    /// Nacks received.
    pub nacks: u64,
    /// Suspicions this node raised (its own failed probes).
    pub suspicions_raised: u64,
    /// Times this node refuted a claim about itself.
    pub refutations: u64,
    /// Members this node declared failed (its own suspicion timeouts).
    pub failures_declared: u64,
    /// Messages received.
    pub messages_in: u64,
    /// Messages dropped as misaddressed, unexpected or over a limit.
    pub dropped: u64,
    /// User events delivered.
    pub user_events: u64,
    /// Push-pulls this node started (join, periodic, reconnect).
    pub push_pulls: u64,
    /// Push-pulls this node answered.
    pub push_pulls_answered: u64,
    /// Round trips of direct and indirect probes that were acked.
    pub probe_rtt: Histogram,
    /// From sending a push-pull to merging its answer.
    pub push_pull_duration: Histogram,
    /// Claims and Lamport times refused as implausible jumps (more than
    /// [`INCARNATION_JUMP_MAX`] above the incarnation known, or [`LTIME_JUMP_MAX`] above the
    /// clock); see `docs/protocol.md`.
    pub implausible: u64,
    /// Claims and user events from the wire over a local limit (tags over `tags_bytes_max`,
    /// events over `user_event_bytes_max`), dropped on receipt; names over 128 bytes do not
    /// even decode.
    pub over_limit: u64,
    /// Ping-reqs refused because they would make this node send to an address that is not a
    /// known member's (a target unknown, or known at another address), or because they came in
    /// over a stream, whose sender address is only claimed.
    pub misdirected: u64,
    /// Packets, stream messages, claims and rows refused because an address in them is outside
    /// `allowed_cidrs`.
    pub not_allowed: u64,
    /// New members refused because the table holds `members_max` rows.
    pub table_full: u64,
    /// New members refused by the admission caps: rows of a full state this node did not ask
    /// for that are not its sender, rows past `members_admit_per_push_pull`, and members past
    /// `members_admit_per_sec`.
    pub admission: u64,
    /// Claims refused because they would move a live (or recently failed) member to another
    /// address; each is also reported as `Event::MemberConflict`.
    pub conflicts: u64,
    /// Failed or departed members dropped from the table before `dead_retention` because more
    /// of them were kept than the most members ever active at once (at least 64 are kept).
    pub evicted: u64,
    /// Exchanges made by the join sync (see `Config::join_sync_interval`).
    pub join_syncs: u64,
    /// Syncs (delta anti-entropy, [`Sync`]) this node started; also counted in `push_pulls`.
    pub syncs: u64,
    /// Rows sent in syncs (what the peers' digests did not hold).
    pub sync_rows_sent: u64,
    /// Rows received in syncs.
    pub sync_rows_received: u64,
    /// Acked probes whose round trip and the acking member's coordinate moved this node's
    /// network coordinate.
    pub coordinate_updates: u64,
    /// Direct messages delivered to the application.
    pub direct_in: u64,
    /// Direct messages dropped because their sender is not a live member at the address they
    /// came from.
    pub direct_refused: u64,
    /// Queries from other members this node took (passed on, and answered when selected).
    pub queries_in: u64,
    /// New queries dropped past `queries_per_sec`, and relayed answers past
    /// `query::RELAYS_PER_SEC`.
    pub queries_limited: u64,
    /// Acknowledgements and answers taken for this node's queries.
    pub query_answers_in: u64,
    /// Acknowledgements and answers for queries this node no longer waits on (late).
    pub query_answers_late: u64,
    /// Answers this node relayed to their query's origin.
    pub query_relays: u64,
}

/// Largest step up from the incarnation this node knows for a member (itself included) that a
/// claim may take; a larger one is dropped and counted (`Stats::implausible`). A member's own
/// incarnation rises by one per refutation, so honest steps are tiny; the cap keeps a forged
/// claim near `u64::MAX` from pinning a live member above any incarnation it could refute
/// with, and small, so that forged claims cannot inflate a member's incarnation faster than a
/// node that missed a few refutations can follow. The exceptions: the full state of the seed a
/// node joins through, which may set the joiner's own incarnation (a restart without a data
/// dir) and its clock anywhere, and a member's own claim from its own address.
pub const INCARNATION_JUMP_MAX: u64 = 64;
/// Largest step up from the incarnation this node knows for another member that a suspect or
/// dead claim (or a push-pull row saying so) may take. Only the member raises its incarnation, by
/// one per refutation, and a claim about it names the incarnation its author saw: one step
/// covers a refutation not yet heard of. A larger step is dropped and counted
/// (`Stats::implausible`), so forged claims can raise a live member's incarnation by at most two
/// each (the step and its refutation).
pub const DOWN_CLAIM_JUMP_MAX: u64 = 0;
/// Largest step up of the user-event Lamport clock that one event or push-pull may cause; a
/// larger one is dropped and counted. Honest clocks differ by the events sent while apart.
pub const LTIME_JUMP_MAX: u64 = 1 << 20;
/// The alive claims of members new to this node (joins, heard from others) take at most this
/// fraction (1/n) of a packet: refutations, suspicions and failures go first, and a burst of
/// thousands of joins, which syncs carry anyway, cannot fill the gossip (at 1,000 nodes joining
/// together it made 80 % of the bytes each node received while the cluster formed).
pub const JOINS_SHARE_OF_PACKET: usize = 8;
/// Outputs a core keeps room for between inputs (see `Swim::hand_over`).
pub(super) const OUT_KEEP: usize = 64;

/// Which channel a message came in on; replies go back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel {
    Packet,
    Stream,
}

/// Where the rows being merged come from, which decides how many new members they may add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Gossip: one claim at a time, under the per-second cap.
    Gossip,
    /// The answer to our own join from a seed we asked: the whole cluster, up to `members_max`.
    JoinReply,
    /// The answer to a push-pull we started: up to this many more new members.
    Reply(usize),
    /// A full state we did not ask for: it introduces only its sender, at this address.
    Unsolicited(SocketAddr),
}

/// A per-second token bucket holding one second's worth (new members admitted, queries taken,
/// answers relayed).
#[derive(Debug)]
pub(crate) struct AdmitBucket {
    pub tokens: f64,
    pub at: Time,
}

impl AdmitBucket {
    /// A full bucket for `rate` a second.
    pub fn full(rate: u32) -> Self {
        AdmitBucket {
            tokens: f64::from(rate),
            at: Time::ZERO,
        }
    }

    /// One token at `now`, refilled at `rate` a second, if there is one.
    pub fn take(&mut self, rate: u32, now: Time) -> bool {
        let rate = f64::from(rate);
        let elapsed = now.saturating_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Default)]
struct JoinState {
    seeds: Vec<SocketAddr>,
    attempt: u32,
    pending: bool,
}

/// The SWIM/Lifeguard state machine of one node.
pub struct Swim {
    pub(crate) config: Config,
    pub(crate) id: NodeId,
    pub(crate) rng: ChaCha8Rng,
    /// This node's network coordinate (see `coords.rs`).
    pub(crate) vivaldi: super::vivaldi::Vivaldi,
    /// Coordinates of the members that acked our probes.
    pub(crate) peer_coords: FxHashMap<NodeId, super::coords::PeerCoord>,
    /// The direct ack of our probe in the packet being handled (its source, the target, the
    /// round trip), for the coordinate after it.
    pub(crate) packet_ack: Option<(SocketAddr, NodeId, std::time::Duration)>,
    pub(crate) members: Members,
    pub(crate) awareness: Awareness,
    pub(crate) broadcasts: BroadcastQueue,
    /// Running suspicions, by member (looked up, never iterated).
    pub(crate) suspicions: FxHashMap<NodeId, Suspicion>,
    pub(crate) generation: u64,
    pub(crate) probe: ProbeState,
    pub(crate) user_events: UserEvents,
    /// Queries started and being answered (see `query.rs`).
    pub(crate) queries: super::query::Queries,
    join: JoinState,
    /// Set while the members of the answer to our join are merged: the seed's word may move
    /// this node's own incarnation and clock by any amount (see [`INCARNATION_JUMP_MAX`]).
    pub(crate) trust_jumps: bool,
    /// Set while the rows of a sync are merged: new members are not gossiped on.
    pub(crate) in_sync: bool,
    pub(crate) leaving: bool,
    pub(crate) now: Now,
    pub(crate) out: Vec<Output>,
    pub(crate) stats: Stats,
    /// Push-pulls and syncs sent and not yet answered, by peer (bounded), to time them.
    pub(crate) push_pull_sent: FxHashMap<SocketAddr, Time>,
    /// Syncs this node answered whose `Finish` has not come yet, by peer (bounded).
    sync_answered: FxHashMap<SocketAddr, Time>,
    /// What the rows being merged may add (see [`Admit`]).
    pub(crate) admit: Admit,
    pub(crate) admit_bucket: AdmitBucket,
    /// When a refutation last raised the local health multiplier.
    last_refute_penalty: Option<Time>,
    /// Failure news (a suspicion, a death, our own refutation) was queued while handling the
    /// current input: it is gossiped at the end of the input, not at the next tick.
    pub(crate) urgent: bool,
    /// When the last such early gossip round went out (at most one a gossip interval).
    last_urgent_gossip: Option<Time>,
    /// The real source of the message being handled (a datagram's source, or a stream's sender
    /// checked against its connection), to tell a member's own word from a relayed claim.
    pub(crate) direct_from: Option<SocketAddr>,
    /// Address moves waiting on a probe of the old address (bounded by `MOVES_PENDING_MAX`).
    pub(crate) moves: FxHashMap<NodeId, super::merge::PendingMove>,
    /// Relayed leaves waiting to be refuted (bounded by `LEAVES_PENDING_MAX`).
    pub(crate) leaves: FxHashMap<NodeId, super::merge::PendingLeave>,
    /// The most members seen active at once: the number of failed rows kept (see
    /// `evict_down_members`).
    pub(crate) active_peak: usize,
    /// The join sync in progress, if any (see `Config::join_sync_interval`).
    join_sync: Option<JoinSync>,
}

/// Notes `to` as awaiting an answer since `at`; at most 64 at once, the oldest forgotten first.
fn note_pending(pending: &mut FxHashMap<SocketAddr, Time>, to: SocketAddr, at: Time) {
    const PENDING_MAX: usize = 64;
    if pending.len() >= PENDING_MAX && !pending.contains_key(&to) {
        let oldest = pending.iter().min_by_key(|(a, t)| (**t, **a));
        if let Some((&a, _)) = oldest {
            pending.remove(&a);
        }
    }
    pending.insert(to, at);
}

/// Where the join sync stands (see `Swim::on_join_sync`).
struct JoinSync {
    rows: usize,
    /// Rows sent and received in syncs, at the last round.
    moved: u64,
    /// Rounds in a row that found neither growth nor rows moved.
    quiet: u32,
}

/// The join sync's interval doubles in each quiet round and the join sync ends past this
/// multiple of `join_sync_interval` (with 250 ms: rounds 0.5, 1, 2 and 4 s apart after the last
/// rows moved).
const JOIN_SYNC_BACKOFF_MAX: u32 = 16;

impl Swim {
    /// Builds a core for the local node `info` starting at `incarnation` (a restarted node passes
    /// one above any it used before), drawing randomness from `seed`. Validates `config`.
    pub fn new(
        config: Config,
        info: NodeInfo,
        incarnation: Incarnation,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut members = Members::default();
        members.insert(Member::new(
            Arc::new(info.clone()),
            incarnation,
            MemberState::Alive,
            Time::ZERO,
        ));
        Ok(Swim {
            id: info.id,
            rng: ChaCha8Rng::seed_from_u64(seed),
            vivaldi: Default::default(),
            peer_coords: FxHashMap::default(),
            packet_ack: None,
            members,
            awareness: Awareness::new(config.awareness_max),
            broadcasts: BroadcastQueue::new(config.broadcast_queue_max),
            suspicions: FxHashMap::default(),
            generation: 0,
            probe: ProbeState::default(),
            user_events: UserEvents::new(config.user_event_buffer),
            queries: super::query::Queries::new(config.queries_per_sec),
            join: JoinState::default(),
            trust_jumps: false,
            in_sync: false,
            leaving: false,
            now: Now::default(),
            out: Vec::new(),
            stats: Stats::default(),
            push_pull_sent: FxHashMap::default(),
            sync_answered: FxHashMap::default(),
            admit: Admit::Gossip,
            admit_bucket: AdmitBucket::full(config.members_admit_per_sec),
            last_refute_penalty: None,
            urgent: false,
            last_urgent_gossip: None,
            direct_from: None,
            moves: FxHashMap::default(),
            leaves: FxHashMap::default(),
            active_peak: 1,
            join_sync: None,
            config,
        })
    }

    /// Arms the periodic timers, each at a random phase so that nodes started together do not
    /// act in lockstep, and queues this node's own alive claim. Call once, before `handle`.
    pub fn start(&mut self, now: Now, out: &mut Vec<Output>) {
        self.now = now;
        let me = self.id.clone();
        self.members.update(&me, |m| m.state_since = now.mono);
        let c = &self.config;
        let phases = [
            (c.probe_interval, Timer::ProbeTick),
            (c.gossip_interval, Timer::GossipTick),
            (c.push_pull_interval, Timer::PushPullTick),
            (c.reconnect_interval, Timer::ReconnectTick),
        ];
        for (interval, timer) in phases {
            let phase = self.jitter(interval);
            self.arm(phase, timer);
        }
        self.broadcast_self();
        self.hand_over(out);
    }

    /// Feeds one input; the results are appended to `out`.
    pub fn handle(&mut self, now: Now, input: Input, out: &mut Vec<Output>) {
        debug_assert!(now.mono >= self.now.mono, "monotonic time went backwards");
        self.now = now;
        match input {
            Input::Packet { from, .. } | Input::Stream { from, .. }
                if !self.config.allows(from.ip()) =>
            {
                self.stats.not_allowed += 1;
            }
            Input::Packet { from, msgs } => {
                for msg in msgs {
                    self.on_message(from, msg, Channel::Packet);
                }
                // A coordinate speaks only for the ack in its own packet.
                self.packet_ack = None;
            }
            Input::Stream { from, msg } => self.on_message(from, msg, Channel::Stream),
            Input::Timer(timer) => self.on_timer(timer),
            Input::Command(cmd) => {
                if let Err(e) = self.apply_command(cmd) {
                    tracing::warn!(node = %self.id, error = %e, "command refused");
                }
            }
        }
        self.gossip_urgent();
        self.hand_over(out);
    }

    /// Carries out an application command; results are appended to `out`.
    pub fn command(
        &mut self,
        now: Now,
        cmd: Command,
        out: &mut Vec<Output>,
    ) -> Result<(), CommandError> {
        self.now = now;
        let r = self.apply_command(cmd);
        self.gossip_urgent();
        self.hand_over(out);
        r
    }

    /// Moves this input's outputs to the caller's `out`. `append` leaves the core's buffer empty
    /// but keeps its capacity, that of its largest burst (a join answer merges N rows and emits N
    /// events at once): ten thousand simulated cores each keeping room for ten thousand outputs
    /// held gigabytes. Past [`OUT_KEEP`] outputs the buffer is given back.
    pub(crate) fn hand_over(&mut self, out: &mut Vec<Output>) {
        out.append(&mut self.out);
        if self.out.capacity() > OUT_KEEP {
            self.out = Vec::new();
        }
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// This node's own row.
    pub fn local(&self) -> &Member {
        self.members
            .get(&self.id)
            .expect("the local row is never removed")
    }

    /// This node's current incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.local().incarnation
    }

    /// One member's row.
    pub fn member(&self, id: &NodeId) -> Option<&Member> {
        self.members.get(id)
    }

    /// All rows, this node included, in the table's (deterministic) order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.iter()
    }

    /// Members alive or suspect, this node included.
    pub fn active_members(&self) -> usize {
        self.members.active()
    }

    /// Lifeguard's local health multiplier (0 = healthy).
    pub fn awareness(&self) -> u32 {
        self.awareness.score()
    }

    /// Claims and events waiting in the piggyback queue.
    pub fn broadcast_queue_len(&self) -> usize {
        self.broadcasts.len()
    }

    /// The config in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters since start, for the runtime's metrics.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The user-event Lamport clock.
    pub fn event_clock(&self) -> u64 {
        self.user_events.clock()
    }

    /// After `Leave`: whether the `Left` claim has been sent at least once (or has already been
    /// sent its full number of times), or there is no live member left to tell.
    pub fn leave_announced(&self) -> bool {
        let key = BroadcastKey::Member(self.id.clone());
        let nobody = !self.members.iter().any(|m| {
            m.id() != &self.id && matches!(m.state, MemberState::Alive | MemberState::Suspect)
        });
        self.leaving && (nobody || self.broadcasts.transmits(&key).is_none_or(|t| t > 0))
    }

    fn on_message(&mut self, from: SocketAddr, msg: Message, channel: Channel) {
        self.stats.messages_in += 1;
        self.direct_from = Some(from);
        self.on_message_from(from, msg, channel);
        self.direct_from = None;
    }

    fn on_message_from(&mut self, from: SocketAddr, msg: Message, channel: Channel) {
        match msg {
            Message::Ping(m) => self.on_ping(from, m, channel),
            Message::PingReq(m) => self.on_ping_req(from, *m, channel),
            Message::Ack(m) => self.on_ack(from, m.seq),
            Message::Nack(m) => self.on_nack(from, m.seq),
            Message::Alive(m) => self.on_alive(m),
            // Our own suspicion coming back (or a forgery in our name) is no news, and must not
            // count as a confirmation of itself.
            Message::Suspect(m) if m.from == self.id && m.node != self.id => {}
            Message::Suspect(m) => {
                self.answer_stale_claim(from, &m.node, m.incarnation);
                self.on_suspect(m)
            }
            Message::Dead(m) if m.from == self.id && m.node != self.id => {}
            Message::Dead(m) => {
                self.answer_stale_claim(from, &m.node, m.incarnation);
                self.on_dead_claim(m)
            }
            Message::PushPull(m) => self.on_push_pull(from, m),
            Message::UserEvent(m) => self.on_user_event(*m),
            // A sync answers with a stream: a datagram's source could be anyone's address.
            Message::Sync(_) if channel != Channel::Stream => self.stats.misdirected += 1,
            Message::Sync(m) => self.on_sync(from, *m),
            Message::Direct(m) => self.on_direct(from, *m, channel == Channel::Stream),
            Message::Coord(c) if channel == Channel::Packet => self.on_coord(from, *c),
            Message::Coord(_) => self.stats.misdirected += 1,
            Message::Query(q) => self.on_query(*q),
            Message::QueryResponse(r) => self.on_query_response(*r),
        }
    }

    /// Someone passed on a suspicion or death claim about us that we have already refuted: it
    /// may have missed the refutation, so it gets our current alive claim directly.
    fn answer_stale_claim(&mut self, from: SocketAddr, node: &NodeId, incarnation: Incarnation) {
        if node == &self.id && incarnation < self.incarnation() && !self.leaving {
            let me = self.local();
            let alive = Alive {
                incarnation: me.incarnation,
                info: me.info.clone(),
            };
            self.send_packet(from, Message::Alive(alive));
        }
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::ProbeTick => self.on_probe_tick(),
            Timer::ProbeTimeout { seq } => self.on_probe_timeout(seq),
            Timer::ProbeEnd { seq } => self.on_probe_end(seq),
            Timer::IndirectNack { seq } => self.on_indirect_nack(seq),
            Timer::IndirectExpire { seq } => self.on_indirect_expire(seq),
            Timer::GossipTick => self.on_gossip_tick(),
            Timer::PushPullTick => self.on_push_pull_tick(),
            Timer::JoinSync => self.on_join_sync(),
            Timer::ReconnectTick => self.on_reconnect_tick(),
            Timer::JoinRetry { attempt } => self.on_join_retry(attempt),
            Timer::Suspicion { node, generation } => self.on_suspicion_timeout(node, generation),
            Timer::MoveCheck { node, generation } => self.on_move_check(node, generation),
            Timer::QueryEnd { id } => self.on_query_end(id),
            Timer::LeaveCheck { node, generation } => self.on_leave_check(node, generation),
        }
    }

    fn apply_command(&mut self, cmd: Command) -> Result<(), CommandError> {
        if self.leaving {
            return Err(CommandError::Left);
        }
        match cmd {
            Command::Join(seeds) => self.join(seeds),
            Command::Leave => {
                self.leave();
                Ok(())
            }
            Command::SetTags(tags) => self.set_tags(tags),
            Command::Broadcast { name, payload } => self.broadcast_event(name, payload),
        }
    }

    // ---- helpers shared by probe.rs and merge.rs ----

    pub(crate) fn arm(&mut self, after: Duration, timer: Timer) {
        let at = self.now.mono + after;
        self.out.push(Output::Timer { at, timer });
    }

    /// A uniformly random duration in `[0, d)`.
    pub(crate) fn jitter(&mut self, d: Duration) -> Duration {
        let micros = d.as_micros().max(1) as u64;
        Duration::from_micros(self.rng.gen_range(0..micros))
    }

    pub(crate) fn emit(&mut self, event: Event) {
        self.out.push(Output::Event(event));
    }

    pub(crate) fn view(m: &Member) -> MemberView {
        MemberView {
            info: m.info.clone(),
            incarnation: m.incarnation,
            state: m.state,
        }
    }

    /// Number used for the retransmit limit and the suspicion timeout: live members.
    pub(crate) fn cluster_size(&self) -> usize {
        self.members.active()
    }

    /// `lead`, then as many queued broadcasts as fit in what is left of the packet budget.
    pub(crate) fn fill_packet(&mut self, mut msgs: Vec<Message>) -> Vec<Message> {
        debug_assert!(msgs.len() < PACKET_MESSAGES_MAX);
        let lead: usize = msgs.iter().map(|m| item_len(m.encoded_len())).sum();
        let used = packet_header_len(PACKET_MESSAGES_MAX) + lead;
        let budget = self.config.packet_bytes_max.saturating_sub(used);
        let limit = self.config.retransmit_limit(self.cluster_size());
        let room = PACKET_MESSAGES_MAX - msgs.len();
        let bulk = self.config.packet_bytes_max / JOINS_SHARE_OF_PACKET;
        self.broadcasts.pick(budget, bulk, room, limit, &mut msgs);
        msgs
    }

    /// Sends `first` as a datagram, with as many queued broadcasts as fit behind it.
    pub(crate) fn send_packet(&mut self, to: SocketAddr, first: Message) {
        let msgs = self.fill_packet(vec![first]);
        self.out.push(Output::Packet { to, msgs });
    }

    pub(crate) fn send_stream(&mut self, to: SocketAddr, msg: Message) {
        self.out.push(Output::Stream { to, msg });
    }

    pub(crate) fn queue_member_claim(&mut self, node: NodeId, msg: Message) {
        self.urgent |= match &msg {
            Message::Suspect(_) | Message::Dead(_) => true,
            Message::Alive(_) => node == self.id,
            _ => false,
        };
        self.broadcasts.push(BroadcastKey::Member(node), msg);
    }

    /// Queues the alive claim of a member new to this node, heard from someone else: gossiped
    /// after every other claim and in at most a [`JOINS_SHARE_OF_PACKET`]th of each packet.
    pub(crate) fn queue_join_claim(&mut self, node: NodeId, msg: Message) {
        self.broadcasts.push_bulk(BroadcastKey::Member(node), msg);
    }

    /// Queues this node's own alive claim.
    pub(crate) fn broadcast_self(&mut self) {
        let me = self.local();
        let msg = Message::Alive(Alive {
            incarnation: me.incarnation,
            info: me.info.clone(),
        });
        self.queue_member_claim(self.id.clone(), msg);
    }

    /// Raises our incarnation above `seen` and announces it.
    pub(crate) fn refute(&mut self, seen: Incarnation) {
        let inc = Incarnation(seen.0.max(self.incarnation().0).saturating_add(1));
        let me = self.id.clone();
        self.members.update(&me, |m| m.incarnation = inc);
        self.broadcast_self();
        self.stats.refutations += 1;
        // At most one health penalty per probe interval: a stream of forged claims about this
        // node must not drive its multiplier to the maximum (which would slow its probing).
        let now = self.now.mono;
        let due = self
            .last_refute_penalty
            .is_none_or(|t| now.saturating_since(t) >= self.config.probe_interval);
        if self.config.lifeguard && due {
            self.awareness.apply(1);
            self.last_refute_penalty = Some(now);
        }
        tracing::debug!(node = %self.id, incarnation = inc.0, "refuted a claim about us");
        self.emit(Event::Refuted { incarnation: inc });
    }

    // ---- commands ----

    fn join(&mut self, seeds: Vec<SocketAddr>) -> Result<(), CommandError> {
        if seeds.is_empty() {
            return Err(CommandError::NoSeeds);
        }
        self.join = JoinState {
            seeds,
            attempt: 0,
            pending: true,
        };
        self.send_join();
        Ok(())
    }

    fn send_join(&mut self) {
        let seeds = self.join.seeds.clone();
        for seed in seeds {
            self.start_push_pull(seed, PushPullKind::Join);
        }
        let attempt = self.join.attempt;
        let backoff = Backoff::new(self.config.join_retry_base, self.config.join_retry_max);
        let wait = backoff.delay(attempt, &mut self.rng);
        self.arm(wait, Timer::JoinRetry { attempt });
    }

    fn on_join_retry(&mut self, attempt: u32) {
        if !self.join.pending || attempt != self.join.attempt || self.leaving {
            return;
        }
        self.join.attempt += 1;
        self.send_join();
    }

    fn leave(&mut self) {
        self.leaving = true;
        let me = self.id.clone();
        let now = self.now.mono;
        let m = self
            .members
            .update(&me, |m| {
                m.state = MemberState::Left;
                m.state_since = now;
            })
            .expect("local row");
        let msg = Message::Dead(Dead {
            incarnation: m.incarnation,
            node: me.clone(),
            from: me.clone(),
        });
        self.queue_member_claim(me, msg);
    }

    fn set_tags(&mut self, tags: Tags) -> Result<(), CommandError> {
        let len = tags_len(&tags);
        if len > self.config.tags_bytes_max {
            return Err(CommandError::TagsTooLarge {
                len,
                max: self.config.tags_bytes_max,
            });
        }
        let me = self.id.clone();
        let mut info = (*self.local().info).clone();
        info.tags = tags;
        let info = Arc::new(info);
        self.members.update(&me, |m| {
            m.info = info;
            m.incarnation = Incarnation(m.incarnation.0.saturating_add(1));
        });
        self.broadcast_self();
        Ok(())
    }

    fn broadcast_event(&mut self, name: String, payload: Vec<u8>) -> Result<(), CommandError> {
        let len = name.len() + payload.len();
        if len > self.config.user_event_bytes_max {
            return Err(CommandError::EventTooLarge {
                len,
                max: self.config.user_event_bytes_max,
            });
        }
        let ltime = self.user_events.next_time();
        let event = UserEvent {
            ltime,
            origin: self.id.clone(),
            wall_ms: self.now.wall_ms,
            name,
            payload,
        };
        // Record it so that our own event coming back is a duplicate.
        self.user_events
            .observe(&event.origin, ltime, digest(&event.name, &event.payload));
        self.broadcasts.push(
            BroadcastKey::Event(self.id.clone(), ltime),
            Message::UserEvent(Box::new(event)),
        );
        Ok(())
    }

    // ---- user events ----

    fn on_user_event(&mut self, ev: UserEvent) {
        if ev.name.len() + ev.payload.len() > self.config.user_event_bytes_max {
            self.stats.over_limit += 1;
            return;
        }
        match self
            .user_events
            .observe(&ev.origin, ev.ltime, digest(&ev.name, &ev.payload))
        {
            Verdict::Deliver => {
                self.stats.user_events += 1;
                let key = BroadcastKey::Event(ev.origin.clone(), ev.ltime);
                self.broadcasts
                    .push(key, Message::UserEvent(Box::new(ev.clone())));
                self.emit(Event::UserEvent(ev));
            }
            Verdict::Duplicate => {}
            Verdict::TooOld => self.stats.dropped += 1,
            Verdict::Implausible => self.stats.implausible += 1,
        }
    }

    // ---- gossip and anti-entropy ----

    fn on_gossip_tick(&mut self) {
        self.arm(self.config.gossip_interval, Timer::GossipTick);
        _ = self.gossip_round();
    }

    /// Failure news travels at the speed of the network, not of the gossip tick: a node that
    /// queues a suspicion, a death or its own refutation gossips at once (to `gossip_fanout`
    /// members, like a tick), at most once a `gossip_interval`; news arriving sooner waits for
    /// the tick. Each hop would otherwise wait half a tick on average: at 10,000 members a
    /// suspicion took about 1.3 s to reach everyone, and each member times its own suspicion
    /// from when it heard it. Joins heard second-hand are not failure news (they would turn
    /// formation into a flood), but the first two hops of a join are: the seed that answers a
    /// join and the joiner once its join completes gossip at once (the last of 1,000 joiners
    /// was known everywhere about 2 % sooner). A round with nobody to send to (a node not yet
    /// joined) does not use up the interval. The rate bound keeps forged claims from
    /// multiplying traffic by more than two.
    pub(crate) fn gossip_urgent(&mut self) {
        // A node whose health is in doubt (running late, refuting) adds no rounds: on a loaded
        // host the early rounds of every node carrying every suspicion were load themselves.
        if !std::mem::take(&mut self.urgent) || self.awareness.score() > 0 {
            return;
        }
        let now = self.now.mono;
        let due = self
            .last_urgent_gossip
            .is_none_or(|t| now.saturating_since(t) >= self.config.gossip_interval);
        if due && self.gossip_round() {
            self.last_urgent_gossip = Some(now);
        }
    }

    /// One round of gossip; whether it sent anything.
    fn gossip_round(&mut self) -> bool {
        if self.broadcasts.len() == 0 {
            return false;
        }
        let now = self.now.mono;
        let dead_window = self.config.gossip_to_the_dead;
        let me = self.id.clone();
        let targets = self
            .members
            .sample(&mut self.rng, self.config.gossip_fanout, |m| {
                m.id() != &me
                    && (m.is_active()
                        || (matches!(m.state, MemberState::Dead | MemberState::Left)
                            && now.saturating_since(m.state_since) < dead_window))
            });
        let mut sent = false;
        for i in targets {
            let to = self.members.at(i).info.addr;
            let msgs = self.fill_packet(Vec::new());
            if msgs.is_empty() {
                break;
            }
            self.out.push(Output::Packet { to, msgs });
            sent = true;
        }
        sent
    }

    pub(crate) fn push_pull_message(&mut self, kind: PushPullKind) -> Message {
        let members = self
            .members
            .iter()
            .take(self.config.push_pull_members_max)
            .map(|m| PushMember {
                info: m.info.clone(),
                incarnation: m.incarnation,
                state: m.state,
            })
            .collect();
        Message::PushPull(PushPull {
            join: kind == PushPullKind::Join,
            reply: kind == PushPullKind::Reply,
            event_ltime: self.user_events.clock(),
            members,
        })
    }

    fn on_push_pull_tick(&mut self) {
        let interval = self.config.push_pull_interval_for(self.cluster_size());
        self.arm(interval, Timer::PushPullTick);
        if self.leaving {
            return;
        }
        self.push_pull_random();
    }

    /// A sync (delta anti-entropy) with one random alive member.
    fn push_pull_random(&mut self) {
        let me = self.id.clone();
        let picked = self.members.sample(&mut self.rng, 1, |m| {
            m.id() != &me && m.state == MemberState::Alive
        });
        if let Some(&i) = picked.first() {
            let to = self.members.at(i).info.addr;
            self.start_sync(to);
        }
    }

    /// Starts the join sync (see `Config::join_sync_interval`) once the join answer is merged.
    fn start_join_sync(&mut self) {
        let every = self.config.join_sync_interval;
        if every.is_zero() || self.join_sync.is_some() {
            return;
        }
        self.join_sync = Some(JoinSync {
            rows: self.members.len(),
            moved: self.stats.sync_rows_sent + self.stats.sync_rows_received,
            quiet: 0,
        });
        self.arm(every, Timer::JoinSync);
    }

    /// One round of the join sync: a sync every `join_sync_interval` while the table grew or
    /// syncs moved rows since the last round; once they stop, the interval doubles each round
    /// (any growth or rows moved bring it back) and the join sync ends when it would pass
    /// [`JOIN_SYNC_BACKOFF_MAX`] times the base: a node that missed a member in the last burst
    /// finds it within seconds, not at the next `push_pull_interval`.
    fn on_join_sync(&mut self) {
        let moved = self.stats.sync_rows_sent + self.stats.sync_rows_received;
        let Some(sync) = self.join_sync.as_mut() else {
            return;
        };
        let rows = self.members.len();
        let busy = rows > sync.rows || moved > sync.moved;
        sync.quiet = if busy { 0 } else { sync.quiet + 1 };
        sync.rows = rows;
        sync.moved = moved;
        let backoff = 1u32 << sync.quiet.min(31);
        if backoff > JOIN_SYNC_BACKOFF_MAX || self.leaving {
            self.join_sync = None;
            return;
        }
        self.stats.join_syncs += 1;
        self.push_pull_random();
        // Stretched like the probes by the health multiplier: a node that cannot keep up
        // (its probes run late, it has to refute) syncs less often.
        let every = self
            .config
            .scaled(self.config.join_sync_interval, self.awareness.score());
        self.arm(every * backoff, Timer::JoinSync);
    }

    /// Sends a push-pull to `to` and notes when, to time the answer.
    pub(crate) fn start_push_pull(&mut self, to: SocketAddr, kind: PushPullKind) {
        note_pending(&mut self.push_pull_sent, to, self.now.mono);
        self.stats.push_pulls += 1;
        let msg = self.push_pull_message(kind);
        self.send_stream(to, msg);
    }

    /// Starts a sync with `to`: sends a digest of the table and notes when, to take the answer
    /// and time it.
    fn start_sync(&mut self, to: SocketAddr) {
        note_pending(&mut self.push_pull_sent, to, self.now.mono);
        self.stats.push_pulls += 1;
        self.stats.syncs += 1;
        let digest = self.table_digest();
        self.send_sync(to, SyncStep::Start, Some(digest), Vec::new());
    }

    /// A digest of the rows a push-pull would carry, with a fresh salt.
    fn table_digest(&mut self) -> Digest {
        let salt = self.rng.gen::<u64>();
        let rows = self.members.len().min(self.config.push_pull_members_max);
        let keys = (self.members.iter().take(rows)).map(Member::digest_key);
        Digest::build(salt, rows, keys)
    }

    /// The rows a push-pull would carry that `digest` does not hold.
    fn rows_missing_from(&self, digest: &Digest) -> Vec<PushMember> {
        (self.members.iter().take(self.config.push_pull_members_max))
            .filter(|m| !digest.contains(m.digest_key()))
            .map(|m| PushMember {
                info: m.info.clone(),
                incarnation: m.incarnation,
                state: m.state,
            })
            .collect()
    }

    fn send_sync(
        &mut self,
        to: SocketAddr,
        step: SyncStep,
        digest: Option<Digest>,
        rows: Vec<PushMember>,
    ) {
        self.stats.sync_rows_sent += rows.len() as u64;
        let msg = Message::Sync(Box::new(Sync {
            step,
            event_ltime: self.user_events.clock(),
            digest,
            rows,
        }));
        self.send_stream(to, msg);
    }

    /// One message of a sync (see [`Sync`]). An `Answer` is taken only from a peer this node
    /// started a sync with, and a `Finish` only from a peer it answered; either may add at most
    /// `members_admit_per_push_pull` new members. A `Start` has no rows (one with rows is
    /// dropped), so an unasked sync adds nothing.
    fn on_sync(&mut self, from: SocketAddr, s: Sync) {
        let digest_max = Digest::bytes_for(self.config.push_pull_members_max.saturating_mul(2));
        let digest_ok = s.digest.as_ref().is_some_and(|d| d.is_valid(digest_max));
        if s.rows.len() > self.config.push_pull_members_max
            || (s.step != SyncStep::Finish && !digest_ok)
            || (s.step == SyncStep::Start && !s.rows.is_empty())
        {
            self.stats.dropped += 1;
            return;
        }
        let asked = match s.step {
            SyncStep::Start => None,
            SyncStep::Answer => self.push_pull_sent.remove(&from),
            SyncStep::Finish => self.sync_answered.remove(&from),
        };
        if let (SyncStep::Answer, Some(sent)) = (s.step, asked) {
            let took = self.now.mono.saturating_since(sent);
            self.stats.push_pull_duration.observe(took);
        }
        if s.step != SyncStep::Start && asked.is_none() {
            self.stats.dropped += 1;
            return;
        }
        if !self.user_events.witness(s.event_ltime, false) {
            self.stats.implausible += 1;
        }
        self.stats.sync_rows_received += s.rows.len() as u64;
        self.admit = Admit::Reply(self.config.members_admit_per_push_pull);
        self.in_sync = true;
        for m in s.rows {
            self.merge_remote(m);
        }
        self.in_sync = false;
        self.admit = Admit::Gossip;
        // Rows are merged before the answer is computed: what the peer just sent is in its digest.
        match (s.step, s.digest) {
            (SyncStep::Start, Some(d)) => {
                self.stats.push_pulls_answered += 1;
                let rows = self.rows_missing_from(&d);
                let mine = self.table_digest();
                note_pending(&mut self.sync_answered, from, self.now.mono);
                self.send_sync(from, SyncStep::Answer, Some(mine), rows);
            }
            (SyncStep::Answer, Some(d)) => {
                let rows = self.rows_missing_from(&d);
                self.send_sync(from, SyncStep::Finish, None, rows);
            }
            _ => {}
        }
    }

    /// Reconnect: with probability `failed / alive` push-pull one random failed member, so a
    /// healed partition merges without operator help; large clusters do not storm.
    fn on_reconnect_tick(&mut self) {
        self.arm(self.config.reconnect_interval, Timer::ReconnectTick);
        self.prune_coordinates();
        if self.leaving {
            return;
        }
        let failed = self
            .members
            .iter()
            .filter(|m| m.state == MemberState::Dead)
            .count();
        if failed == 0 {
            return;
        }
        let alive = self.members.active().max(1);
        if self.rng.gen_range(0.0..1.0) >= failed as f64 / alive as f64 {
            return;
        }
        let picked = self
            .members
            .sample(&mut self.rng, 1, |m| m.state == MemberState::Dead);
        if let Some(&i) = picked.first() {
            let to = self.members.at(i).info.addr;
            self.start_sync(to);
        }
    }

    fn on_push_pull(&mut self, from: SocketAddr, pp: PushPull) {
        if pp.members.len() > self.config.push_pull_members_max {
            self.stats.dropped += 1;
            return;
        }
        // Only the answer from a seed we asked, while joining, is trusted with our own
        // incarnation, our clock and the whole table; any other answer must be to a push-pull we
        // sent to that address, and a full state we did not ask for vouches only for its sender.
        let asked = pp.reply && self.push_pull_sent.contains_key(&from);
        let trusted = asked && self.join.pending && self.join.seeds.contains(&from);
        if !self.user_events.witness(pp.event_ltime, trusted) {
            self.stats.implausible += 1;
        }
        self.admit = if trusted {
            Admit::JoinReply
        } else if asked {
            Admit::Reply(self.config.members_admit_per_push_pull)
        } else {
            Admit::Unsolicited(from)
        };
        if !pp.reply {
            // The first hop of a join (see `gossip_urgent`).
            self.urgent |= pp.join;
            self.stats.push_pulls_answered += 1;
            let reply = self.push_pull_message(PushPullKind::Reply);
            self.send_stream(from, reply);
        } else if let Some(sent) = self.push_pull_sent.remove(&from) {
            let took = self.now.mono.saturating_since(sent);
            self.stats.push_pull_duration.observe(took);
        }
        self.trust_jumps = trusted;
        for m in pp.members {
            self.merge_remote(m);
        }
        self.trust_jumps = false;
        self.admit = Admit::Gossip;
        if trusted {
            self.join.pending = false;
            let members = self.members.len();
            self.emit(Event::JoinCompleted { members });
            self.start_join_sync();
            // Our own alive claim, now that we know whom to tell (see `gossip_urgent`).
            self.urgent = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_64_pending_answers_are_noted_and_the_oldest_goes_first() {
        let mut pending = FxHashMap::default();
        let addr = |i: u16| SocketAddr::from(([127, 0, 0, 1], 1000 + i));
        for i in 0..64 {
            note_pending(&mut pending, addr(i), Time::from_millis(100 + u64::from(i)));
        }
        assert_eq!(pending.len(), 64);
        // Noted again while full: only its time changes, nothing is forgotten.
        note_pending(&mut pending, addr(5), Time::from_millis(500));
        assert_eq!(pending.len(), 64);
        assert_eq!(pending[&addr(5)], Time::from_millis(500));
        assert!(pending.contains_key(&addr(0)));
        // A new one while full: the oldest (addr 0, then addr 1) makes room.
        note_pending(&mut pending, addr(64), Time::from_millis(600));
        assert_eq!(pending.len(), 64);
        assert!(!pending.contains_key(&addr(0)) && pending.contains_key(&addr(64)));
        note_pending(&mut pending, addr(65), Time::from_millis(601));
        assert!(!pending.contains_key(&addr(1)) && pending.contains_key(&addr(5)));
        assert_eq!(pending.len(), 64);
    }
}
