//! Nodes on both transports: real UDP + TCP on 127.0.0.1 (OS-chosen ports), and the in-memory
//! network; the same test body runs on each (`on_both!`), with the real codec and crypto.
//! Conditions are awaited with deadlines; fixed sleeps only where a test checks that nothing
//! happens for a while.

mod harness;

use distributed_core::cluster::{Config, MemberState};
use distributed_core::identity::{Key, KEY_BYTES};
use distributed_core::node::{Node, NodeConfig};
use distributed_core::transport::crypto::Keyring;
use harness::{
    alive_count, array, eventually, no_task_left, plain_datagram, plain_frame, serial, state_of,
    Net,
};
use std::sync::Arc;
use std::time::Duration;

/// Runs the test body `$name(net)` once on UDP + TCP and once on the in-memory network, one
/// test at a time (see `harness::serial`), and checks that no task of the nodes outlives them.
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn udp() {
                let _serial = super::serial().await;
                super::$name(super::Net::Udp).await;
                super::no_task_left().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mem() {
                let _serial = super::serial().await;
                super::$name(super::Net::mem()).await;
                super::no_task_left().await;
            }
        }
    };
}

fn config(name: &str) -> NodeConfig {
    let mut c = NodeConfig::new(name, "127.0.0.1:0".parse().unwrap());
    c.protocol = Config::local();
    c
}

/// Configs of nodes `n0`, `n1`, ... `n{n-1}`.
fn named(n: usize) -> impl Iterator<Item = NodeConfig> {
    (0..n).map(|i| config(&format!("n{i}")))
}

on_both!(three_nodes_converge_and_a_crash_is_detected);
async fn three_nodes_converge_and_a_crash_is_detected(net: Net) {
    let nodes = net.cluster(named(3), Duration::from_secs(10)).await;
    nodes[2].shutdown().await; // gone without leaving
    eventually(
        "n2 marked failed by both others",
        Duration::from_secs(15),
        async || {
            nodes[..2]
                .iter()
                .all(|n| state_of(n, "n2") == Some(MemberState::Dead))
        },
    )
    .await;
    for n in &nodes[..2] {
        n.shutdown().await;
    }
}

on_both!(graceful_leave_is_seen_as_left_never_failed);
async fn graceful_leave_is_seen_as_left_never_failed(net: Net) {
    let nodes = net.cluster(named(3), Duration::from_secs(10)).await;
    let mut events = nodes[0].subscribe();
    assert!(
        nodes[2].leave(Duration::from_secs(5)).await.unwrap(),
        "left claim sent"
    );
    eventually("n2 left everywhere", Duration::from_secs(10), async || {
        nodes[..2]
            .iter()
            .all(|n| state_of(n, "n2") == Some(MemberState::Left))
    })
    .await;
    nodes[2].shutdown().await;
    // Even after it is gone, n2 stays Left: no failure is declared for it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    while let Ok(e) = events.try_recv() {
        if let distributed_core::cluster::Event::MemberFailed(v) = e {
            panic!("{} declared failed after leaving", v.info.id);
        }
    }
    assert_eq!(state_of(&nodes[0], "n2"), Some(MemberState::Left));
    for n in &nodes[..2] {
        n.shutdown().await;
    }
}

