//! Hand-driven tests of the core: messages passed one at a time, timers fired by hand.

use super::*;
use crate::cluster::message::{item_len, packet_len};
use crate::cluster::swim::{JOINS_SHARE_OF_PACKET, OUT_KEEP};
use crate::common::Now;
use crate::identity::NodeInfo;
use std::time::Duration;

pub(super) fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, i], 7946))
}

pub(super) fn id(i: u8) -> NodeId {
    NodeId::new(&format!("n{i}")).unwrap()
}

pub(super) fn info(i: u8) -> Arc<NodeInfo> {
    Arc::new(NodeInfo::new(id(i), addr(i)))
}

pub(super) fn at(ms: u64) -> Now {
    Now::at(Time::from_millis(ms))
}

/// A core for node `i` that knows nodes `others` as alive at incarnation 0.
pub(super) struct T {
    pub(super) swim: Swim,
    pub(super) out: Vec<Output>,
    pub(super) ms: u64,
}

impl T {
    /// With the LAN preset, but `suspicion_mult` 4 (the timeouts the tests below spell out).
    pub(super) fn new(i: u8, others: &[u8]) -> T {
        let config = Config {
            suspicion_mult: 4,
            ..Config::lan()
        };
        Self::with(config, i, others)
    }

    pub(super) fn with(config: Config, i: u8, others: &[u8]) -> T {
        let mut swim = Swim::new(config, (*info(i)).clone(), Incarnation(0), u64::from(i)).unwrap();
        let mut out = Vec::new();
        swim.start(at(0), &mut out);
        let mut t = T { swim, out, ms: 0 };
        for &o in others {
            t.msg(
                o,
                Message::Alive(Alive {
                    incarnation: Incarnation(0),
                    info: info(o),
                }),
            );
        }
        // Keep the armed timers for `fire_until`; drop the rest.
        t.out.retain(|o| matches!(o, Output::Timer { .. }));
        t
    }

    pub(super) fn input(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        self.swim.handle(at(self.ms), input, &mut out);
        self.out.extend(out.iter().cloned());
        out
    }

    pub(super) fn msg(&mut self, from: u8, msg: Message) -> Vec<Output> {
        self.input(Input::Packet {
            from: addr(from),
            msgs: vec![msg],
        })
    }

    pub(super) fn timer(&mut self, timer: Timer) -> Vec<Output> {
        self.input(Input::Timer(timer))
    }

    fn state(&self, i: u8) -> Option<(MemberState, u64)> {
        self.swim.member(&id(i)).map(|m| (m.state, m.incarnation.0))
    }

    /// Fires the timers armed so far (and those they arm), in time order, up to `until_ms`.
    pub(super) fn fire_until(&mut self, until_ms: u64) {
        loop {
            let next = self
                .out
                .iter()
                .filter_map(|o| match o {
                    Output::Timer { at, timer } if at.as_micros() <= until_ms * 1000 => {
                        Some((*at, timer.clone()))
                    }
                    _ => None,
                })
                .min_by_key(|(at, _)| *at);
            let Some((when, timer)) = next else { break };
            self.out.retain(
                |o| !matches!(o, Output::Timer { at, timer: t } if *at == when && *t == timer),
            );
            self.ms = self.ms.max(when.as_micros() / 1000);
            self.input(Input::Timer(timer));
        }
        self.ms = until_ms;
    }
}

/// Marks member `i` failed in `t`'s table now, as its own suspicion timeout would.
pub(super) fn fail(t: &mut T, i: u8) {
    let now = Time::from_millis(t.ms);
    t.swim.members.update(&id(i), |m| {
        m.state = MemberState::Dead;
        m.state_since = now;
    });
}

/// `joiner` joins through `seed`: its join push-pull goes to the seed, whose answer it takes.
/// The joiner's outputs for the answer.
fn join_through(seed: &mut T, joiner: &mut T) -> Vec<Output> {
    let (from, to) = (joiner.swim.local().info.addr, seed.swim.local().info.addr);
    let out = joiner.input(Input::Command(Command::Join(vec![to])));
    let out = seed.input(Input::Stream {
        from,
        msg: streams(&out)[0].1.clone(),
    });
    joiner.input(Input::Stream {
        from: to,
        msg: streams(&out).pop().unwrap().1,
    })
}

pub(super) fn packets(out: &[Output]) -> Vec<(SocketAddr, Vec<Message>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Packet { to, msgs } => Some((*to, msgs.clone())),
            _ => None,
        })
        .collect()
}

fn streams(out: &[Output]) -> Vec<(SocketAddr, Message)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Stream { to, msg } => Some((*to, msg.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn events(out: &[Output]) -> Vec<Event> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn timer_at(out: &[Output], want: &Timer) -> Option<Time> {
    out.iter().find_map(|o| match o {
        Output::Timer { at, timer } if timer == want => Some(*at),
        _ => None,
    })
}

pub(super) fn ping(seq: u32, target: u8, source: u8) -> Message {
    Message::Ping(Ping {
        seq,
        target: id(target),
        source: id(source),
    })
}

/// The ping the node sent by its last probe tick: (target address, seq).
/// When the first suspicion timer in `out` is armed for, whatever its member and generation.
fn suspicion_timer(out: &[Output]) -> Option<Time> {
    out.iter().find_map(|o| match o {
        Output::Timer {
            at,
            timer: Timer::Suspicion { .. },
        } => Some(*at),
        _ => None,
    })
}

fn probe_ping(out: &[Output]) -> (SocketAddr, u32) {
    packets(out)
        .into_iter()
        .find_map(|(to, msgs)| match &msgs[0] {
            Message::Ping(p) => Some((to, p.seq)),
            _ => None,
        })
        .expect("a ping was sent")
}

#[test]
fn ping_is_acked_to_sender_with_same_seq() {
    let mut t = T::new(1, &[2]);
    let out = t.msg(2, ping(7, 1, 2));
    let p = packets(&out);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0, addr(2));
    // The ack first, our network coordinate last (after any gossip).
    assert_eq!(p[0].1[0], Message::Ack(Ack { seq: 7 }));
    let me = t.swim.coordinate();
    assert_eq!(p[0].1.last(), Some(&Message::Coord(Box::new(me))));
}

#[test]
fn ping_for_someone_else_is_not_acked() {
    let mut t = T::new(1, &[2]);
    let out = t.msg(2, ping(7, 9, 2));
    assert!(packets(&out).is_empty());
    assert_eq!(t.swim.stats().dropped, 1);
}

#[test]
fn stream_ping_is_acked_over_stream() {
    let mut t = T::new(1, &[2]);
    let out = t.input(Input::Stream {
        from: addr(2),
        msg: ping(3, 1, 2),
    });
    assert_eq!(streams(&out), vec![(addr(2), Message::Ack(Ack { seq: 3 }))]);
}

#[test]
fn acked_probe_raises_no_suspicion_and_lowers_awareness() {
    let mut t = T::new(1, &[2]);
    t.swim.awareness.apply(2);
    let out = t.timer(Timer::ProbeTick);
    let (to, seq) = probe_ping(&out);
    assert_eq!(to, addr(2));
    t.msg(2, Message::Ack(Ack { seq }));
    assert_eq!(t.swim.awareness(), 1);
    let out = t.timer(Timer::ProbeTimeout { seq });
    assert!(packets(&out).is_empty(), "no ping-req after an ack");
    t.timer(Timer::ProbeEnd { seq });
    assert_eq!(t.state(2), Some((MemberState::Alive, 0)));
}

#[test]
fn a_probe_timeout_for_an_acked_or_an_earlier_probe_sends_nothing() {
    let mut t = T::new(1, &[2, 3, 4]);
    let quiet = |out: &[Output]| packets(out).is_empty() && streams(out).is_empty();
    let out = t.timer(Timer::ProbeTick);
    let (to, seq) = probe_ping(&out);
    t.input(Input::Packet {
        from: to,
        msgs: vec![Message::Ack(Ack { seq })],
    });
    t.ms = 200;
    let out = t.timer(Timer::ProbeTimeout { seq });
    assert!(quiet(&out), "acked: no ping-req, no tcp ping: {out:?}");
    t.timer(Timer::ProbeEnd { seq });
    // The next probe waits for its ack when the timer of the one before comes late.
    let out = t.timer(Timer::ProbeTick);
    let (_, next) = probe_ping(&out);
    assert_ne!(next, seq);
    let out = t.timer(Timer::ProbeTimeout { seq });
    assert!(quiet(&out), "an earlier probe's timer: {out:?}");
    assert_eq!(t.swim.stats().indirect_probes, 0);
}

#[test]
fn the_probe_round_skips_ourselves_and_members_that_are_down() {
    let mut t = T::new(1, &[2, 3, 4]);
    fail(&mut t, 3);
    let mut probed = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let out = t.timer(Timer::ProbeTick);
        let (to, seq) = probe_ping(&out);
        probed.insert(octet(to));
        t.input(Input::Packet {
            from: to,
            msgs: vec![Message::Ack(Ack { seq })],
        });
        t.timer(Timer::ProbeEnd { seq });
    }
    assert_eq!(probed.into_iter().collect::<Vec<_>>(), [2, 4]);
}

