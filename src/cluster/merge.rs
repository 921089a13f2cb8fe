//! The merge rules for membership claims (design §3): a higher incarnation wins; at equal
//! incarnation `Dead`/`Left` beat `Suspect`, which beats `Alive`. Only a member raises its own
//! incarnation, to refute a suspicion or death claim about itself.

use super::members::Member;
use super::message::{Alive, Dead, MemberState, Message, Ping, PushMember, Suspect};
use super::suspicion::{suspicion_min, Suspicion};
use super::swim::{Admit, Swim, DOWN_CLAIM_JUMP_MAX, INCARNATION_JUMP_MAX};
use super::{Event, MemberView, Timer};
use crate::identity::{tags_len, Incarnation, NodeId, NodeInfo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Moves of members to new addresses waiting for their old address to stay silent (see
/// `Swim::check_move`); more claims to move are refused as conflicts meanwhile.
pub(crate) const MOVES_PENDING_MAX: usize = 64;

/// Failed and departed rows kept however few members have been active (see
/// `Swim::evict_down_members`).
pub(crate) const DOWN_RETAINED_MIN: usize = 64;

/// Relayed leaves waiting to be refuted (see `Swim::on_leave_claim`); past this many, a leave
/// is believed at once.
pub(crate) const LEAVES_PENDING_MAX: usize = 1024;

/// A relayed leave, believed if the member does not refute it within a probe period.
pub(crate) struct PendingLeave {
    incarnation: Incarnation,
    generation: u64,
}

/// A claim that moves a failed or departed member, waiting on a probe of its old address.
pub(crate) struct PendingMove {
    claim: Alive,
    old_addr: SocketAddr,
    seq: u32,
    generation: u64,
}

impl Swim {
    /// Whether a claim at `claimed` about a member known at `known` is a plausible step (see
    /// [`INCARNATION_JUMP_MAX`]); an implausible one is counted, and the caller drops it.
    fn plausible(&mut self, known: Incarnation, claimed: Incarnation) -> bool {
        self.within(known, claimed, INCARNATION_JUMP_MAX)
    }

    /// Whether `claimed` is at most `step` above `known`; counted when it is not.
    fn within(&mut self, known: Incarnation, claimed: Incarnation, step: u64) -> bool {
        let ok = claimed.0 <= known.0.saturating_add(step);
        if !ok {
            self.stats.implausible += 1;
        }
        ok
    }

    pub(crate) fn on_alive(&mut self, a: Alive) {
        // Checked on receipt, so an oversized claim never sits in the broadcast queue.
        if tags_len(&a.info.tags) > self.config.tags_bytes_max {
            self.stats.over_limit += 1;
            return;
        }
        if a.info.id == self.id {
            self.on_alive_about_us(a);
            return;
        }
        if !self.config.allows(a.info.addr.ip()) {
            self.stats.not_allowed += 1;
            return;
        }
        let id = a.info.id.clone();
        let Some(old) = self.members.get(&id) else {
            self.add_member(a);
            return;
        };
        if a.incarnation <= old.incarnation {
            return;
        }
        // The member's own word, from its own address, may move it any amount: that is how a
        // node whose view fell far behind (a partition, a flood of forged claims) catches up.
        let (known, direct) = (old.incarnation, self.direct_from == Some(old.info.addr));
        let own_word = direct && a.info.addr == old.info.addr;
        if !(own_word || self.plausible(known, a.incarnation)) {
            return;
        }
        let old = self.members.get(&id).expect("looked up above");
        if old.info.addr != a.info.addr {
            if self.may_move(old) {
                self.check_move(a);
            } else {
                let member = Swim::view(old);
                self.conflict(member, a.info);
            }
            return;
        }
        self.accept_alive(a);
    }

    /// Counts and reports a claim that would have moved `member` to another address.
    fn conflict(&mut self, member: MemberView, claimed: Arc<NodeInfo>) {
        self.stats.conflicts += 1;
        tracing::debug!(node = %self.id, member = %member.info.id, from = %member.info.addr,
            to = %claimed.addr, "address conflict: claim refused");
        self.emit(Event::MemberConflict { member, claimed });
    }

    /// Takes a plausible, newer alive claim about a known member.
    fn accept_alive(&mut self, a: Alive) {
        let id = a.info.id.clone();
        let Some(old) = self.members.get(&id) else {
            return;
        };
        let (old_state, changed) = (old.state, old.info != a.info);
        let now = self.now.mono;
        let info = if changed {
            a.info.clone()
        } else {
            old.info.clone()
        };
        self.members.update(&id, |m| {
            m.incarnation = a.incarnation;
            m.info = info;
            if m.state != MemberState::Alive {
                m.state = MemberState::Alive;
                m.state_since = now;
            }
        });
        self.suspicions.remove(&id);
        self.note_active_peak();
        let view = Swim::view(self.members.get(&id).expect("just updated"));
        match old_state {
            MemberState::Alive if changed => self.emit(Event::MemberUpdated(view)),
            MemberState::Alive => {}
            MemberState::Suspect | MemberState::Dead => self.emit(Event::MemberRecovered(view)),
            MemberState::Left => self.emit(Event::MemberJoined(view)),
        }
        self.queue_member_claim(id, Message::Alive(a));
    }

    /// A claim moves a member that failed or left long enough ago to another address. A leave
    /// can be forged, and so can the claim, so before the move the old address is probed once,
    /// with a suspicion attached: a member still living there acks (and refutes), and the move
    /// is refused as a conflict; silence for a probe period lets it through. Pending moves are
    /// bounded by [`MOVES_PENDING_MAX`]; a newer claim replaces the pending one.
    fn check_move(&mut self, a: Alive) {
        let id = a.info.id.clone();
        if let Some(p) = self.moves.get_mut(&id) {
            if a.incarnation > p.claim.incarnation {
                p.claim = a;
            }
            return;
        }
        if self.moves.len() >= MOVES_PENDING_MAX {
            self.stats.conflicts += 1;
            return;
        }
        let m = self.members.get(&id).expect("caller looked it up");
        let (old_addr, incarnation) = (m.info.addr, m.incarnation);
        next_generation(&mut self.generation);
        let generation = self.generation;
        let suspect = self.suspect_claim(&id, incarnation);
        let timer = Timer::MoveCheck {
            node: id.clone(),
            generation,
        };
        let seq = self.ping_with_claim(old_addr, id.clone(), suspect, timer);
        self.moves.insert(
            id,
            PendingMove {
                claim: a,
                old_addr,
                seq,
                generation,
            },
        );
    }

    /// Our suspicion of `node` at `incarnation`, to ride ahead of a ping to it (Lifeguard's
    /// buddy system), or none with Lifeguard off.
    fn suspect_claim(&self, node: &NodeId, incarnation: Incarnation) -> Option<Message> {
        self.config.lifeguard.then(|| {
            Message::Suspect(Suspect {
                incarnation,
                node: node.clone(),
                from: self.id.clone(),
            })
        })
    }

    /// The check behind the last-chance probe, an address move and a relayed leave: pings
    /// `node` at `to` with `claim` ahead of the ping (a live member answers it on the ack) and
    /// arms `timer` one probe period (stretched by local health) later, when the check decides.
    /// Returns the ping's sequence number.
    fn ping_with_claim(
        &mut self,
        to: SocketAddr,
        node: NodeId,
        claim: Option<Message>,
        timer: Timer,
    ) -> u32 {
        let wait = self.ack_wait();
        self.ping_with_claim_for(to, node, claim, timer, wait)
    }

    /// How long a probe with a claim waits for its ack: one (health-scaled) probe period.
    fn ack_wait(&self) -> Duration {
        self.config
            .scaled(self.config.probe_interval, self.awareness.score())
    }

    fn ping_with_claim_for(
        &mut self,
        to: SocketAddr,
        node: NodeId,
        claim: Option<Message>,
        timer: Timer,
        wait: Duration,
    ) -> u32 {
        let seq = self.next_seq();
        let ping = Message::Ping(Ping {
            seq,
            target: node,
            source: self.id.clone(),
        });
        let msgs = self.fill_packet(claim.into_iter().chain([ping]).collect());
        self.out.push(super::Output::Packet { to, msgs });
        self.arm(wait, timer);
        seq
    }

    /// An ack from the old address of a member with a pending move: it lives there.
    pub(crate) fn on_move_ack(&mut self, from: SocketAddr, seq: u32) -> bool {
        let Some(id) = self
            .moves
            .iter()
            .find(|(_, p)| p.seq == seq && p.old_addr == from)
            .map(|(id, _)| id.clone())
        else {
            return false;
        };
        let p = self.moves.remove(&id).expect("found above");
        if let Some(m) = self.members.get(&id) {
            let member = Swim::view(m);
            self.conflict(member, p.claim.info);
        }
        true
    }

    /// The old address stayed silent for a probe period: the move goes through, unless the
    /// member came back to life at its old address meanwhile (then it is a conflict).
    pub(crate) fn on_move_check(&mut self, node: NodeId, generation: u64) {
        if self
            .moves
            .get(&node)
            .is_none_or(|p| p.generation != generation)
        {
            return;
        }
        let p = self.moves.remove(&node).expect("checked above");
        let Some(m) = self.members.get(&node) else {
            return;
        };
        if m.info.addr != p.old_addr || !self.may_move(m) {
            let member = Swim::view(m);
            self.conflict(member, p.claim.info);
            return;
        }
        if p.claim.incarnation > m.incarnation {
            self.accept_alive(p.claim);
        }
    }

    /// Someone claims we are alive: fine if it is our own claim; a higher incarnation (a claim
    /// from before a restart) or different details (an impostor or stale address) get refuted.
    fn on_alive_about_us(&mut self, a: Alive) {
        let me = self.local();
        let stale = a.incarnation > me.incarnation
            || (a.incarnation == me.incarnation && a.info != me.info);
        if stale && !self.leaving && self.plausible_about_us(a.incarnation) {
            self.refute(a.incarnation);
        }
    }

    /// Whether a claim about this node at `claimed` may move its incarnation: a plausible step,
    /// or any step while the state of the seed we join through is merged.
    fn plausible_about_us(&mut self, claimed: Incarnation) -> bool {
        self.trust_jumps || self.plausible(self.incarnation(), claimed)
    }

    /// Whether a member may move to another address: once it has been failed or gone (left)
    /// for `dead_reclaim_time`; never while alive or suspect. memberlist lets a member that left
    /// move at once, but a leave can be forged as easily as a claim, and a forged leave followed
    /// by a forged alive elsewhere would move a live member.
    fn may_move(&self, m: &Member) -> bool {
        match m.state {
            MemberState::Left | MemberState::Dead => {
                self.now.mono.saturating_since(m.state_since) >= self.config.dead_reclaim_time
            }
            MemberState::Alive | MemberState::Suspect => false,
        }
    }

    /// Whether a new member may be added now: room in the table, and the admission caps of
    /// where the claim comes from (see [`Admit`]). A refusal is counted.
    fn admit_new(&mut self, a: &Alive) -> bool {
        if self.members.len() >= self.config.members_max {
            self.stats.table_full += 1;
            return false;
        }
        let ok = match self.admit {
            Admit::JoinReply => return true,
            Admit::Unsolicited(from) => a.info.addr == from,
            Admit::Reply(left) => {
                self.admit = Admit::Reply(left.saturating_sub(1));
                left > 0
            }
            Admit::Gossip => true,
        };
        if !ok || !self.take_admit_token() {
            self.stats.admission += 1;
            return false;
        }
        true
    }

    /// One token of the per-second admission bucket, if there is one.
    fn take_admit_token(&mut self) -> bool {
        let (rate, now) = (self.config.members_admit_per_sec, self.now.mono);
        self.admit_bucket.take(rate, now)
    }

    fn add_member(&mut self, a: Alive) {
        if !self.admit_new(&a) {
            return;
        }
        let id = a.info.id.clone();
        let m = Member::new(
            a.info.clone(),
            a.incarnation,
            MemberState::Alive,
            self.now.mono,
        );
        self.emit(Event::MemberJoined(Swim::view(&m)));
        self.members.insert_at_random(m, &mut self.rng);
        self.note_active_peak();
        // A member first heard of in a sync is old news to the peer, and spreads by gossip from
        // whoever heard its claim: passing it on too would fill the gossip with joins that syncs
        // already carry (a burst of joins sends every claim to every node a dozen times).
        if !self.in_sync {
            self.queue_join_claim(id, Message::Alive(a));
        }
    }

    /// The common start of a suspect or dead claim: refuted if it is about us; otherwise the
    /// member it is about, if we know it alive or suspect at no newer incarnation.
    fn down_claim_target(&mut self, node: &NodeId, incarnation: Incarnation) -> Option<&Member> {
        if node == &self.id {
            if incarnation >= self.incarnation()
                && !self.leaving
                && self.plausible_about_us(incarnation)
            {
                self.refute(incarnation);
            }
            return None;
        }
        let known = self.members.get(node)?.incarnation;
        if !self.trust_jumps && !self.within(known, incarnation, DOWN_CLAIM_JUMP_MAX) {
            return None;
        }
        self.members
            .get(node)
            .filter(|m| incarnation >= m.incarnation && m.is_active())
    }

    pub(crate) fn on_suspect(&mut self, s: Suspect) {
        let Some(m) = self.down_claim_target(&s.node, s.incarnation) else {
            return;
        };
        if m.state == MemberState::Suspect && s.incarnation == m.incarnation {
            self.confirm_suspicion(s);
            return;
        }
        self.start_suspicion(s);
    }

    /// Another member independently suspects the same incarnation: the timeout shrinks and the
    /// confirmation is passed on so that others shrink theirs too.
    fn confirm_suspicion(&mut self, s: Suspect) {
        // Only a member this node knows alive can confirm: invented names must not shrink the
        // timeout of a live member.
        let confirmer_alive = s.from != s.node
            && self
                .members
                .get(&s.from)
                .is_some_and(|m| m.state == MemberState::Alive);
        if !confirmer_alive {
            return;
        }
        let Some(susp) = self.suspicions.get_mut(&s.node) else {
            return;
        };
        if !self.config.lifeguard || !susp.confirm(&s.from) {
            return;
        }
        next_generation(&mut self.generation);
        susp.generation = self.generation;
        let generation = susp.generation;
        let after = self.suspicion_wait(&s.node);
        self.arm(
            after,
            Timer::Suspicion {
                node: s.node.clone(),
                generation,
            },
        );
        self.queue_member_claim(s.node.clone(), Message::Suspect(s));
    }

    fn start_suspicion(&mut self, s: Suspect) {
        let n = self.cluster_size();
        let min = suspicion_min(self.config.suspicion_mult, n, self.config.probe_interval);
        let (max, k) = if self.config.lifeguard {
            let k = self.config.suspicion_mult.saturating_sub(2);
            let k = if n.saturating_sub(2) < k as usize {
                0
            } else {
                k
            };
            (min * self.config.suspicion_max_mult, k)
        } else {
            (min, 0)
        };
        next_generation(&mut self.generation);
        let susp = Suspicion::new(s.from.clone(), self.now.mono, min, max, k, self.generation);
        let now = self.now.mono;
        self.members.update(&s.node, |m| {
            m.incarnation = s.incarnation;
            m.state = MemberState::Suspect;
            m.state_since = now;
        });
        self.suspicions.insert(s.node.clone(), susp);
        let after = self.suspicion_wait(&s.node);
        self.arm(
            after,
            Timer::Suspicion {
                node: s.node.clone(),
                generation: self.generation,
            },
        );
        let view = Swim::view(self.members.get(&s.node).expect("present"));
        tracing::debug!(node = %self.id, suspect = %s.node, from = %s.from, "suspect");
        self.emit(Event::MemberSuspected(view));
        self.queue_member_claim(s.node.clone(), Message::Suspect(s));
    }

    /// Time until the suspicion timer about `node` should fire: one ack wait before the
    /// deadline for the last-chance probe, then the deadline, and never sooner than one ack
    /// wait after that probe.
    fn suspicion_wait(&self, node: &NodeId) -> Duration {
        let Some(susp) = self.suspicions.get(node) else {
            return Duration::ZERO;
        };
        let now = self.now.mono;
        let to_deadline = susp.deadline().saturating_since(now);
        if !self.config.lifeguard {
            return to_deadline;
        }
        let ack_wait = self.ack_wait();
        match susp.last_chance {
            None => to_deadline.saturating_sub(ack_wait),
            Some(at) => to_deadline.max((at + ack_wait).saturating_since(now)),
        }
    }

    pub(crate) fn on_suspicion_timeout(&mut self, node: NodeId, generation: u64) {
        let Some(susp) = self
            .suspicions
            .get_mut(&node)
            .filter(|s| s.generation == generation)
        else {
            return;
        };
        let Some(m) = self
            .members
            .get(&node)
            .filter(|m| m.state == MemberState::Suspect)
        else {
            return;
        };
        // Before declaring a death on its own timeout, this node probes the suspect once more,
        // with the suspicion attached (forged confirmations may have shortened the timeout): a
        // live suspect refutes, or answers with the newer incarnation we missed; a dead one
        // stays silent. The probe goes out one ack wait before the deadline, so it costs no
        // detection time, and the death is declared no sooner than one ack wait after it.
        if self.config.lifeguard && susp.last_chance.is_none() {
            susp.last_chance = Some(self.now.mono);
            next_generation(&mut self.generation);
            susp.generation = self.generation;
            let (addr, incarnation) = (m.info.addr, m.incarnation);
            let suspect = self.suspect_claim(&node, incarnation);
            let timer = Timer::Suspicion {
                node: node.clone(),
                generation: self.generation,
            };
            let wait = self.suspicion_wait(&node);
            self.ping_with_claim_for(addr, node, suspect, timer, wait);
            return;
        }
        self.stats.failures_declared += 1;
        let d = Dead {
            incarnation: m.incarnation,
            node,
            from: self.id.clone(),
        };
        self.on_dead(d);
    }

    /// A death declared by another node. Believed only about a member this node has itself
    /// suspected at that incarnation for at least the shortest suspicion timeout, time enough
    /// for a live member to have refuted; otherwise it counts as a suspicion (or a confirmation
    /// of the running one). So one forged `Dead` about a live member makes it refute, never
    /// fail, while an honest declaration reaches the others after their own suspicion.
    pub(crate) fn on_dead_claim(&mut self, d: Dead) {
        if d.node == self.id {
            self.on_dead(d);
            return;
        }
        if d.from == d.node {
            self.on_leave_claim(d);
            return;
        }
        let Some(m) = self.down_claim_target(&d.node, d.incarnation) else {
            return;
        };
        let ripe = m.state == MemberState::Suspect
            && m.incarnation == d.incarnation
            && self
                .suspicions
                .get(&d.node)
                .is_some_and(|s| self.now.mono.saturating_since(s.start) >= s.min);
        if ripe {
            self.on_dead(d);
        } else {
            self.on_suspect(Suspect {
                incarnation: d.incarnation,
                node: d.node,
                from: d.from,
            });
        }
    }

    /// A member's leave (`Dead` with `from == node`). From the member's own address it is
    /// believed at once. Relayed by anyone else it may be forged (nothing signs it on a plain
    /// cluster), so the member is first probed with the leave attached: a live member refutes,
    /// and its refutation rides back on the ack; a leaving one does not, and is marked gone
    /// when the check ends, one probe period later, and only then passed on. Checks are bounded
    /// by [`LEAVES_PENDING_MAX`]; past it a leave is believed at once.
    fn on_leave_claim(&mut self, d: Dead) {
        if d.node == self.id {
            self.on_dead(d);
            return;
        }
        let Some(addr) = self
            .down_claim_target(&d.node, d.incarnation)
            .map(|m| m.info.addr)
        else {
            return;
        };
        let own_word = self.direct_from == Some(addr);
        if own_word || self.leaves.len() >= LEAVES_PENDING_MAX {
            self.on_dead(d);
            return;
        }
        if self
            .leaves
            .get(&d.node)
            .is_some_and(|p| p.incarnation >= d.incarnation)
        {
            return;
        }
        next_generation(&mut self.generation);
        let generation = self.generation;
        self.leaves.insert(
            d.node.clone(),
            PendingLeave {
                incarnation: d.incarnation,
                generation,
            },
        );
        let timer = Timer::LeaveCheck {
            node: d.node.clone(),
            generation,
        };
        self.ping_with_claim(addr, d.node.clone(), Some(Message::Dead(d)), timer);
    }

    /// A relayed leave was not refuted within a probe period: the member is gone.
    pub(crate) fn on_leave_check(&mut self, node: NodeId, generation: u64) {
        if self
            .leaves
            .get(&node)
            .is_none_or(|p| p.generation != generation)
        {
            return;
        }
        let p = self.leaves.remove(&node).expect("checked above");
        self.on_dead(Dead {
            incarnation: p.incarnation,
            node: node.clone(),
            from: node,
        });
    }

    pub(crate) fn on_dead(&mut self, d: Dead) {
        if self.down_claim_target(&d.node, d.incarnation).is_none() {
            return;
        }
        let left = d.from == d.node;
        let state = if left {
            MemberState::Left
        } else {
            MemberState::Dead
        };
        let now = self.now.mono;
        self.members.update(&d.node, |m| {
            m.incarnation = d.incarnation;
            m.state = state;
            m.state_since = now;
        });
        self.suspicions.remove(&d.node);
        let view = Swim::view(self.members.get(&d.node).expect("present"));
        tracing::debug!(node = %self.id, member = %d.node, left, "member down");
        self.emit(if left {
            Event::MemberLeft(view)
        } else {
            Event::MemberFailed(view)
        });
        self.queue_member_claim(d.node.clone(), Message::Dead(d));
        self.evict_down_members();
    }

    /// Keeps at most as many failed and departed rows as the most active members this node has
    /// seen at once (and at least [`DOWN_RETAINED_MIN`]), dropping those down longest first:
    /// invented members that fail cannot pile up for `dead_retention`, and the table stays
    /// within about twice the largest the cluster has been. The peak, not today's count, so
    /// that the side of a partition that sees most of the cluster fail keeps every row it
    /// needs to heal (reconnects, and the death claims that make the other side refute).
    fn evict_down_members(&mut self) {
        self.note_active_peak();
        let cap = self.active_peak.max(DOWN_RETAINED_MIN);
        while self.members.len() - self.members.active() > cap {
            if self.members.evict_oldest_down(&self.id).is_none() {
                break;
            }
            self.stats.evicted += 1;
        }
    }

    /// Records the active-member count if it is the highest yet.
    fn note_active_peak(&mut self) {
        self.active_peak = self.active_peak.max(self.members.active());
    }

    /// One row of a peer's full state. A peer's "suspect" or "dead" about a member we see alive
    /// at the same or an older incarnation is not believed outright: the member is told
    /// directly (a suspect message in a packet to it) so that it refutes if it lives, and our
    /// own probes find out if it does not. memberlist instead suspects it locally, which after a
    /// healed partition has every node suspect every other for a moment; this keeps the heal
    /// quiet while still forcing the refutation that merges the two sides.
    pub(crate) fn merge_remote(&mut self, r: PushMember) {
        match r.state {
            MemberState::Alive => self.on_alive(Alive {
                incarnation: r.incarnation,
                info: r.info,
            }),
            MemberState::Left => {
                let id = r.info.id.clone();
                self.on_leave_claim(Dead {
                    incarnation: r.incarnation,
                    node: id.clone(),
                    from: id,
                });
            }
            MemberState::Suspect | MemberState::Dead => self.merge_remote_down(r),
        }
    }

    fn merge_remote_down(&mut self, r: PushMember) {
        let s = Suspect {
            incarnation: r.incarnation,
            node: r.info.id.clone(),
            from: self.id.clone(),
        };
        if let Some(known) = self.members.get(&s.node).map(|m| m.incarnation) {
            if s.node != self.id
                && !self.trust_jumps
                && !self.within(known, s.incarnation, DOWN_CLAIM_JUMP_MAX)
            {
                return;
            }
        }
        let alive_here = self
            .members
            .get(&s.node)
            .filter(|m| m.state == MemberState::Alive && m.incarnation <= s.incarnation)
            .map(|m| m.info.addr);
        match alive_here {
            Some(addr) if s.node != self.id => self.send_packet(addr, Message::Suspect(s)),
            _ => self.on_suspect(s),
        }
    }
}

/// Takes the next timer generation: a timer armed before carries an older one, and is ignored
/// when it fires.
fn next_generation(generation: &mut u64) {
    *generation += 1;
}