on_both!(clusters_with_different_keys_never_merge);
async fn clusters_with_different_keys_never_merge(net: Net) {
    let make = |name: &str, k: u8| {
        let mut c = config(name);
        c.keyring = Some(Keyring::new(Key::from_bytes([k; KEY_BYTES])));
        c.label = "prod".into();
        c
    };
    let a = net.start(make("a", 1)).await;
    let b = net.start(make("b", 1)).await;
    let c = net.start(make("c", 2)).await;
    b.join(vec![a.addr()]).await.unwrap();
    c.join(vec![a.addr()]).await.unwrap();
    eventually(
        "a and b converge encrypted",
        Duration::from_secs(10),
        async || alive_count(&a) == 1 && alive_count(&b) == 1,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        state_of(&a, "c").is_none() && state_of(&c, "a").is_none(),
        "c has another key"
    );
    assert!(
        a.traffic().rejected_key > 0,
        "c's join was refused for its key"
    );
    // A node without encryption is refused too, and counted as plain.
    let d = net.start(config("d")).await;
    d.join(vec![a.addr()]).await.unwrap();
    eventually(
        "d's plain join refused",
        Duration::from_secs(5),
        async || a.traffic().rejected_plain > 0,
    )
    .await;
    assert!(state_of(&a, "d").is_none());
    d.shutdown().await;
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_every_task_and_frees_the_port() {
    let _serial = serial().await;
    let node = Node::start(config("solo")).await.unwrap();
    let addr = node.addr();
    node.shutdown().await;
    // The UDP socket and the TCP listener were owned by the tasks: both binds succeed again.
    let udp = tokio::net::UdpSocket::bind(addr)
        .await
        .expect("udp port free");
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .expect("tcp port free");
    drop((udp, tcp));
    no_task_left().await;
}

/// Two nodes (no third to probe through) whose datagrams to each other are blocked both ways:
/// with the TCP fallback probe they stay alive; without it (the control) they fail each other,
/// which shows the test can fail.
async fn udp_blocked_pair(net: &Net, fallback: bool) -> (Node, Node, usize) {
    use distributed_core::diagnostics::chaos::Chaos;
    let make = |name: &str, f: &Arc<Chaos>| {
        let mut c = config(name);
        c.protocol.tcp_fallback_probe = fallback;
        c.chaos = Some(f.clone());
        c
    };
    let (fa, fb) = (Arc::new(Chaos::default()), Arc::new(Chaos::default()));
    let pair = [make("a", &fa), make("b", &fb)];
    let [a, b] = array(net.cluster(pair, Duration::from_secs(10)).await);
    let mut events = a.subscribe();
    fa.block(b.addr()).unwrap();
    fb.block(a.addr()).unwrap();
    // Local preset: suspicion min 0.6 s, max 3.6 s, plus the last-chance probe. With the
    // fallback, nothing may happen in a 6 s window; the control must fail b within 20 s (a
    // deadline, not a window: a loaded machine stretches Lifeguard's timeouts).
    let window = if fallback { 6 } else { 20 };
    let end = tokio::time::Instant::now() + Duration::from_secs(window);
    let mut failed = 0;
    while let Ok(got) = tokio::time::timeout_at(end, events.recv()).await {
        match got {
            Ok(distributed_core::cluster::Event::MemberFailed(v)) if v.info.id.as_str() == "b" => {
                failed += 1;
                if !fallback {
                    break;
                }
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                panic!("missed {n} events: the test cannot tell")
            }
            Err(_) => break,
        }
    }
    (a, b, failed)
}

on_both!(udp_blocked_but_tcp_open_is_no_failure);
async fn udp_blocked_but_tcp_open_is_no_failure(net: Net) {
    let (a, b, failed) = udp_blocked_pair(&net, true).await;
    assert_eq!(failed, 0, "b declared failed despite TCP");
    assert_eq!(state_of(&a, "b"), Some(MemberState::Alive));
    a.shutdown().await;
    b.shutdown().await;
    let (a, b, failed) = udp_blocked_pair(&net, false).await;
    assert!(
        failed > 0,
        "control: without the fallback probe, b must fail"
    );
    a.shutdown().await;
    b.shutdown().await;
}

on_both!(ten_and_fifty_nodes_converge);
async fn ten_and_fifty_nodes_converge(net: Net) {
    for n in [10, 50] {
        let nodes = net.cluster(named(n), Duration::from_secs(30)).await;
        for x in &nodes {
            x.shutdown().await;
        }
    }
}

on_both!(tags_propagate_and_user_events_arrive_exactly_once);
async fn tags_propagate_and_user_events_arrive_exactly_once(net: Net) {
    use distributed_core::cluster::Event;
    let nodes = net.cluster(named(5), Duration::from_secs(10)).await;
    let mut subs: Vec<_> = nodes.iter().map(|n| n.subscribe()).collect();
    let tags = [("zone".to_string(), "eu-1".to_string())].into();
    nodes[3].set_tags(tags).await.unwrap();
    nodes[1]
        .broadcast_event("deploy", b"v2".to_vec())
        .await
        .unwrap();
    eventually(
        "tags seen everywhere",
        Duration::from_secs(10),
        async || {
            nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 3)
                .all(|(_, n)| {
                    n.members().iter().any(|m| {
                        m.info.id.as_str() == "n3"
                            && m.info.tags.get("zone").map(String::as_str) == Some("eu-1")
                    })
                })
        },
    )
    .await;
    // Let the event's retransmissions die out, then count deliveries per node.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, sub) in subs.iter_mut().enumerate() {
        let mut got = 0;
        while let Ok(e) = sub.try_recv() {
            if let Event::UserEvent(u) = e {
                assert_eq!(
                    (u.name.as_str(), u.payload.as_slice()),
                    ("deploy", b"v2".as_slice())
                );
                got += 1;
            }
        }
        let want = usize::from(i != 1); // the origin does not deliver its own event to itself
        assert_eq!(got, want, "node n{i} got the event {got} times");
    }
    for n in &nodes {
        n.shutdown().await;
    }
}

on_both!(a_crashed_node_restarted_with_its_name_rejoins_with_a_higher_incarnation);
async fn a_crashed_node_restarted_with_its_name_rejoins_with_a_higher_incarnation(net: Net) {
    let nodes = net.cluster(named(3), Duration::from_secs(10)).await;
    nodes[2].shutdown().await;
    eventually("n2 failed", Duration::from_secs(15), async || {
        nodes[..2]
            .iter()
            .all(|n| state_of(n, "n2") == Some(MemberState::Dead))
    })
    .await;
    // Same name and address, no memory of its old incarnation: it must out-bid its old self.
    // (At another address it would be taken only once failed for `dead_reclaim_time`.)
    let mut c = config("n2");
    c.bind = nodes[2].addr();
    let again = net.start(c).await;
    again.join(vec![nodes[0].addr()]).await.unwrap();
    eventually(
        "n2 alive again everywhere",
        Duration::from_secs(15),
        async || {
            nodes[..2].iter().all(|n| {
                n.members().iter().any(|m| {
                    m.info.id.as_str() == "n2"
                        && m.state == MemberState::Alive
                        && m.incarnation.0 > 0
                        && m.info.addr == again.addr()
                })
            })
        },
    )
    .await;
    for n in nodes[..2].iter().chain([&again]) {
        n.shutdown().await;
    }
}

