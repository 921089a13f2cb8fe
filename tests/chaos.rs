//! Real nodes over the chaos layer: each node's in-memory transport is wrapped in a
//! `ChaosLayer` (handed to `Node::start_on`), so faults hit the sealed frames of the real
//! driver, codec and crypto. A bad but working network must cause no failure; a full partition
//! must be detected, and healed once the chaos is cleared.

mod harness;

use distributed_core::cluster::{Config, Event, MemberState};
use distributed_core::diagnostics::chaos::{Chaos, ChaosConfig, ChaosLayer, ChaosStats};
use distributed_core::node::{Node, NodeConfig};
use distributed_core::transport::mem::MemNetwork;
use harness::{alive_count, eventually, serial, state_of};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A node and the chaos of its transport.
struct Member {
    node: Node,
    chaos: Arc<Chaos>,
}

impl harness::Member for Member {
    fn node(&self) -> &Node {
        &self.node
    }
}

/// `n` nodes `n0..` at 10.0.0.1.. on one in-memory network, each behind its own (off) chaos
/// layer, joined through `n0` and converged.
async fn cluster(n: usize) -> Vec<Member> {
    let net = MemNetwork::new();
    harness::cluster(0..n, Duration::from_secs(10), async |i, seed| {
        let addr = SocketAddr::from(([10, 0, 0, i as u8 + 1], 7946));
        let chaos = Arc::new(Chaos::default());
        let layer = ChaosLayer::new(net.bind(addr).unwrap(), chaos.clone(), i as u64);
        let mut config = NodeConfig::new(&format!("n{i}"), addr);
        config.protocol = Config::local();
        config.seed = Some(100 + i as u64);
        let node = Node::start_on(config, layer).await.expect("node starts");
        harness::join(&node, seed).await;
        Member { node, chaos }
    })
    .await
}

fn total(members: &[Member]) -> ChaosStats {
    let mut t = ChaosStats::default();
    for s in members.iter().map(|m| m.chaos.stats()) {
        t.dropped += s.dropped;
        t.blocked += s.blocked;
        t.delayed += s.delayed;
        t.duplicated += s.duplicated;
        t.reordered += s.reordered;
        t.streams_blocked += s.streams_blocked;
    }
    t
}

async fn shutdown(members: Vec<Member>) {
    for m in members {
        m.node.shutdown().await;
    }
    harness::no_task_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_slow_network_causes_no_failure() {
    let _serial = serial().await;
    let members = cluster(3).await;
    let mut events: Vec<_> = members.iter().map(|m| m.node.subscribe()).collect();
    let bad = ChaosConfig {
        drop: 0.05,
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(10),
        duplicate: 0.05,
        reorder: 0.05,
        reorder_window: Duration::from_millis(30),
        ..ChaosConfig::default()
    };
    for m in &members {
        m.chaos.set(bad.clone()).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (m, ev) in members.iter().zip(&mut events) {
        while let Ok(e) = ev.try_recv() {
            if let Event::MemberFailed(v) = e {
                panic!("{:?} declared {} failed", m.node.addr(), v.info.id);
            }
        }
        assert_eq!(alive_count(&m.node), 2);
    }
    let t = total(&members);
    assert!(
        t.dropped > 0 && t.delayed > 0 && t.duplicated > 0 && t.reordered > 0,
        "every kind injected: {t:?}"
    );
    shutdown(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_partition_is_detected_and_heals() {
    let _serial = serial().await;
    let members = cluster(3).await;
    let addrs: Vec<SocketAddr> = members.iter().map(|m| m.node.addr()).collect();
    // n2 on one side, n0 and n1 on the other; datagrams and records, both ways.
    let cut = |blocked: &[SocketAddr]| ChaosConfig {
        blocked: blocked.iter().copied().collect(),
        streams: true,
        ..ChaosConfig::default()
    };
    members[0].chaos.set(cut(&addrs[2..])).unwrap();
    members[1].chaos.set(cut(&addrs[2..])).unwrap();
    members[2].chaos.set(cut(&addrs[..2])).unwrap();
    eventually(
        "each side fails the other",
        Duration::from_secs(15),
        async || {
            let dead = Some(MemberState::Dead);
            state_of(&members[0].node, "n2") == dead
                && state_of(&members[1].node, "n2") == dead
                && state_of(&members[2].node, "n0") == dead
                && state_of(&members[2].node, "n1") == dead
        },
    )
    .await;
    assert_eq!(state_of(&members[0].node, "n1"), Some(MemberState::Alive));
    let t = total(&members);
    assert!(t.blocked > 0 && t.streams_blocked > 0, "{t:?}");

    for m in &members {
        m.chaos.clear();
    }
    // Dead members are retried every `reconnect_interval` (5 s in the local preset).
    eventually("healed", Duration::from_secs(30), async || {
        members.iter().all(|m| alive_count(&m.node) == 2)
    })
    .await;
    shutdown(members).await;
}
