//! Live figures per member, measured by the runtime around the protocol core: a phi-accrual
//! suspicion level ([`PhiAccrual`]) fed by the acks to this node's pings, and the round-trip
//! time of those pings.
//!
//! Observation only: the core never sees these figures, so they change nothing it decides,
//! sends or draws from its RNG. The driver shows the [`Tracker`] every `Ping` it sends (probe,
//! TCP fallback ping, a suspicion's last-chance ping, a ping run for another node's ping-req),
//! every `PingReq` it sends, every `Ack` it receives and every member event:
//! - A ping is remembered by its `seq` (with its target, where it went and when, per channel)
//!   until its first ack, for at most [`PENDING_TTL`] and [`PENDING_MAX`] pings.
//! - The first ack of a pending `seq` is one heartbeat of the pinged member. The driver accepts
//!   it only while that member is in the table at the address pinged, so a ping-req naming an
//!   arbitrary target or address cannot create or feed an entry.
//! - An ack from the pinged node itself is also one RTT sample: from the send on the channel the
//!   ack came on (a TCP fallback ping is timed from its own send, not from the UDP ping).
//! - An ack relayed by a helper of our ping-req (it comes from an address we sent that
//!   ping-req to) is a heartbeat without an RTT sample; see [`Tracker::take_ack`].
//!
//! Heartbeats come at this node's probe rate: round-robin over the active members, so about
//! one per `probe_interval × (members − 1)`, irregular because the order is reshuffled each
//! round (and stretched when Lifeguard finds this node slow). phi is relative to that rhythm.
//! Each member's detector starts with that interval as its first estimate; its standard
//! deviation is floored at half a probe interval, so a steady two-node cluster reaches phi 8
//! after about three missed probes rather than after one late ack.
//!
//! Bounds: entries exist only for members in the table (reaped and left members are dropped),
//! and at most [`MEMBERS_MAX`] (the one heard from least recently goes first); each keeps at
//! most [`PHI_SAMPLES`] intervals.

use super::traffic::Chan;
use crate::cluster::phi::{PhiAccrual, PhiConfig};
use crate::cluster::{Event, INDIRECT_CHECKS_MAX};
use crate::common::Histogram;
use crate::identity::NodeId;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// Pings awaiting their first ack, at most; past it the oldest is forgotten.
pub const PENDING_MAX: usize = 1024;
/// A ping unanswered this long is forgotten: a later ack is neither heartbeat nor RTT sample.
pub const PENDING_TTL: Duration = Duration::from_secs(10);
/// Members tracked at most; past it the one heard from least recently is dropped.
pub const MEMBERS_MAX: usize = 100_000;
/// Inter-arrival intervals each member's detector keeps (Akka keeps 1000 heartbeats a second
/// apart; ours come once per probe round, so 100 already span many minutes).
pub const PHI_SAMPLES: usize = 100;
/// Floor of the detector's durations (they must be positive).
const MIN_DURATION: Duration = Duration::from_millis(1);

/// What this node measures of one member, as [`super::Node::member_health`] returns it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemberHealth {
    /// Suspicion level now (phi-accrual): about 0 right after an ack, rising with silence; 8
    /// means a gap this long would happen about once in 10⁸ under the model (see
    /// [`crate::cluster::phi`]). Computed at the time of the call.
    pub phi: f64,
    /// Smoothed round trip of the pings it answered itself (SRTT, weight 1/8 for each new
    /// sample); `None` while only relayed acks were heard.
    pub rtt: Option<Duration>,
    /// The latest round-trip sample.
    pub last_rtt: Option<Duration>,
    /// Time since its last ack.
    pub last_ack_age: Duration,
}

/// JSON (in `/v1/metrics`): `{"phi": 0.42, "rtt_seconds": 0.0003, "last_rtt_seconds": ..,
/// "last_ack_age_seconds": ..}`.
impl serde::Serialize for MemberHealth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Json {
            phi: f64,
            rtt_seconds: Option<f64>,
            last_rtt_seconds: Option<f64>,
            last_ack_age_seconds: f64,
        }
        Json {
            phi: self.phi,
            rtt_seconds: self.rtt.map(|d| d.as_secs_f64()),
            last_rtt_seconds: self.last_rtt.map(|d| d.as_secs_f64()),
            last_ack_age_seconds: self.last_ack_age.as_secs_f64(),
        }
        .serialize(s)
    }
}

