//! The probe cycle: ping, then ping-req through `indirect_checks` members (and a stream ping),
//! then suspicion; and the other side: answering pings and running indirect probes for others.

use super::message::{Ack, MemberState, Message, Nack, Ping, PingReq, Suspect};
use super::swim::{Channel, Swim};
use super::{Output, Timer};
use crate::common::Time;
use crate::identity::Incarnation;
use crate::identity::NodeId;
use rustc_hash::FxHashMap;
use std::net::SocketAddr;

/// The probe this node is running.
#[derive(Debug, Clone)]
pub(crate) struct ActiveProbe {
    pub seq: u32,
    pub target: NodeId,
    pub target_addr: SocketAddr,
    pub incarnation: Incarnation,
    pub acked: bool,
    pub expected_nacks: u32,
    pub nacks: u32,
    /// The direct ack was overdue and indirect probes went out.
    pub overdue: bool,
    /// When the ping went out.
    pub started: Time,
    /// When the direct ack is due (its `ProbeTimeout` timer).
    pub ack_due: Time,
    /// When the probe period ends (its `ProbeEnd` timer).
    pub ends: Time,
    /// A timer of this probe fired a whole ack wait late (see `on_probe_end`).
    pub late: bool,
    /// Members asked to probe the target for us: with the target, the only sources whose ack
    /// (and nack) counts.
    pub helpers: Vec<SocketAddr>,
}

/// An indirect probe run on behalf of another node.
#[derive(Debug, Clone)]
pub(crate) struct IndirectProbe {
    pub requester: SocketAddr,
    /// The member pinged for the requester: only its ack is passed on.
    pub target_addr: SocketAddr,
    pub requester_seq: u32,
    pub nack: bool,
}

#[derive(Debug, Default)]
pub(crate) struct ProbeState {
    /// Next row of the member table to consider.
    pub index: usize,
    pub seq: u32,
    pub current: Option<ActiveProbe>,
    /// By our own sequence number (looked up, never iterated).
    pub indirect: FxHashMap<u32, IndirectProbe>,
}

impl Swim {
    pub(crate) fn next_seq(&mut self) -> u32 {
        self.probe.seq = self.probe.seq.wrapping_add(1);
        self.probe.seq
    }

    pub(crate) fn on_probe_tick(&mut self) {
        let interval = self
            .config
            .scaled(self.config.probe_interval, self.awareness.score());
        self.arm(interval, Timer::ProbeTick);
        // The previous probe's period ends now, whichever of its end timer and this tick the
        // driver happens to deliver first.
        if let Some(seq) = self.probe.current.as_ref().map(|p| p.seq) {
            self.on_probe_end(seq);
        }
        if self.leaving {
            return;
        }
        if let Some(target) = self.next_probe_target() {
            self.probe_member(target);
        }
    }

    /// Round-robin over the table; at the end of a round the table is reshuffled and old dead
    /// members reaped. Returns the row index of the next alive or suspect member.
    fn next_probe_target(&mut self) -> Option<usize> {
        for _ in 0..=self.members.len() {
            if self.probe.index >= self.members.len() {
                let reap_before = crate::common::Time::from_micros(
                    self.now
                        .mono
                        .as_micros()
                        .saturating_sub(self.config.dead_retention.as_micros() as u64),
                );
                let me = self.id.clone();
                self.members
                    .reshuffle_and_reap(&mut self.rng, reap_before, &me);
                self.probe.index = 0;
            }
            let i = self.probe.index;
            self.probe.index += 1;
            let m = self.members.at(i);
            if m.id() != &self.id && m.is_active() {
                return Some(i);
            }
        }
        None
    }

    fn probe_member(&mut self, row: usize) {
        let m = self.members.at(row);
        let (target, addr, incarnation, suspect) = (
            m.id().clone(),
            m.info.addr,
            m.incarnation,
            m.state == MemberState::Suspect,
        );
        let seq = self.next_seq();
        self.stats.probes += 1;
        let a = self.awareness.score();
        let period = self.config.scaled(self.config.probe_interval, a);
        let ack_wait = self.config.scaled(self.config.probe_timeout, a);
        self.probe.current = Some(ActiveProbe {
            seq,
            target: target.clone(),
            target_addr: addr,
            incarnation,
            acked: false,
            expected_nacks: 0,
            nacks: 0,
            overdue: false,
            started: self.now.mono,
            ack_due: self.now.mono + ack_wait,
            ends: self.now.mono + period,
            late: false,
            helpers: Vec::new(),
        });
        let ping = Message::Ping(Ping {
            seq,
            target: target.clone(),
            source: self.id.clone(),
        });
        self.send_probe_packet(addr, ping, suspect.then_some((target, incarnation)));
        self.arm(ack_wait, Timer::ProbeTimeout { seq });
        self.arm(period, Timer::ProbeEnd { seq });
    }

