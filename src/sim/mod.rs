//! A deterministic simulator: N [`Swim`] cores over a modelled network, in virtual time.
//!
//! Layout:
//! - `scenario.rs`: what a run is asked to do ([`Scenario`]) and the CLI's fault syntax.
//! - `net.rs`: addresses, latency, loss, duplication, TCP-like streams, byte counts.
//! - `metrics.rs`: convergence, detection latency, false alarms, kept incrementally.
//! - `hostile.rs`: hostile nodes' message generator ([`HostileSpec`]).
//! - `queries.rs`: queries asked once the cluster converged, and what they measured
//!   ([`QuerySpec`], [`QueryReport`]).
//! - this file: the event loop.
//!
//! ## The event loop
//! One binary heap of events ordered by `(time, seq)` (`seq` breaks ties in insertion order) and
//! one seeded ChaCha8 RNG for every network and fault decision; each core gets its own seed drawn
//! from the run seed. Popping an event hands one input to one core and turns the core's outputs
//! into new events: a datagram becomes a delivery after a random latency (or nothing, if lost;
//! or two deliveries, if duplicated), a stream message a delivery after a TCP-like delay, a timer
//! an event at its time. Only the nodes an event concerns are touched, which is what lets one
//! process run ten thousand nodes. The same seed gives the same run, event for event: the report
//! carries a hash of the trace of membership events to prove it.
//!
//! ## Time and clocks
//! Each node's monotonic clock has its own random origin; its wall clock may jump (`clock_jumps`).
//! The core times everything on the monotonic clock, so jumps change no membership event (the
//! trace hash leaves wall stamps out, and a test compares runs with and without jumps).
//!
//! ## Faults
//! Nodes start `min(5 ms, 5 s / N)` apart and join through node 0. Once every node sees every
//! other alive (plus one second; or at a third of the run if it has not converged by then) the seed picks
//! distinct victims among nodes 1..N: crashed (gone for good), paused (inputs held, then
//! delivered in order, like SIGSTOP/SIGCONT) and slow (every incoming message handled late).
//! A partition cuts the last fraction of the nodes off from the rest between two times.
//!
//! ## Hostile nodes
//! With `hostile.count = K`, nodes `N..N+K` (named and addressed like the others) start after
//! the honest ones, join through node 0, run the normal core, and from a second after their
//! start send one hostile message every `1 / rate` seconds (see `hostile.rs`) to a random honest
//! node. Their generators and cores draw from an RNG of their own derived from the seed, so a
//! run without hostile nodes makes exactly the draws it made before they existed. Honest figures
//! (convergence, false alarms, detection) count honest observers and honest targets only; a
//! member is mapped to a node by its name (`n<i>`), never by an address a claim may forge.
//!
//! ## Invariants
//! Checked every run and reported in [`Invariants`]: no honest node declared dead by an honest
//! one, honest convergence, and memory bounded: the largest member table and broadcast queue of
//! any honest node, sampled every virtual second, against their bounds. A run whose honest tables
//! together pass [`rows_abort`] rows (twice what every honest node knowing every node once holds,
//! and at least [`ROWS_ABORT`]) stops there (reported in `aborted`) rather than exhaust the
//! machine.

mod hostile;
mod metrics;
mod net;
mod queries;
mod scenario;

pub use hostile::{HostileKind, HostileSpec};
pub use metrics::{Detect, PairStates};
pub(crate) use net::{addr, index};
pub use queries::{Percentiles, QueryFigures, QueryReport, QuerySpec};
pub use scenario::{NodeFault, PartitionSpec, Scenario, ScenarioError};

use crate::cluster::{Command, Event, Input, Message, Output, Swim, Timer};
use crate::common::{Now, Time};
use crate::identity::Incarnation;
use crate::identity::{NodeId, NodeInfo};
use metrics::{Excuse, Metrics};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

/// Wall-clock epoch of the simulated world (2026-01-01), so wall stamps look like real ones.
const WALL_EPOCH_MS: u64 = 1_767_225_600_000;

/// Honest member-table rows summed over honest nodes at which a run stops, at least (see the
/// module doc and [`rows_abort`]).
pub const ROWS_ABORT: usize = 4_000_000;

/// Honest member-table rows summed over honest nodes at which a run of `honest` honest nodes
/// among `all` stops: twice the `honest * all` rows of every honest node knowing every node once
/// (10,000 nodes legitimately hold 10^8 rows), and never less than [`ROWS_ABORT`], so small runs
/// whose tables grow without bound stop early.
pub fn rows_abort(honest: usize, all: usize) -> usize {
    ROWS_ABORT.max(honest.saturating_mul(all).saturating_mul(2))
}

/// The invariants every run checks (see the module doc).
#[derive(Debug, Clone, Serialize)]
pub struct Invariants {
    /// (honest observer, honest live node) pairs declared dead without an excuse; must be 0.
    pub false_positives: usize,
    /// Every live honest node saw every other alive at some point and at the end.
    pub converged: bool,
    /// Most alive or suspect rows in any honest node's member table (itself and invented
    /// members included), sampled each second.
    pub active_rows_max: usize,
    /// The bound on it: twice the nodes of the run (honest and hostile), plus 64. Invented
    /// members come in only as fast as the admission caps allow and fail within a probe round.
    pub active_rows_bound: usize,
    /// Most rows in any honest node's member table, failed and departed ones included.
    pub table_rows_max: usize,
    /// The bound on it: twice `active_rows_bound` (a core keeps at most as many failed and
    /// departed rows as active ones, and at least 64), so no table grows with the length of a
    /// run or of an attack.
    pub table_rows_bound: usize,
    /// Longest broadcast queue of any honest node, sampled each second.
    pub broadcast_queue_max: usize,
    /// The bound on it: the config's `broadcast_queue_max`.
    pub broadcast_queue_bound: usize,
    /// Why the run stopped early, if it did.
    pub aborted: Option<String>,
    /// All of the above hold.
    pub ok: bool,
}