#[test]
fn missed_ack_goes_indirect_then_suspects() {
    let mut t = T::new(1, &[2, 3, 4, 5]);
    let out = t.timer(Timer::ProbeTick);
    let (target, seq) = probe_ping(&out);
    let target_id = octet(target);
    t.ms = 200;
    let out = t.timer(Timer::ProbeTimeout { seq });
    let reqs: Vec<_> = packets(&out)
        .into_iter()
        .filter_map(|(to, m)| match &m[0] {
            Message::PingReq(r) => Some((to, r.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(reqs.len(), 3, "all 3 other members (indirect_checks = 5)");
    assert!(reqs
        .iter()
        .all(|(to, r)| *to != target && r.target == id(target_id) && r.nack && r.seq == seq));
    assert_eq!(
        streams(&out),
        vec![(target, ping(seq, target_id, 1))],
        "tcp fallback ping"
    );
    // One helper answers with a nack: the other two missed, awareness rises by 2.
    t.msg(3, Message::Nack(Nack { seq }));
    t.ms = 500;
    let out = t.timer(Timer::ProbeEnd { seq });
    assert_eq!(t.state(target_id), Some((MemberState::Suspect, 0)));
    assert_eq!(t.swim.awareness(), 2);
    assert!(matches!(&events(&out)[..], [Event::MemberSuspected(v)] if v.info.id == id(target_id)));
    let s = t.swim.stats();
    assert_eq!(
        (
            s.probes,
            s.indirect_probes,
            s.nacks,
            s.probes_failed,
            s.suspicions_raised
        ),
        (1, 3, 1, 1, 1)
    );
    // Four alive claims at the start and the nack.
    assert_eq!(s.messages_in, 5);
}

/// Probes `t`'s first target and lets its ack wait pass unanswered at `timeout_ms`; returns
/// the target and the probe's sequence number.
fn unanswered_probe(t: &mut T, timeout_ms: u64) -> (u8, u32) {
    let out = t.timer(Timer::ProbeTick);
    let (target, seq) = probe_ping(&out);
    t.ms = timeout_ms;
    t.timer(Timer::ProbeTimeout { seq });
    (octet(target), seq)
}

/// The LAN preset's ack wait and probe period, in ms.
fn lan_wait_and_period() -> (u64, u64) {
    let c = Config::lan();
    (
        c.probe_timeout.as_millis() as u64,
        c.probe_interval.as_millis() as u64,
    )
}

/// The node number of a test address.
fn octet(a: SocketAddr) -> u8 {
    a.ip()
        .to_string()
        .rsplit('.')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_probe_ended_an_ack_wait_late_raises_our_awareness_not_a_suspicion() {
    let (wait, period) = lan_wait_and_period();
    // Just short of an ack wait late: the missing ack is held against the target.
    let mut t = T::new(1, &[2, 3, 4]);
    let (target, seq) = unanswered_probe(&mut t, wait);
    t.ms = period + wait - 1;
    let out = t.timer(Timer::ProbeEnd { seq });
    assert_eq!(t.state(target), Some((MemberState::Suspect, 0)));
    assert_eq!(events(&out).len(), 1);
    assert_eq!(t.swim.stats().probes_late, 0);
    // A whole ack wait late: this node was not running; its own health goes down instead.
    let mut t = T::new(1, &[2, 3, 4]);
    let (target, seq) = unanswered_probe(&mut t, wait);
    t.ms = period + wait;
    let out = t.timer(Timer::ProbeEnd { seq });
    assert_eq!(t.state(target), Some((MemberState::Alive, 0)));
    assert!(events(&out).is_empty());
    let stats = t.swim.stats();
    assert_eq!(
        (
            stats.probes_failed,
            stats.probes_late,
            stats.suspicions_raised
        ),
        (1, 1, 0)
    );
    assert_eq!(t.swim.awareness(), 1);
    // The next probe (stretched by the multiplier) is judged on its own timing.
    let start = t.ms;
    let (target, seq) = unanswered_probe(&mut t, start + 2 * wait);
    t.ms = start + 2 * period;
    t.timer(Timer::ProbeEnd { seq });
    assert_eq!(t.state(target), Some((MemberState::Suspect, 0)));
}

#[test]
fn a_target_that_refuted_or_left_while_probed_is_not_suspected() {
    let (wait, period) = lan_wait_and_period();
    // Its alive at a newer incarnation came in by gossip: the missing ack was about the old one.
    let mut t = T::new(1, &[2, 3, 4]);
    let (target, seq) = unanswered_probe(&mut t, wait);
    t.msg(target, alive_at(target, 1, addr(target)));
    t.ms = period;
    let out = t.timer(Timer::ProbeEnd { seq });
    assert_eq!(t.state(target), Some((MemberState::Alive, 1)));
    assert!(events(&out).is_empty(), "{out:?}");
    // It left: a member that is gone is not suspected.
    let mut t = T::new(1, &[2, 3, 4]);
    let (target, seq) = unanswered_probe(&mut t, wait);
    t.swim
        .members
        .update(&id(target), |m| m.state = MemberState::Left);
    t.ms = period;
    let out = t.timer(Timer::ProbeEnd { seq });
    assert_eq!(t.state(target), Some((MemberState::Left, 0)));
    assert!(events(&out).is_empty(), "{out:?}");
    let s = t.swim.stats();
    assert_eq!((s.probes_failed, s.suspicions_raised), (1, 0));
}

#[test]
fn an_ack_timeout_fired_an_ack_wait_late_spoils_the_probe() {
    let (wait, period) = lan_wait_and_period();
    let mut t = T::new(1, &[2, 3, 4]);
    // The helpers are asked an ack wait late; the period ends on time.
    let (target, seq) = unanswered_probe(&mut t, 2 * wait);
    t.ms = period;
    t.timer(Timer::ProbeEnd { seq });
    assert_eq!(t.state(target), Some((MemberState::Alive, 0)));
    assert_eq!(t.swim.stats().probes_late, 1);
    assert_eq!(t.swim.awareness(), 1);
    // An acked probe whose period ends late still costs health (its ack took one back).
    let out = t.timer(Timer::ProbeTick);
    let (to, seq) = probe_ping(&out);
    t.msg(octet(to), Message::Ack(Ack { seq }));
    assert_eq!(t.swim.awareness(), 0);
    t.ms += 2 * period + wait;
    t.timer(Timer::ProbeEnd { seq });
    assert_eq!(t.swim.stats().probes_late, 2);
    assert_eq!(t.swim.awareness(), 1);
}

#[test]
fn awareness_stretches_probe_interval_and_timeout() {
    let mut t = T::new(1, &[2]);
    t.swim.awareness.apply(3);
    t.ms = 1000;
    let out = t.timer(Timer::ProbeTick);
    let (_, seq) = probe_ping(&out);
    let c = Config::lan();
    assert_eq!(
        timer_at(&out, &Timer::ProbeTick),
        Some(Time::from_millis(1000) + c.probe_interval * 4)
    );
    assert_eq!(
        timer_at(&out, &Timer::ProbeTimeout { seq }),
        Some(Time::from_millis(1000) + c.probe_timeout * 4)
    );
}

#[test]
fn without_lifeguard_awareness_stays_zero_and_no_nack_is_asked() {
    let cfg = Config {
        lifeguard: false,
        ..Config::lan()
    };
    let mut t = T::with(cfg, 1, &[2, 3]);
    let out = t.timer(Timer::ProbeTick);
    let (_, seq) = probe_ping(&out);
    let out = t.timer(Timer::ProbeTimeout { seq });
    assert!(packets(&out)
        .iter()
        .all(|(_, m)| matches!(&m[0], Message::PingReq(r) if !r.nack)));
    t.timer(Timer::ProbeEnd { seq });
    assert_eq!(t.swim.awareness(), 0);
}

#[test]
fn indirect_probe_forwards_ack_or_sends_nack() {
    let mut t = T::new(1, &[2, 3]);
    let req = PingReq {
        seq: 40,
        target: id(3),
        target_addr: addr(3),
        source: id(2),
        nack: true,
    };
    let out = t.msg(2, Message::PingReq(Box::new(req.clone())));
    let (to, my_seq) = probe_ping(&out);
    assert_eq!(to, addr(3));
    let out = t.msg(3, Message::Ack(Ack { seq: my_seq }));
    let p = packets(&out);
    assert_eq!(
        (p[0].0, &p[0].1[0]),
        (addr(2), &Message::Ack(Ack { seq: 40 }))
    );
    // Second request: the target stays silent, the nack timer fires.
    let out = t.msg(2, Message::PingReq(Box::new(PingReq { seq: 41, ..req })));
    let (_, my_seq) = probe_ping(&out);
    let out = t.timer(Timer::IndirectNack { seq: my_seq });
    assert_eq!(packets(&out)[0].1[0], Message::Nack(Nack { seq: 41 }));
    t.timer(Timer::IndirectExpire { seq: my_seq });
    let out = t.msg(3, Message::Ack(Ack { seq: my_seq }));
    assert!(
        packets(&out).is_empty(),
        "expired indirect probes forward nothing"
    );
}

#[test]
fn suspicion_about_us_is_refuted_with_higher_incarnation() {
    let mut t = T::new(1, &[2]);
    let out = t.msg(
        2,
        Message::Suspect(Suspect {
            incarnation: Incarnation(0),
            node: id(1),
            from: id(2),
        }),
    );
    assert_eq!(t.swim.incarnation(), Incarnation(1));
    assert_eq!(
        events(&out),
        vec![Event::Refuted {
            incarnation: Incarnation(1)
        }]
    );
    assert_eq!(
        t.swim.awareness(),
        1,
        "refuting is a sign of our own trouble"
    );
    // The refutation rides on the next packet.
    let out = t.msg(2, ping(1, 1, 2));
    let alive = packets(&out)[0].1.iter().any(
        |m| matches!(m, Message::Alive(a) if a.info.id == id(1) && a.incarnation == Incarnation(1)),
    );
    assert!(alive);
    // An old claim is not refuted again.
    t.msg(
        2,
        Message::Dead(Dead {
            incarnation: Incarnation(0),
            node: id(1),
            from: id(2),
        }),
    );
    assert_eq!(t.swim.incarnation(), Incarnation(1));
    // A claim from before a restart (higher incarnation) is.
    t.msg(
        2,
        Message::Alive(Alive {
            incarnation: Incarnation(9),
            info: info(1),
        }),
    );
    assert_eq!(t.swim.incarnation(), Incarnation(10));
}

/// (local state, local incarnation, claim, claim incarnation) -> local state after.
#[test]
fn merge_rules_table() {
    use MemberState::{Alive as A_, Dead as D_, Left as L_, Suspect as S_};
    #[derive(Clone, Copy, Debug)]
    enum C {
        A,
        S,
        D,
        L,
    }
    let cases = [
        (A_, 1, C::A, 2, A_, 2),
        (A_, 1, C::A, 1, A_, 1),
        (A_, 1, C::S, 0, A_, 1),
        (A_, 1, C::S, 1, S_, 1),
        // A death declared by another node is a suspicion until this node has suspected the
        // member itself for the shortest suspicion timeout (see `on_dead_claim`).
        (A_, 1, C::D, 1, S_, 1),
        (A_, 1, C::L, 1, L_, 1),
        (S_, 1, C::A, 1, S_, 1),
        (S_, 1, C::A, 2, A_, 2),
        (S_, 1, C::D, 1, S_, 1),
        (D_, 1, C::A, 1, D_, 1),
        (D_, 1, C::S, 2, D_, 1),
        (D_, 1, C::A, 2, A_, 2),
        (L_, 1, C::A, 2, A_, 2),
        (L_, 1, C::D, 1, L_, 1),
    ];
    for (i, (state, inc, claim, cinc, want, want_inc)) in cases.into_iter().enumerate() {
        let mut t = T::new(1, &[]);
        t.msg(
            2,
            Message::Alive(Alive {
                incarnation: Incarnation(inc),
                info: info(2),
            }),
        );
        let me = id(2);
        t.swim.members.update(&me, |m| m.state = state);
        let ci = Incarnation(cinc);
        let msg = match claim {
            C::A => Message::Alive(Alive {
                incarnation: ci,
                info: info(2),
            }),
            C::S => Message::Suspect(Suspect {
                incarnation: ci,
                node: id(2),
                from: id(3),
            }),
            C::D => Message::Dead(Dead {
                incarnation: ci,
                node: id(2),
                from: id(3),
            }),
            C::L => Message::Dead(Dead {
                incarnation: ci,
                node: id(2),
                from: id(2),
            }),
        };
        // A leave comes from the member itself (a relayed one is checked first; see
        // `a_relayed_leave_is_believed_only_if_not_refuted`).
        let from = if matches!(claim, C::L) { 2 } else { 3 };
        t.msg(from, msg);
        assert_eq!(
            t.state(2),
            Some((want, want_inc)),
            "case {i}: {state:?}@{inc} + {claim:?}@{cinc}"
        );
    }
}

#[test]
fn suspicion_times_out_to_dead_and_stale_timers_are_ignored() {
    let mut t = T::new(1, &[2, 3, 4, 5, 6]);
    let out = t.msg(
        3,
        Message::Suspect(Suspect {
            incarnation: Incarnation(0),
            node: id(2),
            from: id(3),
        }),
    );
    let (generation, deadline) = out
        .iter()
        .find_map(|o| match o {
            Output::Timer {
                at,
                timer: Timer::Suspicion { generation, .. },
            } => Some((*generation, *at)),
            _ => None,
        })
        .unwrap();
    // n = 6: min = 4 * 1 * 500ms = 2 s; max = 6 * min = 12 s; k = 2. The timer fires one ack
    // wait (a probe period) before the deadline, for the last-chance probe.
    assert_eq!(deadline, Time::from_millis(11_500));
    t.timer(Timer::Suspicion {
        node: id(2),
        generation: generation + 100,
    });
    assert_eq!(
        t.state(2),
        Some((MemberState::Suspect, 0)),
        "a stale timer does nothing"
    );
    t.ms = 11_500;
    // No confirmation came: one last probe of the suspect, with the suspicion attached.
    let out = t.timer(Timer::Suspicion {
        node: id(2),
        generation,
    });
    assert_eq!(t.state(2), Some((MemberState::Suspect, 0)));
    let p = packets(&out);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0, addr(2));
    assert!(matches!(&p[0].1[0], Message::Suspect(s) if s.node == id(2)));
    assert!(matches!(&p[0].1[1], Message::Ping(_)));
    let last = t.swim.generation;
    assert_eq!(
        timer_at(
            &out,
            &Timer::Suspicion {
                node: id(2),
                generation: last
            }
        ),
        Some(Time::from_millis(12_000))
    );
    // Still silent at the deadline, one probe period later: failed.
    t.ms = 12_000;
    let out = t.timer(Timer::Suspicion {
        node: id(2),
        generation: last,
    });
    assert_eq!(t.state(2), Some((MemberState::Dead, 0)));
    assert!(matches!(&events(&out)[..], [Event::MemberFailed(v)] if v.info.id == id(2)));
    assert_eq!(t.swim.stats().failures_declared, 1);
}

#[test]
fn the_last_chance_probe_lets_a_live_suspect_refute() {
    let mut t = T::new(1, &[2, 3, 4, 5, 6]);
    let s = Suspect {
        incarnation: Incarnation(0),
        node: id(2),
        from: id(3),
    };
    let out = t.msg(3, Message::Suspect(s));
    let generation = t.swim.generation;
    assert!(timer_at(
        &out,
        &Timer::Suspicion {
            node: id(2),
            generation
        }
    )
    .is_some());
    t.ms = 12_000;
    let out = t.timer(Timer::Suspicion {
        node: id(2),
        generation,
    });
    // The suspect, which had missed the suspicion, refutes on the probe's attached suspicion
    // and its ack carries the refutation.
    let mut b = T::new(2, &[1]);
    let reply = b.msg(1, packets(&out)[0].1[0].clone());
    let reply2 = b.msg(1, packets(&out)[0].1[1].clone());
    assert_eq!(b.swim.incarnation(), Incarnation(1));
    let ack = packets(&reply2).pop().unwrap();
    assert!(matches!(&ack.1[0], Message::Ack(_)));
    let alive = ack
        .1
        .iter()
        .find(|m| matches!(m, Message::Alive(a) if a.info.id == id(2)))
        .cloned();
    assert!(
        packets(&reply).is_empty(),
        "the refutation waits for the ack"
    );
    t.msg(2, alive.expect("the refutation rides on the ack"));
    assert_eq!(t.state(2), Some((MemberState::Alive, 1)));
    // The timer that follows finds nothing to declare.
    let out = t.timer(Timer::Suspicion {
        node: id(2),
        generation: t.swim.generation,
    });
    assert!(events(&out).is_empty());
}

#[test]
fn a_stale_claim_about_us_is_answered_with_our_alive() {
    let mut t = T::new(1, &[2]);
    t.msg(
        2,
        Message::Suspect(Suspect {
            incarnation: Incarnation(0),
            node: id(1),
            from: id(2),
        }),
    );
    assert_eq!(t.swim.incarnation(), Incarnation(1));
    // Node 3 passes on the old suspicion: it missed the refutation, so it is told directly.
    let out = t.msg(
        3,
        Message::Suspect(Suspect {
            incarnation: Incarnation(0),
            node: id(1),
            from: id(2),
        }),
    );
    let p = packets(&out);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0, addr(3));
    assert!(
        matches!(&p[0].1[0], Message::Alive(a) if a.info.id == id(1) && a.incarnation == Incarnation(1))
    );
    assert_eq!(t.swim.incarnation(), Incarnation(1), "no second refutation");
}

#[test]
fn an_alive_about_us_is_refuted_if_newer_or_different_at_our_incarnation_only() {
    let mut t = T::new(1, &[2]);
    let elsewhere = SocketAddr::from(([127, 0, 0, 66], 7946));
    t.msg(2, suspect(1, 0, 2));
    assert_eq!(t.swim.incarnation(), Incarnation(1));
    // Older, whatever it says: old news. Ours exactly: nothing to answer.
    t.msg(2, alive_at(1, 0, elsewhere));
    t.msg(2, alive_at(1, 1, addr(1)));
    assert_eq!(t.swim.stats().refutations, 1);
    assert_eq!(t.swim.incarnation(), Incarnation(1));
    // At our incarnation with other details (an impostor, a stale address): refuted.
    t.msg(2, alive_at(1, 1, elsewhere));
    assert_eq!(t.swim.stats().refutations, 2);
    assert_eq!(t.swim.incarnation(), Incarnation(2));
}

#[test]
fn independent_confirmations_shrink_the_suspicion_timeout() {
    let mut t = T::new(1, &[2, 3, 4, 5, 6]);
    t.msg(
        3,
        Message::Suspect(Suspect {
            incarnation: Incarnation(0),
            node: id(2),
            from: id(3),
        }),
    );
    t.ms = 1000;
    let out = t.msg(
        4,
        Message::Suspect(Suspect {
            incarnation: Incarnation(0),
            node: id(2),
            from: id(4),
        }),
    );
    let first = suspicion_timer(&out);
    // 12 s - 10 s * ln 2 / ln 3 = 5.69 s after the start, less the ack wait of the
    // last-chance probe (500 ms).
    let want = Time::ZERO
        + (Duration::from_secs(12)
            - Duration::from_secs(10).mul_f64(2f64.ln() / 3f64.ln())
            - Duration::from_millis(500));
    let got = first.unwrap();
    assert!(
        got.as_micros().abs_diff(want.as_micros()) <= 1,
        "{got:?} vs {want:?}"
    );
    let out = t.msg(
        5,
        Message::Suspect(Suspect {
            incarnation: Incarnation(0),
            node: id(2),
            from: id(5),
        }),
    );
    assert_eq!(
        timer_at(
            &out,
            &Timer::Suspicion {
                node: id(2),
                generation: t.swim.generation
            }
        ),
        Some(Time::from_millis(1_500))
    );
    // A repeat confirmation does not re-arm.
    let out = t.msg(
        5,
        Message::Suspect(Suspect {
            incarnation: Incarnation(0),
            node: id(2),
            from: id(5),
        }),
    );
    assert!(out.is_empty());
}

/// A suspicion or death claim in our name about another member, relayed back to us (or forged),
/// is no news: it changes nothing and is not passed on.
#[test]
fn a_claim_in_our_name_about_another_member_is_dropped() {
    let mut t = T::new(1, &[2, 3]);
    let suspect = Message::Suspect(Suspect {
        incarnation: Incarnation(0),
        node: id(2),
        from: id(1),
    });
    let dead = Message::Dead(Dead {
        incarnation: Incarnation(0),
        node: id(2),
        from: id(1),
    });
    let queued = t.swim.broadcast_queue_len();
    for claim in [suspect, dead] {
        let out = t.msg(3, claim.clone());
        assert!(out.is_empty(), "{claim:?}: {out:?}");
        assert_eq!(t.state(2), Some((MemberState::Alive, 0)), "{claim:?}");
    }
    assert_eq!(t.swim.broadcast_queue_len(), queued);
}

#[test]
fn without_lifeguard_the_suspicion_timeout_is_fixed_at_min() {
    let cfg = Config {
        lifeguard: false,
        suspicion_mult: 4,
        ..Config::lan()
    };
    let mut t = T::with(cfg, 1, &[2, 3, 4, 5, 6]);
    let out = t.msg(
        3,
        Message::Suspect(Suspect {
            incarnation: Incarnation(0),
            node: id(2),
            from: id(3),
        }),
    );
    let deadline = suspicion_timer(&out);
    assert_eq!(deadline, Some(Time::from_secs(2)));
}

#[test]
fn probing_a_suspect_carries_the_suspicion_buddy_system() {
    let mut t = T::new(1, &[2]);
    t.msg(
        3,
        Message::Suspect(Suspect {
            incarnation: Incarnation(0),
            node: id(2),
            from: id(3),
        }),
    );
    let out = t.timer(Timer::ProbeTick);
    let p = packets(&out);
    assert!(matches!(&p[0].1[0], Message::Suspect(s) if s.node == id(2) && s.from == id(1)));
    assert!(matches!(&p[0].1[1], Message::Ping(_)));
}

#[test]
fn broadcasts_piggyback_until_their_retransmit_limit() {
    let mut t = T::new(1, &[2]);
    t.msg(
        2,
        Message::Dead(Dead {
            incarnation: Incarnation(0),
            node: id(3),
            from: id(2),
        }),
    ); // unknown: ignored
    t.msg(
        2,
        Message::Alive(Alive {
            incarnation: Incarnation(0),
            info: info(4),
        }),
    );
    // n = 3 -> limit = 4 * ceil(log10 4) = 4. Our own alive and n4's are queued.
    let mut carried = 0;
    for seq in 0..10 {
        let out = t.msg(2, ping(seq, 1, 2));
        let msgs = &packets(&out)[0].1;
        if msgs
            .iter()
            .any(|m| matches!(m, Message::Alive(a) if a.info.id == id(4)))
        {
            carried += 1;
        }
    }
    assert_eq!(carried, 4);
    assert_eq!(t.swim.broadcast_queue_len(), 0);
}

#[test]
fn gossip_goes_to_fanout_members_only_when_there_is_news() {
    let mut t = T::new(1, &[2, 3, 4, 5, 6, 7]);
    let out = t.timer(Timer::GossipTick);
    let p = packets(&out);
    assert_eq!(p.len(), 3, "fanout 3");
    let mut to: Vec<_> = p.iter().map(|(a, _)| *a).collect();
    to.sort();
    to.dedup();
    assert_eq!(to.len(), 3);
    assert!(!to.contains(&addr(1)));
    // Drain the queue, then a tick sends nothing.
    for _ in 0..20 {
        t.timer(Timer::GossipTick);
    }
    let out = t.timer(Timer::GossipTick);
    assert!(packets(&out).is_empty());
    assert_eq!(
        timer_at(&out, &Timer::GossipTick),
        Some(Time::ZERO + Config::lan().gossip_interval)
    );
}

#[test]
fn failure_news_is_gossiped_at_once_but_at_most_once_a_gossip_interval() {
    let mut t = T::new(1, &[2, 3, 4, 5, 6, 7]);
    // Drain the start-up claims, so that only news is sent.
    for _ in 0..20 {
        t.timer(Timer::GossipTick);
    }
    let suspect = |node: u8, from: u8| {
        Message::Suspect(Suspect {
            incarnation: Incarnation(0),
            node: id(node),
            from: id(from),
        })
    };
    // A suspicion heard from 3 goes out to three members before any tick.
    t.ms = 1_000;
    let out = t.msg(3, suspect(2, 3));
    let p = packets(&out);
    assert_eq!(p.len(), 3, "fanout 3 at once: {p:?}");
    assert!(p.iter().all(|(_, m)| m
        .iter()
        .any(|m| matches!(m, Message::Suspect(s) if s.node == id(2)))));
    // More news within the same interval waits for the tick.
    t.ms = 1_100;
    let out = t.msg(4, suspect(5, 4));
    assert!(packets(&out).is_empty());
    // One interval after the early round, news goes out at once again.
    t.ms = 1_200;
    let out = t.msg(4, suspect(6, 4));
    assert_eq!(packets(&out).len(), 3);
    // A join heard second-hand is no failure news: it waits for the tick.
    t.ms = 2_000;
    let out = t.msg(
        4,
        Message::Alive(Alive {
            incarnation: Incarnation(0),
            info: info(9),
        }),
    );
    assert!(packets(&out).is_empty());
    // A node whose own health is in doubt adds no early rounds: the news waits for the tick.
    t.swim.awareness.apply(1);
    t.ms = 3_000;
    let out = t.msg(4, suspect(7, 4));
    assert!(packets(&out).is_empty());
    let out = t.timer(Timer::GossipTick);
    assert!(packets(&out).iter().any(|(_, m)| m
        .iter()
        .any(|m| matches!(m, Message::Suspect(s) if s.node == id(7)))));
}

#[test]
fn join_exchanges_state_and_retries_until_answered() {
    let mut seed = T::new(1, &[3]);
    let mut joiner = T::new(2, &[]);
    let out = joiner.input(Input::Command(Command::Join(vec![addr(1)])));
    let s = streams(&out);
    assert_eq!(s.len(), 1);
    assert!(matches!(&s[0].1, Message::PushPull(p) if p.join && !p.reply));
    // No answer: the retry timer sends it again.
    let out = joiner.timer(Timer::JoinRetry { attempt: 0 });
    assert_eq!(streams(&out).len(), 1);
    // (The seed's early round for its own start-up claim was at 0 ms: one interval later.)
    seed.ms = 1_000;
    let out = seed.input(Input::Stream {
        from: addr(2),
        msg: s[0].1.clone(),
    });
    assert_eq!(seed.state(2), Some((MemberState::Alive, 0)));
    let alive_of = |p: &[(SocketAddr, Vec<Message>)], node: u8| {
        p.iter().any(|(_, m)| {
            m.iter()
                .any(|m| matches!(m, Message::Alive(a) if a.info.id == id(node)))
        })
    };
    // The seed gossips the joiner at once (to 3 and the joiner), not at its next tick.
    let p = packets(&out);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p.iter().any(|(to, _)| *to == addr(3)) && alive_of(&p, 2),
        "{p:?}"
    );
    let reply = streams(&out).pop().unwrap();
    assert_eq!(reply.0, addr(2));
    let out = joiner.input(Input::Stream {
        from: addr(1),
        msg: reply.1,
    });
    assert!(events(&out).contains(&Event::JoinCompleted { members: 3 }));
    assert_eq!(joiner.state(3), Some((MemberState::Alive, 0)));
    assert_eq!(joiner.swim.stats().push_pulls, 2, "the join and its retry");
    assert_eq!(seed.swim.stats().push_pulls_answered, 1);
    // The joiner gossips its own claim as soon as it knows whom to tell: the early round it
    // had with nobody to tell (at the join command) did not use up its allowance.
    let p = packets(&out);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(alive_of(&p, 2), "{p:?}");
    // Later retries of the finished join do nothing.
    let out = joiner.timer(Timer::JoinRetry { attempt: 1 });
    assert!(streams(&out).is_empty());
}

/// Each retry arms the next attempt's timer; an earlier attempt's timer, or any after a leave,
/// sends nothing.
#[test]
fn join_retries_count_up_and_stop_for_a_stale_timer_or_a_leave() {
    let mut joiner = T::new(2, &[]);
    joiner.input(Input::Command(Command::Join(vec![addr(1)])));
    let armed = |out: &[Output]| -> Vec<Timer> {
        out.iter()
            .filter_map(|o| match o {
                Output::Timer {
                    timer: t @ Timer::JoinRetry { .. },
                    ..
                } => Some(t.clone()),
                _ => None,
            })
            .collect()
    };
    for attempt in 0..3 {
        let out = joiner.timer(Timer::JoinRetry { attempt });
        assert_eq!(streams(&out).len(), 1, "attempt {attempt}");
        assert_eq!(
            armed(&out),
            [Timer::JoinRetry {
                attempt: attempt + 1
            }]
        );
    }
    let out = joiner.timer(Timer::JoinRetry { attempt: 1 });
    assert!(out.is_empty(), "a stale retry: {out:?}");
    joiner.input(Input::Command(Command::Leave));
    let out = joiner.timer(Timer::JoinRetry { attempt: 3 });
    assert!(
        streams(&out).is_empty() && armed(&out).is_empty(),
        "{out:?}"
    );
}

/// The periodic sync goes to a live member other than us, and to nobody when none is left.
#[test]
fn the_periodic_sync_goes_only_to_live_members() {
    let mut t = T::new(1, &[2, 3]);
    fail(&mut t, 2);
    for _ in 0..20 {
        let out = t.timer(Timer::PushPullTick);
        let to: Vec<_> = streams(&out).into_iter().map(|(to, _)| to).collect();
        assert_eq!(to, [addr(3)]);
    }
    fail(&mut t, 3);
    assert!(streams(&t.timer(Timer::PushPullTick)).is_empty());
}

#[test]
fn after_the_join_full_state_is_exchanged_while_the_table_grows() {
    let mut seed = T::new(1, &[3]);
    let mut joiner = T::new(2, &[]);
    let out = join_through(&mut seed, &mut joiner);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Timer {
            timer: Timer::JoinSync,
            ..
        }
    )));
    // What one round sends (syncs started) and when the next round comes (ms from now).
    let sync = |t: &mut T| {
        let out = t.timer(Timer::JoinSync);
        let starts = streams(&out)
            .iter()
            .filter(|(_, m)| matches!(m, Message::Sync(s) if s.step == SyncStep::Start))
            .count();
        let next = out.iter().find_map(|o| match o {
            Output::Timer {
                at,
                timer: Timer::JoinSync,
            } => Some(at.as_micros() / 1000 - t.ms),
            _ => None,
        });
        (starts, next)
    };
    let base = Config::lan().join_sync_interval.as_millis() as u64;
    // First round: nothing new since the join answer: a sync, and the next round twice as late.
    assert_eq!(sync(&mut joiner), (1, Some(2 * base)));
    // A member learned since: back to the base interval.
    joiner.msg(3, alive_at(4, 0, addr(4)));
    assert_eq!(sync(&mut joiner), (1, Some(base)));
    // Quiet rounds: the interval doubles up to 16 times the base, then the join sync ends.
    for mult in [2, 4, 8, 16] {
        assert_eq!(sync(&mut joiner), (1, Some(mult * base)));
    }
    assert_eq!(sync(&mut joiner), (0, None));
    assert_eq!(joiner.swim.stats().join_syncs, 6);
    // A node whose health multiplier is up syncs less often, like it probes less often.
    join_through(&mut seed, &mut joiner);
    joiner.swim.awareness.apply(2);
    assert_eq!(sync(&mut joiner), (1, Some(3 * 2 * base)));
    // Rows moved by syncs, sent or received, make a round busy too.
    let mut j = T::new(6, &[]);
    j.swim.stats.sync_rows_received = 2;
    join_through(&mut seed, &mut j);
    assert_eq!(
        sync(&mut j),
        (1, Some(2 * base)),
        "nothing moved since the join"
    );
    j.swim.stats.sync_rows_received += 1;
    assert_eq!(sync(&mut j), (1, Some(base)), "rows received");
    assert_eq!(sync(&mut j), (1, Some(2 * base)));
    j.swim.stats.sync_rows_sent += 1;
    assert_eq!(sync(&mut j), (1, Some(base)), "rows sent");
    // Off with 0.
    let config = Config {
        join_sync_interval: Duration::ZERO,
        ..Config::lan()
    };
    let mut quiet = T::with(config, 5, &[]);
    let out = join_through(&mut seed, &mut quiet);
    assert!(!out.iter().any(|o| matches!(
        o,
        Output::Timer {
            timer: Timer::JoinSync,
            ..
        }
    )));
}