    /// A ping, with (Lifeguard's buddy system) the suspicion about the target right behind it so
    /// that a suspect learns of it from its prober and can refute at once.
    pub(crate) fn send_probe_packet(
        &mut self,
        to: SocketAddr,
        ping: Message,
        buddy: Option<(NodeId, Incarnation)>,
    ) {
        // The suspicion goes ahead of the ping: the suspect refutes first, so the refutation
        // rides on its ack. Both count against the packet budget before gossip fills the rest.
        let from = self.id.clone();
        let suspect = buddy
            .filter(|_| self.config.lifeguard)
            .map(|(node, incarnation)| {
                Message::Suspect(Suspect {
                    incarnation,
                    node,
                    from,
                })
            });
        let msgs = self.fill_packet(suspect.into_iter().chain([ping]).collect());
        self.out.push(super::Output::Packet { to, msgs });
    }

    pub(crate) fn on_probe_timeout(&mut self, seq: u32) {
        let Some(p) = self
            .probe
            .current
            .as_ref()
            .filter(|p| p.seq == seq && !p.acked)
        else {
            return;
        };
        let (target, addr) = (p.target.clone(), p.target_addr);
        let late = self.now.mono.saturating_since(p.ack_due) >= self.config.probe_timeout;
        let me = self.id.clone();
        let helpers = self
            .members
            .sample(&mut self.rng, self.config.indirect_checks, |m| {
                m.state == MemberState::Alive && m.id() != &me && m.id() != &target
            });
        let nack = self.config.lifeguard;
        for &i in &helpers {
            let to = self.members.at(i).info.addr;
            let req = PingReq {
                seq,
                target: target.clone(),
                target_addr: addr,
                source: me.clone(),
                nack,
            };
            self.stats.indirect_probes += 1;
            self.send_packet(to, Message::PingReq(Box::new(req)));
        }
        let asked = helpers.iter().map(|&i| self.members.at(i).info.addr);
        if let Some(p) = self.probe.current.as_mut() {
            p.expected_nacks = if nack { helpers.len() as u32 } else { 0 };
            p.overdue = true;
            p.late |= late;
            p.helpers = asked.collect();
        }
        if self.config.tcp_fallback_probe {
            let ping = Message::Ping(Ping {
                seq,
                target,
                source: me,
            });
            self.send_stream(addr, ping);
        }
    }

    pub(crate) fn on_probe_end(&mut self, seq: u32) {
        let Some(p) = self.probe.current.take_if(|p| p.seq == seq) else {
            return;
        };
        // With a timer of the probe a whole ack wait late, this node was not running when it
        // should have been (an overloaded host, a pause): its own health is in doubt
        // (Lifeguard's multiplier goes up, slowing its probes), and so is a missing ack, which
        // may sit unread behind the backlog, or was asked of helpers too late, or comes from a
        // peer slowed by the same host. No suspicion is raised on it: on a loaded host,
        // suspicions and the refutations they cause were the load that kept it loaded.
        let late = p.late || self.now.mono.saturating_since(p.ends) >= self.config.probe_timeout;
        if late {
            self.stats.probes_late += 1;
            if self.config.lifeguard {
                self.awareness.apply(1);
            }
        }
        if p.acked {
            return;
        }
        self.stats.probes_failed += 1;
        if late {
            return;
        }
        if self.config.lifeguard {
            let missed = p.expected_nacks.saturating_sub(p.nacks);
            let delta = if p.expected_nacks > 0 { missed } else { 1 };
            self.awareness.apply(delta as i32);
        }
        let still_there = self
            .members
            .get(&p.target)
            .is_some_and(|m| m.is_active() && m.incarnation == p.incarnation);
        if still_there {
            self.stats.suspicions_raised += 1;
            let s = Suspect {
                incarnation: p.incarnation,
                node: p.target,
                from: self.id.clone(),
            };
            self.on_suspect(s);
        }
    }

