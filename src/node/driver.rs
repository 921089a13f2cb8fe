//! The driver task: the one place that owns the core and carries out its outputs.

use super::stream::{self, Received, SecurityOwned};
use super::traffic::Traffic;
use super::{Request, DATAGRAM_BYTES_MAX};
use crate::cluster::{
    decode_packet, encode_packet, Event, Input, MemberView, Now, Output, Swim, Time, Timer,
};
use crate::transport::faults::Faults;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub(crate) struct Driver {
    swim: Swim,
    udp: UdpSocket,
    me: SocketAddr,
    sec: SecurityOwned,
    events: broadcast::Sender<Event>,
    members: Arc<Mutex<Vec<MemberView>>>,
    /// Armed timers by (due time, arming order).
    timers: BTreeMap<(Time, u64), Timer>,
    timer_seq: u64,
    origin: Instant,
    out: Vec<Output>,
    sends: JoinSet<()>,
    /// The fault layer, if any: consulted for every datagram in and out.
    pub faults: Option<Arc<Faults>>,
    fault_rng: ChaCha8Rng,
    pub traffic: Arc<Traffic>,
}

impl Driver {
    pub fn new(
        swim: Swim,
        udp: UdpSocket,
        me: SocketAddr,
        sec: SecurityOwned,
        events: broadcast::Sender<Event>,
        members: Arc<Mutex<Vec<MemberView>>>,
    ) -> Self {
        Driver {
            swim,
            udp,
            me,
            sec,
            events,
            members,
            timers: BTreeMap::new(),
            timer_seq: 0,
            origin: Instant::now(),
            out: Vec::new(),
            sends: JoinSet::new(),
            faults: None,
            fault_rng: ChaCha8Rng::from_rng(rand::rngs::OsRng).expect("the OS has randomness"),
            traffic: Arc::default(),
        }
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
        mut streams: mpsc::Receiver<Received>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
        let now = self.now();
        self.swim.start(now, &mut self.out);
        self.apply().await;
        loop {
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
                r = self.udp.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        self.on_datagram(from, &buf[..n]);
                    }
                }
                Some((from, msg)) = streams.recv() => self.feed(Input::Stream { from, msg }),
                _ = sleep, if next.is_some() => self.fire_timers(),
            }
            self.apply().await;
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
        }
    }

    fn faults_pass(&mut self, peer: SocketAddr, outgoing: bool) -> bool {
        let rng = &mut self.fault_rng;
        self.faults
            .as_ref()
            .is_none_or(|f| f.pass(peer, outgoing, rng))
    }

    fn on_datagram(&mut self, from: SocketAddr, bytes: &[u8]) {
        Traffic::add(&self.traffic.datagrams_in, 1);
        Traffic::add(&self.traffic.bytes_in, bytes.len() as u64);
        if !self.faults_pass(from, false) {
            return;
        }
        let body = match self.sec.open(bytes) {
            Ok(b) => b,
            Err(e) => {
                Traffic::add(&self.traffic.rejected_frame, 1);
                tracing::debug!(%from, error = %e, "datagram dropped");
                return;
            }
        };
        match decode_packet(&body) {
            Ok(p) => self.feed(Input::Packet {
                from,
                msgs: p.messages,
            }),
            Err(e) => {
                Traffic::add(&self.traffic.rejected_packet, 1);
                tracing::debug!(%from, error = %e, "datagram dropped");
            }
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
        while self.sends.try_join_next().is_some() {}
        let mut changed = false;
        for o in std::mem::take(&mut self.out) {
            match o {
                Output::Packet { to, .. } if !self.faults_pass(to, true) => {}
                Output::Packet { to, msgs } => {
                    let frame = self.sec.seal(&encode_packet(&msgs));
                    Traffic::add(&self.traffic.datagrams_out, 1);
                    Traffic::add(&self.traffic.msgs_out, msgs.len() as u64);
                    Traffic::add(&self.traffic.bytes_out, frame.len() as u64);
                    if let Err(e) = self.udp.send_to(&frame, to).await {
                        tracing::debug!(%to, error = %e, "datagram send failed");
                    }
                }
                Output::Stream { to, msg } => {
                    let record = stream::record(self.me, &msg, &self.sec);
                    Traffic::add(&self.traffic.streams_out, 1);
                    Traffic::add(&self.traffic.msgs_out, 1);
                    Traffic::add(&self.traffic.bytes_out, record.len() as u64);
                    self.sends.spawn(stream::send(to, record));
                }
                Output::Timer { at, timer } => {
                    self.timer_seq += 1;
                    self.timers.insert((at, self.timer_seq), timer);
                }
                Output::Event(e) => {
                    changed |= e.member().is_some();
                    let _ = self.events.send(e);
                }
            }
        }
        if changed {
            let me = self.swim.id().clone();
            let views = self
                .swim
                .members()
                .filter(|m| m.id() != &me)
                .map(|m| MemberView {
                    info: m.info.clone(),
                    incarnation: m.incarnation,
                    state: m.state,
                });
            *self.members.lock().expect("members lock") = views.collect();
        }
    }
}