/// A ping awaiting its first ack.
#[derive(Debug)]
struct Pending {
    target: NodeId,
    to: SocketAddr,
    /// When it went out as a datagram, and over the stream channel (the TCP fallback ping
    /// reuses the probe's `seq`).
    udp_sent: Option<Duration>,
    tcp_sent: Option<Duration>,
    /// Where ping-reqs with this `seq` went: acks from there are relayed.
    helpers: Vec<SocketAddr>,
    /// When it was first remembered (its key in `order`).
    born: Duration,
}

/// The first ack of a pending ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Heard {
    /// Who was pinged.
    pub target: NodeId,
    /// The address pinged.
    pub to: SocketAddr,
    /// The round trip, for an ack from the target itself.
    pub rtt: Option<Duration>,
}

/// One member's detector and round-trip estimate.
#[derive(Debug)]
struct Entry {
    phi: PhiAccrual,
    srtt: Option<Duration>,
    last_rtt: Option<Duration>,
    last_ack: Duration,
    /// Declared failed since its last heartbeat: the next one starts a new history, so that
    /// the outage does not enter it as one huge interval.
    restart: bool,
}

/// The per-member table and the pings in flight. Pure: every call takes `now`, a duration since
/// an origin shared by all calls (see [`Board`]).
#[derive(Debug)]
pub(crate) struct Tracker {
    /// Settings of new detectors (`first_heartbeat_estimate` is set per member).
    phi: PhiConfig,
    pending: HashMap<u32, Pending>,
    /// `(seq, born)` in the order remembered; an item whose entry is gone or was replaced is
    /// skipped when it comes out.
    order: VecDeque<(u32, Duration)>,
    members: HashMap<NodeId, Entry>,
    /// Every RTT sample taken.
    rtt: Histogram,
}

impl Tracker {
    /// A tracker for a protocol with this probe interval. Its detectors keep [`PHI_SAMPLES`]
    /// intervals, floor the standard deviation at half the probe interval and take threshold 8;
    /// each starts from its own first estimate (see [`Tracker::heartbeat`]).
    pub fn new(probe_interval: Duration) -> Self {
        let phi = PhiConfig {
            max_samples: PHI_SAMPLES,
            min_std_dev: (probe_interval / 2).max(MIN_DURATION),
            ..PhiConfig::default()
        };
        debug_assert_eq!(phi.validate(), Ok(()));
        Tracker {
            phi,
            pending: HashMap::new(),
            order: VecDeque::new(),
            members: HashMap::new(),
            rtt: Histogram::default(),
        }
    }

    /// A `Ping { seq, target }` went to `to` over `chan` at `now`.
    pub fn ping_sent(
        &mut self,
        now: Duration,
        seq: u32,
        target: &NodeId,
        to: SocketAddr,
        chan: Chan,
    ) {
        self.expire(now);
        let p = match self.pending.get_mut(&seq) {
            // The TCP fallback ping of a probe whose UDP ping is pending.
            Some(p) if &p.target == target && p.to == to => p,
            _ => {
                let fresh = Pending {
                    target: target.clone(),
                    to,
                    udp_sent: None,
                    tcp_sent: None,
                    helpers: Vec::new(),
                    born: now,
                };
                self.pending.insert(seq, fresh);
                self.order.push_back((seq, now));
                while self.order.len() > PENDING_MAX {
                    self.forget_oldest();
                }
                self.pending.get_mut(&seq).expect("just inserted")
            }
        };
        let sent = match chan {
            Chan::Udp => &mut p.udp_sent,
            Chan::Tcp => &mut p.tcp_sent,
        };
        sent.get_or_insert(now);
    }