on_both!(a_node_with_a_data_dir_rejoins_the_members_it_knew_at_a_higher_incarnation);
async fn a_node_with_a_data_dir_rejoins_the_members_it_knew_at_a_higher_incarnation(net: Net) {
    let dir = tempfile::tempdir().unwrap();
    let with_dir = |name: &str| {
        let mut c = config(name);
        c.data_dir = Some(dir.path().to_path_buf());
        c
    };
    let configs = [config("a"), config("b"), with_dir("c")];
    let [a, b, c] = array(net.cluster(configs, Duration::from_secs(10)).await);
    let before = b
        .members()
        .iter()
        .find(|m| m.info.id.as_str() == "c")
        .map(|m| m.incarnation.0)
        .unwrap();
    // c crashes (its state is saved on the way down), and so does the seed a.
    let c_addr = c.addr();
    c.shutdown().await;
    a.shutdown().await;
    eventually(
        "b sees a and c failed",
        Duration::from_secs(15),
        async || {
            state_of(&b, "a") == Some(MemberState::Dead)
                && state_of(&b, "c") == Some(MemberState::Dead)
        },
    )
    .await;
    // A different name may not use c's data dir.
    let refused = net.start_err(with_dir("intruder")).await;
    assert!(refused.contains("belongs to node \"c\""), "{refused}");
    // c comes back with no seed at all: it joins b, which it knew, above its old incarnation.
    let mut again = with_dir("c");
    again.bind = c_addr;
    let c = net.start(again).await;
    eventually("c alive again on b", Duration::from_secs(15), async || {
        b.members().iter().any(|m| {
            m.info.id.as_str() == "c" && m.state == MemberState::Alive && m.incarnation.0 > before
        })
    })
    .await;
    eventually("c sees b alive", Duration::from_secs(5), async || {
        state_of(&c, "b") == Some(MemberState::Alive)
    })
    .await;
    b.shutdown().await;
    c.shutdown().await;
}

on_both!(rotating_the_key_across_a_running_cluster_loses_no_member);
async fn rotating_the_key_across_a_running_cluster_loses_no_member(net: Net) {
    use distributed_core::cluster::Event;
    let (old, new) = (
        Key::from_bytes([5; KEY_BYTES]),
        Key::from_bytes([6; KEY_BYTES]),
    );
    let encrypted = named(5).map(|mut c| {
        c.keyring = Some(Keyring::new(old.clone()));
        c.label = "prod".into();
        c
    });
    let nodes = net.cluster(encrypted, Duration::from_secs(10)).await;
    let mut subs: Vec<_> = nodes.iter().map(|n| n.subscribe()).collect();
    let settle = || tokio::time::sleep(Duration::from_millis(500));
    for n in &nodes {
        n.install_key(new.clone()).unwrap();
    }
    settle().await;
    for n in &nodes {
        n.use_key(&new).unwrap();
        settle().await; // nodes switch one by one: old and new primaries coexist
    }
    for n in &nodes {
        n.remove_key(&old).unwrap();
    }
    // Let a few suspicion timeouts' worth of probing run on the new key alone.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        nodes.iter().all(|n| alive_count(n) == 4),
        "a member was lost in the rotation"
    );
    for (i, sub) in subs.iter_mut().enumerate() {
        while let Ok(e) = sub.try_recv() {
            assert!(
                !matches!(e, Event::MemberFailed(_)),
                "n{i} saw a failure: {e:?}"
            );
        }
    }
    assert_eq!(
        nodes[0].keys().unwrap(),
        vec![distributed_core::transport::crypto::KeyInfo {
            id: new.id(),
            primary: true
        }]
    );
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_counted_and_dropped() {
    let _serial = serial().await;
    use tokio::io::AsyncWriteExt;
    let node = Node::start(config("target")).await.unwrap();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(b"garbage", node.addr()).await.unwrap();
    sock.send_to(b"DC\x01\x00\xff\xff", node.addr())
        .await
        .unwrap(); // good frame, bad packet
    sock.send_to(b"DC\x01\x01sealed?", node.addr())
        .await
        .unwrap(); // encrypted, but no key here
    let mut tcp = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
    tcp.write_all(&u32::MAX.to_be_bytes()).await.unwrap(); // a 4 GiB record: refused unread
    eventually("rejections counted", Duration::from_secs(5), async || {
        let t = node.traffic();
        t.rejected_frame == 1
            && t.rejected_key == 1
            && t.rejected_packet == 1
            && t.transport.stream_oversized == 1
    })
    .await;
    still_serving(&Net::Udp, node).await;
}

/// After hostile input `node` still serves: a peer on `net` can join it. Then both stop, and no
/// task may be left.
async fn still_serving(net: &Net, node: Node) {
    let peer = net.start(config("peer")).await;
    peer.join(vec![node.addr()]).await.unwrap();
    eventually(
        "joined after the garbage",
        Duration::from_secs(10),
        async || alive_count(&node) == 1,
    )
    .await;
    node.shutdown().await;
    peer.shutdown().await;
    no_task_left().await;
}

/// The in-memory twin of the test above: garbage datagrams and stream records from a raw
/// endpoint are counted by reason, and the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_counted_and_dropped_in_memory() {
    use distributed_core::transport::Transport;
    let _serial = serial().await;
    let net = Net::mem();
    let node = net.start(config("target")).await;
    let Net::Mem(mem) = &net else { unreachable!() };
    let mut raw = mem.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    raw.send_packet(node.addr(), b"garbage").await;
    raw.send_packet(node.addr(), b"DC\x01\x00\xff\xff").await;
    raw.send_stream(node.addr(), b"DC\x01\x00not a record".to_vec())
        .unwrap();
    raw.send_stream(node.addr(), b"DC\x01\x01sealed?".to_vec())
        .unwrap(); // encrypted, no key here
    let big = raw.send_stream(node.addr(), vec![0; 5 << 20]); // over the record limit: never sent
    assert_eq!(
        big,
        Err(distributed_core::transport::StreamRefused::TooLarge)
    );
    eventually("rejections counted", Duration::from_secs(5), async || {
        let t = node.traffic();
        t.rejected_frame == 1
            && t.rejected_packet == 1
            && t.rejected_stream == 1
            && t.rejected_key == 1
    })
    .await;
    assert_eq!(raw.counters().snapshot().streams_out_dropped, 1);
    still_serving(&net, node).await;
}