#[test]
fn push_pull_down_rows_are_told_to_the_member_and_dead_about_us_is_refuted() {
    let mut t = T::new(1, &[2, 3]);
    t.msg(
        3,
        Message::Suspect(Suspect {
            incarnation: Incarnation(0),
            node: id(3),
            from: id(2),
        }),
    );
    let row = |i: u8, state| PushMember {
        info: info(i),
        incarnation: Incarnation(0),
        state,
    };
    let rows = vec![
        row(1, MemberState::Dead),
        row(2, MemberState::Dead),
        row(3, MemberState::Dead),
    ];
    let pp = PushPull {
        join: false,
        reply: true,
        event_ltime: 5,
        members: rows,
    };
    let out = t.input(Input::Stream {
        from: addr(3),
        msg: Message::PushPull(pp),
    });
    // n2 is alive here: not suspected locally, but told so that it refutes if it lives.
    assert_eq!(t.state(2), Some((MemberState::Alive, 0)));
    let told = packets(&out)
        .into_iter()
        .any(|(to, m)| to == addr(2) && matches!(&m[0], Message::Suspect(s) if s.node == id(2)));
    assert!(told);
    // n3 was already suspect here: the row counts as our own confirmation (no change) and stays;
    // it is not told (our own probes of it carry the suspicion).
    assert_eq!(t.state(3), Some((MemberState::Suspect, 0)));
    assert!(!packets(&out).iter().any(|(to, _)| *to == addr(3)));
    assert_eq!(
        t.swim.incarnation(),
        Incarnation(1),
        "dead about us is refuted"
    );
    assert_eq!(
        t.swim.event_clock(),
        6,
        "the Lamport clock witnesses the peer's"
    );
    // A row older than what we know of a live member is old news: nobody is told.
    t.msg(2, alive_at(2, 2, addr(2)));
    let out = t.input(Input::Stream {
        from: addr(3),
        msg: push_pull(true, vec![row(2, MemberState::Dead)]),
    });
    assert!(!packets(&out).iter().any(|(to, _)| *to == addr(2)));
    assert_eq!(t.state(2), Some((MemberState::Alive, 2)));
}