/// What the hostile nodes did and what the honest cores refused.
#[derive(Debug, Clone, Serialize)]
pub struct HostileReport {
    /// Hostile nodes.
    pub nodes: usize,
    /// Hostile messages per second per hostile node.
    pub rate_per_s: u32,
    /// Kinds drawn from.
    pub kinds: Vec<&'static str>,
    /// Hostile messages sent, by kind.
    pub sent: BTreeMap<&'static str, u64>,
    /// Of those, by datagram.
    pub datagrams: u64,
    /// Of those, by stream.
    pub streams: u64,
    /// Their bytes on the wire (as `bytes_per_node_s` counts; not in the honest figures).
    pub bytes: u64,
    /// Honest cores' refusals, summed: claims with implausible jumps.
    pub honest_implausible: u64,
    /// Honest cores' refusals, summed: claims over a size limit.
    pub honest_over_limit: u64,
    /// Honest cores' refusals, summed: ping-reqs for a target not at that address.
    pub honest_misdirected: u64,
    /// Honest cores' drops for any reason, summed.
    pub honest_dropped: u64,
    /// (honest observer, hostile node) pairs declared dead (informative).
    pub hostile_declared_dead: usize,
    /// How honest nodes see each other at the end.
    pub honest_pairs_at_end: PairStates,
    /// The longest an honest node stayed suspected by another honest one, ms (refuted, or
    /// still running at the end).
    pub honest_suspect_longest_ms: u64,
}

/// What forming the cluster cost: the bytes sent to each honest node (and not lost, headers
/// included) from the start until the cluster first converged, against the floor, the encoded
/// size of one full state of the final table (every node has to receive that much once).
#[derive(Debug, Clone, Serialize)]
pub struct Formation {
    /// Mean over honest nodes, bytes.
    pub bytes_in_mean: u64,
    /// Most any honest node received, bytes.
    pub bytes_in_max: u64,
    /// One full state of node 0's table at the end of the run, as a stream message, bytes.
    pub table_bytes: u64,
    /// `bytes_in_mean / table_bytes`.
    pub ratio_mean: f64,
    /// `bytes_in_max / table_bytes`.
    pub ratio_max: f64,
    /// The node that received `bytes_in_max` (nodes are numbered in start order).
    pub max_node: usize,
    /// 90th percentile over honest nodes of the bytes received, over `table_bytes`.
    pub ratio_p90: f64,
    /// Of `bytes_in_mean`: bytes that came in datagrams (probes and gossip).
    pub datagram_mean: u64,
    /// Of `bytes_in_mean`: full states (join answers and push-pulls).
    pub push_pull_mean: u64,
    /// Of `bytes_in_mean`: syncs (digests and the rows they asked for).
    pub sync_mean: u64,
}

/// The figures of one run. Field order is the JSON key order.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Nodes simulated.
    pub nodes: usize,
    /// The run's seed.
    pub seed: u64,
    /// Virtual seconds simulated.
    pub duration_s: f64,
    /// First time every live node saw every other live node alive, ms from the start.
    pub converged_ms: Option<u64>,
    /// From each crash to each survivor's verdict (nodes that were paused are left out).
    pub detect_ms: Detect,
    /// (observer, live node) pairs declared dead, without pause or partition to excuse it.
    pub false_positives: usize,
    /// (observer, live node) pairs ever suspected, same exclusions.
    pub false_suspicions: usize,
    /// Up to 20 of the false-positive pairs, `[observer, target]`, for investigation.
    pub false_positive_pairs: Vec<(u32, u32)>,
    /// Every live node sees every other live node alive at the end.
    pub converged_at_end: bool,
    /// Suspect events about live nodes, summed over observers (repeats count).
    pub false_suspicion_events: u64,
    /// Messages sent per node per virtual second (a compound packet of 3 counts 3).
    pub msgs_per_node_s: f64,
    /// Bytes sent per node per virtual second, headers included.
    pub bytes_per_node_s: f64,
    /// Real time the run took.
    pub wall_ms: u64,
    /// Datagrams sent per node per virtual second.
    pub datagrams_per_node_s: f64,
    /// Stream messages sent per node per virtual second.
    pub streams_per_node_s: f64,
    /// Bytes sent per node per virtual second over the second half of the run: the steady
    /// state once formation is over (when it is).
    pub steady_bytes_per_node_s: f64,
    /// What forming the cluster cost each node (present once the cluster converged).
    pub formation: Option<Formation>,
    /// When the node faults were applied, ms from the start.
    pub faults_at_ms: Option<u64>,
    /// Crashed nodes.
    pub killed: Vec<usize>,
    /// Paused nodes.
    pub paused: Vec<usize>,
    /// Slow nodes.
    pub slowed: Vec<usize>,
    /// (observer, paused node) pairs declared dead: right, not a false positive.
    pub paused_declared_dead: usize,
    /// Every paused node is seen alive by every live node at the end.
    pub paused_recovered: Option<bool>,
    /// (observer, node across the partition) pairs declared dead.
    pub partition_declared_dead: usize,
    /// From the heal to full convergence, ms.
    pub heal_converged_ms: Option<u64>,
    /// Events processed.
    pub events: u64,
    /// Hash of the membership event trace (same seed, same hash).
    pub trace_hash: String,
    /// The invariants checked.
    pub invariants: Invariants,
    /// Present with hostile nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostile: Option<HostileReport>,
    /// Present with `--regions`: the network coordinates against the true round trips.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordinates: Option<CoordinateReport>,
    /// Present with `--queries`: what the queries measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queries: Option<QueryReport>,
}