    /// A `PingReq { seq }` went to `helper`: an ack for `seq` from there is relayed.
    pub fn ping_req_sent(&mut self, seq: u32, helper: SocketAddr) {
        if let Some(p) = self.pending.get_mut(&seq) {
            if p.helpers.len() < INDIRECT_CHECKS_MAX && !p.helpers.contains(&helper) {
                p.helpers.push(helper);
            }
        }
    }

    /// An `Ack { seq }` came from `from` over `chan` at `now`: the pending ping it answers, if
    /// any (forgotten now: later acks for it count for nothing).
    ///
    /// An ack relayed by a helper carries no RTT sample. Its delay is that of the detour (our
    /// ping-req to the helper, the helper's ping and the target's ack, the forwarded ack) and
    /// it comes only after the direct ack was already overdue, so it would report the
    /// probe timeout rather than the path to the target, exactly when that path is in doubt. It
    /// is still a heartbeat: the target answered someone within this probe.
    pub fn take_ack(
        &mut self,
        now: Duration,
        seq: u32,
        from: SocketAddr,
        chan: Chan,
    ) -> Option<Heard> {
        self.expire(now);
        // Only the address pinged, or a helper asked to ping it, may answer: an ack with a
        // guessed seq from anywhere else neither counts nor spends the pending ping. (The
        // pinged address is the member's advertised one, which its replies come from.)
        let p = self.pending.get(&seq)?;
        if from != p.to && !p.helpers.contains(&from) {
            return None;
        }
        let p = self.pending.remove(&seq)?;
        let sent = match chan {
            _ if p.helpers.contains(&from) => None,
            Chan::Udp => p.udp_sent,
            Chan::Tcp => p.tcp_sent,
        };
        Some(Heard {
            target: p.target,
            to: p.to,
            rtt: sent.map(|t| now.saturating_sub(t)),
        })
    }

    /// One heartbeat of `target` at `now`, with its RTT sample if any. `estimate` is the
    /// interval a new detector expects between heartbeats before it has measured any.
    pub fn heartbeat(
        &mut self,
        now: Duration,
        target: &NodeId,
        rtt: Option<Duration>,
        estimate: Duration,
    ) {
        if !self.members.contains_key(target) && self.members.len() >= MEMBERS_MAX {
            self.drop_least_recent();
        }
        let config = PhiConfig {
            first_heartbeat_estimate: estimate.max(MIN_DURATION),
            ..self.phi
        };
        let fresh = || PhiAccrual::new(config).expect("valid: default threshold, positive floors");
        let entry = self.members.entry(target.clone()).or_insert_with(|| Entry {
            phi: fresh(),
            srtt: None,
            last_rtt: None,
            last_ack: now,
            restart: false,
        });
        if entry.restart {
            entry.phi = fresh();
            entry.restart = false;
        }
        entry.phi.heartbeat(now);
        entry.last_ack = entry.last_ack.max(now);
        if let Some(sample) = rtt {
            // TCP's SRTT (RFC 6298): srtt += (sample - srtt) / 8.
            entry.srtt = Some(entry.srtt.map_or(sample, |s| (s * 7 + sample) / 8));
            entry.last_rtt = Some(sample);
            self.rtt.observe(sample);
        }
    }

    /// Follows the membership: a member that left or (re)joined loses its entry; one declared
    /// failed keeps it (its phi goes on rising) until it is heard again.
    pub fn member_event(&mut self, event: &Event) {
        match event {
            Event::MemberLeft(m) | Event::MemberJoined(m) => {
                self.members.remove(&m.info.id);
            }
            Event::MemberFailed(m) => {
                if let Some(e) = self.members.get_mut(&m.info.id) {
                    e.restart = true;
                }
            }
            _ => {}
        }
    }

    /// Keeps only the members `keep` accepts (called when the table changed, e.g. after a
    /// reap).
    pub fn retain(&mut self, mut keep: impl FnMut(&NodeId) -> bool) {
        self.members.retain(|id, _| keep(id));
    }

    /// Every tracked member's figures at `now`.
    pub fn figures(&self, now: Duration) -> BTreeMap<NodeId, MemberHealth> {
        self.members
            .iter()
            .map(|(id, e)| {
                let h = MemberHealth {
                    phi: e.phi.phi(now),
                    rtt: e.srtt,
                    last_rtt: e.last_rtt,
                    last_ack_age: now.saturating_sub(e.last_ack),
                };
                (id.clone(), h)
            })
            .collect()
    }