    /// An ack counts only from the address pinged or a helper asked (a guessed sequence number
    /// from elsewhere neither saves a dead target nor is passed on).
    pub(crate) fn on_ack(&mut self, from: SocketAddr, seq: u32) {
        if self.on_move_ack(from, seq) {
            return;
        }
        let ours = |p: &&mut ActiveProbe| {
            p.seq == seq && (p.target_addr == from || p.helpers.contains(&from))
        };
        if let Some(p) = self.probe.current.as_mut().filter(ours) {
            let mut direct = None;
            if !p.acked {
                p.acked = true;
                let rtt = self.now.mono.saturating_since(p.started);
                self.stats.probe_rtt.observe(rtt);
                // The target's own ack times the path to it; a relayed one does not.
                direct = (p.target_addr == from).then(|| (p.target.clone(), rtt));
                // Only an ack in time is a sign of good health. One that needed the indirect
                // round is not: a node that is itself slow sees every ack late, and must not
                // talk its multiplier down with them (memberlist counts any ack as -1).
                if self.config.lifeguard && !p.overdue {
                    self.awareness.apply(-1);
                }
            }
            if let Some((target, rtt)) = direct {
                self.observe_rtt(&target, from, rtt);
            }
            return;
        }
        let theirs = self
            .probe
            .indirect
            .get(&seq)
            .is_some_and(|i| i.target_addr == from);
        if let Some(ind) = theirs.then(|| self.probe.indirect.remove(&seq)).flatten() {
            self.send_packet(
                ind.requester,
                Message::Ack(Ack {
                    seq: ind.requester_seq,
                }),
            );
        }
    }

    pub(crate) fn on_nack(&mut self, from: SocketAddr, seq: u32) {
        let ours = |p: &&mut ActiveProbe| p.seq == seq && p.helpers.contains(&from);
        if let Some(p) = self.probe.current.as_mut().filter(ours) {
            p.nacks += 1;
            self.stats.nacks += 1;
        }
    }

    pub(crate) fn on_ping(&mut self, from: SocketAddr, ping: Ping, channel: Channel) {
        if ping.target != self.id {
            // Meant for a previous owner of our address: staying silent lets it be detected.
            self.stats.dropped += 1;
            return;
        }
        let ack = Message::Ack(Ack { seq: ping.seq });
        match channel {
            Channel::Packet => {
                let msgs = self.ack_packet(ack);
                self.out.push(Output::Packet { to: from, msgs });
            }
            Channel::Stream => self.send_stream(from, ack),
        }
    }

    pub(crate) fn on_ping_req(&mut self, from: SocketAddr, req: PingReq, channel: Channel) {
        if self.probe.indirect.len() >= self.config.indirect_pending_max || self.leaving {
            self.stats.dropped += 1;
            return;
        }
        // No reflection: this node pings only a member it knows, at the address it knows for
        // it, and answers only a datagram's real source (a stream's sender address is a claim).
        let known = self
            .members
            .get(&req.target)
            .is_some_and(|m| m.info.addr == req.target_addr);
        if !known || channel != Channel::Packet {
            self.stats.misdirected += 1;
            return;
        }
        let seq = self.next_seq();
        self.probe.indirect.insert(
            seq,
            IndirectProbe {
                requester: from,
                target_addr: req.target_addr,
                requester_seq: req.seq,
                nack: req.nack,
            },
        );
        let ping = Message::Ping(Ping {
            seq,
            target: req.target,
            source: self.id.clone(),
        });
        self.send_packet(req.target_addr, ping);
        if req.nack {
            self.arm(self.config.probe_timeout, Timer::IndirectNack { seq });
        }
        self.arm(self.config.probe_interval, Timer::IndirectExpire { seq });
    }

    pub(crate) fn on_indirect_nack(&mut self, seq: u32) {
        if let Some(ind) = self.probe.indirect.get(&seq).filter(|i| i.nack) {
            let (to, requester_seq) = (ind.requester, ind.requester_seq);
            self.send_packet(to, Message::Nack(Nack { seq: requester_seq }));
        }
    }

    pub(crate) fn on_indirect_expire(&mut self, seq: u32) {
        self.probe.indirect.remove(&seq);
    }
}