#[test]
fn tags_change_bumps_incarnation_and_peers_see_an_update() {
    let mut a = T::new(1, &[2]);
    let mut tags = Tags::new();
    tags.insert("zone".into(), "eu-1".into());
    let mut out = Vec::new();
    a.swim
        .command(at(0), Command::SetTags(tags.clone()), &mut out)
        .unwrap();
    assert_eq!(a.swim.incarnation(), Incarnation(1));
    let out = a.msg(2, ping(1, 1, 2));
    let alive = packets(&out)[0]
        .1
        .iter()
        .find(|m| matches!(m, Message::Alive(x) if x.info.id == id(1)))
        .cloned()
        .unwrap();
    let mut b = T::new(2, &[1]);
    let out = b.msg(1, alive);
    assert!(matches!(&events(&out)[..], [Event::MemberUpdated(v)] if v.info.tags == tags));
    let big: Tags = [("k".to_string(), "v".repeat(600))].into();
    let err = a
        .swim
        .command(at(0), Command::SetTags(big), &mut Vec::new())
        .unwrap_err();
    assert!(matches!(err, CommandError::TagsTooLarge { .. }));
    assert_eq!(
        a.swim.incarnation(),
        Incarnation(1),
        "a refused command changes nothing"
    );
    // Exactly at the limit (key, value and two separator bytes) is taken.
    let max = a.swim.config().tags_bytes_max;
    let exact: Tags = [("k".to_string(), "v".repeat(max - 3))].into();
    a.swim
        .command(at(0), Command::SetTags(exact), &mut Vec::new())
        .unwrap();
    assert_eq!(a.swim.incarnation(), Incarnation(2));
}

#[test]
fn user_events_are_delivered_once_and_passed_on() {
    let mut a = T::new(1, &[2]);
    let mut out = Vec::new();
    a.swim
        .command(
            at(0),
            Command::Broadcast {
                name: "deploy".into(),
                payload: b"v2".to_vec(),
            },
            &mut out,
        )
        .unwrap();
    let out = a.msg(2, ping(1, 1, 2));
    let ev = packets(&out)[0]
        .1
        .iter()
        .find(|m| matches!(m, Message::UserEvent(_)))
        .cloned()
        .unwrap();
    let mut b = T::new(2, &[1]);
    let out = b.msg(1, ev.clone());
    assert!(
        matches!(&events(&out)[..], [Event::UserEvent(u)] if u.name == "deploy" && u.payload == b"v2")
    );
    assert!(
        events(&b.msg(3, ev.clone())).is_empty(),
        "a duplicate is not delivered again"
    );
    assert_eq!(b.swim.stats().user_events, 1);
    // Once the clock has moved a whole buffer past it, an event is too old to check for a
    // duplicate: dropped and counted, never delivered.
    let Message::UserEvent(first) = &ev else {
        unreachable!()
    };
    let later = |ltime: u64| {
        Message::UserEvent(Box::new(UserEvent {
            ltime,
            ..(**first).clone()
        }))
    };
    let buffer = b.swim.config().user_event_buffer as u64;
    assert_eq!(events(&b.msg(3, later(first.ltime + buffer + 1))).len(), 1);
    let dropped = b.swim.stats().dropped;
    assert!(events(&b.msg(3, later(first.ltime + 1))).is_empty());
    assert_eq!(b.swim.stats().dropped, dropped + 1);
    assert!(
        events(&a.msg(2, ev)).is_empty(),
        "our own event coming back is not delivered"
    );
    let err = a.swim.command(
        at(0),
        Command::Broadcast {
            name: "x".into(),
            payload: vec![0; 600],
        },
        &mut Vec::new(),
    );
    assert!(matches!(err, Err(CommandError::EventTooLarge { .. })));
    // Name and payload together are limited: exactly the limit is taken, a byte more is not.
    let max = a.swim.config().user_event_bytes_max;
    for (extra, taken) in [(0, true), (1, false)] {
        let r = a.swim.command(
            at(0),
            Command::Broadcast {
                name: "xy".into(),
                payload: vec![0; max - 2 + extra],
            },
            &mut Vec::new(),
        );
        assert_eq!(r.is_ok(), taken, "{r:?}");
    }
}

/// Ping requests are taken while fewer than `indirect_pending_max` are pending and the node
/// has not left; past that they are dropped and counted.
#[test]
fn ping_requests_are_bounded_and_refused_after_leaving() {
    let config = Config {
        indirect_pending_max: 2,
        ..Config::lan()
    };
    let mut b = T::with(config, 2, &[1, 3]);
    let req = |seq: u32| {
        Message::PingReq(Box::new(PingReq {
            seq,
            target: id(3),
            target_addr: addr(3),
            source: id(1),
            nack: false,
        }))
    };
    let pings_to_3 = |out: &[Output]| {
        (packets(out).into_iter())
            .filter(|(to, msgs)| *to == addr(3) && matches!(msgs[0], Message::Ping(_)))
            .count()
    };
    assert_eq!(pings_to_3(&b.msg(1, req(1))), 1);
    assert_eq!(pings_to_3(&b.msg(1, req(2))), 1);
    let dropped = b.swim.stats().dropped;
    assert_eq!(
        pings_to_3(&b.msg(1, req(3))),
        0,
        "two pending: the third is dropped"
    );
    assert_eq!(b.swim.stats().dropped, dropped + 1);

    let mut c = T::new(2, &[1, 3]);
    c.input(Input::Command(Command::Leave));
    assert_eq!(pings_to_3(&c.msg(1, req(1))), 0);
    assert_eq!(c.swim.stats().dropped, 1);
    assert_eq!(
        c.swim.direct(&id(1), b"hi".to_vec(), false),
        Err(CommandError::Left)
    );
}

#[test]
fn a_join_without_seeds_and_any_command_after_leaving_are_refused() {
    let mut a = T::new(1, &[2, 3]);
    let r = a
        .swim
        .command(at(0), Command::Join(Vec::new()), &mut Vec::new());
    assert_eq!(r, Err(CommandError::NoSeeds));
    a.input(Input::Command(Command::Leave));
    let mut out = Vec::new();
    let r = a
        .swim
        .command(at(0), Command::Join(vec![addr(2)]), &mut out);
    assert_eq!(r, Err(CommandError::Left));
    assert!(packets(&out).is_empty(), "{out:?}");
    // Nor does a leaving node start syncs: not on the push-pull tick, not to reconnect.
    fail(&mut a, 2);
    for timer in [Timer::PushPullTick, Timer::ReconnectTick] {
        let out = a.timer(timer);
        assert!(
            packets(&out).is_empty() && streams(&out).is_empty(),
            "{out:?}"
        );
    }
}

#[test]
fn leave_announces_left_and_stops_probing() {
    let mut a = T::new(1, &[2]);
    a.input(Input::Command(Command::Leave));
    assert!(!a.swim.leave_announced());
    let out = a.timer(Timer::ProbeTick);
    assert!(packets(&out).is_empty(), "no probes after leaving");
    let out = a.timer(Timer::GossipTick);
    let left = packets(&out)[0]
        .1
        .iter()
        .find(|m| matches!(m, Message::Dead(d) if d.node == id(1) && d.from == id(1)))
        .cloned()
        .unwrap();
    assert!(a.swim.leave_announced());
    let mut b = T::new(2, &[1]);
    let out = b.msg(1, left);
    assert!(matches!(&events(&out)[..], [Event::MemberLeft(_)]));
    assert_eq!(b.state(1), Some((MemberState::Left, 0)));
    // A left node does not refute claims about itself.
    a.msg(
        2,
        Message::Suspect(Suspect {
            incarnation: Incarnation(0),
            node: id(1),
            from: id(2),
        }),
    );
    assert_eq!(a.swim.incarnation(), Incarnation(0));
    // Alone, there is nobody to tell: announced at once.
    let mut solo = T::new(1, &[]);
    solo.input(Input::Command(Command::Leave));
    assert!(solo.swim.leave_announced());
    // So with only failed members: they are not told.
    let mut lone = T::new(1, &[2]);
    fail(&mut lone, 2);
    lone.input(Input::Command(Command::Leave));
    assert!(lone.swim.leave_announced());
}

#[test]
fn failed_members_are_retried_and_reaped_after_retention() {
    let cfg = Config {
        dead_retention: Duration::from_secs(60),
        ..Config::lan()
    };
    let mut t = T::with(cfg, 1, &[2, 3]);
    fail(&mut t, 2);
    // failed / alive = 1 / 2: within a few ticks a push-pull goes to the failed member.
    let mut tried = false;
    for _ in 0..20 {
        let out = t.timer(Timer::ReconnectTick);
        tried |= streams(&out)
            .iter()
            .any(|(to, m)| *to == addr(2) && matches!(m, Message::Sync(_)));
    }
    assert!(tried);
    t.fire_until(59_000);
    assert_eq!(
        t.state(2),
        Some((MemberState::Dead, 0)),
        "kept within dead_retention"
    );
    // Reaped at the first end of a probe round after 60 s (rounds are slow here: n3 never
    // answers either, so the health multiplier stretches the probe interval).
    t.fire_until(75_000);
    assert!(t.state(2).is_none(), "reaped after dead_retention");
}

#[test]
fn oversized_push_pull_is_dropped() {
    let cfg = Config {
        push_pull_members_max: 1,
        ..Config::lan()
    };
    let mut t = T::with(cfg, 1, &[]);
    let row = |i: u8| PushMember {
        info: info(i),
        incarnation: Incarnation(0),
        state: MemberState::Alive,
    };
    let pp = PushPull {
        join: true,
        reply: false,
        event_ltime: 0,
        members: vec![row(2), row(3)],
    };
    let out = t.input(Input::Stream {
        from: addr(2),
        msg: Message::PushPull(pp),
    });
    assert!(out.is_empty());
    assert!(t.state(2).is_none());
    assert_eq!(t.swim.stats().dropped, 1);
    // Exactly at the limit: taken.
    let pp = PushPull {
        join: true,
        reply: false,
        event_ltime: 0,
        members: vec![row(2)],
    };
    t.input(Input::Stream {
        from: addr(2),
        msg: Message::PushPull(pp),
    });
    assert_eq!(t.state(2), Some((MemberState::Alive, 0)));
}

#[test]
fn a_probe_carrying_a_suspicion_stays_within_the_packet_budget() {
    // 200 members: the queue holds far more alive claims than one packet takes.
    let others: Vec<u8> = (2..=201).map(|i| i as u8).collect();
    let mut t = T::new(1, &others);
    t.msg(
        3,
        Message::Suspect(Suspect {
            incarnation: Incarnation(0),
            node: id(2),
            from: id(3),
        }),
    );
    let generation = t.swim.generation;
    t.ms = 60_000;
    let out = t.timer(Timer::Suspicion {
        node: id(2),
        generation,
    });
    let p = packets(&out);
    assert_eq!(p.len(), 1, "the last-chance probe");
    let msgs = &p[0].1;
    assert!(matches!(&msgs[0], Message::Suspect(_)) && matches!(&msgs[1], Message::Ping(_)));
    assert!(msgs.len() > 10, "gossip filled the rest");
    assert!(
        packet_len(msgs) <= Config::lan().packet_bytes_max,
        "{} bytes",
        packet_len(msgs)
    );
}

/// Timers are spread by a uniform draw below the bound (e.g. the first push-pull of a node).
#[test]
fn jitter_is_drawn_below_its_bound() {
    let mut t = T::new(1, &[]);
    let d = Duration::from_secs(1);
    let draws: Vec<_> = (0..100).map(|_| t.swim.jitter(d)).collect();
    assert!(draws.iter().all(|&j| j < d), "{draws:?}");
    assert!(draws.iter().any(|&j| j < d / 2) && draws.iter().any(|&j| j >= d / 2));
    assert_eq!(t.swim.jitter(Duration::ZERO), Duration::ZERO);
}

/// Claims of one size fill a packet until the next would not fit, and the claims of members new
/// to us take at most a `JOINS_SHARE_OF_PACKET`th of it.
#[test]
fn gossip_fills_the_packet_and_joins_take_at_most_their_share() {
    let max = Config::lan().packet_bytes_max;
    let mut t = T::new(1, &[2]);
    // Death claims about 300 members whose names are all four characters long: one size.
    let dead = |i: u32| {
        Message::Dead(Dead {
            incarnation: Incarnation(0),
            node: fake(i).info.id.clone(),
            from: id(2),
        })
    };
    let item = item_len(dead(100).encoded_len());
    for i in 100..400 {
        t.swim.queue_member_claim(fake(i).info.id.clone(), dead(i));
    }
    let lead = ping(1, 2, 1);
    let msgs = t.swim.fill_packet(vec![lead]);
    let len = packet_len(&msgs);
    assert!(len <= max, "{len} bytes of {max}");
    assert!(
        len + item > max,
        "{len} bytes of {max}: room for another {item}-byte claim"
    );
    // Joins: alive claims of members new to us, all of one size too.
    let mut t = T::new(1, &[2]);
    let alive = |i: u32| {
        let r = fake(i);
        Message::Alive(Alive {
            incarnation: r.incarnation,
            info: r.info,
        })
    };
    let join = item_len(alive(100).encoded_len());
    for i in 100..400 {
        t.swim.queue_join_claim(fake(i).info.id.clone(), alive(i));
    }
    let msgs = t.swim.fill_packet(Vec::new());
    let joins = msgs
        .iter()
        .filter(|m| matches!(m, Message::Alive(a) if a.info.id != id(1) && a.info.id != id(2)))
        .count();
    let share = max / JOINS_SHARE_OF_PACKET;
    assert!(joins * join <= share, "{joins} joins of {join} bytes");
    assert!((joins + 1) * join > share, "{joins} joins of {join} bytes");
}

// ---- integer edges: implausible jumps (docs/protocol.md, "Plausible steps") ----

fn suspect(node: u8, incarnation: u64, from: u8) -> Message {
    Message::Suspect(Suspect {
        incarnation: Incarnation(incarnation),
        node: id(node),
        from: id(from),
    })
}

fn row(i: u8, state: MemberState, incarnation: u64) -> PushMember {
    PushMember {
        info: info(i),
        incarnation: Incarnation(incarnation),
        state,
    }
}

fn user_event(ltime: u64, origin: u8, name: &str) -> Message {
    Message::UserEvent(Box::new(UserEvent {
        ltime,
        origin: id(origin),
        wall_ms: 0,
        name: name.into(),
        payload: Vec::new(),
    }))
}

#[test]
fn claims_near_u64_max_about_a_live_member_are_dropped_and_counted() {
    let mut t = T::new(1, &[2, 3]);
    t.msg(3, suspect(2, u64::MAX, 3));
    t.msg(
        3,
        Message::Dead(Dead {
            incarnation: Incarnation(u64::MAX),
            node: id(2),
            from: id(3),
        }),
    );
    t.msg(
        3,
        Message::Alive(Alive {
            incarnation: Incarnation(u64::MAX),
            info: Arc::new(NodeInfo::new(id(2), addr(9))),
        }),
    );
    t.input(Input::Stream {
        from: addr(3),
        msg: Message::PushPull(PushPull {
            join: false,
            reply: true,
            event_ltime: 0,
            members: vec![row(2, MemberState::Dead, u64::MAX)],
        }),
    });
    assert_eq!(t.state(2), Some((MemberState::Alive, 0)));
    assert_eq!(t.swim.stats().implausible, 4);
    // A suspicion by another node may not raise the incarnation at all (DOWN_CLAIM_JUMP_MAX):
    // one at the incarnation known is believed; the member refutes it itself.
    t.msg(3, suspect(2, DOWN_CLAIM_JUMP_MAX + 1, 3));
    assert_eq!(t.state(2), Some((MemberState::Alive, 0)));
    t.msg(3, suspect(2, DOWN_CLAIM_JUMP_MAX, 3));
    assert_eq!(
        t.state(2),
        Some((MemberState::Suspect, DOWN_CLAIM_JUMP_MAX))
    );
}