on_both!(each_member_carries_a_live_phi_and_rtt);
/// Every node measures every other: phi (from the acks to its pings) and a round trip. phi stays
/// low while members answer, and rises on every survivor once one goes silent, while it is still
/// in their tables; a member that leaves loses its figures.
async fn each_member_carries_a_live_phi_and_rtt(net: Net) {
    use distributed_core::identity::NodeId;
    let nodes = net.cluster(named(4), Duration::from_secs(10)).await;
    // phi is a live figure: a late ack on a loaded machine (CI runs many clusters at once) can
    // lift it past 8 for a moment, and the next ack brings it down. So "low" is looked for, not
    // asserted at one instant.
    eventually(
        "every node has a low phi and an RTT for the 3 others",
        Duration::from_secs(10),
        async || {
            nodes.iter().all(|n| {
                let h = n.member_health();
                h.len() == 3 && h.values().all(|m| m.rtt.is_some() && m.phi < 8.0)
            })
        },
    )
    .await;
    for n in &nodes {
        let me = &n.local_member().info.id;
        for (id, h) in n.member_health() {
            assert_ne!(&id, me, "a node does not measure itself");
            assert!(h.phi.is_finite(), "{me} -> {id}: {h:?}");
            let rtt = h.rtt.unwrap();
            assert!(rtt < Duration::from_secs(1), "{me} -> {id}: {h:?}");
            assert!(
                h.last_ack_age < Duration::from_secs(5),
                "{me} -> {id}: {h:?}"
            );
        }
        let figures = n.stats().await.unwrap().ping_rtt;
        assert!(figures.count() >= 3, "{me}: ping_rtt {figures:?}");
    }

    let n3 = NodeId::new("n3").unwrap();
    let phi_of = |n: &Node| n.member_health().get(&n3).map(|h| h.phi);
    nodes[3].shutdown().await; // silent, without leaving
    eventually(
        "n3's phi passes 8 on every survivor, n3 still in their tables",
        Duration::from_secs(15),
        async || {
            nodes[..3].iter().all(|n| {
                state_of(n, "n3").is_some_and(|s| s != MemberState::Alive)
                    && phi_of(n).is_some_and(|phi| phi > 8.0)
            })
        },
    )
    .await;
    let before: Vec<f64> = nodes[..3].iter().map(|n| phi_of(n).unwrap()).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (n, before) in nodes[..3].iter().zip(before) {
        let me = &n.local_member().info.id;
        let now = phi_of(n).expect("a failed member keeps its figures until reaped");
        assert!(
            now > before,
            "{me}: n3's phi rises with silence: {before} -> {now}"
        );
    }
    eventually(
        "the survivors' phi for each other is low: they still answer",
        Duration::from_secs(10),
        async || {
            nodes[..3].iter().all(|n| {
                n.member_health()
                    .iter()
                    .filter(|(id, _)| *id != &n3)
                    .all(|(_, h)| h.phi < 8.0)
            })
        },
    )
    .await;

    assert!(nodes[2].leave(Duration::from_secs(5)).await.unwrap());
    eventually(
        "n2 left: its figures are gone",
        Duration::from_secs(10),
        async || {
            nodes[..2].iter().all(|n| {
                state_of(n, "n2") == Some(MemberState::Left)
                    && !n.member_health().contains_key(&NodeId::new("n2").unwrap())
            })
        },
    )
    .await;
    for n in &nodes[..3] {
        n.shutdown().await;
    }
}

/// The attack of the hardening issue: one plain datagram carrying `Suspect` at incarnation
/// `u64::MAX` about a live node, sent to every node. Before the plausible-step rule it made the
/// node failed everywhere for good (it cannot refute above `u64::MAX`); now every node drops
/// the claim and counts it, and the node stays alive everywhere at a small incarnation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspect_at_u64_max_about_a_live_node_cannot_kill_it() {
    use distributed_core::cluster::{Message, Suspect};
    use distributed_core::identity::{Incarnation, NodeId};
    let _serial = serial().await;
    let nodes = Net::Udp.cluster(named(4), Duration::from_secs(10)).await;
    let forged = Message::Suspect(Suspect {
        incarnation: Incarnation(u64::MAX),
        node: NodeId::new("n1").unwrap(),
        from: NodeId::new("attacker").unwrap(),
    });
    let datagram = plain_datagram(&[forged]);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for n in &nodes {
        sock.send_to(&datagram, n.addr()).await.unwrap();
    }
    eventually(
        "every node counted the forged claim as implausible",
        Duration::from_secs(5),
        async || {
            let mut all = true;
            for n in &nodes {
                all &= n.stats().await.unwrap().core.implausible >= 1;
            }
            all
        },
    )
    .await;
    // Past a suspicion timeout of the local preset: a believed claim would have killed n1.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for n in nodes
        .iter()
        .filter(|n| n.local_member().info.id.as_str() != "n1")
    {
        let m = n
            .members()
            .into_iter()
            .find(|m| m.info.id.as_str() == "n1")
            .expect("n1 known");
        assert_eq!(m.state, MemberState::Alive, "{m:?}");
        assert!(m.incarnation.0 < 1 << 16, "{m:?}");
    }
    for n in &nodes {
        n.shutdown().await;
    }
}