/// How well the network coordinates predict round trips at the end of a run (with regions).
#[derive(Debug, Clone, Serialize)]
pub struct CoordinateReport {
    /// Pairs of live honest nodes compared (all pairs up to 20,000; a sample beyond).
    pub pairs: usize,
    /// Median over pairs of |predicted - true| / true, where predicted is the distance between
    /// the two nodes' own coordinates and true the expected round trip of the model.
    pub median_error: f64,
    /// 90th percentile of the same.
    pub p90_error: f64,
    /// Median of the absolute error, ms.
    pub median_abs_error_ms: f64,
    /// Coordinate updates per node, mean.
    pub updates_mean: f64,
}

/// Runs a scenario to its end.
pub fn run(scenario: &Scenario) -> Result<Report, ScenarioError> {
    scenario.validate()?;
    let started = Instant::now();
    let mut sim = Sim::new(scenario)?;
    sim.run();
    Ok(sim.report(started.elapsed()))
}

#[derive(Debug)]
enum Ev {
    Start(usize),
    Packet {
        to: usize,
        from: usize,
        msgs: Vec<Message>,
    },
    Stream {
        to: usize,
        from: usize,
        msg: Message,
    },
    Timer {
        node: usize,
        timer: Timer,
    },
    ApplyFaults,
    PauseEnd(usize),
    ClockJump {
        node: usize,
        delta_ms: i64,
    },
    /// Hostile node `n` sends its next message.
    HostileTick(usize),
    /// Query `k` starts.
    QueryStart(usize),
    /// `node` answers the query `id` of `origin`.
    Respond {
        node: usize,
        origin: NodeId,
        id: u64,
    },
}

impl Ev {
    /// The node this event is delivered to, if any.
    fn node(&self) -> Option<usize> {
        match *self {
            Ev::Start(n)
            | Ev::Packet { to: n, .. }
            | Ev::Stream { to: n, .. }
            | Ev::Timer { node: n, .. }
            | Ev::Respond { node: n, .. } => Some(n),
            _ => None,
        }
    }
}

/// A scheduled event. The event itself is boxed: the heap moves entries on every push and pop,
/// and an `Ev` holds a whole message (over a hundred bytes).
struct Entry {
    at: Duration,
    seq: u64,
    ev: Box<Ev>,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Up,
    Crashed,
    Paused,
}

struct Node {
    swim: Swim,
    origin: Duration,
    wall_offset_ms: i64,
    status: Status,
    slow: Duration,
    held: Vec<Ev>,
    paused_ever: bool,
}

#[derive(Default)]
struct Counters {
    msgs: u64,
    bytes: u64,
    datagrams: u64,
    streams: u64,
    events: u64,
}

struct Sim<'a> {
    s: &'a Scenario,
    model: net::Model,
    now: Duration,
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    nodes: Vec<Node>,
    rng: ChaCha8Rng,
    metrics: Metrics,
    out: Vec<Output>,
    count: Counters,
    trace: u64,
    faults_at: Option<Duration>,
    far_side: usize,
    /// Whether any node was ever paused (so events need not look at the target's record).
    paused_any: bool,
    heal_converged: Option<Duration>,
    /// Declarations this long after a heal are still the partition's doing.
    partition_grace: Duration,
    /// Generators of the hostile nodes `s.nodes..`, in order.
    attackers: Vec<hostile::Attacker>,
    sent: hostile::Sent,
    hostile_dead: rustc_hash::FxHashSet<(u32, u32)>,
    next_sample: Duration,
    rows_max: usize,
    active_max: usize,
    queue_max: usize,
    aborted: Option<String>,
    /// Bytes sent to each node (and not lost), headers included.
    bytes_in: Vec<u64>,
    /// Summed over honest nodes: bytes received in datagrams, push-pulls and syncs.
    bytes_in_by: [u64; 3],
    /// `bytes_in` when the cluster first converged.
    formation_in: Option<Vec<u64>>,
    /// `bytes_in_by` when the cluster first converged.
    formation_in_by: [u64; 3],
    /// Bytes sent by all nodes when the second half of the run began.
    half_bytes: Option<u64>,
    /// Per honest node with `--regions`: its place on the line and its own one-way share.
    geo: Vec<(Duration, Duration)>,
    /// The queries asked, with `queries`.
    queries: Option<queries::Tracker>,
}

impl<'a> Sim<'a> {
    fn new(s: &'a Scenario) -> Result<Self, ScenarioError> {
        let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
        let mut nodes = Vec::with_capacity(s.nodes);
        for i in 0..s.nodes {
            let id = NodeId::new(&format!("n{i}")).expect("short id");
            let swim = Swim::new(
                s.config.clone(),
                NodeInfo::new(id, addr(i)),
                Incarnation(0),
                rng.gen(),
            )?;
            let origin = Duration::from_micros(rng.gen_range(0..3_600_000_000));
            nodes.push(Node {
                swim,
                origin,
                wall_offset_ms: 0,
                status: Status::Up,
                slow: Duration::ZERO,
                held: Vec::new(),
                paused_ever: false,
            });
        }
        let mut attackers = Vec::with_capacity(s.hostile.count);
        // Hostile nodes draw from their own RNG: the honest draws stay exactly as without them.
        let mut hr = ChaCha8Rng::seed_from_u64(s.seed ^ 0x0068_6f73_7469_6c65);
        for i in s.nodes..s.nodes + s.hostile.count {
            let id = NodeId::new(&format!("n{i}")).expect("short id");
            let swim = Swim::new(
                s.config.clone(),
                NodeInfo::new(id, addr(i)),
                Incarnation(0),
                hr.gen(),
            )?;
            nodes.push(Node {
                swim,
                origin: Duration::from_micros(hr.gen_range(0..3_600_000_000)),
                wall_offset_ms: 0,
                status: Status::Up,
                slow: Duration::ZERO,
                held: Vec::new(),
                paused_ever: false,
            });
            attackers.push(hostile::Attacker::new(hr.gen()));
        }
        let far_side = s.partition.map_or(s.nodes, |p| {
            s.nodes - ((p.fraction * s.nodes as f64).round() as usize).clamp(1, s.nodes - 1)
        });
        let c = &s.config;
        let min = c
            .probe_interval
            .mul_f64(f64::from(c.suspicion_mult) * (s.nodes as f64).log10().max(1.0));
        let partition_grace = min * c.suspicion_max_mult + c.probe_interval * (c.awareness_max + 1);
        let mut sim = Sim {
            s,
            model: net::Model {
                latency: s.latency,
                loss: s.loss,
                dup: s.dup,
                encrypt: s.encrypt,
            },
            now: Duration::ZERO,
            heap: BinaryHeap::new(),
            seq: 0,
            nodes,
            rng,
            metrics: Metrics::new(s.nodes),
            out: Vec::new(),
            count: Counters::default(),
            trace: 0xcbf2_9ce4_8422_2325,
            faults_at: None,
            far_side,
            paused_any: false,
            heal_converged: None,
            partition_grace,
            attackers,
            sent: hostile::Sent::default(),
            hostile_dead: Default::default(),
            next_sample: Duration::ZERO,
            rows_max: 0,
            active_max: 0,
            bytes_in: vec![0; s.nodes + s.hostile.count],
            bytes_in_by: [0; 3],
            formation_in: None,
            formation_in_by: [0; 3],
            half_bytes: None,
            geo: Vec::new(),
            queries: s.queries.map(|q| queries::Tracker::new(q, s.seed)),
            queue_max: 0,
            aborted: None,
        };
        if !s.regions.is_empty() {
            // Its own RNG: without regions every draw stays as it was.
            let mut gr = ChaCha8Rng::seed_from_u64(s.seed ^ 0x0067_656f);
            sim.geo = (0..s.nodes)
                .map(|i| {
                    let own = Duration::from_micros(gr.gen_range(100..=500));
                    (s.regions[i % s.regions.len()], own)
                })
                .collect();
        }
        sim.schedule_start();
        Ok(sim)
    }