#[test]
fn a_members_own_word_from_its_own_address_may_raise_it_any_amount() {
    let mut t = T::new(1, &[2, 3]);
    let far = INCARNATION_JUMP_MAX + 1_000;
    // Relayed, the jump is implausible; so is the member's own word for another address.
    t.msg(3, alive_at(2, far, addr(2)));
    let elsewhere = SocketAddr::from(([127, 0, 0, 66], 7946));
    t.msg(2, alive_at(2, far, elsewhere));
    assert_eq!(t.state(2), Some((MemberState::Alive, 0)));
    assert_eq!(t.swim.stats().implausible, 2);
    // From its own address, about its own address, it is believed.
    let out = t.msg(2, alive_at(2, far, addr(2)));
    assert_eq!(t.state(2), Some((MemberState::Alive, far)));
    assert_eq!(t.swim.stats().implausible, 2);
    // Same information at a newer incarnation is no update.
    assert!(events(&out).is_empty(), "{:?}", events(&out));
    let out = t.msg(2, alive_at(2, far + 1, addr(2)));
    assert!(events(&out).is_empty(), "{:?}", events(&out));
    assert_eq!(t.state(2), Some((MemberState::Alive, far + 1)));
}

#[test]
fn a_forged_claim_about_us_near_u64_max_neither_panics_nor_moves_us() {
    let mut t = T::new(1, &[2]);
    t.msg(2, suspect(1, u64::MAX, 2));
    t.msg(
        2,
        Message::Alive(Alive {
            incarnation: Incarnation(u64::MAX - 1),
            info: info(1),
        }),
    );
    assert_eq!(t.swim.incarnation(), Incarnation(0));
    assert_eq!(t.swim.stats().implausible, 2);
    assert_eq!(t.swim.stats().refutations, 0);
    // A plausible one is refuted, one above the claim.
    t.msg(2, suspect(1, INCARNATION_JUMP_MAX, 2));
    assert_eq!(t.swim.incarnation(), Incarnation(INCARNATION_JUMP_MAX + 1));
}

#[test]
fn the_seed_we_join_through_may_set_our_incarnation_and_clock_anywhere() {
    let mut t = T::new(2, &[]);
    t.input(Input::Command(Command::Join(vec![addr(1)])));
    // A restart without a data dir: the cluster remembers us far above 0, and its clock is on.
    let out = t.input(Input::Stream {
        from: addr(1),
        msg: Message::PushPull(PushPull {
            join: false,
            reply: true,
            event_ltime: 5_000_000,
            members: vec![
                row(1, MemberState::Alive, 0),
                row(2, MemberState::Dead, 1 << 40),
            ],
        }),
    });
    assert_eq!(t.swim.incarnation(), Incarnation((1 << 40) + 1));
    assert_eq!(t.swim.event_clock(), 5_000_001);
    assert!(events(&out)
        .iter()
        .any(|e| matches!(e, Event::JoinCompleted { .. })));
    assert_eq!(t.swim.stats().implausible, 0);
    // Once joined, the same jump from anyone is refused.
    t.msg(1, suspect(2, u64::MAX, 1));
    assert_eq!(t.swim.incarnation(), Incarnation((1 << 40) + 1));
    assert_eq!(t.swim.stats().implausible, 1);
    // Even a trusted seed saying u64::MAX only pins the incarnation there: no overflow.
    let mut u = T::new(3, &[]);
    u.input(Input::Command(Command::Join(vec![addr(1)])));
    u.input(Input::Stream {
        from: addr(1),
        msg: Message::PushPull(PushPull {
            join: false,
            reply: true,
            event_ltime: u64::MAX,
            members: vec![row(3, MemberState::Dead, u64::MAX)],
        }),
    });
    assert_eq!(u.swim.incarnation(), Incarnation(u64::MAX));
    let mut out = Vec::new();
    u.swim
        .command(
            at(0),
            Command::Broadcast {
                name: "e".into(),
                payload: Vec::new(),
            },
            &mut out,
        )
        .unwrap();
    assert_eq!(u.swim.event_clock(), u64::MAX);
}

#[test]
fn a_forged_lamport_time_cannot_stop_later_user_events() {
    let mut t = T::new(1, &[2, 3]);
    assert!(events(&t.msg(3, user_event(u64::MAX, 3, "forged"))).is_empty());
    t.input(Input::Stream {
        from: addr(3),
        msg: Message::PushPull(PushPull {
            join: false,
            reply: false,
            event_ltime: u64::MAX - 1,
            members: Vec::new(),
        }),
    });
    assert_eq!(t.swim.stats().implausible, 2);
    assert_eq!(t.swim.event_clock(), 0);
    let out = t.msg(2, user_event(1, 2, "real"));
    assert!(
        matches!(&events(&out)[..], [Event::UserEvent(u)] if u.name == "real"),
        "{:?}",
        events(&out)
    );
}

#[test]
fn a_claim_over_the_tag_limit_is_dropped_on_receipt_and_never_queued() {
    let mut t = T::new(1, &[2]);
    let queued = t.swim.broadcast_queue_len();
    let mut fat = NodeInfo::new(id(7), addr(7));
    fat.tags
        .insert("blob".into(), "x".repeat(Config::lan().tags_bytes_max));
    let out = t.msg(
        2,
        Message::Alive(Alive {
            incarnation: Incarnation(0),
            info: Arc::new(fat),
        }),
    );
    assert!(events(&out).is_empty());
    assert_eq!(t.state(7), None);
    assert_eq!(t.swim.broadcast_queue_len(), queued);
    assert_eq!(t.swim.stats().over_limit, 1);
    // An event over the size limit likewise.
    let big = Message::UserEvent(Box::new(UserEvent {
        ltime: 0,
        origin: id(2),
        wall_ms: 0,
        name: "e".into(),
        payload: vec![0; Config::lan().user_event_bytes_max],
    }));
    assert!(events(&t.msg(2, big)).is_empty());
    assert_eq!(t.swim.stats().over_limit, 2);
    // At the limits: taken. Tags count key, value and 2 bytes each; an event its name and
    // payload.
    let max = Config::lan().tags_bytes_max;
    let mut full = NodeInfo::new(id(8), addr(8));
    full.tags.insert("blob".into(), "x".repeat(max - 6));
    t.msg(
        2,
        Message::Alive(Alive {
            incarnation: Incarnation(0),
            info: Arc::new(full),
        }),
    );
    assert_eq!(t.state(8), Some((MemberState::Alive, 0)));
    let fits = Message::UserEvent(Box::new(UserEvent {
        ltime: 1,
        origin: id(2),
        wall_ms: 0,
        name: "e".into(),
        payload: vec![0; Config::lan().user_event_bytes_max - 1],
    }));
    assert_eq!(events(&t.msg(2, fits)).len(), 1);
    assert_eq!(t.swim.stats().over_limit, 2);
}

fn ping_req(target: u8, target_addr: SocketAddr, source: u8) -> Message {
    Message::PingReq(Box::new(PingReq {
        seq: 7,
        target: id(target),
        target_addr,
        source: id(source),
        nack: true,
    }))
}

#[test]
fn a_ping_req_never_sends_to_an_address_that_is_not_a_members() {
    let mut t = T::new(1, &[2, 3]);
    let sent_to =
        |out: &[Output]| -> Vec<SocketAddr> { packets(out).iter().map(|p| p.0).collect() };
    // A stranger, and a member named at someone else's address: nothing is sent.
    assert!(sent_to(&t.msg(3, ping_req(9, addr(9), 3))).is_empty());
    assert!(sent_to(&t.msg(3, ping_req(2, addr(9), 3))).is_empty());
    // Over a stream the sender address is only a claim: refused too.
    let out = t.input(Input::Stream {
        from: addr(9),
        msg: ping_req(2, addr(2), 3),
    });
    assert!(sent_to(&out).is_empty());
    assert_eq!(t.swim.stats().misdirected, 3);
    // The honest case: the member, at its address.
    assert_eq!(sent_to(&t.msg(3, ping_req(2, addr(2), 3))), vec![addr(2)]);
}

/// An invented member `f{i}` at a 10.x address.
fn fake(i: u32) -> PushMember {
    let addr = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 7946));
    PushMember {
        info: Arc::new(NodeInfo::new(NodeId::new(&format!("f{i}")).unwrap(), addr)),
        incarnation: Incarnation(0),
        state: MemberState::Alive,
    }
}

/// Only the answer to our join, from a seed we asked, is trusted with our clock: a reply from
/// that seed's address afterwards that we did not ask for keeps to the plausible steps.
#[test]
fn a_seed_is_trusted_only_with_the_answer_to_our_join() {
    let mut seed = T::new(1, &[]);
    let mut joiner = T::new(2, &[]);
    let out = join_through(&mut seed, &mut joiner);
    assert!(events(&out).contains(&Event::JoinCompleted { members: 2 }));
    let far = Message::PushPull(PushPull {
        join: false,
        reply: true,
        event_ltime: u64::MAX / 2,
        members: Vec::new(),
    });
    joiner.input(Input::Stream {
        from: addr(1),
        msg: far,
    });
    assert_eq!(joiner.swim.stats().implausible, 1);
    assert!(joiner.swim.event_clock() <= LTIME_JUMP_MAX);
}

fn push_pull(reply: bool, members: Vec<PushMember>) -> Message {
    Message::PushPull(PushPull {
        join: false,
        reply,
        event_ltime: 0,
        members,
    })
}

#[test]
fn a_full_state_nobody_asked_for_introduces_only_its_sender() {
    let mut t = T::new(1, &[2]);
    let mut rows: Vec<PushMember> = (0..65_535).map(fake).collect();
    rows.push(row(3, MemberState::Alive, 0));
    let out = t.input(Input::Stream {
        from: addr(3),
        msg: push_pull(false, rows.clone()),
    });
    // It is answered (to its sender), and its sender is in; none of the invented rows are.
    assert_eq!(streams(&out).len(), 1);
    assert_eq!(t.state(3), Some((MemberState::Alive, 0)));
    assert_eq!(t.swim.members().count(), 3);
    assert_eq!(t.swim.stats().admission, 65_535);
    // A forged "reply" nobody asked for is no better.
    t.input(Input::Stream {
        from: addr(4),
        msg: push_pull(true, rows),
    });
    assert_eq!(t.swim.members().count(), 3);
}

#[test]
fn an_answer_we_asked_for_adds_at_most_the_per_push_pull_cap() {
    let cfg = Config {
        members_admit_per_push_pull: 100,
        ..Config::lan()
    };
    let mut t = T::with(cfg, 1, &[2]);
    t.fire_until(60_000); // a periodic push-pull to n2 goes out
    assert!(t.swim.push_pull_sent.contains_key(&addr(2)));
    t.ms += 1_000; // a full bucket
    t.input(Input::Stream {
        from: addr(2),
        msg: push_pull(true, (0..1_000).map(fake).collect()),
    });
    assert_eq!(t.swim.members().count(), 2 + 100);
    assert_eq!(t.swim.stats().admission, 900);
    // A hundred joins were a hundred outputs at once: the core keeps no room for them.
    assert_eq!(t.swim.out.capacity(), 0);
}

#[test]
fn the_core_keeps_room_for_at_most_out_keep_outputs() {
    let mut t = T::new(1, &[2]);
    for (room, kept) in [(OUT_KEEP, OUT_KEEP), (OUT_KEEP + 1, 0)] {
        t.swim.out = Vec::with_capacity(room);
        assert_eq!(t.swim.out.capacity(), room);
        t.swim.hand_over(&mut Vec::new());
        assert_eq!(t.swim.out.capacity(), kept, "room for {room}");
    }
}

#[test]
fn active_members_counts_alive_and_suspect_rows_ourselves_included() {
    let mut t = T::new(1, &[2, 3, 4]);
    assert_eq!(t.swim.active_members(), 4);
    t.swim
        .members
        .update(&id(3), |m| m.state = MemberState::Suspect);
    fail(&mut t, 4);
    assert_eq!(t.swim.active_members(), 3);
}

#[test]
fn the_seed_we_join_through_may_bring_the_whole_cluster_up_to_members_max() {
    let cfg = Config {
        members_max: 3_000,
        ..Config::lan()
    };
    let mut t = T::with(cfg, 2, &[]);
    t.input(Input::Command(Command::Join(vec![addr(1)])));
    // Not from the seed asked: not a join answer, so it adds nothing.
    t.input(Input::Stream {
        from: addr(9),
        msg: push_pull(true, (0..5_000).map(fake).collect()),
    });
    assert_eq!(t.swim.members().count(), 1);
    let out = t.input(Input::Stream {
        from: addr(1),
        msg: push_pull(true, (0..5_000).map(fake).collect()),
    });
    assert!(events(&out)
        .iter()
        .any(|e| matches!(e, Event::JoinCompleted { .. })));
    assert_eq!(t.swim.members().count(), 3_000);
    assert_eq!(t.swim.stats().table_full, 2_001);
}

#[test]
fn new_members_from_gossip_are_capped_per_second() {
    let cfg = Config {
        members_admit_per_sec: 50,
        ..Config::lan()
    };
    let mut t = T::with(cfg, 1, &[]);
    t.ms = 10_000;
    let alive = |i: u32| {
        let r = fake(i);
        Message::Alive(Alive {
            incarnation: r.incarnation,
            info: r.info,
        })
    };
    for i in 0..200 {
        t.msg(2, alive(i));
    }
    assert_eq!(t.swim.members().count(), 1 + 50);
    assert_eq!(t.swim.stats().admission, 150);
    t.ms += 1_000;
    for i in 200..400 {
        t.msg(2, alive(i));
    }
    assert_eq!(t.swim.members().count(), 1 + 100);
}

#[test]
fn addresses_outside_allowed_cidrs_are_refused_at_the_source_and_in_claims() {
    let cfg = Config {
        allowed_cidrs: vec!["127.0.0.0/29".parse().unwrap()],
        ..Config::lan()
    };
    let mut t = T::with(cfg, 1, &[2]);
    // A packet from outside: dropped whole, even a claim about an allowed member.
    t.input(Input::Packet {
        from: SocketAddr::from(([127, 0, 0, 9], 7946)),
        msgs: vec![Message::Alive(Alive {
            incarnation: Incarnation(0),
            info: info(3),
        })],
    });
    assert!(t.state(3).is_none());
    // A claim, from an allowed source, about a member at an address outside.
    t.msg(
        2,
        Message::Alive(Alive {
            incarnation: Incarnation(0),
            info: fake(1).info,
        }),
    );
    assert_eq!(t.swim.members().count(), 2);
    assert_eq!(t.swim.stats().not_allowed, 2);
    t.msg(
        2,
        Message::Alive(Alive {
            incarnation: Incarnation(0),
            info: info(3),
        }),
    );
    assert_eq!(t.state(3), Some((MemberState::Alive, 0)));
}