/// Remote input obeys the local limits: a plain datagram announcing a member whose tags are
/// over `tags_bytes_max` is dropped and counted on receipt, and one whose name is over 128
/// bytes does not decode. Neither member appears anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_over_the_local_limits_are_dropped_on_receipt() {
    use distributed_core::cluster::{Alive, Message};
    use distributed_core::identity::{Incarnation, NodeId, NodeInfo};
    use distributed_core::testing::encode_packet;
    let _serial = serial().await;
    let node = Node::start(config("target")).await.unwrap();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let send = async |msg: Message| {
        sock.send_to(&plain_datagram(&[msg]), node.addr())
            .await
            .unwrap();
    };
    let mut fat = NodeInfo::new(
        NodeId::new("fat").unwrap(),
        "127.0.0.9:7946".parse().unwrap(),
    );
    fat.tags.insert("blob".into(), "x".repeat(600));
    send(Message::Alive(Alive {
        incarnation: Incarnation(0),
        info: Arc::new(fat),
    }))
    .await;
    // A 200-byte name, written as the wire would carry it (docs/protocol.md): the packet of an
    // alive claim with a one-byte name, the name swapped for 200 bytes (postcard: varint
    // length, then the bytes) and the item's length varint rewritten.
    let short = NodeInfo::new(NodeId::new("s").unwrap(), "127.0.0.9:7946".parse().unwrap());
    let packet = encode_packet(&[Message::Alive(Alive {
        incarnation: Incarnation(0),
        info: Arc::new(short),
    })]);
    assert!(packet[2] < 0x80, "a one-byte item length");
    let mut item = packet[3..].to_vec();
    let at = item
        .windows(2)
        .position(|w| w == [1, b's'])
        .expect("the name");
    item.splice(at..at + 2, [vec![200, 1], vec![b'n'; 200]].concat()); // varint 200, 200 bytes
    let len = item.len();
    assert!((0x80..0x4000).contains(&len));
    let mut body = vec![
        packet[0],
        packet[1],
        (len as u8 & 0x7f) | 0x80,
        (len >> 7) as u8,
    ];
    body.extend_from_slice(&item);
    sock.send_to(&plain_frame(&body), node.addr())
        .await
        .unwrap();
    eventually(
        "both refused and counted",
        Duration::from_secs(5),
        async || {
            let s = node.stats().await.unwrap();
            s.core.over_limit == 1 && s.traffic.rejected_packet == 1
        },
    )
    .await;
    assert!(node.members().is_empty(), "{:?}", node.members());
    still_serving(&Net::Udp, node).await;
}

/// No reflection: ping-reqs that name a third address (not a member's) make the node send
/// nothing there. Before, each made it ping the victim, with its own (here 100-byte) name in
/// every ping: more bytes at the victim than the attacker sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_reqs_naming_a_third_address_are_not_reflected() {
    use distributed_core::cluster::{Message, PingReq};
    use distributed_core::identity::NodeId;
    let _serial = serial().await;
    let node = Node::start(config(&"t".repeat(100))).await.unwrap();
    let victim = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let attacker = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut sent = 0;
    for seq in 0..100 {
        let req = Message::PingReq(Box::new(PingReq {
            seq,
            target: NodeId::new("v").unwrap(),
            target_addr: victim.local_addr().unwrap(),
            source: NodeId::new("a").unwrap(),
            nack: true,
        }));
        sent += attacker
            .send_to(&plain_datagram(&[req]), node.addr())
            .await
            .unwrap();
    }
    eventually(
        "100 ping-reqs refused",
        Duration::from_secs(5),
        async || node.stats().await.unwrap().core.misdirected == 100,
    )
    .await;
    // Anything reflected would arrive within a probe timeout; wait a few.
    let mut got = 0;
    let mut buf = [0u8; 2048];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(1500), victim.recv(&mut buf)).await
    {
        got += n;
    }
    let ratio = got as f64 / sent as f64;
    println!("amplification: {got} bytes at the victim for {sent} sent: {ratio:.3}");
    assert_eq!(got, 0, "bytes reflected to a third address");
    node.shutdown().await;
}

/// A transport that keeps a copy of every datagram and stream record it sends (at most
/// `TAP_MAX` of each), as an eavesdropper on the network would.
struct Tap<T> {
    inner: T,
    seen: Arc<std::sync::Mutex<Tapped>>,
}

#[derive(Default)]
struct Tapped {
    datagrams: Vec<(std::net::SocketAddr, Vec<u8>)>,
    records: Vec<(std::net::SocketAddr, Vec<u8>)>,
}

const TAP_MAX: usize = 10_000;

impl<T: distributed_core::transport::Transport> distributed_core::transport::Transport for Tap<T> {
    fn local_addr(&self) -> std::net::SocketAddr {
        self.inner.local_addr()
    }
    fn recv(
        &mut self,
    ) -> impl std::future::Future<Output = Option<distributed_core::transport::Incoming>> + Send
    {
        self.inner.recv()
    }
    fn send_packet(
        &mut self,
        to: std::net::SocketAddr,
        bytes: &[u8],
    ) -> impl std::future::Future<Output = ()> + Send {
        let mut seen = self.seen.lock().unwrap();
        if seen.datagrams.len() < TAP_MAX {
            seen.datagrams.push((to, bytes.to_vec()));
        }
        self.inner.send_packet(to, bytes)
    }
    fn send_stream(
        &mut self,
        to: std::net::SocketAddr,
        record: Vec<u8>,
    ) -> Result<(), distributed_core::transport::StreamRefused> {
        let mut seen = self.seen.lock().unwrap();
        if seen.records.len() < TAP_MAX {
            seen.records.push((to, record.clone()));
        }
        self.inner.send_stream(to, record)
    }
    fn counters(&self) -> Arc<distributed_core::transport::TransportCounters> {
        self.inner.counters()
    }
    fn close(&mut self) -> impl std::future::Future<Output = ()> + Send {
        self.inner.close()
    }
}

