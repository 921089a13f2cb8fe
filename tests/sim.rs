//! Seeded simulations of whole clusters: formation, crash detection, loss, partitions, pauses,
//! slow nodes, determinism. Each failure prints its seed and report.

mod harness;

use distributed_core::cluster::Config;
use distributed_core::sim::{self, HostileKind, HostileSpec, NodeFault, PartitionSpec, Scenario};
use harness::{ensure, for_seeds};
use std::time::Duration;

const SEEDS: [u64; 3] = [1, 2, 3];

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn cluster_forms_and_stays_converged() {
    let s = Scenario {
        nodes: 64,
        duration: secs(30),
        ..Scenario::default()
    };
    for_seeds(&s, &SEEDS, |r| {
        // Gossip converges in about a second; rarely a node misses a burst of joins and has to
        // wait for a push-pull, so the bound is the push-pull interval at this size.
        ensure(
            r.converged_ms.is_some_and(|ms| ms < 60_000),
            "formation took over 60 s",
        )?;
        ensure(r.converged_at_end, "not converged at the end")?;
        // What formation cost is measured: every node had to receive the whole table once.
        let f = r.formation.as_ref().ok_or("no formation figures")?;
        ensure(
            f.table_bytes > 64 * 10 && f.ratio_mean >= 1.0 && f.bytes_in_max >= f.bytes_in_mean,
            format!("formation figures do not add up: {f:?}"),
        )?;
        // Node 0 takes every join request: it receives the most, and most nodes much less.
        ensure(
            f.max_node == 0 && f.ratio_p90 < f.ratio_max,
            format!("the join target is not the most loaded: {f:?}"),
        )?;
        ensure(
            r.steady_bytes_per_node_s > 0.0 && r.steady_bytes_per_node_s < r.bytes_per_node_s,
            "the steady state costs more than the whole run",
        )?;
        ensure(
            r.false_suspicions == 0 && r.false_positives == 0,
            "false alarms on a clean network",
        )
    });
}

/// 500 nodes join within 2.5 s through node 0: gossip alone leaves some nodes missing bursts
/// of joins for seconds (seed 2: never converged in 20 s); the join sync's full-state
/// exchanges close them within about a second of the last join.
#[test]
fn a_burst_of_joins_converges_within_a_second_and_a_bit_of_the_last() {
    let s = Scenario {
        nodes: 500,
        duration: secs(20),
        ..Scenario::default()
    };
    for_seeds(&s, &SEEDS, |r| {
        ensure(
            r.converged_ms.is_some_and(|ms| ms <= 3_600),
            format!(
                "converged at {:?} ms (last join at 2,500 ms)",
                r.converged_ms
            ),
        )
    });
}

/// The bound a crash must be detected within (see docs/tuning.md): the first probe of the dead
/// node, one probe period, the longest suspicion timeout, and a few seconds of dissemination.
fn detect_bound_ms(c: &Config, n: usize) -> u64 {
    (harness::detection_time(c, n) + secs(3)).as_millis() as u64
}

#[test]
fn a_crash_is_detected_by_every_survivor_within_the_bound() {
    let s = Scenario {
        nodes: 64,
        duration: secs(60),
        kill: 2,
        ..Scenario::default()
    };
    let bound = detect_bound_ms(&s.config, s.nodes);
    for_seeds(&s, &SEEDS, |r| {
        ensure(r.killed.len() == 2, "two nodes killed")?;
        ensure(
            r.detect_ms.undetected == 0,
            "some survivor never marked a crashed node failed",
        )?;
        ensure(
            r.detect_ms.max.is_some_and(|m| m <= bound),
            format!("detection over the bound of {bound} ms"),
        )?;
        ensure(r.false_positives == 0, "a live node was declared failed")
    });
}

#[test]
fn ten_percent_loss_gives_no_false_positive() {
    let s = Scenario {
        nodes: 100,
        duration: secs(120),
        loss: 0.1,
        ..Scenario::default()
    };
    for_seeds(&s, &SEEDS, |r| {
        ensure(r.false_positives == 0, "false positives under 10 % loss")
    });
}