    fn schedule_start(&mut self) {
        let stagger = Duration::from_millis(5).min(Duration::from_secs(5) / self.s.nodes as u32);
        for i in 0..self.s.nodes {
            self.push(stagger * i as u32, Ev::Start(i));
        }
        for i in self.s.nodes..self.s.nodes + self.s.hostile.count {
            self.push(stagger * i as u32, Ev::Start(i));
            self.push(
                stagger * i as u32 + Duration::from_secs(1),
                Ev::HostileTick(i),
            );
        }
        self.push(self.s.duration / 3, Ev::ApplyFaults);
        // Clock jumps draw from their own RNG so that a run with jumps makes every other
        // decision exactly as the run without.
        let mut jr = ChaCha8Rng::seed_from_u64(self.s.seed ^ 0x6a75_6d70);
        for _ in 0..self.s.clock_jumps {
            let node = jr.gen_range(0..self.s.nodes);
            let at = Duration::from_micros(jr.gen_range(0..self.s.duration.as_micros() as u64));
            let delta_ms = jr.gen_range(1_000..=3_600_000) * if jr.gen_bool(0.5) { 1 } else { -1 };
            self.push(at, Ev::ClockJump { node, delta_ms });
        }
    }

    fn push(&mut self, at: Duration, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            ev: Box::new(ev),
        }));
    }

    fn run(&mut self) {
        while let Some(Reverse(e)) = self.heap.pop() {
            if e.at > self.s.duration {
                break;
            }
            self.now = e.at;
            self.count.events += 1;
            self.dispatch(*e.ev);
            self.check_convergence();
            if self.now >= self.next_sample {
                self.sample();
                if self.aborted.is_some() {
                    return;
                }
            }
        }
        self.now = self.s.duration;
        self.sample();
    }

    /// Records the largest honest member table and broadcast queue; stops a run whose tables
    /// have grown past [`rows_abort`]. Reads only: no event, no draw.
    fn sample(&mut self) {
        self.next_sample = self.now + Duration::from_secs(1);
        if self.half_bytes.is_none() && self.now >= self.s.duration / 2 {
            self.half_bytes = Some(self.count.bytes);
        }
        let mut total = 0;
        for n in self.nodes[..self.s.nodes]
            .iter()
            .filter(|n| n.status != Status::Crashed)
        {
            let rows = n.swim.members().count();
            total += rows;
            self.rows_max = self.rows_max.max(rows);
            self.active_max = self.active_max.max(n.swim.cluster_size());
            self.queue_max = self.queue_max.max(n.swim.broadcast_queue_len());
        }
        let limit = rows_abort(self.s.nodes, self.nodes.len());
        if total > limit {
            self.aborted = Some(format!(
                "honest member tables hold {total} rows in all at {} ms (limit {limit})",
                self.now.as_millis()
            ));
        }
    }

    fn dispatch(&mut self, ev: Ev) {
        if let Some(n) = ev.node() {
            match self.nodes[n].status {
                Status::Crashed => return,
                Status::Paused => {
                    self.nodes[n].held.push(ev);
                    return;
                }
                Status::Up => {}
            }
        }
        match ev {
            Ev::Start(n) => self.start(n),
            Ev::Packet { to, from, msgs } if to >= self.s.nodes => {
                self.attackers[to - self.s.nodes].see(from, &msgs);
                self.feed(
                    to,
                    Input::Packet {
                        from: addr(from),
                        msgs,
                    },
                )
            }
            Ev::Stream { to, from, msg } if to >= self.s.nodes => {
                self.attackers[to - self.s.nodes].see(from, std::slice::from_ref(&msg));
                self.feed(
                    to,
                    Input::Stream {
                        from: addr(from),
                        msg,
                    },
                )
            }
            Ev::HostileTick(n) => self.hostile_tick(n),
            Ev::Packet { to, from, msgs } => self.feed(
                to,
                Input::Packet {
                    from: addr(from),
                    msgs,
                },
            ),
            Ev::Stream { to, from, msg } => self.feed(
                to,
                Input::Stream {
                    from: addr(from),
                    msg,
                },
            ),
            Ev::Timer { node, timer } => self.feed(node, Input::Timer(timer)),
            Ev::ApplyFaults => self.apply_faults(),
            Ev::PauseEnd(n) => self.resume(n),
            Ev::ClockJump { node, delta_ms } => self.nodes[node].wall_offset_ms += delta_ms,
            Ev::QueryStart(k) => self.start_query(k),
            Ev::Respond { node, origin, id } => {
                let now = self.node_now(node);
                let mut out = std::mem::take(&mut self.out);
                let payload = b"ok".to_vec();
                let _ = (self.nodes[node].swim).respond(now, &origin, id, payload, &mut out);
                self.apply_outputs(node, &mut out);
                self.out = out;
            }
        }
    }

    /// Starts query `k` from a random live honest node, and schedules the next.
    fn start_query(&mut self, k: usize) {
        let Some(mut tracker) = self.queries.take() else {
            return;
        };
        let live: Vec<usize> = (0..self.s.nodes)
            .filter(|&i| self.nodes[i].status == Status::Up)
            .collect();
        if let Some((origin, params, selected)) = tracker.plan(k, &live, self.s.nodes) {
            let now = self.node_now(origin);
            let mut out = std::mem::take(&mut self.out);
            match self.nodes[origin].swim.query(now, params, &mut out) {
                Ok(id) => tracker.started(origin, id, self.now, selected, &live),
                Err(_) => tracker.refused(),
            }
            // The origin's own acknowledgement and question come out now.
            self.queries = Some(tracker);
            self.apply_outputs(origin, &mut out);
            self.out = out;
        } else {
            self.queries = Some(tracker);
        }
        let spec = self.queries.as_ref().map(|t| t.spec);
        if let Some(spec) = spec.filter(|s| k + 1 < s.count) {
            self.push(self.now + spec.interval, Ev::QueryStart(k + 1));
        }
    }

    fn node_now(&self, n: usize) -> Now {
        let node = &self.nodes[n];
        let mono = Time::from_micros((self.now + node.origin).as_micros() as u64);
        let wall = (WALL_EPOCH_MS + self.now.as_millis() as u64) as i64 + node.wall_offset_ms;
        Now {
            mono,
            wall_ms: wall.max(0) as u64,
        }
    }

    fn start(&mut self, n: usize) {
        let now = self.node_now(n);
        let mut out = std::mem::take(&mut self.out);
        self.nodes[n].swim.start(now, &mut out);
        if n > 0 {
            self.nodes[n]
                .swim
                .handle(now, Input::Command(Command::Join(vec![addr(0)])), &mut out);
        }
        self.apply_outputs(n, &mut out);
        self.out = out;
    }

    fn feed(&mut self, n: usize, input: Input) {
        let now = self.node_now(n);
        let mut out = std::mem::take(&mut self.out);
        self.nodes[n].swim.handle(now, input, &mut out);
        self.apply_outputs(n, &mut out);
        self.out = out;
    }

    fn apply_outputs(&mut self, n: usize, out: &mut Vec<Output>) {
        for o in out.drain(..) {
            match o {
                Output::Packet { to, msgs } => self.send_packet(n, to, msgs),
                Output::Stream { to, msg } => self.send_stream(n, to, msg),
                Output::Timer { at, timer } => {
                    let at = at.since_origin().saturating_sub(self.nodes[n].origin);
                    self.push(at.max(self.now), Ev::Timer { node: n, timer });
                }
                Output::Event(e) => self.on_event(n, &e),
            }
        }
    }

    fn cut(&self, a: usize, b: usize) -> bool {
        let Some(p) = self.s.partition else {
            return false;
        };
        (self.now >= p.from && self.now < p.to) && ((a >= self.far_side) != (b >= self.far_side))
    }

    /// The receiving node, unless the address is not a node's or a partition cuts the path.
    fn route(&self, from: usize, to: std::net::SocketAddr) -> Option<usize> {
        index(to).filter(|&t| t < self.nodes.len() && !self.cut(from, t))
    }

    fn send_packet(&mut self, from: usize, to: std::net::SocketAddr, msgs: Vec<Message>) {
        self.count.msgs += msgs.len() as u64;
        self.count.datagrams += 1;
        let bytes = self.model.datagram_bytes(&msgs) as u64;
        self.count.bytes += bytes;
        let Some(to) = self.route(from, to) else {
            return;
        };
        let slow = self.nodes[to].slow + self.geo_delay(from, to);
        match self.model.datagram(&mut self.rng) {
            (Some(d), None) => {
                self.note_bytes_in(to, 0, bytes);
                self.push(self.now + d + slow, Ev::Packet { to, from, msgs })
            }
            (Some(d), Some(d2)) => {
                self.note_bytes_in(to, 0, 2 * bytes);
                self.push(
                    self.now + d2 + slow,
                    Ev::Packet {
                        to,
                        from,
                        msgs: msgs.clone(),
                    },
                );
                self.push(self.now + d + slow, Ev::Packet { to, from, msgs });
            }
            _ => {}
        }
    }

    /// Counts `bytes` delivered to node `to` by channel: 0 datagrams, 1 push-pulls, 2 syncs.
    fn note_bytes_in(&mut self, to: usize, kind: usize, bytes: u64) {
        self.bytes_in[to] += bytes;
        if to < self.s.nodes {
            self.bytes_in_by[kind] += bytes;
        }
    }

    fn send_stream(&mut self, from: usize, to: std::net::SocketAddr, msg: Message) {
        self.count.msgs += 1;
        self.count.streams += 1;
        let bytes = self.model.stream_bytes(&msg) as u64;
        self.count.bytes += bytes;
        let Some(to) = self.route(from, to) else {
            return;
        };
        if let Some(d) = self.model.stream(&mut self.rng) {
            let kind = if matches!(msg, Message::Sync(_)) {
                2
            } else {
                1
            };
            self.note_bytes_in(to, kind, bytes);
            // A stream's delay stands for its whole exchange; the geometry adds one way.
            let slow = self.nodes[to].slow + self.geo_delay(from, to);
            self.push(self.now + d + slow, Ev::Stream { to, from, msg });
        }
    }

    /// Hostile node `n` sends one message and arms its next tick.
    fn hostile_tick(&mut self, n: usize) {
        let s = self.s;
        let spec = &s.hostile;
        let ctx = hostile::Ctx {
            swim: &self.nodes[n].swim,
            config: &s.config,
            honest: self.s.nodes,
            total: self.nodes.len(),
            me: n,
        };
        let a = &mut self.attackers[n - self.s.nodes];
        let (kind, to, channel, msg) = a.next(&ctx, spec);
        let next = a.interval(spec.rate);
        self.push(self.now + next, Ev::HostileTick(n));
        *self.sent.by_kind.entry(kind.name()).or_default() += 1;
        if self.cut(n, to) {
            return;
        }
        let slow = self.nodes[to].slow;
        match channel {
            hostile::Channel::Datagram => {
                let msgs = vec![msg];
                self.sent.datagrams += 1;
                self.sent.bytes += self.model.datagram_bytes(&msgs) as u64;
                if let (Some(d), _) = self.model.datagram(&mut self.rng) {
                    self.push(self.now + d + slow, Ev::Packet { to, from: n, msgs });
                }
            }
            hostile::Channel::Stream => {
                self.sent.streams += 1;
                self.sent.bytes += self.model.stream_bytes(&msg) as u64;
                if let Some(d) = self.model.stream(&mut self.rng) {
                    self.push(self.now + d + slow, Ev::Stream { to, from: n, msg });
                }
            }
        }
    }

    fn excuse(&self, observer: usize, target: usize) -> Excuse {
        if self.paused_any && self.nodes[target].paused_ever {
            return Excuse::Paused;
        }
        if let Some(p) = self.s.partition {
            let across = (observer >= self.far_side) != (target >= self.far_side);
            if across && self.now >= p.from && self.now < p.to + self.partition_grace {
                return Excuse::Partition;
            }
        }
        Excuse::None
    }

    fn on_event(&mut self, n: usize, e: &Event) {
        match e {
            Event::Query(q) if n < self.s.nodes => {
                let origin = node_of(q.origin.as_str());
                if let (Some(t), Some(o)) = (self.queries.as_mut(), origin) {
                    t.took(n, o, q.id);
                }
                let (origin, id) = (q.origin.clone(), q.id);
                self.push(
                    self.now,
                    Ev::Respond {
                        node: n,
                        origin,
                        id,
                    },
                );
                return;
            }
            Event::QueryAnswer { id, answer } => {
                if let Some(t) = self.queries.as_mut() {
                    t.answer(n, *id, answer, self.now);
                }
                return;
            }
            _ => {}
        }
        let Some(view) = e.member() else { return };
        // By name, not by address: a hostile claim may put any name at any address.
        let Some(target) = node_of(view.info.id.as_str()).filter(|&t| t < self.nodes.len()) else {
            return;
        };
        self.trace_event(n, target, e, view.incarnation);
        if n >= self.s.nodes {
            return;
        }
        if target >= self.s.nodes {
            if matches!(e, Event::MemberFailed(_)) {
                self.hostile_dead.insert((n as u32, target as u32));
            }
            return;
        }
        let excuse = self.excuse(n, target);
        self.metrics.on_event(self.now, n, target, e, excuse);
    }

    fn trace_event(&mut self, n: usize, target: usize, e: &Event, inc: Incarnation) {
        let kind = match e {
            Event::MemberJoined(_) => 1,
            Event::MemberUpdated(_) => 2,
            Event::MemberSuspected(_) => 3,
            Event::MemberFailed(_) => 4,
            Event::MemberLeft(_) => 5,
            Event::MemberRecovered(_) => 6,
            _ => 0,
        };
        for word in [
            self.now.as_micros() as u64,
            n as u64,
            target as u64,
            kind,
            inc.0,
        ] {
            for b in word.to_le_bytes() {
                self.trace ^= u64::from(b);
                self.trace = self.trace.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }

    fn check_convergence(&mut self) {
        if !self.metrics.converged() {
            return;
        }
        if self.metrics.converged_at.is_none() {
            self.metrics.converged_at = Some(self.now);
            self.formation_in = Some(self.bytes_in[..self.s.nodes].to_vec());
            self.formation_in_by = self.bytes_in_by;
            self.push(self.now + Duration::from_secs(1), Ev::ApplyFaults);
            if self.queries.is_some() {
                self.push(self.now + Duration::from_secs(2), Ev::QueryStart(0));
            }
        }
        if let Some(p) = self.s.partition {
            if self.now >= p.to && self.heal_converged.is_none() {
                self.heal_converged = Some(self.now - p.to);
            }
        }
    }

    fn apply_faults(&mut self) {
        if self.faults_at.is_some() {
            return;
        }
        self.faults_at = Some(self.now);
        let mut victims: Vec<usize> = (1..self.s.nodes).collect();
        victims.shuffle(&mut self.rng);
        let mut victims = victims.into_iter();
        for n in victims.by_ref().take(self.s.kill) {
            self.nodes[n].status = Status::Crashed;
            self.nodes[n].held.clear();
            self.metrics.crash(self.now, n);
        }
        if let Some(p) = self.s.pause {
            for n in victims.by_ref().take(p.count) {
                self.nodes[n].status = Status::Paused;
                self.nodes[n].paused_ever = true;
                self.paused_any = true;
                self.metrics.pause(n);
                self.push(self.now + p.amount, Ev::PauseEnd(n));
            }
        }
        if let Some(sl) = self.s.slow {
            for n in victims.by_ref().take(sl.count) {
                self.nodes[n].slow = sl.amount;
            }
        }
    }

    fn resume(&mut self, n: usize) {
        if self.nodes[n].status != Status::Paused {
            return;
        }
        self.nodes[n].status = Status::Up;
        for ev in std::mem::take(&mut self.nodes[n].held) {
            self.push(self.now, ev);
        }
    }

    fn report(&self, wall: Duration) -> Report {
        let secs = self.s.duration.as_secs_f64();
        let per_node_s = |v: u64| v as f64 / self.s.nodes as f64 / secs;
        let ms = |d: Duration| d.as_millis() as u64;
        let killed: Vec<usize> = (0..self.s.nodes)
            .filter(|&i| self.nodes[i].status == Status::Crashed)
            .collect();
        let paused: Vec<usize> = (0..self.s.nodes)
            .filter(|&i| self.nodes[i].paused_ever)
            .collect();
        let paused_recovered = (!paused.is_empty()).then(|| {
            paused
                .iter()
                .all(|&p| self.nodes[p].status == Status::Up && self.metrics.seen_alive_by_all(p))
        });
        Report {
            nodes: self.s.nodes,
            seed: self.s.seed,
            duration_s: secs,
            converged_ms: self.metrics.converged_at.map(ms),
            detect_ms: self.metrics.detect_summary(),
            false_positives: self.metrics.false_dead.len(),
            false_suspicions: self.metrics.false_suspect.len(),
            false_positive_pairs: {
                let mut v: Vec<_> = self.metrics.false_dead.iter().copied().collect();
                v.sort_unstable();
                v.truncate(20);
                v
            },
            converged_at_end: self.metrics.converged(),
            false_suspicion_events: self.metrics.false_suspect_events,
            msgs_per_node_s: round2(per_node_s(self.count.msgs)),
            bytes_per_node_s: round2(per_node_s(self.count.bytes)),
            wall_ms: ms(wall),
            datagrams_per_node_s: round2(per_node_s(self.count.datagrams)),
            streams_per_node_s: round2(per_node_s(self.count.streams)),
            steady_bytes_per_node_s: round2(
                self.count
                    .bytes
                    .saturating_sub(self.half_bytes.unwrap_or(0)) as f64
                    / self.s.nodes as f64
                    / (secs - secs / 2.0).max(f64::MIN_POSITIVE),
            ),
            formation: self.formation(),
            faults_at_ms: self.faults_at.map(ms),
            killed,
            paused: paused.clone(),
            slowed: (0..self.s.nodes)
                .filter(|&i| !self.nodes[i].slow.is_zero())
                .collect(),
            paused_declared_dead: self.metrics.paused_dead.len(),
            paused_recovered,
            partition_declared_dead: self.metrics.partition_dead.len(),
            heal_converged_ms: self.heal_converged.map(ms),
            events: self.count.events,
            trace_hash: format!("{:016x}", self.trace),
            invariants: self.invariants(),
            hostile: self.hostile_report(),
            coordinates: self.coordinate_report(),
            queries: self.queries.as_ref().map(queries::Tracker::report),
        }
    }

    /// One-way delay the geometry adds between nodes `a` and `b` (zero without regions, and
    /// for hostile nodes).
    fn geo_delay(&self, a: usize, b: usize) -> Duration {
        match (self.geo.get(a), self.geo.get(b)) {
            (Some(&(pa, ha)), Some(&(pb, hb))) => pa.abs_diff(pb) + ha + hb,
            _ => Duration::ZERO,
        }
    }

    fn coordinate_report(&self) -> Option<CoordinateReport> {
        if self.geo.is_empty() {
            return None;
        }
        let live: Vec<usize> = (0..self.s.nodes)
            .filter(|&i| self.nodes[i].status == Status::Up)
            .collect();
        let jitter = (self.s.latency.0 + self.s.latency.1) / 2;
        let mut pairs: Vec<(usize, usize)> = Vec::new();
        let all = live.len() * live.len().saturating_sub(1) / 2;
        if all <= 20_000 {
            for (k, &i) in live.iter().enumerate() {
                pairs.extend(live[..k].iter().map(|&j| (i, j)));
            }
        } else {
            // Its own RNG: the report does not change the run.
            let mut rng = ChaCha8Rng::seed_from_u64(self.s.seed ^ 0x636f_6f72_6473);
            while pairs.len() < 20_000 {
                let (i, j) = (
                    live[rng.gen_range(0..live.len())],
                    live[rng.gen_range(0..live.len())],
                );
                if i != j {
                    pairs.push((i, j));
                }
            }
        }
        if pairs.is_empty() {
            return None;
        }
        let (mut rel, mut abs) = (
            Vec::with_capacity(pairs.len()),
            Vec::with_capacity(pairs.len()),
        );
        for &(i, j) in &pairs {
            let truth = 2.0 * (self.geo_delay(i, j) + jitter).as_secs_f64();
            let (ci, cj) = (
                self.nodes[i].swim.coordinate(),
                self.nodes[j].swim.coordinate(),
            );
            let predicted = ci.rtt_to(&cj).as_secs_f64();
            abs.push((predicted - truth).abs());
            rel.push((predicted - truth).abs() / truth);
        }
        rel.sort_by(f64::total_cmp);
        abs.sort_by(f64::total_cmp);
        let updates: u64 = live
            .iter()
            .map(|&i| self.nodes[i].swim.stats().coordinate_updates)
            .sum();
        Some(CoordinateReport {
            pairs: pairs.len(),
            median_error: round3(rel[rel.len() / 2]),
            p90_error: round3(rel[rel.len() * 9 / 10]),
            median_abs_error_ms: round3(abs[abs.len() / 2] * 1000.0),
            updates_mean: round2(updates as f64 / live.len() as f64),
        })
    }

    fn formation(&self) -> Option<Formation> {
        let got = self.formation_in.as_ref()?;
        let full = Message::PushPull(crate::cluster::message::PushPull {
            join: false,
            reply: false,
            event_ltime: self.nodes[0].swim.event_clock(),
            members: (self.nodes[0].swim.members())
                .map(|m| crate::cluster::message::PushMember {
                    info: m.info.clone(),
                    incarnation: m.incarnation,
                    state: m.state,
                })
                .collect(),
        });
        let table_bytes = self.model.stream_bytes(&full) as u64;
        let mean = got.iter().sum::<u64>() / got.len().max(1) as u64;
        let (max_node, max) = (got.iter().copied().enumerate())
            .max_by_key(|&(i, b)| (b, std::cmp::Reverse(i)))
            .unwrap_or((0, 0));
        let mut sorted = got.clone();
        sorted.sort_unstable();
        let p90 = sorted.get(sorted.len() * 9 / 10).copied().unwrap_or(0);
        let ratio = |b: u64| round2(b as f64 / table_bytes.max(1) as f64);
        let by = self.formation_in_by.map(|b| b / got.len().max(1) as u64);
        Some(Formation {
            bytes_in_mean: mean,
            bytes_in_max: max,
            table_bytes,
            ratio_mean: ratio(mean),
            ratio_max: ratio(max),
            max_node,
            ratio_p90: ratio(p90),
            datagram_mean: by[0],
            push_pull_mean: by[1],
            sync_mean: by[2],
        })
    }

    fn invariants(&self) -> Invariants {
        let false_positives = self.metrics.false_dead.len();
        let converged = self.metrics.converged_at.is_some() && self.metrics.converged();
        let active_rows_bound = 2 * self.nodes.len() + 64;
        let table_rows_bound = 2 * active_rows_bound;
        let broadcast_queue_bound = self.s.config.broadcast_queue_max;
        let ok = false_positives == 0
            && converged
            && self.active_max <= active_rows_bound
            && self.rows_max <= table_rows_bound
            && self.queue_max <= broadcast_queue_bound
            && self.aborted.is_none();
        Invariants {
            false_positives,
            converged,
            active_rows_max: self.active_max,
            active_rows_bound,
            table_rows_max: self.rows_max,
            table_rows_bound,
            broadcast_queue_max: self.queue_max,
            broadcast_queue_bound,
            aborted: self.aborted.clone(),
            ok,
        }
    }

    fn hostile_report(&self) -> Option<HostileReport> {
        let spec = &self.s.hostile;
        if spec.count == 0 {
            return None;
        }
        let honest = || self.nodes[..self.s.nodes].iter().map(|n| n.swim.stats());
        Some(HostileReport {
            nodes: spec.count,
            rate_per_s: spec.rate,
            kinds: spec.kinds.iter().map(|k| k.name()).collect(),
            sent: self.sent.by_kind.clone(),
            datagrams: self.sent.datagrams,
            streams: self.sent.streams,
            bytes: self.sent.bytes,
            honest_implausible: honest().map(|s| s.implausible).sum(),
            honest_over_limit: honest().map(|s| s.over_limit).sum(),
            honest_misdirected: honest().map(|s| s.misdirected).sum(),
            honest_dropped: honest().map(|s| s.dropped).sum(),
            hostile_declared_dead: self.hostile_dead.len(),
            honest_pairs_at_end: self.metrics.pair_states(),
            honest_suspect_longest_ms: self.metrics.suspect_longest(self.now).as_millis() as u64,
        })
    }
}

/// The node a member name belongs to: `n<i>` with no leading zero.
fn node_of(name: &str) -> Option<usize> {
    let digits = name.strip_prefix('n')?;
    // Only the canonical spelling: digits alone, no leading zero (`parse` would take "+1", "01").
    let canonical =
        digits.bytes().all(|b| b.is_ascii_digit()) && (digits == "0" || !digits.starts_with('0'));
    digits.parse().ok().filter(|_| canonical)
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_numbers_come_only_from_canonical_names() {
        assert_eq!(node_of("n0"), Some(0));
        assert_eq!(node_of("n4096"), Some(4096));
        for odd in [
            "n",
            "n01",
            "n+1",
            "n-1",
            "n1x",
            "m1",
            "n 1",
            "n99999999999999999999999",
        ] {
            assert_eq!(node_of(odd), None, "{odd}");
        }
    }

    #[test]
    fn heap_pops_by_time_then_insertion_order() {
        let mut h = BinaryHeap::new();
        let e = |at: u64, seq| {
            Reverse(Entry {
                at: Duration::from_millis(at),
                seq,
                ev: Box::new(Ev::ApplyFaults),
            })
        };
        h.push(e(5, 1));
        h.push(e(3, 2));
        h.push(e(5, 0));
        h.push(e(3, 3));
        let order: Vec<_> = std::iter::from_fn(|| h.pop())
            .map(|Reverse(x)| (x.at.as_millis(), x.seq))
            .collect();
        assert_eq!(order, [(3, 2), (3, 3), (5, 0), (5, 1)]);
    }

    #[test]
    fn the_row_limit_grows_with_the_cluster() {
        assert_eq!(rows_abort(200, 205), ROWS_ABORT);
        assert_eq!(rows_abort(10_000, 10_000), 200_000_000);
        assert_eq!(rows_abort(usize::MAX, 2), usize::MAX);
    }

    #[test]
    fn cores_keep_no_room_for_their_largest_burst() {
        let s = Scenario {
            nodes: 300,
            duration: Duration::from_secs(5),
            ..Scenario::default()
        };
        let mut sim = Sim::new(&s).unwrap();
        sim.run();
        assert!(sim.metrics.converged_at.is_some());
        let most = sim.nodes.iter().map(|n| n.swim.out.capacity()).max();
        assert!(most <= Some(64), "{most:?}");
    }

    #[test]
    fn small_cluster_converges_and_detects_a_crash() {
        let s = Scenario {
            nodes: 8,
            duration: Duration::from_secs(40),
            kill: 1,
            ..Scenario::default()
        };
        let r = run(&s).unwrap();
        assert!(r.converged_ms.is_some(), "{r:?}");
        assert_eq!(r.detect_ms.undetected, 0, "{r:?}");
        assert_eq!(r.false_positives, 0, "{r:?}");
        assert!(r.converged_at_end);
    }
}