#[test]
fn the_table_never_holds_more_than_members_max() {
    let cfg = Config {
        members_max: 10,
        ..Config::lan()
    };
    let mut t = T::with(cfg, 1, &[2]);
    t.ms = 10_000;
    for i in 0..100 {
        let r = fake(i);
        t.msg(
            2,
            Message::Alive(Alive {
                incarnation: r.incarnation,
                info: r.info,
            }),
        );
    }
    assert_eq!(t.swim.members().count(), 10);
    assert_eq!(t.swim.stats().table_full, 92);
}

fn alive_at(i: u8, incarnation: u64, at: SocketAddr) -> Message {
    Message::Alive(Alive {
        incarnation: Incarnation(incarnation),
        info: Arc::new(NodeInfo::new(id(i), at)),
    })
}

#[test]
fn a_live_member_cannot_be_moved_to_another_address() {
    let mut t = T::new(1, &[2, 3]);
    let elsewhere = SocketAddr::from(([127, 0, 0, 66], 7946));
    let out = t.msg(3, alive_at(2, 5, elsewhere));
    assert_eq!(t.swim.member(&id(2)).unwrap().info.addr, addr(2));
    assert_eq!(t.state(2), Some((MemberState::Alive, 0)));
    assert_eq!(t.swim.stats().conflicts, 1);
    assert!(events(&out).iter().any(|e| matches!(e,
        Event::MemberConflict { member, claimed }
            if member.info.addr == addr(2) && claimed.addr == elsewhere)));
    // Nothing about it is passed on.
    assert_eq!(t.swim.broadcast_queue_len(), 3);
    // A suspect is not movable either; a member that left is, after dead_reclaim_time.
    t.msg(3, suspect(2, 0, 3));
    t.msg(3, alive_at(2, 6, elsewhere));
    assert_eq!(t.swim.stats().conflicts, 2);
    t.msg(
        3,
        Message::Dead(Dead {
            incarnation: Incarnation(0),
            node: id(3),
            from: id(3),
        }),
    );
    t.msg(2, alive_at(3, 1, elsewhere));
    assert_eq!(t.swim.member(&id(3)).unwrap().info.addr, addr(3));
    t.ms += 30_000;
    t.msg(2, alive_at(3, 1, elsewhere));
    let until = t.ms + 1_000;
    t.fire_until(until);
    assert_eq!(t.swim.member(&id(3)).unwrap().info.addr, elsewhere);
}

/// Member `i`'s leave at `incarnation`.
fn leave(i: u8, incarnation: u64) -> Message {
    Message::Dead(Dead {
        incarnation: Incarnation(incarnation),
        node: id(i),
        from: id(i),
    })
}

#[test]
fn a_relayed_leave_is_believed_only_if_not_refuted() {
    let mut t = T::new(1, &[2, 3, 4]);
    // Relayed by 3: member 2 is probed with the leave attached, and nothing is passed on yet.
    let queued = t.swim.broadcast_queue_len();
    let out = t.msg(3, leave(2, 0));
    assert_eq!(t.state(2), Some((MemberState::Alive, 0)));
    assert!(events(&out).is_empty());
    assert_eq!(t.swim.broadcast_queue_len(), queued);
    assert!(packets(&out).iter().any(|(to, msgs)| *to == addr(2)
        && matches!(msgs[..], [Message::Dead(ref d), Message::Ping(_), ..] if d.node == id(2))));
    // It refutes (its refutation rides on the ack): it stays alive, and no event is seen.
    let out = t.msg(2, alive_at(2, 1, addr(2)));
    assert!(!events(&out)
        .iter()
        .any(|e| matches!(e, Event::MemberLeft(_))));
    let until = t.ms + 1_500;
    t.fire_until(until);
    assert_eq!(t.state(2).map(|s| s.1), Some(1));
    assert_ne!(t.state(2).map(|s| s.0), Some(MemberState::Left));
    // Member 4 really leaves: its leave relayed by 3 is believed after a probe period.
    let mut t = T::new(1, &[2, 3, 4]);
    t.msg(3, leave(4, 0));
    assert!(t.swim.member(&id(4)).unwrap().is_active());
    let until = t.ms + 1_500;
    t.fire_until(until);
    assert_eq!(t.state(4), Some((MemberState::Left, 0)));
    // From the member's own address a leave is believed at once.
    t.msg(3, leave(3, 0));
    assert_eq!(t.state(3), Some((MemberState::Left, 0)));
}

/// Probes sent to `to` in `out`: their sequence numbers.
fn pings_to(out: &[Output], to: SocketAddr) -> Vec<u32> {
    packets(out)
        .into_iter()
        .filter(|(a, _)| *a == to)
        .flat_map(|(_, msgs)| msgs)
        .filter_map(|m| match m {
            Message::Ping(p) => Some(p.seq),
            _ => None,
        })
        .collect()
}

#[test]
fn a_member_that_answers_at_its_old_address_is_not_moved() {
    // A forged leave, then after dead_reclaim_time a forged alive elsewhere: the old address
    // is probed first, with the suspicion attached, and the ack from there refuses the move.
    let mut t = T::new(1, &[2, 3]);
    let elsewhere = SocketAddr::from(([127, 0, 0, 66], 7946));
    t.msg(3, leave(2, 0));
    let until = t.ms + 1_000;
    t.fire_until(until);
    assert_eq!(t.state(2), Some((MemberState::Left, 0)));
    t.ms += 30_000;
    let out = t.msg(3, alive_at(2, 1, elsewhere));
    assert_eq!(t.swim.member(&id(2)).unwrap().info.addr, addr(2));
    let seqs = pings_to(&out, addr(2));
    assert_eq!(seqs.len(), 1, "one probe of the old address");
    assert!(packets(&out).iter().any(|(to, msgs)| *to == addr(2)
        && msgs
            .iter()
            .any(|m| matches!(m, Message::Suspect(s) if s.node == id(2)))));
    // A newer claim while it is pending sends no second probe.
    let out = t.msg(3, alive_at(2, 2, elsewhere));
    assert!(pings_to(&out, addr(2)).is_empty());
    // The member acks from its old address: the move is a conflict, never made.
    let out = t.msg(2, Message::Ack(Ack { seq: seqs[0] }));
    assert_eq!(t.swim.stats().conflicts, 1);
    assert!(events(&out)
        .iter()
        .any(|e| matches!(e, Event::MemberConflict { claimed, .. } if claimed.addr == elsewhere)));
    let until = t.ms + 5_000;
    t.fire_until(until);
    assert_eq!(t.swim.member(&id(2)).unwrap().info.addr, addr(2));
    // An ack from anywhere else, or a refutation from the old address, does the same job.
    t.ms += 30_000;
    let out = t.msg(3, alive_at(2, 3, elsewhere));
    let seq = pings_to(&out, addr(2))[0];
    t.msg(3, Message::Ack(Ack { seq }));
    t.msg(2, alive_at(2, 3, addr(2)));
    assert_eq!(t.state(2), Some((MemberState::Alive, 3)));
    let until = t.ms + 5_000;
    t.fire_until(until);
    assert_eq!(t.swim.member(&id(2)).unwrap().info.addr, addr(2));
    assert_eq!(t.swim.stats().conflicts, 2);
}

#[test]
fn a_pending_move_takes_only_a_newer_claim() {
    // Two claims at one incarnation for two addresses: the first stays pending; a newer one
    // replaces it.
    let mut t = T::new(1, &[2, 3]);
    let (first, second, third) = (
        SocketAddr::from(([127, 0, 0, 66], 7946)),
        SocketAddr::from(([127, 0, 0, 67], 7946)),
        SocketAddr::from(([127, 0, 0, 68], 7946)),
    );
    // Each round: the member fails, and two claims come while the move is pending. (The
    // second round's check waits longer: the unanswered first check raised our awareness.)
    for ((a, b), want) in [
        (((1, first), (1, second)), (1, first)),
        (((2, second), (3, third)), (3, third)),
    ] {
        fail(&mut t, 2);
        t.ms += 30_000;
        t.msg(3, alive_at(2, a.0, a.1));
        t.msg(3, alive_at(2, b.0, b.1));
        let until = t.ms + 5_000;
        t.fire_until(until);
        assert_eq!(t.state(2).map(|s| s.1), Some(want.0));
        assert_eq!(t.swim.member(&id(2)).unwrap().info.addr, want.1);
    }
}

#[test]
fn only_the_old_addresses_ack_to_the_check_probe_stops_a_move() {
    let mut t = T::new(1, &[2, 3]);
    let elsewhere = SocketAddr::from(([127, 0, 0, 66], 7946));
    fail(&mut t, 2);
    t.ms += 30_000;
    let out = t.msg(3, alive_at(2, 1, elsewhere));
    let seq = pings_to(&out, addr(2))[0];
    // The probe's seq from another address, or another seq from the old address: no answer.
    t.msg(3, Message::Ack(Ack { seq }));
    t.msg(
        2,
        Message::Ack(Ack {
            seq: seq.wrapping_add(1_000),
        }),
    );
    assert_eq!(t.swim.stats().conflicts, 0);
    assert_eq!(t.swim.moves.len(), 1);
    let until = t.ms + 1_000;
    t.fire_until(until);
    assert_eq!(t.swim.member(&id(2)).unwrap().info.addr, elsewhere);
}

/// At most MOVES_PENDING_MAX (64) moves wait on a probe of the old address; a claim past that
/// is refused as a conflict, with no probe sent.
#[test]
fn pending_moves_are_bounded() {
    let others: Vec<u8> = (2..=68).collect();
    let mut t = T::new(1, &others);
    for &i in &others[1..] {
        fail(&mut t, i);
    }
    t.ms += 30_000;
    let elsewhere = |i: u8| SocketAddr::from(([127, 0, 1, i], 7946));
    for &i in &others[1..65] {
        // n3 to n66
        let out = t.msg(2, alive_at(i, 1, elsewhere(i)));
        assert_eq!(pings_to(&out, addr(i)).len(), 1, "move of n{i} checked");
    }
    assert_eq!(t.swim.moves.len(), crate::cluster::merge::MOVES_PENDING_MAX);
    assert_eq!(t.swim.stats().conflicts, 0);
    let out = t.msg(2, alive_at(67, 1, elsewhere(67)));
    assert!(pings_to(&out, addr(67)).is_empty());
    assert_eq!(t.swim.stats().conflicts, 1);
    // Silence for a probe period lets the 64 through; then there is room again.
    let until = t.ms + 1_000;
    t.fire_until(until);
    assert_eq!(t.swim.member(&id(65)).unwrap().info.addr, elsewhere(65));
    assert!(t.swim.moves.is_empty());
    let out = t.msg(2, alive_at(68, 1, elsewhere(68)));
    assert_eq!(pings_to(&out, addr(68)).len(), 1);
}

#[test]
fn a_failed_members_name_is_reclaimed_only_after_dead_reclaim_time() {
    let mut t = T::new(1, &[2, 3]);
    let elsewhere = SocketAddr::from(([127, 0, 0, 66], 7946));
    fail(&mut t, 2);
    t.ms += 29_000;
    t.msg(3, alive_at(2, 1, elsewhere));
    assert_eq!(t.state(2), Some((MemberState::Dead, 0)));
    assert_eq!(t.swim.stats().conflicts, 1);
    t.ms += 1_000;
    t.msg(3, alive_at(2, 1, elsewhere));
    // Moved once its old address has stayed silent for a probe period.
    assert_eq!(t.state(2), Some((MemberState::Dead, 0)));
    let until = t.ms + 1_000;
    t.fire_until(until);
    assert_eq!(t.state(2), Some((MemberState::Alive, 1)));
    assert_eq!(t.swim.member(&id(2)).unwrap().info.addr, elsewhere);
}

#[test]
fn only_members_known_alive_confirm_a_suspicion() {
    let mut t = T::new(1, &[2, 3, 4, 5, 6, 7, 8]);
    t.msg(3, suspect(2, 0, 3));
    let deadline = |t: &T| t.swim.suspicions[&id(2)].deadline();
    let before = deadline(&t);
    // Invented names, the suspect itself, and ourselves do not shorten it.
    for name in ["x1", "x2", "x3", "x4", "n2", "n1"] {
        t.msg(
            4,
            Message::Suspect(Suspect {
                incarnation: Incarnation(0),
                node: id(2),
                from: NodeId::new(name).unwrap(),
            }),
        );
    }
    assert_eq!(deadline(&t), before);
    t.msg(4, suspect(2, 0, 4));
    assert!(deadline(&t) < before, "a live member's confirmation counts");
}

#[test]
fn forged_claims_about_us_raise_our_health_multiplier_at_most_once_per_probe_interval() {
    let mut t = T::new(1, &[2]);
    for i in 1..=100u64 {
        t.msg(2, suspect(1, t.swim.incarnation().0, 2));
        if i % 10 == 0 {
            t.ms += 100;
        }
    }
    assert!(t.swim.stats().refutations >= 100);
    // 100 refutations within one second: two penalties (probe interval 500 ms), not eight.
    assert!(t.swim.awareness() <= 2, "awareness {}", t.swim.awareness());
}

#[test]
fn acks_and_nacks_count_only_from_the_target_or_a_helper() {
    let mut t = T::new(1, &[2, 3, 4]);
    let out = t.timer(Timer::ProbeTick);
    let (target, seq) = probe_ping(&out);
    let ti = target
        .ip()
        .to_string()
        .rsplit('.')
        .next()
        .unwrap()
        .parse::<u8>()
        .unwrap();
    let other = [2u8, 3, 4].into_iter().find(|&i| i != ti).unwrap();
    // A guessed seq from a member that was not asked: ignored.
    t.msg(other, Message::Ack(Ack { seq }));
    t.msg(other, Message::Nack(Nack { seq }));
    assert_eq!(t.swim.stats().nacks, 0);
    let out = t.timer(Timer::ProbeTimeout { seq });
    assert!(
        !packets(&out).is_empty(),
        "the probe is still unacked: ping-reqs go out"
    );
    // An indirect probe run for someone else is passed on only for the target's own ack.
    let mut u = T::new(1, &[2, 3]);
    let out = u.msg(
        2,
        Message::PingReq(Box::new(PingReq {
            seq: 9,
            target: id(3),
            target_addr: addr(3),
            source: id(2),
            nack: true,
        })),
    );
    let (_, ours) = probe_ping(&out);
    let out = u.msg(2, Message::Ack(Ack { seq: ours }));
    assert!(packets(&out).is_empty(), "a forged ack is not relayed");
    let out = u.msg(3, Message::Ack(Ack { seq: ours }));
    assert_eq!(packets(&out)[0].1[0], Message::Ack(Ack { seq: 9 }));
}