#[test]
fn duplicated_and_reordered_packets_are_harmless() {
    let s = Scenario {
        nodes: 50,
        duration: secs(40),
        dup: 0.2,
        latency: (Duration::from_millis(1), Duration::from_millis(40)),
        kill: 1,
        ..Scenario::default()
    };
    for_seeds(&s, &SEEDS, |r| {
        ensure(r.false_positives == 0, "false positives")?;
        ensure(r.detect_ms.undetected == 0, "crash not detected by all")
    });
}

/// The small side of a partition sees most of the cluster fail: it must keep those rows (a
/// core keeps failed rows up to the most members it has seen active, not today's count), or
/// the other side never hears it was declared dead and never refutes.
#[test]
fn the_small_side_of_a_partition_keeps_what_it_needs_to_heal() {
    let s = Scenario {
        nodes: 300,
        duration: secs(120),
        partition: Some(PartitionSpec {
            fraction: 0.3,
            from: secs(30),
            to: secs(60),
        }),
        ..Scenario::default()
    };
    for_seeds(&s, &[1], |r| {
        ensure(
            r.partition_declared_dead >= 30_000,
            format!("only {} cross pairs failed", r.partition_declared_dead),
        )?;
        ensure(
            r.heal_converged_ms.is_some(),
            "never converged after the heal",
        )?;
        ensure(r.converged_at_end, "not converged at the end")
    });
}

#[test]
fn a_partition_splits_the_cluster_and_heals_without_help() {
    let partition = PartitionSpec {
        fraction: 0.5,
        from: secs(15),
        to: secs(60),
    };
    let s = Scenario {
        nodes: 40,
        duration: secs(150),
        partition: Some(partition),
        ..Scenario::default()
    };
    for_seeds(&s, &SEEDS, |r| {
        // Each side must have marked (most of) the other side failed: 2 x 20 x 20 pairs.
        ensure(
            r.partition_declared_dead >= 700,
            format!("only {} cross pairs failed", r.partition_declared_dead),
        )?;
        ensure(
            r.heal_converged_ms.is_some(),
            "never converged after the heal",
        )?;
        ensure(r.converged_at_end, "not converged at the end")?;
        ensure(r.false_positives == 0, "same-side false positives")?;
        ensure(
            r.false_suspicions == 0,
            "the heal made nodes suspect their own side",
        )
    });
}

#[test]
fn a_node_paused_past_its_timeout_is_declared_dead_then_comes_back() {
    let s = Scenario {
        nodes: 30,
        duration: secs(120),
        pause: Some(NodeFault {
            count: 1,
            amount: secs(40),
        }),
        ..Scenario::default()
    };
    for_seeds(&s, &SEEDS, |r| {
        ensure(
            r.paused_declared_dead > 0,
            "the paused node was never declared dead",
        )?;
        ensure(
            r.paused_recovered == Some(true),
            "the paused node did not come back alive",
        )?;
        ensure(r.false_positives == 0, "false positives")
    });
}

#[test]
fn a_short_pause_is_forgiven() {
    let s = Scenario {
        nodes: 30,
        duration: secs(60),
        pause: Some(NodeFault {
            count: 1,
            amount: Duration::from_millis(1500),
        }),
        ..Scenario::default()
    };
    for_seeds(&s, &SEEDS, |r| {
        ensure(
            r.paused_declared_dead == 0,
            "a 1.5 s pause got a node declared dead",
        )?;
        ensure(r.converged_at_end, "not converged at the end")
    });
}

