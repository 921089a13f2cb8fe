//! A hostile peer on the network, against real nodes and agents on 127.0.0.1: messages crafted
//! byte for byte from docs/protocol.md (plain frames, as anyone can send them to a cluster
//! without a key), each aimed at one rule of the protocol core.

mod harness;

use distributed_core::cluster::{Alive, Config, Event, MemberState, Message, PushMember, PushPull};
use distributed_core::identity::{Incarnation, NodeId, NodeInfo};
use distributed_core::node::NodeConfig;
use harness::{agent_config, agents, eventually, plain_datagram, plain_record, serial, Net};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

fn config(name: &str) -> NodeConfig {
    let mut c = NodeConfig::new(name, "127.0.0.1:0".parse().unwrap());
    c.protocol = Config::local();
    c
}

/// Resident memory of this test process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// A million invented members (16 push-pull records of 65,536 rows) thrown at one agent of
/// four: memory stays bounded, the admin API answers, no invented member is added, and a real
/// crash is still detected. Each record is a full state nobody asked for, so it may introduce
/// only its sender (docs/protocol.md, "Admission").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_fake_members_leave_memory_bounded_and_detection_working() {
    const RECORDS: u32 = 16;
    const ROWS: u32 = 65_536;
    let _serial = serial().await;
    let configs = (0..4).map(|i| agent_config(&format!("a{i}")));
    let mut all = agents(configs, Duration::from_secs(15)).await;
    let target = all[0].node().addr();
    let api = format!("http://{}/v1/members", all[0].http_addr());
    let before = rss();
    let client = reqwest::Client::new();
    let mut slowest_api = Duration::ZERO;
    let mut sent_bytes = 0usize;
    for r in 0..RECORDS {
        let members = (0..ROWS)
            .map(|i| {
                // Loopback addresses where nothing listens: the test stays on 127.0.0.0/8.
                let addr = SocketAddr::from(([127, 1 + r as u8, (i >> 8) as u8, i as u8], 7946));
                let id = NodeId::new(&format!("fake-{r}-{i}")).unwrap();
                PushMember {
                    info: Arc::new(NodeInfo::new(id, addr)),
                    incarnation: Incarnation(0),
                    state: MemberState::Alive,
                }
            })
            .collect();
        let msg = Message::PushPull(PushPull {
            join: false,
            reply: false,
            event_ltime: 0,
            members,
        });
        let record = plain_record("127.0.0.1:9".parse().unwrap(), &msg);
        sent_bytes += record.len();
        let mut conn = tokio::net::TcpStream::connect(target).await.unwrap();
        conn.write_all(&record).await.unwrap();
        conn.shutdown().await.unwrap();
        let t = Instant::now();
        let resp = client
            .get(&api)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("the admin API answers during the flood");
        assert!(resp.status().is_success(), "{}", resp.status());
        slowest_api = slowest_api.max(t.elapsed());
    }
    let refused = eventually(
        "every invented row refused by admission",
        Duration::from_secs(30),
        async || {
            let n = all[0].node().stats().await.unwrap().core.admission;
            if n >= u64::from(RECORDS * ROWS) {
                Ok(n)
            } else {
                Err(format!("{n} refused so far"))
            }
        },
    )
    .await;
    let grown = rss().saturating_sub(before);
    let known = all[0].node().members().len();
    println!(
        "flood: {RECORDS} records, {} rows, {sent_bytes} bytes sent; refused {refused}; \
         rows known {known}; RSS grew {:.1} MiB; slowest /v1/members {slowest_api:?}",
        RECORDS * ROWS,
        grown as f64 / (1 << 20) as f64
    );
    assert!(known <= 4, "invented members in the table: {known}");
    assert!(grown < 128 << 20, "RSS grew {grown} bytes");
    // A real crash among the real members is detected as usual.
    let crashed = all.pop().unwrap();
    crashed.shutdown().await;
    let t = Instant::now();
    eventually(
        "a3 failed on a0, a1, a2",
        Duration::from_secs(20),
        async || {
            all.iter().all(|a| {
                a.node()
                    .members()
                    .iter()
                    .any(|m| m.info.id.as_str() == "a3" && m.state == MemberState::Dead)
            })
        },
    )
    .await;
    println!("crash of a3 seen failed everywhere after {:?}", t.elapsed());
    for a in all {
        a.shutdown().await;
    }
}

/// An `Alive` at a higher incarnation that moves a live member to another address is refused
/// by every node (counted, and reported as `Event::MemberConflict`): no probe or gossip goes to
/// the new address, and the member stays alive where it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_members_address_cannot_be_hijacked() {
    let _serial = serial().await;
    let nodes = Net::Udp
        .cluster(
            (0..4).map(|i| config(&format!("n{i}"))),
            Duration::from_secs(10),
        )
        .await;
    let mut events = nodes[0].subscribe();
    let victim = nodes[1].local_member().clone();
    // The hijacker's address: a socket of the test's, counting what the cluster sends it.
    let trap = tokio::net::UdpSocket::bind("127.0.0.66:0").await.unwrap();
    let trap_addr = trap.local_addr().unwrap();
    let forged = Message::Alive(Alive {
        incarnation: Incarnation(victim.incarnation.0 + 1),
        info: Arc::new(NodeInfo::new(victim.info.id.clone(), trap_addr)),
    });
    let datagram = plain_datagram(&[forged]);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for n in [&nodes[0], &nodes[2], &nodes[3]] {
        sock.send_to(&datagram, n.addr()).await.unwrap();
    }
    // Several probe rounds of the local preset: a moved member would be pinged there by now.
    let mut received = 0usize;
    let mut buf = vec![0u8; 65_536];
    let end = Instant::now() + Duration::from_secs(3);
    while let Ok(Ok((n, _))) = tokio::time::timeout_at(end.into(), trap.recv_from(&mut buf)).await {
        received += n;
    }
    println!("bytes sent to the hijacker's address: {received}");
    assert_eq!(received, 0, "the cluster talked to the hijacker's address");
    eventually(
        "three nodes counted a conflict",
        Duration::from_secs(5),
        async || {
            let mut all = true;
            for n in [&nodes[0], &nodes[2], &nodes[3]] {
                all &= n.stats().await.unwrap().core.conflicts >= 1;
            }
            all
        },
    )
    .await;
    for n in [&nodes[0], &nodes[2], &nodes[3]] {
        let m = n
            .members()
            .into_iter()
            .find(|m| m.info.id == victim.info.id)
            .unwrap();
        assert_eq!(m.info.addr, victim.info.addr, "{m:?}");
        assert_eq!(m.state, MemberState::Alive, "{m:?}");
    }
    let mut conflict = false;
    while let Ok(e) = events.try_recv() {
        conflict |=
            matches!(e, Event::MemberConflict { ref claimed, .. } if claimed.addr == trap_addr);
    }
    assert!(conflict, "n0 reported the conflict to the application");
    for n in &nodes {
        n.shutdown().await;
    }
}