#[test]
fn failed_rows_are_kept_at_most_as_many_as_members_were_ever_active() {
    let mut t = T::new(1, &[2, 3]);
    let wave = |t: &mut T, from: u32, ms: u64| {
        t.ms = ms;
        for i in from..from + 200 {
            let r = fake(i);
            t.msg(
                2,
                Message::Alive(Alive {
                    incarnation: r.incarnation,
                    info: r.info,
                }),
            );
        }
        t.ms += 10;
        for i in from..from + 200 {
            t.swim.on_dead(Dead {
                incarnation: Incarnation(0),
                node: fake(i).info.id.clone(),
                from: id(1),
            });
        }
    };
    // 200 invented members come and fail: the 203 active at the peak leave room for them all.
    wave(&mut t, 0, 0);
    assert_eq!(t.swim.members().count(), 203);
    assert_eq!(t.swim.stats().evicted, 0);
    // 200 more: 400 failed rows for a peak of 203 active; the first to fail go first.
    wave(&mut t, 1000, 2_000);
    assert_eq!(t.swim.stats().evicted, 197);
    assert_eq!(t.swim.members().count(), 3 + 203);
    let kept = |t: &T, from: u32| {
        (from..from + 200)
            .filter(|&i| t.swim.member(&fake(i).info.id).is_some())
            .count()
    };
    assert_eq!((kept(&t, 0), kept(&t, 1000)), (3, 200));
    assert_eq!(t.state(2), Some((MemberState::Alive, 0)));
}

/// Names of the rows of a sync message.
fn sync_rows(m: &Message) -> Vec<String> {
    match m {
        Message::Sync(s) => s.rows.iter().map(|r| r.info.id.to_string()).collect(),
        _ => panic!("not a sync: {m:?}"),
    }
}

#[test]
fn a_sync_sends_each_side_only_the_rows_the_other_lacks() {
    let mut a = T::new(1, &[2, 3]);
    let mut b = T::new(2, &[1, 4]);
    // A sync goes to a random alive member; take one that went to b.
    let mut ticks = 0;
    let start = (0..50)
        .find_map(|_| {
            ticks += 1;
            let out = a.timer(Timer::PushPullTick);
            streams(&out).into_iter().find(|(to, _)| *to == addr(2))
        })
        .expect("a syncs with b within 50 rounds")
        .1;
    assert!(matches!(&start, Message::Sync(s) if s.step == SyncStep::Start && s.rows.is_empty()));
    let out = b.input(Input::Stream {
        from: addr(1),
        msg: start,
    });
    let answer = streams(&out).pop().unwrap();
    assert_eq!(
        (answer.0, sync_rows(&answer.1)),
        (addr(1), vec!["n4".into()])
    );
    let out = a.input(Input::Stream {
        from: addr(2),
        msg: answer.1,
    });
    assert_eq!(a.state(4), Some((MemberState::Alive, 0)));
    let finish = streams(&out).pop().unwrap();
    assert!(matches!(&finish.1, Message::Sync(s) if s.step == SyncStep::Finish));
    assert_eq!(sync_rows(&finish.1), vec!["n3".to_string()]);
    b.input(Input::Stream {
        from: addr(1),
        msg: finish.1,
    });
    assert_eq!(b.state(3), Some((MemberState::Alive, 0)));
    // Members learned in a sync are not gossiped on: syncs carry them.
    let key = super::broadcast::BroadcastKey::Member(id(4));
    assert_eq!(a.swim.broadcasts.transmits(&key), None);
    assert_eq!(b.swim.stats().sync_rows_received, 1);
    assert_eq!(a.swim.stats().sync_rows_sent, 1);
    // One sync a tick, each also a push-pull; b answered one.
    assert_eq!(
        (a.swim.stats().syncs, a.swim.stats().push_pulls),
        (ticks, ticks)
    );
    assert_eq!(b.swim.stats().push_pulls_answered, 1);
}

#[test]
fn sync_rows_are_taken_only_in_answer_to_a_sync_and_only_over_streams() {
    let mut b = T::new(2, &[1]);
    let sync = |step, digest: Option<Digest>| {
        Message::Sync(Box::new(Sync {
            step,
            event_ltime: 0,
            digest,
            rows: vec![PushMember {
                info: info(9),
                incarnation: Incarnation(0),
                state: MemberState::Alive,
            }],
        }))
    };
    let empty = || Some(Digest::build(1, 0, std::iter::empty()));
    // An answer or a finish nobody asked for: dropped, rows and all.
    for step in [SyncStep::Answer, SyncStep::Finish] {
        let out = b.input(Input::Stream {
            from: addr(1),
            msg: sync(step, empty()),
        });
        assert!(streams(&out).is_empty());
    }
    assert_eq!((b.state(9), b.swim.stats().dropped), (None, 2));
    // A start by datagram (its source could be anyone's) is not answered.
    let out = b.msg(1, sync(SyncStep::Start, empty()));
    assert!(streams(&out).is_empty());
    assert_eq!(b.swim.stats().misdirected, 1);
    // A start without a usable digest is dropped (rows or none).
    let mut bad = empty().unwrap();
    bad.hashes = 0;
    for digest in [None, Some(bad)] {
        let mut msg = sync(SyncStep::Start, digest);
        if let Message::Sync(s) = &mut msg {
            s.rows.clear();
        }
        let out = b.input(Input::Stream { from: addr(1), msg });
        assert!(streams(&out).is_empty());
    }
    // So is one with rows: a start carries none, and nobody asked for them.
    let out = b.input(Input::Stream {
        from: addr(1),
        msg: sync(SyncStep::Start, empty()),
    });
    assert!(streams(&out).is_empty());
    assert_eq!(b.swim.stats().dropped, 5);
    // A start over a stream is answered with every row its empty digest does not hold.
    let out = b.input(Input::Stream {
        from: addr(1),
        msg: Message::Sync(Box::new(Sync {
            step: SyncStep::Start,
            event_ltime: 0,
            digest: empty(),
            rows: Vec::new(),
        })),
    });
    let answer = streams(&out).pop().unwrap();
    let mut rows = sync_rows(&answer.1);
    rows.sort();
    assert_eq!(rows, ["n1", "n2"]);
    assert_eq!(b.state(9), None);
    // The event clock a sync carries moves ours, unless it jumps implausibly far: counted.
    let start = |event_ltime: u64| {
        Message::Sync(Box::new(Sync {
            step: SyncStep::Start,
            event_ltime,
            digest: empty(),
            rows: Vec::new(),
        }))
    };
    for (ltime, clock, implausible) in [(5, 6, 0), (u64::MAX, 6, 1)] {
        b.input(Input::Stream {
            from: addr(1),
            msg: start(ltime),
        });
        let got = (b.swim.event_clock(), b.swim.stats().implausible);
        assert_eq!(got, (clock, implausible), "event time {ltime}");
    }
    // An asked-for answer carries at most `push_pull_members_max` rows: exactly that many are
    // taken, one more and the answer is dropped.
    let config = Config {
        push_pull_members_max: 2,
        ..Config::lan()
    };
    let mut c = T::with(config, 2, &[1]);
    let answer = |n: u8| {
        Message::Sync(Box::new(Sync {
            step: SyncStep::Answer,
            event_ltime: 0,
            digest: empty(),
            rows: (10..10 + n)
                .map(|i| PushMember {
                    info: info(i),
                    incarnation: Incarnation(0),
                    state: MemberState::Alive,
                })
                .collect(),
        }))
    };
    for (rows, taken) in [(3, false), (2, true)] {
        let start = streams(&c.timer(Timer::PushPullTick));
        assert_eq!(start.len(), 1, "a sync to n1");
        let dropped = c.swim.stats().dropped;
        c.input(Input::Stream {
            from: addr(1),
            msg: answer(rows),
        });
        assert_eq!(c.state(11).is_some(), taken, "{rows} rows");
        assert_eq!(c.swim.stats().dropped, dropped + u64::from(!taken));
    }
}

fn direct(from: u8, payload: &[u8]) -> Message {
    Message::Direct(Box::new(Direct {
        from: id(from),
        payload: payload.to_vec(),
    }))
}

#[test]
fn direct_messages_are_built_only_for_live_members_and_within_limits() {
    let mut t = T::new(1, &[2, 3]);
    let (to, msg) = t.swim.direct(&id(2), b"hi".to_vec(), false).unwrap();
    assert_eq!((to, msg), (addr(2), direct(1, b"hi")));
    assert!(matches!(
        t.swim.direct(&id(9), vec![], true),
        Err(CommandError::UnknownMember(m)) if m == id(9)
    ));
    // A datagram must fit the packet budget; a stream takes up to direct_bytes_max.
    let budget = t.swim.config().packet_bytes_max;
    let max = match t.swim.direct(&id(2), vec![0; budget], false) {
        Err(CommandError::MessageTooLarge { len, max }) => {
            assert_eq!(len, budget);
            max
        }
        other => panic!("{other:?}"),
    };
    let (_, fits) = t.swim.direct(&id(2), vec![0; max], false).unwrap();
    assert_eq!(
        packet_len(&[fits]),
        budget,
        "the largest payload fills the packet"
    );
    assert!(t.swim.direct(&id(2), vec![0; budget], true).is_ok());
    let limit = t.swim.config().direct_bytes_max;
    assert!(t.swim.direct(&id(2), vec![0; limit], true).is_ok());
    assert!(matches!(
        t.swim.direct(&id(2), vec![0; limit + 1], true),
        Err(CommandError::MessageTooLarge { .. })
    ));
    fail(&mut t, 3);
    assert!(matches!(
        t.swim.direct(&id(3), vec![], true),
        Err(CommandError::MemberGone {
            state: "failed",
            ..
        })
    ));
}

#[test]
fn a_direct_message_is_delivered_only_from_its_senders_address() {
    let mut t = T::new(1, &[2, 3]);
    let out = t.msg(2, direct(2, b"hello"));
    let want = Event::Message(DirectMessage {
        from: id(2),
        payload: b"hello".to_vec(),
        reliable: false,
    });
    assert_eq!(events(&out), [want]);
    // Over a stream: reliable.
    let out = t.input(Input::Stream {
        from: addr(2),
        msg: direct(2, b"x"),
    });
    assert!(matches!(&events(&out)[..], [Event::Message(m)] if m.reliable));
    // 3 claiming to be 2, a stranger, and a member that failed: counted, not delivered.
    assert!(events(&t.msg(3, direct(2, b"forged"))).is_empty());
    assert!(events(&t.msg(9, direct(9, b"who"))).is_empty());
    fail(&mut t, 3);
    assert!(events(&t.msg(3, direct(3, b"late"))).is_empty());
    assert_eq!(t.swim.stats().direct_refused, 3);
    // At the limit: delivered; over it: counted as such.
    let most = vec![0; t.swim.config().direct_bytes_max];
    assert_eq!(
        events(&t.input(Input::Stream {
            from: addr(2),
            msg: direct(2, &most)
        }))
        .len(),
        1
    );
    let big = vec![0; t.swim.config().direct_bytes_max + 1];
    assert!(events(&t.input(Input::Stream {
        from: addr(2),
        msg: direct(2, &big)
    }))
    .is_empty());
    assert_eq!(t.swim.stats().over_limit, 1);
    assert_eq!(t.swim.stats().direct_in, 3);
    // Nothing is sent in answer.
    assert!(packets(&t.msg(2, direct(2, b"quiet"))).is_empty());
}

