//! The driver task: the one place that owns the core and the transport, and carries out the
//! core's outputs.

use super::health::Board;
use super::query::{IncomingQuery, QueryStream};
use super::record;
use super::stats::{MemberCounts, NodeStats};
use super::traffic::{Chan, Dir, Traffic};
use super::{NodeError, Request};
use crate::cluster::message::{decode_packet, encode_packet};
use crate::cluster::{
    Event, Input, MemberState, MemberView, Message, Output, QueryAnswer, Swim, Timer,
};
use crate::common::{Now, Time};
use crate::identity::NodeId;
use crate::transport::frame::FrameSealer;
use crate::transport::{Incoming, StreamRefused, Transport};
use futures_util::FutureExt;
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

/// What the driver shares with the `Node` handles.
pub(crate) struct Links {
    pub me: SocketAddr,
    pub sec: FrameSealer,
    pub events: broadcast::Sender<Event>,
    pub members: Arc<Mutex<Vec<MemberView>>>,
    pub traffic: Arc<Traffic>,
    pub health: Arc<Board>,
    /// For the queries handed to handlers, to answer through.
    pub requests: mpsc::Sender<Request>,
}

pub(crate) struct Driver<T> {
    swim: Swim,
    transport: T,
    links: Links,
    /// Armed timers by (due time, arming order).
    timers: BTreeMap<(Time, u64), Timer>,
    timer_seq: u64,
    origin: Instant,
    out: Vec<Output>,
    /// Frozen (`Node::pause`): no input is read and no timer fires until resumed.
    paused: bool,
    /// Rows in the core's table when last looked: a change without a member event is a reap.
    table_len: usize,
    /// Where each member sits in the published snapshot (`Links::members`).
    view_at: FxHashMap<NodeId, usize>,
    /// When the snapshot was last rebuilt from the whole table.
    views_rebuilt: Option<Time>,
    /// Query handlers by name (`Node::query_handler`).
    handlers: FxHashMap<String, mpsc::Sender<IncomingQuery>>,
    /// The answer streams of this node's queries running, by id.
    queries: FxHashMap<u64, mpsc::UnboundedSender<QueryAnswer>>,
}

/// The snapshot `Node::members` reads is patched member by member as events come, and rebuilt
/// from the whole table at most this often (catching incarnations that moved without an
/// event) and after rows were reaped. Rebuilt on every event, as it was, it cost each node
/// O(N) per event: a 1,000-node cluster spent its CPU copying tables while it formed.
const VIEWS_REBUILD: Duration = Duration::from_secs(1);

/// Inputs already received that are handled before the due timers of a turn.
const READY_INPUT_MAX: usize = 64;

impl<T: Transport> Driver<T> {
    pub fn new(swim: Swim, transport: T, links: Links) -> Self {
        Driver {
            swim,
            transport,
            links,
            timers: BTreeMap::new(),
            timer_seq: 0,
            origin: Instant::now(),
            out: Vec::new(),
            paused: false,
            table_len: 0,
            view_at: FxHashMap::default(),
            views_rebuilt: None,
            handlers: FxHashMap::default(),
            queries: FxHashMap::default(),
        }
    }

    /// Hands the queries named `name` to `handler` (replacing any before).
    pub fn add_handler(&mut self, name: String, handler: mpsc::Sender<IncomingQuery>) {
        self.handlers.insert(name, handler);
    }

