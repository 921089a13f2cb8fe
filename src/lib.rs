//! # distributed-core
//!
//! Cluster membership and failure detection for distributed services: SWIM with the Lifeguard
//! extensions, written as a pure state machine, and a deterministic simulator that runs
//! thousands of them in one process.
//!
//! ## Layout
//! Layers from the top; each uses only those below it (`docs/architecture.md` has the picture,
//! checked against the code by `tests/layers.rs`).
//! - [`agent`]: a [`Node`] plus the admin HTTP API, as `dcore agent` runs it ([`Agent`],
//!   [`AgentConfig`]).
//! - [`metrics`]: the node's figures in Prometheus text (and OpenMetrics), and as JSON.
//! - [`node`]: the tokio runtime around the core: [`Node`] (start, join, leave, tags, user
//!   events, subscribe, key rotation, shutdown; queries, direct messages, placement, network
//!   coordinates: `docs/coordination.md`) and its [`NodeConfig`].
//! - [`diagnostics`]: chaos injection in the transport stack (drop, delay, duplication,
//!   reordering, partitions).
//! - [`cluster`]: the sans-io protocol core ([`cluster::Swim`]): membership table, probe cycle,
//!   suspicion, dissemination, push-pull, tags, user events; plus a phi-accrual detector.
//! - [`transport`]: the [`Transport`] trait with real UDP + TCP ([`NetTransport`]) and
//!   in-memory ([`MemNetwork`]) implementations, the frame and its sealing ([`Keyring`]).
//! - [`persistence`]: a crash-safe write-ahead log ([`Wal`]: segments, CRC32C, group commit)
//!   and a key-value state store on it ([`WalStore`], snapshots), with an in-memory twin; see
//!   `docs/wal.md`.
//! - [`sim`]: the deterministic simulator behind `dcore sim` ([`Scenario`] → [`Report`]).
//! - [`identity`]: what a node is: [`NodeId`], [`Incarnation`], [`NodeInfo`] and [`Tags`],
//!   cluster [`Key`]s and key files, the identity kept across restarts.
//! - [`common`]: small shared pieces: time, histogram, backoff, counters, [`ConfigError`].
//! - `dcore` (the binary, `src/cli/`): the command line.
//!
//! The types a user needs are re-exported here, at the crate root. Internals that the crate's
//! own tests use (packet codec, frame header, a fault-injecting filesystem) are behind the
//! `testing` feature.
//!
//! ## A node in ten lines
//! Two nodes on real UDP + TCP at 127.0.0.1, the second joining through the first, each
//! publishing its role in tags:
//!
//! ```
//! use distributed_core::{Config, MemberState, Node, NodeConfig};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let any = "127.0.0.1:0".parse()?;
//! let seed = Node::start(NodeConfig::builder("seed", any).tag("role", "broker").build()?).await?;
//! let media = NodeConfig::builder("media-1", any)
//!     .tag("role", "media")
//!     .seeds(vec![seed.addr()])
//!     .protocol(Config::local())
//!     .build()?;
//! let media = Node::start(media).await?;
//! while !seed.members().iter().any(|m| m.state == MemberState::Alive) {
//!     tokio::time::sleep(std::time::Duration::from_millis(20)).await;
//! }
//! assert_eq!(seed.members()[0].info.tags["role"], "media");
//! media.leave(std::time::Duration::from_secs(1)).await?;
//! media.shutdown().await;
//! seed.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! ## Asking the cluster
//! A query goes to every member its filters select; their handlers answer, and the asker
//! gathers the answers until the timeout. Then a direct message to the member that answered,
//! and the round trip its network coordinate predicts:
//!
//! ```
//! use distributed_core::cluster::{Event, QueryParams};
//! use distributed_core::{Config, MemberState, Node, NodeConfig};
//! use std::time::Duration;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let any = "127.0.0.1:0".parse()?;
//! let config = |name: &str| NodeConfig::builder(name, any).protocol(Config::local());
//! let broker = Node::start(config("broker").build()?).await?;
//! let media = Node::start(config("media-1").seeds(vec![broker.addr()]).build()?).await?;
//! for n in [&broker, &media] {
//!     while !n.members().iter().any(|m| m.state == MemberState::Alive) {
//!         tokio::time::sleep(Duration::from_millis(20)).await;
//!     }
//! }
//! // media-1 answers "who-has" queries.
//! let mut asked = media.query_handler("who-has").await?;
//! tokio::spawn(async move {
//!     while let Some(q) = asked.recv().await {
//!         let has = q.request.payload == b"room-7";
//!         let _ = q.respond(if has { b"yes".to_vec() } else { b"no".to_vec() }).await;
//!     }
//! });
//! let mut ask = QueryParams::new("who-has", b"room-7".to_vec());
//! ask.timeout = Some(Duration::from_millis(500));
//! let answers = broker.query(ask).await?.collect().await?;
//! let media_id = media.local_member().info.id.clone();
//! assert_eq!(answers.responses[&media_id], b"yes");
//! assert_eq!(answers.acks.len(), 2, "both members acknowledge; only media-1 answers");
//!
//! // Tell it, in order over the stream connection.
//! let mut inbox = media.subscribe();
//! broker.send_reliable(&media_id, b"open room-7".to_vec()).await?;
//! loop {
//!     if let Event::Message(m) = inbox.recv().await? {
//!         assert_eq!((m.from.as_str(), &m.payload[..]), ("broker", &b"open room-7"[..]));
//!         break;
//!     }
//! }
//! // The round trip the coordinates predict (None until media-1 has answered a probe).
//! let _maybe: Option<Duration> = broker.rtt_estimate(&media_id).await?;
//! media.shutdown().await;
//! broker.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! ## The sans-io core
//! The core never reads a clock, never touches a socket and draws randomness only from the seed
//! it is given. A driver feeds it inputs stamped with the current time and carries out what it
//! returns. Two cores wired together by hand:
//!
//! ```
//! use distributed_core::cluster::{Command, Config, Event, Input, Output, Swim};
//! use distributed_core::common::{Now, Time};
//! use distributed_core::identity::{Incarnation, NodeId, NodeInfo};
//!
//! let addr_a = "127.0.0.1:7946".parse().unwrap();
//! let addr_b = "127.0.0.2:7946".parse().unwrap();
//! let node = |name: &str, addr| NodeInfo::new(NodeId::new(name).unwrap(), addr);
//! let mut a = Swim::new(Config::lan(), node("a", addr_a), Incarnation(0), 1).unwrap();
//! let mut b = Swim::new(Config::lan(), node("b", addr_b), Incarnation(0), 2).unwrap();
//! let now = Now::at(Time::ZERO);
//! let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
//! a.start(now, &mut out_a);
//! b.start(now, &mut out_b);
//! // b joins through a: the core asks for a full-state exchange over the stream channel.
//! b.handle(now, Input::Command(Command::Join(vec![addr_a])), &mut out_b);
//! let mut joined = false;
//! for _ in 0..4 {
//!     for o in std::mem::take(&mut out_b) {
//!         match o {
//!             Output::Stream { msg, .. } => a.handle(now, Input::Stream { from: addr_b, msg }, &mut out_a),
//!             Output::Event(Event::JoinCompleted { .. }) => joined = true,
//!             _ => {} // timers, packets: a real driver arms and sends them
//!         }
//!     }
//!     for o in std::mem::take(&mut out_a) {
//!         if let Output::Stream { msg, .. } = o {
//!             b.handle(now, Input::Stream { from: addr_a, msg }, &mut out_b);
//!         }
//!     }
//! }
//! assert!(joined);
//! assert_eq!(a.active_members(), 2);
//! assert_eq!(b.active_members(), 2);
//! ```
//!
//! Timers come out as [`cluster::Output::Timer`] and go back in as [`cluster::Input::Timer`];
//! the core ignores a timer that has become stale, so drivers never cancel anything.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod agent;
pub mod cluster;
pub mod common;
pub mod diagnostics;
pub mod identity;
pub mod metrics;
pub mod node;
pub mod persistence;
pub mod sim;
pub mod transport;