#[test]
fn an_ack_with_the_targets_coordinate_moves_ours_and_nothing_else_does() {
    use crate::cluster::vivaldi::Coordinate;
    let mut t = T::new(1, &[2, 3]);
    let far = Coordinate {
        vec: [0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        error: 0.2,
        ..Coordinate::default()
    };
    let probe = |t: &mut T| {
        let out = t.timer(Timer::ProbeTick);
        probe_ping(&out)
    };
    let ack_from = |t: &mut T, from: SocketAddr, seq: u32, coord: Option<Coordinate>| {
        let mut msgs = vec![Message::Ack(Ack { seq })];
        msgs.extend(coord.map(|c| Message::Coord(Box::new(c))));
        t.input(Input::Packet { from, msgs });
    };
    let start = t.swim.coordinate();
    // An ack without a coordinate, then a coordinate in a packet of its own, and one before
    // the ack: no move.
    let (to, seq) = probe(&mut t);
    t.ms += 40;
    ack_from(&mut t, to, seq, None);
    t.input(Input::Packet {
        from: to,
        msgs: vec![Message::Coord(Box::new(far.clone()))],
    });
    let (to, seq) = probe(&mut t);
    t.ms += 40;
    t.input(Input::Packet {
        from: to,
        msgs: vec![
            Message::Coord(Box::new(far.clone())),
            Message::Ack(Ack { seq }),
        ],
    });
    assert_eq!(t.swim.coordinate(), start);
    // Over a stream a coordinate is not taken; one that is not finite is counted.
    t.input(Input::Stream {
        from: to,
        msg: Message::Coord(Box::new(far.clone())),
    });
    assert_eq!(t.swim.stats().misdirected, 1);
    let mut nan = far.clone();
    nan.error = f32::NAN;
    let (to, seq) = probe(&mut t);
    t.ms += 40;
    ack_from(&mut t, to, seq, Some(nan));
    assert_eq!(t.swim.stats().implausible, 1);
    assert_eq!(t.swim.coordinate(), start);
    // The target's own ack with its coordinate, 40 ms after the ping: ours moves, and the
    // target's round trip is estimated from the two.
    let (to, seq) = probe(&mut t);
    let target = if to == addr(2) { id(2) } else { id(3) };
    t.ms += 40;
    ack_from(&mut t, to, seq, Some(far.clone()));
    assert_eq!(t.swim.stats().coordinate_updates, 1);
    assert_ne!(t.swim.coordinate(), start);
    assert_eq!(t.swim.coordinate_of(&target), Some(&far));
    let est = t.swim.rtt_estimate(&target).unwrap();
    assert!(
        est > Duration::ZERO && est < Duration::from_secs(1),
        "{est:?}"
    );
    assert_eq!(t.swim.rtt_estimate(&id(1)), Some(Duration::ZERO));
    // The same coordinate with an ack from an address that is not the probed member's (an
    // ack the probe does not take) moves nothing.
    let other = if to == addr(2) { addr(3) } else { addr(2) };
    let before = t.swim.coordinate();
    let (_, seq) = probe(&mut t);
    ack_from(&mut t, other, seq, Some(far));
    assert_eq!(t.swim.coordinate(), before);
    // Off: acks carry no coordinate.
    let off = Config {
        coordinates: false,
        ..Config::lan()
    };
    let mut t = T::with(off, 1, &[2]);
    let p = packets(&t.msg(2, ping(7, 1, 2)));
    assert!(
        !p[0].1.iter().any(|m| matches!(m, Message::Coord(_))),
        "{p:?}"
    );
}

#[test]
fn coordinates_are_kept_per_member_while_it_is_known_and_only_when_on() {
    use crate::cluster::vivaldi::Coordinate;
    let far = Coordinate {
        vec: [0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        error: 0.2,
        ..Coordinate::default()
    };
    let acked = |t: &mut T, coord: &Coordinate| {
        let (to, seq) = probe_ping(&t.timer(Timer::ProbeTick));
        t.ms += 40;
        t.input(Input::Packet {
            from: to,
            msgs: vec![
                Message::Ack(Ack { seq }),
                Message::Coord(Box::new(coord.clone())),
            ],
        });
        octet(to)
    };
    // Off: a peer's coordinate behind its ack is not taken.
    let off = Config {
        coordinates: false,
        ..Config::lan()
    };
    let mut t = T::with(off, 1, &[2]);
    let start = t.swim.coordinate();
    acked(&mut t, &far);
    assert_eq!(t.swim.coordinate(), start);
    assert_eq!(t.swim.stats().coordinate_updates, 0);
    assert_eq!(t.swim.coordinates().count(), 0);
    // On: kept by name while the member is in the table, forgotten once it is reaped.
    let cfg = Config {
        dead_retention: Duration::from_secs(60),
        ..Config::lan()
    };
    let mut t = T::with(cfg, 1, &[2, 3]);
    let i = acked(&mut t, &far);
    assert_eq!(
        t.swim.coordinates().collect::<Vec<_>>(),
        vec![(&id(i), &far)]
    );
    fail(&mut t, i);
    t.fire_until(t.ms + 40_000);
    assert_eq!(
        t.swim.coordinates().count(),
        1,
        "kept while the member is known"
    );
    t.fire_until(t.ms + 50_000);
    assert!(t.state(i).is_none(), "reaped after dead_retention");
    t.fire_until(t.ms + 10_000);
    assert_eq!(
        t.swim.coordinates().count(),
        0,
        "forgotten after it is reaped"
    );
    assert_eq!(t.swim.rtt_estimate(&id(i)), None);
}

#[test]
fn an_ack_carries_our_coordinate_whenever_it_fits_and_stays_within_the_packet() {
    let coord_len = packet_len(&[Message::Coord(Box::default())]) - packet_len(&[]);
    let mut seen_at_edge = false;
    // A core with `events` user events queued to pass on: its ack to a ping.
    let ack_after_events = |cfg: Config, events: u64| {
        let mut t = T::with(cfg, 1, &[2]);
        for ltime in 1..=events {
            t.msg(2, user_event(ltime, 2, "e"));
        }
        packets(&t.msg(2, ping(7, 1, 2))).remove(0).1
    };
    for budget in 512..700 {
        let cfg = Config {
            packet_bytes_max: budget,
            tags_bytes_max: 256,
            user_event_bytes_max: 256,
            ..Config::lan()
        };
        let msgs = &ack_after_events(cfg, 60);
        let len = packet_len(msgs);
        assert!(len <= budget, "{len} bytes in a budget of {budget}");
        let with_coord = matches!(msgs.last(), Some(Message::Coord(_)));
        let without = if with_coord {
            packet_len(&msgs[..msgs.len() - 1])
        } else {
            len
        };
        assert_eq!(
            with_coord,
            without + coord_len <= budget,
            "budget {budget}: {without} bytes before the coordinate"
        );
        seen_at_edge |= with_coord && len == budget;
    }
    assert!(seen_at_edge, "no budget the coordinate filled exactly");
    // A packet full of gossip (255 messages) has no room for it.
    let cfg = Config {
        packet_bytes_max: 65_000,
        ..Config::lan()
    };
    let msgs = ack_after_events(cfg, 300);
    assert_eq!(msgs.len(), PACKET_MESSAGES_MAX);
    assert!(!msgs.iter().any(|m| matches!(m, Message::Coord(_))));
}

#[test]
fn failed_members_hear_gossip_for_gossip_to_the_dead_and_no_longer() {
    let mut t = T::new(1, &[2]);
    let window = t.swim.config().gossip_to_the_dead.as_millis() as u64;
    fail(&mut t, 2);
    let gossip_to_2 = |t: &mut T| {
        let mut out = Vec::new();
        let name = format!("e{}", t.ms);
        t.swim
            .command(
                at(t.ms),
                Command::Broadcast {
                    name,
                    payload: Vec::new(),
                },
                &mut out,
            )
            .unwrap();
        let out = t.timer(Timer::GossipTick);
        packets(&out).iter().any(|(to, _)| *to == addr(2))
    };
    t.ms = window - 1;
    assert!(gossip_to_2(&mut t), "within the window");
    t.ms = window;
    assert!(!gossip_to_2(&mut t), "the window is over");
}

/// Lifeguard waits for `suspicion_mult - 2` confirmations only when as many other members
/// (besides the suspect and this node) could give them; otherwise the shortest timeout holds.
#[test]
fn a_suspicion_waits_for_confirmations_only_when_enough_members_could_give_them() {
    for (others, want_ms) in [(&[2, 3][..], 1_500), (&[2, 3, 4][..], 11_500)] {
        let mut t = T::new(1, others);
        let out = t.msg(3, suspect(2, 0, 3));
        let at = suspicion_timer(&out);
        assert_eq!(
            at,
            Some(Time::from_millis(want_ms)),
            "{} members",
            others.len() + 1
        );
    }
}

#[test]
fn a_relayed_leave_already_being_checked_is_checked_again_only_when_newer() {
    let mut t = T::new(1, &[2, 3, 4]);
    let out = t.msg(3, leave(2, 0));
    assert_eq!(pings_to(&out, addr(2)).len(), 1);
    // The same leave relayed again, by anyone, adds no probe.
    let out = t.msg(4, leave(2, 0));
    assert!(pings_to(&out, addr(2)).is_empty());
    assert_eq!(t.swim.leaves.len(), 1);
    // Once the member is at a newer incarnation, a leave at that one is checked in its own
    // right, and only its check counts.
    t.msg(2, alive_at(2, 1, addr(2)));
    let out = t.msg(3, leave(2, 1));
    assert_eq!(pings_to(&out, addr(2)).len(), 1);
    let until = t.ms + 1_500;
    t.fire_until(until);
    assert_eq!(t.state(2), Some((MemberState::Left, 1)));
}

/// At most LEAVES_PENDING_MAX (1,024) relayed leaves wait on a probe of the member; past that a
/// relayed leave is believed at once (checking is a defence, not a queue without end).
#[test]
fn pending_leave_checks_are_bounded() {
    use crate::cluster::merge::LEAVES_PENDING_MAX;
    let mut t = T::with(Config::lan(), 2, &[]);
    t.input(Input::Command(Command::Join(vec![addr(1)])));
    let n = LEAVES_PENDING_MAX as u32 + 1;
    t.input(Input::Stream {
        from: addr(1),
        msg: push_pull(true, (0..n).map(fake).collect()),
    });
    let relayed = |i: u32| {
        let name = fake(i).info.id.clone();
        Message::Dead(Dead {
            incarnation: Incarnation(0),
            node: name.clone(),
            from: name,
        })
    };
    let state = |t: &T, i: u32| t.swim.member(&fake(i).info.id).unwrap().state;
    for i in 0..n - 1 {
        t.msg(9, relayed(i));
    }
    assert_eq!(t.swim.leaves.len(), LEAVES_PENDING_MAX);
    assert_eq!(state(&t, 0), MemberState::Alive, "checked first");
    t.msg(9, relayed(n - 1));
    assert_eq!(state(&t, n - 1), MemberState::Left, "believed at once");
    assert_eq!(t.swim.leaves.len(), LEAVES_PENDING_MAX);
}

/// With no member to ask for a nack, a failed probe costs this node one point of health (it
/// cannot tell its own trouble from the target's).
#[test]
fn a_failed_probe_with_no_helpers_raises_awareness_by_one() {
    let (wait, period) = lan_wait_and_period();
    let mut t = T::new(1, &[2]);
    let (target, seq) = unanswered_probe(&mut t, wait);
    assert_eq!(t.swim.stats().indirect_probes, 0);
    t.ms = period;
    t.timer(Timer::ProbeEnd { seq });
    assert_eq!(t.state(target), Some((MemberState::Suspect, 0)));
    assert_eq!(t.swim.awareness(), 1);
}

/// Only an ack in time talks the health multiplier down; one that needed the indirect round
/// does not (a slow node sees every ack late).
#[test]
fn an_ack_after_the_indirect_round_leaves_awareness_alone() {
    let (wait, _) = lan_wait_and_period();
    let mut t = T::new(1, &[2, 3, 4]);
    t.swim.awareness.apply(2);
    let (target, seq) = unanswered_probe(&mut t, 3 * wait);
    t.msg(target, Message::Ack(Ack { seq }));
    assert_eq!(t.swim.awareness(), 2);
    t.timer(Timer::ProbeEnd { seq });
    let out = t.timer(Timer::ProbeTick);
    let (to, seq) = probe_ping(&out);
    t.msg(octet(to), Message::Ack(Ack { seq }));
    assert_eq!(t.swim.awareness(), 1, "an ack in time");
}

/// Each reconnect tick syncs with a failed member with probability failed / alive: one failed
/// among four alive (this node included) is tried on about a quarter of the ticks.
#[test]
fn reconnects_are_tried_in_proportion_to_the_failed() {
    let mut t = T::new(1, &[2, 3, 4, 5]);
    fail(&mut t, 5);
    let tried = (0..400)
        .filter(|_| {
            let out = t.timer(Timer::ReconnectTick);
            streams(&out).iter().any(|(to, _)| *to == addr(5))
        })
        .count();
    // Binomial(400, 1/4): mean 100, standard deviation 8.7.
    assert!((65..=135).contains(&tried), "{tried} of 400");
}

/// A timer armed for one suspicion does nothing to a later suspicion of the same member: the
/// last-chance timer of a refuted suspicion fires during the next one and must not cut it short.
#[test]
fn a_timer_of_an_earlier_suspicion_leaves_the_next_one_alone() {
    let mut t = T::new(1, &[2, 3, 4, 5, 6]);
    t.msg(3, suspect(2, 0, 3));
    t.ms = 11_500;
    let first = t.swim.generation;
    let out = t.timer(Timer::Suspicion {
        node: id(2),
        generation: first,
    });
    assert_eq!(pings_to(&out, addr(2)).len(), 1, "the last-chance probe");
    let last_chance = t.swim.generation;
    // The suspect refutes, and is suspected again at its new incarnation.
    t.ms = 11_600;
    t.msg(2, alive_at(2, 1, addr(2)));
    t.ms = 11_700;
    t.msg(3, suspect(2, 1, 3));
    assert_eq!(t.state(2), Some((MemberState::Suspect, 1)));
    // The earlier suspicion's last timer, at 12 s: nothing happens to the new one.
    t.ms = 12_000;
    let out = t.timer(Timer::Suspicion {
        node: id(2),
        generation: last_chance,
    });
    assert!(
        pings_to(&out, addr(2)).is_empty() && events(&out).is_empty(),
        "{out:?}"
    );
    assert_eq!(t.state(2), Some((MemberState::Suspect, 1)));
}

/// A newer claim about a member whose move is being checked replaces the pending one: the move
/// that goes through is the newest.
#[test]
fn a_newer_claim_replaces_a_pending_move() {
    let mut t = T::new(1, &[2, 3]);
    fail(&mut t, 2);
    t.ms += 30_000;
    let elsewhere = |p: u8| SocketAddr::from(([127, 0, 1, p], 7946));
    let out = t.msg(3, alive_at(2, 1, elsewhere(1)));
    assert_eq!(
        pings_to(&out, addr(2)).len(),
        1,
        "the old address is checked"
    );
    t.msg(3, alive_at(2, 3, elsewhere(3)));
    t.msg(3, alive_at(2, 2, elsewhere(2)));
    let until = t.ms + 1_000;
    t.fire_until(until);
    let m = t.swim.member(&id(2)).unwrap();
    assert_eq!((m.info.addr, m.incarnation), (elsewhere(3), Incarnation(3)));
}

/// The check of a relayed leave that was refuted does not decide the check of a later one.
#[test]
fn a_check_of_an_earlier_leave_leaves_the_next_one_alone() {
    let mut t = T::new(1, &[2, 3, 4]);
    t.msg(3, leave(2, 0));
    let first = t.swim.generation;
    // Refuted at once; a new relayed leave, at the new incarnation, half a period later.
    t.ms = 100;
    t.msg(2, alive_at(2, 1, addr(2)));
    t.ms = 500;
    t.msg(3, leave(2, 1));
    assert_eq!(t.swim.leaves.len(), 1);
    // The first check's timer, one period after the first leave: the second waits its own.
    t.ms = 1_000;
    t.timer(Timer::LeaveCheck {
        node: id(2),
        generation: first,
    });
    assert_eq!(t.state(2), Some((MemberState::Alive, 1)));
}

#[test]
fn a_check_of_an_earlier_move_leaves_the_next_one_alone() {
    let mut t = T::new(1, &[2, 3]);
    let elsewhere = SocketAddr::from(([127, 0, 0, 66], 7946));
    fail(&mut t, 2);
    t.ms = 30_000;
    let out = t.msg(3, alive_at(2, 1, elsewhere));
    let first = t.swim.generation;
    // The member acks at its old address (a conflict), and half a period later the claim
    // comes again: a check of its own.
    t.msg(
        2,
        Message::Ack(Ack {
            seq: pings_to(&out, addr(2))[0],
        }),
    );
    t.ms = 30_500;
    t.msg(3, alive_at(2, 2, elsewhere));
    assert_eq!(t.swim.moves.len(), 1);
    // The first check's timer, one period after the first claim: the second waits its own.
    t.ms = 31_000;
    t.timer(Timer::MoveCheck {
        node: id(2),
        generation: first,
    });
    assert_eq!(t.swim.member(&id(2)).unwrap().info.addr, addr(2));
    assert_eq!(t.swim.moves.len(), 1);
}

/// A death declared by another node is believed once this node has suspected the member for
/// the shortest suspicion timeout (2 s here), not a moment sooner.
#[test]
fn a_relayed_death_is_believed_after_the_shortest_suspicion_timeout() {
    let mut t = T::new(1, &[2, 3, 4, 5, 6]);
    t.msg(3, suspect(2, 0, 3));
    let dead_from = |t: &mut T, from: u8| {
        t.msg(
            from,
            Message::Dead(Dead {
                incarnation: Incarnation(0),
                node: id(2),
                from: id(from),
            }),
        )
    };
    t.ms = 1_999;
    dead_from(&mut t, 4);
    assert_eq!(t.state(2), Some((MemberState::Suspect, 0)));
    t.ms = 2_000;
    let out = dead_from(&mut t, 5);
    assert_eq!(t.state(2), Some((MemberState::Dead, 0)));
    assert!(matches!(&events(&out)[..], [Event::MemberFailed(_)]));
}