    fn now(&self) -> Now {
        let mono = Time::from_micros(self.origin.elapsed().as_micros() as u64);
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Now {
            mono,
            wall_ms: wall.as_millis() as u64,
        }
    }

    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let now = self.now();
        self.swim.start(now, &mut self.out);
        self.apply().await;
        loop {
            // Input that is already here goes before due timers: a node that was not running
            // when its ack timeout passed (a busy host, a pause) must not call a probe failed
            // whose ack sits in its socket. Bounded, so a flood (a junk flood keeps the socket
            // readable) delays the timers by `READY_INPUT_MAX` inputs at most, never starves them.
            if !self.paused {
                for _ in 0..READY_INPUT_MAX {
                    match self.transport.recv().now_or_never() {
                        Some(Some(got)) => self.on_incoming(got),
                        Some(None) | None => break,
                    }
                }
                self.fire_timers();
                if !self.out.is_empty() {
                    self.apply().await;
                }
            }
            let next = self
                .timers
                .keys()
                .next()
                .map(|(t, _)| self.origin + t.since_origin());
            let sleep = tokio::time::sleep_until(
                next.unwrap_or_else(|| Instant::now() + std::time::Duration::from_secs(3600)),
            );
            tokio::select! {
                biased;
                _ = &mut stop => break,
                Some(req) = requests.recv() => self.on_request(req),
                got = self.transport.recv(), if !self.paused => match got {
                    Some(got) => self.on_incoming(got),
                    None => break,
                },
                _ = sleep, if next.is_some() && !self.paused => self.fire_timers(),
            }
            self.apply().await;
        }
        self.transport.close().await;
    }

    fn on_incoming(&mut self, got: Incoming) {
        match got {
            Incoming::Packet { from, bytes } => self.on_datagram(from, &bytes),
            Incoming::Stream { from, bytes } => self.on_record(from, &bytes),
        }
    }

    fn feed(&mut self, input: Input) {
        let now = self.now();
        self.swim.handle(now, input, &mut self.out);
    }

    fn on_request(&mut self, req: Request) {
        match req {
            Request::Command(cmd, reply) => {
                let now = self.now();
                let r = self.swim.command(now, cmd, &mut self.out);
                let _ = reply.send(r);
            }
            Request::LeaveAnnounced(reply) => {
                let _ = reply.send(self.swim.leave_announced());
            }
            Request::Pause(paused) => self.paused = paused,
            Request::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            // One member's estimate, without copying every member's coordinate.
            Request::RttEstimate(member, reply) => {
                let _ = reply.send(self.swim.rtt_estimate(&member));
            }
            Request::Coordinates(reply) => {
                let members = (self.swim.coordinates())
                    .map(|(id, c)| (id.clone(), c.clone()))
                    .collect();
                let _ = reply.send(super::Coordinates {
                    me: self.swim.coordinate(),
                    members,
                });
            }
            Request::Query(params, reply) => {
                let now = self.now();
                let r = (self.swim.query(now, params, &mut self.out)).map(|id| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    self.queries.insert(id, tx);
                    QueryStream::new(id, rx)
                });
                let _ = reply.send(r);
            }
            Request::Respond {
                origin,
                id,
                payload,
                reply,
            } => {
                let now = self.now();
                let r = self.swim.respond(now, &origin, id, payload, &mut self.out);
                let _ = reply.send(r);
            }
            Request::QueryHandler(name, handler) => self.add_handler(name, handler),
            Request::Direct {
                to,
                payload,
                reliable,
                reply,
            } => {
                let r = match self.swim.direct(&to, payload, reliable) {
                    Err(e) => Err(NodeError::Command(e)),
                    Ok((addr, msg)) if reliable => {
                        self.send_record(addr, msg).map_err(NodeError::Stream)
                    }
                    Ok((addr, msg)) => {
                        self.out.push(Output::Packet {
                            to: addr,
                            msgs: vec![msg],
                        });
                        Ok(())
                    }
                };
                if r.is_ok() {
                    self.links.traffic.counts.direct_sent.add(1);
                }
                let _ = reply.send(r);
            }
        }
    }

    /// Seals `msg` in a stream record to `to` and queues it, counted.
    fn send_record(&mut self, to: SocketAddr, msg: Message) -> Result<(), StreamRefused> {
        let record = record::record(self.links.me, &msg, &self.links.sec);
        let traffic = &self.links.traffic;
        traffic.counts.streams_out.add(1);
        traffic.counts.msgs_out.add(1);
        traffic.counts.stream_bytes_out.add(record.len() as u64 + 4);
        traffic.message(Dir::Out, Chan::Tcp, &msg);
        self.observe_out(to, std::slice::from_ref(&msg), Chan::Tcp);
        self.transport.send_stream(to, record)
    }

    fn on_datagram(&mut self, from: SocketAddr, bytes: &[u8]) {
        let traffic = &self.links.traffic;
        traffic.counts.datagrams_in.add(1);
        traffic.counts.datagram_bytes_in.add(bytes.len() as u64);
        let body = match self.links.sec.open(bytes) {
            Ok(b) => b,
            Err(e) => {
                traffic.frame_refused(&e);
                tracing::debug!(%from, error = %e, "datagram dropped");
                return;
            }
        };
        match decode_packet(&body) {
            Ok(p) => {
                for m in &p.messages {
                    traffic.message(Dir::In, Chan::Udp, m);
                }
                self.observe_in(from, &p.messages, Chan::Udp);
                self.feed(Input::Packet {
                    from,
                    msgs: p.messages,
                })
            }
            Err(e) => {
                traffic.counts.rejected_packet.add(1);
                tracing::debug!(%from, error = %e, "datagram dropped");
            }
        }
    }

    /// A stream record from the connection peer `peer`. Its messages are answered at the
    /// sender's claimed address, so a claim from another IP than the connection's is dropped
    /// and counted (`spoofed`): a forged claim cannot steer a push-pull reply, with the whole
    /// member table, to a third address. Only the port may differ (the connection's is the
    /// sender's outgoing port).
    fn on_record(&mut self, peer: SocketAddr, bytes: &[u8]) {
        self.links
            .traffic
            .counts
            .stream_bytes_in
            .add(bytes.len() as u64);
        match record::open_record(bytes, &self.links.sec) {
            Ok(msgs) if msgs.iter().any(|(from, _)| !same_ip(*from, peer)) => {
                self.links.traffic.counts.rejected_spoofed.add(1);
                tracing::debug!(%peer, "stream record claims another IP: dropped");
            }
            Ok(msgs) => {
                for (from, msg) in msgs {
                    self.links.traffic.message(Dir::In, Chan::Tcp, &msg);
                    self.observe_in(from, std::slice::from_ref(&msg), Chan::Tcp);
                    self.feed(Input::Stream { from, msg });
                }
            }
            Err(record::RecordError::Frame(e)) => {
                self.links.traffic.frame_refused(&e);
                tracing::debug!(error = %e, "stream record dropped");
            }
            Err(e) => {
                self.links.traffic.counts.rejected_stream.add(1);
                tracing::debug!(error = %e, "stream record dropped");
            }
        }
    }

    fn stats(&self) -> NodeStats {
        let mut members = MemberCounts::default();
        let me = self.swim.id();
        for m in self.swim.members().filter(|m| m.id() != me) {
            match m.state {
                MemberState::Alive => members.alive += 1,
                MemberState::Suspect => members.suspect += 1,
                MemberState::Dead => members.failed += 1,
                MemberState::Left => members.left += 1,
            }
        }
        NodeStats {
            name: me.as_str().to_string(),
            incarnation: self.swim.incarnation().0,
            health: self.swim.awareness(),
            members,
            broadcast_queue: self.swim.broadcast_queue_len(),
            core: self.swim.stats().clone(),
            ping_rtt: self.links.health.lock().rtt_histogram().clone(),
            messages: self.links.traffic.by_kind(),
            traffic: self
                .links
                .traffic
                .snapshot(self.transport.counters().snapshot()),
        }
    }

    fn fire_timers(&mut self) {
        let now = self.now().mono;
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            self.feed(Input::Timer(timer));
        }
    }

    async fn apply(&mut self) {
        let mut changed: Vec<MemberView> = Vec::new();
        // Events go out after the member views are patched: a subscriber that reads
        // `Node::members` on an event (placement's owner watches do) sees the change.
        let mut events = Vec::new();
        for o in std::mem::take(&mut self.out) {
            match o {
                Output::Packet { to, msgs } => {
                    let frame = self.links.sec.seal(&encode_packet(&msgs));
                    let traffic = &self.links.traffic;
                    traffic.counts.datagrams_out.add(1);
                    traffic.counts.msgs_out.add(msgs.len() as u64);
                    traffic.counts.datagram_bytes_out.add(frame.len() as u64);
                    for m in &msgs {
                        traffic.message(Dir::Out, Chan::Udp, m);
                    }
                    self.observe_out(to, &msgs, Chan::Udp);
                    self.transport.send_packet(to, &frame).await;
                }
                Output::Stream { to, msg } => {
                    // Refused records are counted by the transport; a later message repairs
                    // what a lost one would have told.
                    let _ = self.send_record(to, msg);
                }
                Output::Timer { at, timer } => {
                    self.timer_seq += 1;
                    self.timers.insert((at, self.timer_seq), timer);
                }
                // An answer goes to its query's caller only (thousands of them would crowd
                // the subscribers' buffers); an answer stream dropped by its caller is
                // forgotten at the query's end.
                Output::Event(Event::QueryAnswer { id, answer }) => {
                    let done = matches!(answer, QueryAnswer::Done(_));
                    if let Some(tx) = self.queries.get(&id) {
                        let _ = tx.send(answer);
                    }
                    if done {
                        self.queries.remove(&id);
                    }
                }
                Output::Event(Event::Query(q)) => {
                    let handler = self.handlers.get(&q.name).filter(|h| !h.is_closed());
                    if let Some(h) = handler {
                        let deadline = self.origin + q.deadline.since_origin();
                        let requests = self.links.requests.clone();
                        let incoming = IncomingQuery::new((*q).clone(), deadline, requests);
                        if h.try_send(incoming).is_err() {
                            self.links.traffic.counts.queries_unhandled.add(1);
                        }
                    }
                    // The node's own queries (key commands carry keys) stay inside.
                    if !q.name.starts_with(super::query::INTERNAL_PREFIX) {
                        events.push(Event::Query(q));
                    }
                }
                Output::Event(e) => {
                    if let Some(v) = e.member().filter(|v| &v.info.id != self.swim.id()) {
                        changed.push(v.clone());
                    }
                    self.links.health.lock().member_event(&e);
                    events.push(e);
                }
            }
        }
        // `count` of the table's slice iterator is its length: O(1).
        let table_len = self.swim.members().count();
        let joined = changed
            .iter()
            .filter(|v| !self.view_at.contains_key(&v.info.id));
        let expected = self.table_len + joined.count();
        let reaped = table_len != expected;
        self.table_len = table_len;
        let now = self.now().mono;
        let due = self
            .views_rebuilt
            .is_none_or(|t| now.saturating_since(t) >= VIEWS_REBUILD);
        if reaped || (due && !changed.is_empty()) {
            self.views_rebuilt = Some(now);
            self.rebuild_views();
        } else if !changed.is_empty() {
            let mut views = self.links.members.lock().expect("members lock");
            for v in changed {
                match self.view_at.get(&v.info.id) {
                    Some(&i) => views[i] = v,
                    None => {
                        self.view_at.insert(v.info.id.clone(), views.len());
                        views.push(v);
                    }
                }
            }
        }
        for e in events {
            let _ = self.links.events.send(e);
        }
    }

    /// Publishes every row but this node's, and forgets the health of members no longer kept.
    fn rebuild_views(&mut self) {
        let me = self.swim.id().clone();
        self.links.health.lock().retain(|id| {
            id != &me
                && self
                    .swim
                    .member(id)
                    .is_some_and(|m| m.state != MemberState::Left)
        });
        let views: Vec<MemberView> = self
            .swim
            .members()
            .filter(|m| m.id() != &me)
            .map(|m| MemberView {
                info: m.info.clone(),
                incarnation: m.incarnation,
                state: m.state,
            })
            .collect();
        self.view_at.clear();
        for (i, v) in views.iter().enumerate() {
            self.view_at.insert(v.info.id.clone(), i);
        }
        *self.links.members.lock().expect("members lock") = views;
    }

    /// Shows the health tracker the pings and ping-reqs going out (observation only).
    fn observe_out(&self, to: SocketAddr, msgs: &[Message], chan: Chan) {
        let health = &self.links.health;
        for m in msgs {
            match m {
                Message::Ping(p) => {
                    health
                        .lock()
                        .ping_sent(health.now(), p.seq, &p.target, to, chan)
                }
                Message::PingReq(r) => health.lock().ping_req_sent(r.seq, to),
                _ => {}
            }
        }
    }

    /// Shows the health tracker the acks coming in: the first ack of one of our pings is a
    /// heartbeat of the member pinged, if it is in the table at the address pinged.
    fn observe_in(&self, from: SocketAddr, msgs: &[Message], chan: Chan) {
        let health = &self.links.health;
        for m in msgs {
            let Message::Ack(ack) = m else { continue };
            let mut tracker = health.lock();
            let now = health.now();
            let Some(heard) = tracker.take_ack(now, ack.seq, from, chan) else {
                continue;
            };
            let member = self.swim.member(&heard.target).filter(|m| {
                m.id() != self.swim.id() && m.info.addr == heard.to && m.state != MemberState::Left
            });
            if member.is_some() {
                // Until intervals are measured: one probe round over the other active members.
                let others = self.swim.active_members().saturating_sub(1).max(1);
                let estimate = self
                    .swim
                    .config()
                    .probe_interval
                    .saturating_mul(u32::try_from(others).unwrap_or(u32::MAX));
                tracker.heartbeat(now, &heard.target, heard.rtt, estimate);
            }
        }
    }
}

/// Whether `a` and `b` have the same IP (an IPv4-mapped IPv6 address is its IPv4 one).
fn same_ip(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip().to_canonical() == b.ip().to_canonical()
}