pub use agent::{Agent, AgentConfig, AgentError};
pub use cluster::{Config, Event, MemberState, MemberView};
pub use common::ConfigError;
pub use diagnostics::chaos::{Chaos, ChaosConfig, ChaosLayer};
pub use identity::{Incarnation, Key, NodeId, NodeInfo, Tags};
pub use node::{Node, NodeConfig, NodeError, NodeStats};
pub use persistence::store::{Batch, MemStore, Store, StoreConfig, StoreError, WalStore};
pub use persistence::wal::{Durability, Wal, WalConfig, WalError};
pub use sim::{Report, Scenario};
pub use transport::crypto::Keyring;
pub use transport::mem::MemNetwork;
pub use transport::net::NetTransport;
pub use transport::{Transport, TransportConfig};

/// Internals for the crate's own tests, benches and fuzz targets (feature `testing`): the
/// packet codec, the frame header, a fault-injecting filesystem. Not a stable API.
#[cfg(feature = "testing")]
pub mod testing {
    pub use crate::cluster::message::{
        decode_packet, encode_packet, item_len, msg_type, packet_header_len, packet_len, varint_len,
    };
    pub use crate::node::record::{open_record, record as seal_record};
    pub use crate::persistence::wal::faulty::{FaultPlan, FaultyFs};
    pub use crate::transport::frame::header::{decode as decode_frame, encode_header};
}