    /// Every RTT sample so far.
    pub fn rtt_histogram(&self) -> &Histogram {
        &self.rtt
    }

    /// Forgets pings older than [`PENDING_TTL`].
    fn expire(&mut self, now: Duration) {
        while let Some(&(_, born)) = self.order.front() {
            if now.saturating_sub(born) < PENDING_TTL {
                break;
            }
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((seq, born)) = self.order.pop_front() {
            if self.pending.get(&seq).is_some_and(|p| p.born == born) {
                self.pending.remove(&seq);
            }
        }
    }

    fn drop_least_recent(&mut self) {
        let oldest = self
            .members
            .iter()
            .min_by_key(|(_, e)| e.last_ack)
            .map(|(id, _)| id.clone());
        if let Some(id) = oldest {
            self.members.remove(&id);
        }
    }
}

/// The tracker shared by the driver (which feeds it) and the `Node` handles (which read it),
/// with the clock both use.
#[derive(Debug)]
pub(crate) struct Board {
    origin: Instant,
    tracker: Mutex<Tracker>,
}

impl Board {
    pub fn new(tracker: Tracker) -> Self {
        Board {
            origin: Instant::now(),
            tracker: Mutex::new(tracker),
        }
    }

    /// Time on the tracker's clock (tokio's monotonic clock since this board was made).
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    pub fn lock(&self) -> MutexGuard<'_, Tracker> {
        self.tracker.lock().expect("health lock")
    }