#[test]
fn lifeguard_cuts_false_suspicions_from_slow_nodes() {
    let s = Scenario {
        nodes: 100,
        duration: secs(200),
        slow: Some(NodeFault {
            count: 5,
            amount: Duration::from_millis(400),
        }),
        ..Scenario::default()
    };
    let mut plain = s.clone();
    plain.config.lifeguard = false;
    for seed in [1, 2] {
        let with = sim::run(&Scenario { seed, ..s.clone() }).unwrap();
        let without = sim::run(&Scenario {
            seed,
            ..plain.clone()
        })
        .unwrap();
        assert_eq!(
            with.false_positives, 0,
            "seed {seed}: false positives with Lifeguard"
        );
        assert!(
            with.false_suspicion_events * 4 < without.false_suspicion_events,
            "seed {seed}: Lifeguard {} vs plain SWIM {} false suspicion events",
            with.false_suspicion_events,
            without.false_suspicion_events
        );
        assert!(
            with.false_suspicions <= without.false_suspicions,
            "seed {seed}: more suspected pairs with Lifeguard"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_does_not() {
    let s = Scenario {
        nodes: 40,
        duration: secs(30),
        loss: 0.05,
        kill: 1,
        ..Scenario::default()
    };
    let a = sim::run(&s).unwrap();
    let b = sim::run(&s).unwrap();
    assert_eq!(a.trace_hash, b.trace_hash, "seed {}", s.seed);
    assert_eq!(
        (a.events, a.msgs_per_node_s, a.bytes_per_node_s),
        (b.events, b.msgs_per_node_s, b.bytes_per_node_s)
    );
    let c = sim::run(&Scenario {
        seed: s.seed + 1,
        ..s
    })
    .unwrap();
    assert_ne!(a.trace_hash, c.trace_hash);
}

#[test]
fn wall_clock_jumps_change_nothing_in_membership() {
    let s = Scenario {
        nodes: 40,
        duration: secs(40),
        kill: 1,
        ..Scenario::default()
    };
    for seed in SEEDS {
        let calm = sim::run(&Scenario { seed, ..s.clone() }).unwrap();
        let jumpy = sim::run(&Scenario {
            seed,
            clock_jumps: 20,
            ..s.clone()
        })
        .unwrap();
        assert_eq!(calm.trace_hash, jumpy.trace_hash, "seed {seed}");
        assert_eq!(
            calm.events,
            jumpy.events - 20,
            "seed {seed}: only the 20 jump events differ"
        );
    }
}

/// Seeds of the hostile-node property tests.
const HOSTILE_SEEDS: [u64; 5] = [1, 2, 3, 4, 5];

/// A small cluster with hostile nodes: fast enough for CI (about a second a seed).
fn hostile(kinds: &str) -> Scenario {
    Scenario {
        nodes: 16,
        duration: secs(40),
        hostile: HostileSpec {
            count: 2,
            rate: 20,
            kinds: HostileKind::parse_list(kinds).unwrap(),
            rows_max: 256,
        },
        ..Scenario::default()
    }
}

/// Every invariant of the report, with what broke.
fn invariants_hold(r: &sim::Report) -> Result<(), String> {
    let i = &r.invariants;
    ensure(i.aborted.is_none(), format!("aborted: {:?}", i.aborted))?;
    ensure(
        i.false_positives == 0,
        format!(
            "{} honest nodes declared dead by honest ones",
            i.false_positives
        ),
    )?;
    ensure(i.converged, "honest nodes did not converge")?;
    ensure(
        i.active_rows_max <= i.active_rows_bound,
        format!(
            "{} alive or suspect rows (bound {})",
            i.active_rows_max, i.active_rows_bound
        ),
    )?;
    ensure(
        i.table_rows_max <= i.table_rows_bound,
        format!(
            "member table of {} rows (bound {})",
            i.table_rows_max, i.table_rows_bound
        ),
    )?;
    ensure(
        i.broadcast_queue_max <= i.broadcast_queue_bound,
        "broadcast queue over its bound",
    )?;
    ensure(i.ok, "invariants.ok is false")
}

#[test]
fn hostile_nodes_are_deterministic_and_leave_honest_runs_untouched() {
    let s = hostile("all");
    let (a, b) = (sim::run(&s).unwrap(), sim::run(&s).unwrap());
    assert_eq!(a.trace_hash, b.trace_hash);
    let (ha, hb) = (a.hostile.unwrap(), b.hostile.unwrap());
    assert_eq!(ha.sent, hb.sent);
    assert!(
        ha.sent.len() == HostileKind::ALL.len() && ha.datagrams > 0 && ha.streams > 0,
        "{ha:?}"
    );
    // The attack is bounded by its rate: 2 nodes x 20/s x (40 s - their first second).
    let sent: u64 = ha.sent.values().sum();
    assert!((1000..=2 * 20 * 40 * 2).contains(&sent), "{sent} messages");
    // With no hostile node the run is the one it always was.
    let plain = Scenario {
        hostile: HostileSpec::default(),
        ..s.clone()
    };
    let untouched = Scenario {
        hostile: HostileSpec {
            count: 0,
            rate: 500,
            ..hostile("ping").hostile
        },
        ..s
    };
    assert_eq!(
        sim::run(&plain).unwrap().trace_hash,
        sim::run(&untouched).unwrap().trace_hash
    );
}

#[test]
fn probes_events_and_replays_from_hostile_nodes_break_no_invariant() {
    for_seeds(
        &hostile("ping,ping_req,ack,nack,user_event,replay"),
        &HOSTILE_SEEDS,
        invariants_hold,
    );
}

/// The whole attack: forged alive, suspect, dead and leave claims about honest members,
/// push-pulls full of invented members, extreme clocks. Failed before the core refused
/// implausible jumps, checked relayed leaves and address moves, and capped failed rows.
#[test]
fn hostile_nodes_break_no_invariant() {
    for_seeds(&hostile("all"), &HOSTILE_SEEDS, invariants_hold);
}

/// Network coordinates learn a three-region topology (regions 0, 40 and 150 ms apart one way,
/// each node adding its own 0.1-0.5 ms, 1-5 ms of jitter): after two minutes the distance
/// between two nodes' coordinates predicts their round trip within 15 % for the median pair;
/// with coordinates off there is nothing to predict with.
#[test]
fn coordinates_predict_round_trips_across_three_regions() {
    let ms = Duration::from_millis;
    let s = Scenario {
        nodes: 200,
        duration: secs(120),
        regions: vec![ms(0), ms(40), ms(150)],
        ..Scenario::default()
    };
    for_seeds(&s, &SEEDS, |r| {
        let c = r.coordinates.as_ref().ok_or("no coordinate report")?;
        ensure(c.pairs == 200 * 199 / 2, format!("pairs {}", c.pairs))?;
        ensure(c.median_error <= 0.15, format!("median error {c:?}"))?;
        ensure(r.false_positives == 0, "false positives across regions")
    });
    let off = Scenario {
        duration: secs(30),
        config: Config {
            coordinates: false,
            ..Config::lan()
        },
        ..s.clone()
    };
    let r = sim::run(&off).unwrap();
    let c = r.coordinates.expect("a report with regions");
    assert!(c.median_error > 0.9 && c.updates_mean == 0.0, "{c:?}");
}

/// Queries at 200 nodes (acceptance of issue 12): without loss every selected node answers and
/// the last answer comes well within 3 s; with 5 % loss and relay factor 2 at least 99 % of the
/// selected live nodes answer (without relays about 5 % of the answers are lost); filters
/// select exactly (no node takes a query that does not name it).
#[test]
fn queries_reach_their_members_and_relays_carry_answers_through_loss() {
    use distributed_core::sim::QuerySpec;
    let spec = QuerySpec {
        count: 40,
        interval: Duration::from_millis(200),
        relay_factor: 0,
        timeout: None,
    };
    let s = Scenario {
        nodes: 200,
        duration: secs(40),
        queries: Some(spec),
        ..Scenario::default()
    };
    let check = |min_ratio: f64| {
        move |r: &distributed_core::sim::Report| {
            let q = r.queries.as_ref().ok_or("no query report")?;
            ensure(q.completed == 40 && q.filtered == 20, format!("{q:?}"))?;
            ensure(
                q.unselected_took == 0,
                format!("a filter let in a node: {q:?}"),
            )?;
            ensure(q.response_ratio >= min_ratio, format!("answers {q:?}"))?;
            ensure(
                q.last_response_ms.p99 <= 3000,
                format!("late answers {q:?}"),
            )
        }
    };
    for_seeds(&s, &SEEDS, check(1.0));
    let lossy = Scenario {
        loss: 0.05,
        queries: Some(QuerySpec {
            relay_factor: 2,
            ..spec
        }),
        ..s.clone()
    };
    for_seeds(&lossy, &SEEDS, check(0.99));
    // Without relays the lost answers show: the figure above is the relays' doing.
    let r = sim::run(&Scenario {
        seed: 1,
        ..Scenario {
            queries: Some(spec),
            ..lossy
        }
    })
    .unwrap();
    let q = r.queries.unwrap();
    assert!(q.response_ratio < 0.98, "{q:?}");
}
