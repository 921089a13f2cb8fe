//! Coordination on membership: which node hosts a room, telling it so, and how far it is.
//!
//! A media cluster of four nodes (real UDP + TCP on 127.0.0.1, `local` preset) places rooms by
//! rendezvous hashing ([`Node::owners`]): every node names the same host for a room without
//! asking anyone. A front node sends each room's host a reliable direct message
//! ([`Node::send_reliable`]); the host sees it as [`Event::Message`]. Then the host of one room
//! crashes: a watch on that room ([`Node::watch_owners`]) moves to the room's second owner once
//! the crash is detected, and no other room moves. Last, the network coordinates estimate the
//! round trip to each member ([`Node::rtt_estimate`]).
//!
//! ```text
//! cargo run --release --example room_placement
//! ```
//!
//! It exits 0 when every step happened within its deadline, 1 with the reason otherwise.

use distributed_core::cluster::placement::PlacementFilter;
use distributed_core::{Config, Event, Node, NodeConfig};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const ROOMS: [&str; 6] = ["lobby", "ops", "sales", "support", "design", "town-hall"];

async fn start(name: &str, seed: Option<std::net::SocketAddr>) -> Result<Node, String> {
    let mut c = NodeConfig::new(name, "127.0.0.1:0".parse().expect("an address"));
    c.protocol = Config::local();
    if name.starts_with("media") {
        c.tags.insert("role".into(), "media".into());
    }
    let node = Node::start(c).await.map_err(|e| e.to_string())?;
    if let Some(seed) = seed {
        node.join(vec![seed]).await.map_err(|e| e.to_string())?;
    }
    Ok(node)
}

/// Polls `done` every 50 ms until it holds or `within` passes.
async fn wait_for(
    what: &str,
    within: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("{what}: not within {within:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn run() -> Result<(), String> {
    let front = start("front", None).await?;
    let mut media = Vec::new();
    for i in 1..=4 {
        media.push(start(&format!("media-{i}"), Some(front.addr())).await?);
    }
    wait_for(
        "5 members alive everywhere",
        Duration::from_secs(10),
        || media.iter().chain([&front]).all(|n| n.num_alive() == 5),
    )
    .await?;

    // Rooms go to media nodes only (the front node has no role tag).
    let filter = PlacementFilter::parse(&["role=media".into()], None).map_err(|e| e.to_string())?;
    let host_of = |n: &Node, room: &str| -> Vec<String> {
        (n.owners(room.as_bytes(), 2, &filter).iter())
            .map(|m| m.info.id.to_string())
            .collect()
    };
    let mut hosts = BTreeMap::new();
    for room in ROOMS {
        let owners = host_of(&front, room);
        for n in &media {
            if host_of(n, room) != owners {
                return Err(format!("{room}: nodes disagree on its host"));
            }
        }
        println!("{room:<10} host {} (then {})", owners[0], owners[1]);
        hosts.insert(room, owners);
    }

    // Tell each host about its room, reliably; each host sees the message with its sender.
    let mut inboxes: Vec<_> = media.iter().map(|n| n.subscribe()).collect();
    for (room, owners) in &hosts {
        let host = distributed_core::NodeId::new(&owners[0]).map_err(|e| e.to_string())?;
        let note = format!("open {room}").into_bytes();
        front
            .send_reliable(&host, note)
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut opened = 0;
    for (n, inbox) in media.iter().zip(&mut inboxes) {
        let mine = hosts
            .values()
            .filter(|o| o[0] == n.local_member().info.id.as_str())
            .count();
        for _ in 0..mine {
            let deadline = Duration::from_secs(5);
            loop {
                let e = tokio::time::timeout(deadline, inbox.recv())
                    .await
                    .map_err(|_| "a room message did not arrive".to_string())?
                    .map_err(|e| e.to_string())?;
                if let Event::Message(m) = e {
                    let text = String::from_utf8_lossy(&m.payload);
                    println!("[{}] from {}: {text}", n.local_member().info.id, m.from);
                    opened += 1;
                    break;
                }
            }
        }
    }
    if opened != ROOMS.len() {
        return Err(format!("{opened} of {} rooms opened", ROOMS.len()));
    }

    // Crash the host of the first room; its watch moves to the second owner.
    let (room, owners) = hosts
        .iter()
        .next()
        .map(|(r, o)| (*r, o.clone()))
        .expect("rooms");
    let mut watch = front.watch_owners(room.as_bytes().to_vec(), 2, filter.clone());
    let victim = media
        .iter()
        .find(|n| n.local_member().info.id.as_str() == owners[0])
        .expect("the host is a media node");
    println!("\ncrashing {} (host of {room})", owners[0]);
    let crashed = Instant::now();
    victim.shutdown().await;
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            watch.changed().await.map_err(|e| e.to_string())?;
            if watch.borrow().first().map(|id| id.as_str()) == Some(owners[1].as_str()) {
                return Ok::<(), String>(());
            }
        }
    })
    .await
    .map_err(|_| format!("{room} did not move to {}", owners[1]))??;
    println!(
        "{room} moved to {} after {:.1} s",
        owners[1],
        crashed.elapsed().as_secs_f64()
    );
    for (other, was) in hosts.iter().filter(|(r, _)| **r != room) {
        let now = host_of(&front, other);
        if was[0] != owners[0] && now[0] != was[0] {
            return Err(format!("{other} moved although its host is alive"));
        }
    }

    // Round trips the coordinates predict, from the front node (loopback: well under 1 ms).
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in media
        .iter()
        .filter(|n| n.local_member().info.id.as_str() != owners[0])
    {
        let id = &n.local_member().info.id;
        let rtt = loop {
            if let Some(rtt) = front.rtt_estimate(id).await.map_err(|e| e.to_string())? {
                break rtt;
            }
            if Instant::now() > deadline {
                return Err(format!("no coordinate of {id} within 10 s"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        println!(
            "front <-> {id}: {:.3} ms estimated",
            rtt.as_secs_f64() * 1e3
        );
    }
    for n in media.iter().chain([&front]) {
        n.shutdown().await;
    }
    println!("\nok");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("failed: {e}");
            ExitCode::FAILURE
        }
    }
}