    /// Every tracked member's figures now (phi computed at this moment).
    pub fn figures(&self) -> BTreeMap<NodeId, MemberHealth> {
        let tracker = self.lock();
        tracker.figures(self.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{MemberState, MemberView};
    use crate::identity::{Incarnation, NodeInfo};
    use std::sync::Arc;

    const INTERVAL: Duration = Duration::from_millis(200);

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    fn id(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn tracker() -> Tracker {
        Tracker::new(INTERVAL)
    }

    fn view(name: &str, port: u16) -> MemberView {
        MemberView {
            info: Arc::new(NodeInfo {
                id: id(name),
                addr: addr(port),
                tags: Default::default(),
            }),
            incarnation: Incarnation(1),
            state: MemberState::Alive,
        }
    }

    /// Pings `b` (port 2) with `seq` at `sent` and has it ack at `sent + rtt`, as the driver
    /// would: ping, ack, heartbeat.
    fn round(t: &mut Tracker, seq: u32, sent: Duration, rtt: Duration) -> Heard {
        t.ping_sent(sent, seq, &id("b"), addr(2), Chan::Udp);
        let heard = t
            .take_ack(sent + rtt, seq, addr(2), Chan::Udp)
            .expect("pending");
        t.heartbeat(sent + rtt, &heard.target, heard.rtt, INTERVAL);
        heard
    }

    fn phi_of(t: &Tracker, name: &str, now: Duration) -> f64 {
        t.figures(now)[&id(name)].phi
    }

    #[test]
    fn regular_acks_keep_phi_low_and_silence_raises_it_past_8() {
        let mut t = tracker();
        let mut now = Duration::ZERO;
        for seq in 0..50 {
            round(&mut t, seq, now, ms(1));
            now += INTERVAL;
        }
        let last = now - INTERVAL + ms(1);
        // Right after an ack, and one interval later (when the next is due): low.
        assert!(phi_of(&t, "b", last) < 0.5, "{}", phi_of(&t, "b", last));
        assert!(phi_of(&t, "b", last + INTERVAL) < 1.0);
        // Three probe intervals of silence: past the usual threshold, and still rising.
        let mut previous = 0.0;
        for missed in 1..=10 {
            let phi = phi_of(&t, "b", last + INTERVAL * missed);
            assert!(phi >= previous, "{missed}: {phi} < {previous}");
            previous = phi;
        }
        assert!(phi_of(&t, "b", last + INTERVAL * 4) > 8.0);
        let h = t.figures(last + ms(700))[&id("b")];
        assert_eq!(h.last_ack_age, ms(700));
    }

    #[test]
    fn jittery_acks_are_suspected_later_than_regular_ones() {
        let (mut regular, mut jittery) = (tracker(), tracker());
        let (mut a, mut b) = (Duration::ZERO, Duration::ZERO);
        for seq in 0..60 {
            round(&mut regular, seq, a, ms(1));
            round(&mut jittery, seq, b, ms(1));
            a += ms(600);
            b += ms([200, 600, 1000][seq as usize % 3]); // mean 600 ms
        }
        let gap = ms(1400);
        let (ra, jb) = (a - ms(600) + ms(1), b - ms(1000) + ms(1));
        assert!(phi_of(&regular, "b", ra + gap) > phi_of(&jittery, "b", jb + gap));
    }

    #[test]
    fn rtt_is_smoothed_with_weight_one_eighth() {
        let mut t = tracker();
        let h = round(&mut t, 1, ms(0), ms(8));
        assert_eq!(h.rtt, Some(ms(8)));
        let f = t.figures(ms(8))[&id("b")];
        assert_eq!((f.rtt, f.last_rtt), (Some(ms(8)), Some(ms(8))));
        round(&mut t, 2, ms(200), ms(16));
        let f = t.figures(ms(216))[&id("b")];
        assert_eq!((f.rtt, f.last_rtt), (Some(ms(9)), Some(ms(16)))); // 8 + (16 - 8) / 8
        for seq in 3..100 {
            round(&mut t, seq, ms(200) * seq, ms(16));
        }
        let f = t.figures(ms(20_000))[&id("b")];
        let srtt = f.rtt.unwrap();
        assert!(srtt > ms(15) && srtt <= ms(16), "{srtt:?}");
        assert_eq!(t.rtt_histogram().count(), 99);
    }

    #[test]
    fn a_tcp_fallback_ack_is_timed_from_the_tcp_ping() {
        let mut t = tracker();
        t.ping_sent(ms(0), 7, &id("b"), addr(2), Chan::Udp);
        t.ping_sent(ms(100), 7, &id("b"), addr(2), Chan::Tcp);
        let heard = t.take_ack(ms(103), 7, addr(2), Chan::Tcp).unwrap();
        assert_eq!(heard.rtt, Some(ms(3)));
        // A UDP ack of the same probe would have been timed from the UDP ping.
        t.ping_sent(ms(200), 8, &id("b"), addr(2), Chan::Udp);
        t.ping_sent(ms(300), 8, &id("b"), addr(2), Chan::Tcp);
        assert_eq!(
            t.take_ack(ms(350), 8, addr(2), Chan::Udp).unwrap().rtt,
            Some(ms(150))
        );
    }

    #[test]
    fn a_relayed_ack_is_a_heartbeat_without_rtt() {
        let mut t = tracker();
        t.ping_sent(ms(0), 5, &id("b"), addr(2), Chan::Udp);
        t.ping_req_sent(5, addr(3));
        t.ping_req_sent(5, addr(4));
        let heard = t.take_ack(ms(150), 5, addr(4), Chan::Udp).unwrap();
        assert_eq!(
            heard,
            Heard {
                target: id("b"),
                to: addr(2),
                rtt: None
            }
        );
        t.heartbeat(ms(150), &heard.target, heard.rtt, INTERVAL);
        let f = t.figures(ms(150))[&id("b")];
        assert_eq!((f.rtt, f.last_ack_age), (None, Duration::ZERO));
        assert_eq!(t.rtt_histogram().count(), 0);
        // The direct ack arriving after it finds nothing pending: one heartbeat per ping.
        assert_eq!(t.take_ack(ms(160), 5, addr(2), Chan::Udp), None);
    }

    #[test]
    fn unknown_late_and_repeated_acks_count_for_nothing() {
        let mut t = tracker();
        assert_eq!(t.take_ack(ms(0), 1, addr(2), Chan::Udp), None);
        t.ping_sent(ms(0), 1, &id("b"), addr(2), Chan::Udp);
        // A forged ack from a third address, with the right seq: nothing, and the real one
        // still counts.
        assert_eq!(t.take_ack(ms(1), 1, addr(9), Chan::Udp), None);
        assert!(t.take_ack(ms(1), 1, addr(2), Chan::Udp).is_some());
        assert_eq!(t.take_ack(ms(2), 1, addr(2), Chan::Udp), None);
        t.ping_sent(ms(0), 2, &id("b"), addr(2), Chan::Udp);
        assert_eq!(t.take_ack(PENDING_TTL, 2, addr(2), Chan::Udp), None);
        assert!(t.pending.is_empty() && t.order.is_empty());
    }

    #[test]
    fn a_flood_of_pings_and_members_stays_bounded() {
        let mut t = tracker();
        let now = ms(5);
        for seq in 0..100_000u32 {
            t.ping_sent(now, seq, &id("b"), addr(2), Chan::Udp);
            t.ping_req_sent(seq, addr((seq % 60_000) as u16));
        }
        assert_eq!(t.pending.len(), PENDING_MAX);
        assert_eq!(t.order.len(), PENDING_MAX);
        assert!(t
            .pending
            .values()
            .all(|p| p.helpers.len() <= INDIRECT_CHECKS_MAX));
        // The newest are kept, the oldest forgotten.
        assert!(t.take_ack(now, 99_999, addr(2), Chan::Udp).is_some());
        assert_eq!(t.take_ack(now, 0, addr(2), Chan::Udp), None);
        // Acked pings leave stale order items; they are bounded too.
        for seq in 100_000..110_000u32 {
            t.ping_sent(now, seq, &id("b"), addr(2), Chan::Udp);
            t.take_ack(now, seq, addr(2), Chan::Udp);
        }
        assert!(t.order.len() <= PENDING_MAX);

        for i in 0..(MEMBERS_MAX + 10) {
            t.heartbeat(ms(i as u64), &id(&format!("m{i}")), Some(ms(1)), INTERVAL);
        }
        assert_eq!(t.members.len(), MEMBERS_MAX);
        let figures = t.figures(ms(200_000));
        assert!(!figures.contains_key(&id("m0")), "least recent dropped");
        assert!(figures.contains_key(&id(&format!("m{}", MEMBERS_MAX + 9))));
    }

    #[test]
    fn members_that_leave_rejoin_or_are_reaped_lose_their_entry() {
        let mut t = tracker();
        for name in ["b", "c", "d", "e"] {
            t.heartbeat(ms(1), &id(name), Some(ms(1)), INTERVAL);
        }
        t.member_event(&Event::MemberLeft(view("b", 2)));
        t.member_event(&Event::MemberJoined(view("c", 3)));
        t.retain(|m| m != &id("d"));
        let names: Vec<_> = t.figures(ms(2)).into_keys().collect();
        assert_eq!(names, [id("e")]);
    }

    #[test]
    fn a_member_heard_again_after_failing_starts_a_new_history() {
        let mut t = tracker();
        let mut now = Duration::ZERO;
        for seq in 0..30 {
            round(&mut t, seq, now, ms(1));
            now += INTERVAL;
        }
        // Silent for a minute, declared failed meanwhile: phi is high and stays shown.
        t.member_event(&Event::MemberFailed(view("b", 2)));
        now += Duration::from_secs(60);
        assert!(phi_of(&t, "b", now) > 100.0);
        round(&mut t, 100, now, ms(1));
        now += ms(1);
        // Without the restart the 60 s gap would dominate the history and hide later silence.
        assert!(phi_of(&t, "b", now + INTERVAL * 10) > 8.0);
    }

    #[test]
    fn phi_is_read_at_the_time_asked() {
        let board = Board::new(tracker());
        board
            .lock()
            .heartbeat(board.now(), &id("b"), None, INTERVAL);
        let first = board.figures()[&id("b")];
        assert!(first.phi < 1.0 && first.rtt.is_none());
        let json = serde_json::to_value(first).unwrap();
        assert_eq!(json["rtt_seconds"], serde_json::Value::Null);
        assert!(json["phi"].is_f64() && json["last_ack_age_seconds"].is_f64());
    }
}