/// Replay: datagrams and a stream record captured between two encrypted nodes and sent again
/// by a third party are refused, as `replayed` while the receiver remembers them and as
/// `stale` once they are older than `clock_skew_max` (2 s here). Without the replay window
/// every one of them was opened and handed to the protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_sealed_frames_replayed_are_refused_then_stale() {
    use distributed_core::transport::net::NetTransport;
    use tokio::io::AsyncWriteExt;
    let _serial = serial().await;
    let key = Key::from_bytes([5; KEY_BYTES]);
    let encrypted = |name: &str| {
        let mut c = config(name);
        c.keyring = Some(Keyring::new(key.clone()));
        c.label = "prod".into();
        c.transport.clock_skew_max = Duration::from_secs(2);
        c
    };
    let seen = Arc::new(std::sync::Mutex::new(Tapped::default()));
    let ca = encrypted("a");
    let tap = Tap {
        inner: NetTransport::bind(ca.bind, ca.transport.clone())
            .await
            .unwrap(),
        seen: seen.clone(),
    };
    let a = Node::start_on(ca, tap).await.unwrap();
    let b = Node::start(encrypted("b")).await.unwrap();
    a.join(vec![b.addr()]).await.unwrap();
    let both = [a, b];
    harness::converged(&both, Duration::from_secs(10)).await;
    let [a, b] = both;

    // Capture what a sends b for a while: datagrams, and the record of a fresh join.
    *seen.lock().unwrap() = Tapped::default();
    a.join(vec![b.addr()]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (datagrams, records): (Vec<Vec<u8>>, Vec<Vec<u8>>) = {
        let s = seen.lock().unwrap();
        let to_b = |v: &Vec<(std::net::SocketAddr, Vec<u8>)>| {
            v.iter()
                .filter(|(to, _)| *to == b.addr())
                .map(|(_, f)| f.clone())
                .collect()
        };
        (to_b(&s.datagrams), to_b(&s.records))
    };
    assert!(!datagrams.is_empty() && !records.is_empty(), "captured");
    let n = (datagrams.len() + records.len()) as u64;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let replay = async || {
        for d in &datagrams {
            sock.send_to(d, b.addr()).await.unwrap();
        }
        let mut tcp = tokio::net::TcpStream::connect(b.addr()).await.unwrap();
        for r in &records {
            tcp.write_all(&(r.len() as u32).to_be_bytes())
                .await
                .unwrap();
            tcp.write_all(r).await.unwrap();
        }
        tcp.flush().await.unwrap();
    };

    replay().await;
    eventually(
        "every replay refused as replayed",
        Duration::from_secs(5),
        async || b.stats().await.unwrap().traffic.rejected_replayed == n,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    replay().await;
    eventually(
        "every late replay refused as stale",
        Duration::from_secs(5),
        async || b.stats().await.unwrap().traffic.rejected_stale == n,
    )
    .await;
    let t = b.stats().await.unwrap().traffic;
    println!(
        "replayed {n} captured frames twice: {} refused as replayed, {} as stale",
        t.rejected_replayed, t.rejected_stale
    );
    assert_eq!((t.rejected_replayed, t.rejected_key), (n, 0), "{t:?}");
    assert_eq!(state_of(&b, "a"), Some(MemberState::Alive));
    use distributed_core::metrics::{render, Format, Snapshot};
    let snap = Snapshot {
        node: b.stats().await.unwrap(),
        member_health: Default::default(),
        chaos_faults: Default::default(),
        wal: None,
        admin_rejected: Default::default(),
    };
    let metrics = render(&snap, Format::Text);
    assert!(
        metrics.contains(&format!("dcore_rejected_total{{reason=\"replayed\"}} {n}")),
        "{metrics}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// The cluster label on plain frames: a plain node labelled `green`, and one with no label,
/// joining a plain `blue` cluster are refused and counted (`label`); a second `blue` node
/// joins as usual. Without the check the three clusters merged into one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_clusters_with_different_labels_never_merge() {
    let _serial = serial().await;
    let labelled = |name: &str, label: &str| {
        let mut c = config(name);
        c.label = label.into();
        c
    };
    let blue = Node::start(labelled("blue", "blue")).await.unwrap();
    let blue2 = Node::start(labelled("blue2", "blue")).await.unwrap();
    let green = Node::start(labelled("green", "green")).await.unwrap();
    let none = Node::start(labelled("none", "")).await.unwrap();
    for n in [&blue2, &green, &none] {
        n.join(vec![blue.addr()]).await.unwrap();
    }
    eventually("blue2 joined blue", Duration::from_secs(10), async || {
        state_of(&blue, "blue2") == Some(MemberState::Alive)
            && state_of(&blue2, "blue") == Some(MemberState::Alive)
    })
    .await;
    eventually(
        "both foreign joins refused",
        Duration::from_secs(10),
        async || blue.stats().await.unwrap().traffic.rejected_label >= 2,
    )
    .await;
    // Join retries keep coming and keep being refused; nothing crosses in the meantime.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let names = |n: &Node| -> Vec<String> {
        n.members()
            .iter()
            .map(|m| m.info.id.as_str().to_string())
            .collect()
    };
    let refused = blue.stats().await.unwrap().traffic.rejected_label;
    println!("blue refused {refused} frames of other labels");
    assert_eq!(names(&blue), ["blue2"]);
    assert_eq!(names(&blue2), ["blue"]);
    assert!(names(&green).is_empty(), "{:?}", names(&green));
    assert!(names(&none).is_empty(), "{:?}", names(&none));
    for n in [blue, blue2, green, none] {
        n.shutdown().await;
    }
}

on_both!(placement_agrees_everywhere_and_a_watch_follows_a_leave);
/// Every node names the same owners for the same keys; when the owner of a watched key leaves,
/// the watch moves to the next owner, and keys the leaver did not own keep their owners.
async fn placement_agrees_everywhere_and_a_watch_follows_a_leave(net: Net) {
    use distributed_core::cluster::placement::PlacementFilter;
    let nodes = net.cluster(named(4), Duration::from_secs(10)).await;
    let all = PlacementFilter::default();
    let owners = |n: &Node, key: &str| -> Vec<String> {
        (n.owners(key.as_bytes(), 2, &all).iter())
            .map(|m| m.info.id.to_string())
            .collect()
    };
    let keys: Vec<String> = (0..200).map(|k| format!("room-{k}")).collect();
    let before: Vec<Vec<String>> = keys.iter().map(|k| owners(&nodes[0], k)).collect();
    for n in &nodes[1..] {
        for (k, want) in keys.iter().zip(&before) {
            assert_eq!(&owners(n, k), want, "{k} on {}", n.local_member().info.id);
        }
    }
    // Every node owns some keys.
    for i in 0..4 {
        let name = format!("n{i}");
        assert!(before.iter().any(|o| o[0] == name), "{name} owns nothing");
    }
    // Watch, from n0, a key whose first owner is n3.
    let k = keys
        .iter()
        .zip(&before)
        .find(|(_, o)| o[0] == "n3")
        .unwrap();
    let mut watch = nodes[0].watch_owners(k.0.clone().into_bytes(), 2, all.clone());
    let first: Vec<String> = watch.borrow().iter().map(|id| id.to_string()).collect();
    assert_eq!(&first, k.1);
    assert!(nodes[3].leave(Duration::from_secs(5)).await.unwrap());
    tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .expect("the watch saw the leave")
        .unwrap();
    let now: Vec<String> = watch.borrow().iter().map(|id| id.to_string()).collect();
    assert_eq!(now[0], k.1[1], "the second owner moves up: {now:?}");
    assert!(!now.contains(&"n3".to_string()));
    for (key, was) in keys.iter().zip(&before) {
        let now = owners(&nodes[0], key);
        if was[0] != "n3" {
            assert_eq!(now[0], was[0], "{key} moved though n3 did not own it");
        }
    }
    drop(watch);
    for n in &nodes[..3] {
        n.shutdown().await;
    }
}

on_both!(direct_messages_arrive_once_in_order_and_refusals_are_reported);
/// 10,000 reliable messages from one node to another arrive once each and in order (the sender
/// retries what the full queue refuses); best-effort ones arrive at most once and are counted
/// on both sides; messages to a member that is not there are refused to the caller.
async fn direct_messages_arrive_once_in_order_and_refusals_are_reported(net: Net) {
    use distributed_core::cluster::{CommandError, Event};
    use distributed_core::identity::NodeId;
    use distributed_core::node::NodeError;
    use distributed_core::transport::StreamRefused;
    const N: u32 = 10_000;
    let [a, b] = array(net.cluster(named(2), Duration::from_secs(10)).await);
    let n1 = NodeId::new("n1").unwrap();
    let mut inbox = b.subscribe();
    let receiver = tokio::spawn(async move {
        let (mut reliable, mut datagrams) = (Vec::new(), 0u32);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while reliable.len() < N as usize {
            let e = tokio::time::timeout_at(deadline, inbox.recv())
                .await
                .expect("10,000 messages within 60 s")
                .expect("no event lost");
            if let Event::Message(m) = e {
                assert_eq!(m.from.as_str(), "n0");
                if m.reliable {
                    reliable.push(u32::from_be_bytes(m.payload[..4].try_into().unwrap()));
                } else {
                    datagrams += 1;
                }
            }
        }
        (reliable, datagrams)
    });
    // Best effort first: 100 small datagrams.
    for i in 0..100u32 {
        a.send(&n1, i.to_be_bytes().to_vec()).await.unwrap();
    }
    let mut full = 0u32;
    for i in 0..N {
        let mut payload = i.to_be_bytes().to_vec();
        payload.resize(100, 7);
        loop {
            match a.send_reliable(&n1, payload.clone()).await {
                Ok(()) => break,
                Err(NodeError::Stream(StreamRefused::QueueFull)) => {
                    full += 1;
                    assert!(full < 1_000_000, "the queue never drained");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => panic!("message {i}: {e}"),
            }
        }
    }
    let (got, datagrams) = receiver.await.unwrap();
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "once each, in order");
    assert!(datagrams <= 100, "{datagrams}");
    let sb = b.stats().await.unwrap();
    assert_eq!(
        a.traffic().direct_sent,
        u64::from(N) + 100,
        "refused sends are not counted"
    );
    assert_eq!(sb.core.direct_in, u64::from(N + datagrams));
    println!("{N} reliable in order ({full} queue-full retries); {datagrams} of 100 datagrams");

    // Refused to the caller: too large for a datagram, an unknown member, a member gone.
    let too_big = a.send(&n1, vec![0; 2000]).await.unwrap_err();
    assert!(matches!(
        too_big,
        NodeError::Command(CommandError::MessageTooLarge { .. })
    ));
    let nobody = NodeId::new("nobody").unwrap();
    let unknown = a.send_reliable(&nobody, vec![]).await.unwrap_err();
    assert!(matches!(
        unknown,
        NodeError::Command(CommandError::UnknownMember(_))
    ));
    assert!(b.leave(Duration::from_secs(5)).await.unwrap());
    eventually("n0 sees n1 left", Duration::from_secs(10), async || {
        state_of(&a, "n1") == Some(MemberState::Left)
    })
    .await;
    let gone = a.send_reliable(&n1, vec![1]).await.unwrap_err();
    assert!(
        matches!(gone, NodeError::Command(CommandError::MemberGone { .. })),
        "{gone}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

on_both!(queries_reach_exactly_the_selected_members_and_their_handlers_answer);
/// Queries with and without filters: acknowledged and answered by exactly the members the
/// filters select (tag patterns match whole values), once each; a member that went down
/// before the query is reported missing.
async fn queries_reach_exactly_the_selected_members_and_their_handlers_answer(net: Net) {
    use distributed_core::cluster::{QueryFilter, QueryParams};
    use distributed_core::node::NodeError;
    let configs = named(5).enumerate().map(|(i, mut c)| {
        let role = if i % 2 == 1 { "media" } else { "media-old" };
        c.tags.insert("role".into(), role.into());
        c
    });
    let nodes = net.cluster(configs, Duration::from_secs(10)).await;
    for n in &nodes {
        let mut rx = n.query_handler("whoami").await.unwrap();
        let name = n.local_member().info.id.to_string();
        tokio::spawn(async move {
            while let Some(q) = rx.recv().await {
                let text = format!("{name}:{}", String::from_utf8_lossy(&q.request.payload));
                q.respond(text.into_bytes()).await.unwrap();
            }
        });
    }
    let ask = async |filters: Vec<QueryFilter>, name: &str| {
        let mut p = QueryParams::new(name, b"hi".to_vec());
        p.filters = filters;
        p.timeout = Some(Duration::from_secs(2));
        p.relay_factor = 1;
        nodes[0].query(p).await.unwrap().collect().await.unwrap()
    };
    let names = |ids: &[distributed_core::identity::NodeId]| -> Vec<String> {
        ids.iter().map(|i| i.to_string()).collect()
    };
    let all = ask(Vec::new(), "whoami").await;
    assert_eq!(names(&all.acks), ["n0", "n1", "n2", "n3", "n4"]);
    assert_eq!(all.responses.len(), 5);
    for (from, text) in &all.responses {
        assert_eq!(String::from_utf8_lossy(text), format!("{from}:hi"));
    }
    assert!(all.missing.is_empty());

    let media = ask(
        vec![QueryFilter::Tag {
            key: "role".into(),
            pattern: "media".into(),
        }],
        "whoami",
    )
    .await;
    assert_eq!(names(&media.acks), ["n1", "n3"], "anchored: not media-old");
    let answered: Vec<String> = media.responses.keys().map(|k| k.to_string()).collect();
    assert_eq!(answered, ["n1", "n3"]);

    let two = ask(
        vec![QueryFilter::Names(vec![
            distributed_core::identity::NodeId::new("n2").unwrap(),
            distributed_core::identity::NodeId::new("n4").unwrap(),
        ])],
        "whoami",
    )
    .await;
    assert_eq!(names(&two.acks), ["n2", "n4"]);
    assert_eq!(two.responses.len(), 2);

    let unhandled = ask(Vec::new(), "nobody-answers").await;
    assert_eq!(unhandled.acks.len(), 5);
    assert!(unhandled.responses.is_empty() && unhandled.missing.is_empty());

    let reserved = nodes[0].query_handler("_dcore_keys").await;
    assert!(matches!(reserved, Err(NodeError::ReservedName(_))));

    nodes[4].shutdown().await;
    let down = ask(Vec::new(), "whoami").await;
    assert_eq!(names(&down.missing), ["n4"], "{down:?}");
    assert_eq!(down.responses.len(), 4);
    for n in &nodes[..4] {
        n.shutdown().await;
    }
}

on_both!(the_key_rotates_through_cluster_key_commands);
/// serf's `keys` commands through internal queries: install, use and remove reach every
/// node, each reports its keys; no member is lost; a node that is down is reported missing.
async fn the_key_rotates_through_cluster_key_commands(net: Net) {
    use distributed_core::cluster::Event;
    use distributed_core::node::{KeysAnswer, KeysOp};
    let (old, new) = (
        Key::from_bytes([5; KEY_BYTES]),
        Key::from_bytes([6; KEY_BYTES]),
    );
    let encrypted = named(5).map(|mut c| {
        c.keyring = Some(Keyring::new(old.clone()));
        c
    });
    let nodes = net.cluster(encrypted, Duration::from_secs(10)).await;
    let mut subs: Vec<_> = nodes.iter().map(|n| n.subscribe()).collect();
    let run = async |op: KeysOp| {
        let r = (nodes[2]
            .keys_cluster(&op, Some(Duration::from_secs(3)))
            .await)
            .unwrap();
        let answers: Vec<KeysAnswer> = (r.responses.values())
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect();
        (r, answers)
    };
    let id = |k: &Key| format!("{:#04x}", k.id());
    let key = new.to_base64();
    for op in [
        KeysOp::Install { key: key.clone() },
        KeysOp::Use { key: key.clone() },
        KeysOp::Remove {
            key: old.to_base64(),
        },
    ] {
        let (r, answers) = run(op.clone()).await;
        assert_eq!(answers.len(), 5, "{op:?}: {r:?}");
        assert!(r.missing.is_empty(), "{op:?}: {r:?}");
        for a in &answers {
            assert_eq!(a.error, None, "{op:?}");
            assert!(a.keys.contains(&id(&new)), "{op:?}: {a:?}");
        }
    }
    let (_, answers) = run(KeysOp::List).await;
    for a in &answers {
        assert_eq!(
            (&a.keys[..], a.primary.as_ref()),
            (&[id(&new)][..], Some(&id(&new)))
        );
    }
    // Removing the key in use is refused everywhere, with the reason.
    let (_, answers) = run(KeysOp::Remove { key: key.clone() }).await;
    assert!(answers.iter().all(|a| a.error.is_some()), "{answers:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        nodes.iter().all(|n| alive_count(n) == 4),
        "a member was lost"
    );
    for (i, sub) in subs.iter_mut().enumerate() {
        while let Ok(e) = sub.try_recv() {
            assert!(!matches!(e, Event::MemberFailed(_)), "n{i}: {e:?}");
        }
    }
    nodes[4].shutdown().await;
    let (r, answers) = run(KeysOp::List).await;
    assert_eq!(answers.len(), 4);
    assert_eq!(
        r.missing.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        ["n4"]
    );
    for n in &nodes[..4] {
        n.shutdown().await;
    }
}
