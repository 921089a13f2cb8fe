//! Nodes for the system tests: what a node sees of its members, the transport to start nodes
//! on, and clusters of them (bare nodes, agents or a test's own wrapper) joined and converged.

use super::wait::eventually;
use distributed_core::agent::Agent;
use distributed_core::cluster::{MemberState, Message};
use distributed_core::node::{Node, NodeConfig};
use distributed_core::testing::encode_packet;
use distributed_core::transport::frame::{self, Security};
use distributed_core::transport::mem::MemNetwork;
use std::net::SocketAddr;
use std::time::Duration;

/// A plain frame (no encryption) around a packet `body`, as anyone on the network can send
/// one (docs/protocol.md).
pub fn plain_frame(body: &[u8]) -> Vec<u8> {
    frame::seal(body, Security::PLAIN, 0, &mut rand::thread_rng())
}

/// A plain datagram carrying `msgs`, however extreme their values.
pub fn plain_datagram(msgs: &[Message]) -> Vec<u8> {
    plain_frame(&encode_packet(msgs))
}

/// A plain stream record carrying `msg` and claiming to come from `claimed`, with its length
/// prefix, as anyone who can open a TCP connection can write it (docs/protocol.md: the frame's
/// body is the sender's address, postcard, then a one-message packet).
pub fn plain_record(claimed: SocketAddr, msg: &Message) -> Vec<u8> {
    let mut body = postcard::to_allocvec(&claimed).expect("an address encodes");
    body.extend_from_slice(&encode_packet(std::slice::from_ref(msg)));
    let frame = plain_frame(&body);
    [&(frame.len() as u32).to_be_bytes()[..], &frame].concat()
}

/// Members `node` sees alive (itself not counted).
pub fn alive_count(node: &Node) -> usize {
    node.members()
        .iter()
        .filter(|m| m.state == MemberState::Alive)
        .count()
}

/// The state `node` holds for member `name`, if it knows it.
pub fn state_of(node: &Node, name: &str) -> Option<MemberState> {
    node.members()
        .iter()
        .find(|m| m.info.id.as_str() == name)
        .map(|m| m.state)
}

/// Which transport a system test runs its nodes on.
#[derive(Clone)]
pub enum Net {
    /// Real UDP + TCP on 127.0.0.1, OS-chosen ports (`config.bind`).
    Udp,
    /// One in-memory network shared by the test's nodes.
    Mem(MemNetwork),
}

impl Net {
    /// A fresh in-memory network.
    pub fn mem() -> Self {
        Net::Mem(MemNetwork::new())
    }

    /// Starts a node that must fail to start; returns the error's text.
    pub async fn start_err(&self, config: NodeConfig) -> String {
        let r = match self {
            Net::Udp => Node::start(config).await,
            Net::Mem(net) => {
                let t = net
                    .bind_with(config.bind, config.transport.clone())
                    .expect("in-memory address free");
                Node::start_on(config, t).await
            }
        };
        match r {
            Ok(_) => panic!("the node started, but it should have been refused"),
            Err(e) => e.to_string(),
        }
    }

    /// Starts a node on this transport; panics (failing the test) if it cannot.
    pub async fn start(&self, config: NodeConfig) -> Node {
        match self {
            Net::Udp => Node::start(config).await.expect("node starts on UDP + TCP"),
            Net::Mem(net) => {
                let t = net
                    .bind_with(config.bind, config.transport.clone())
                    .expect("in-memory address free");
                Node::start_on(config, t)
                    .await
                    .expect("node starts in memory")
            }
        }
    }
}

impl Net {
    /// Starts a node per config, each after the first joining the first, and waits up to
    /// `deadline` until every node sees all the others alive (see [`cluster`]).
    pub async fn cluster(
        &self,
        configs: impl IntoIterator<Item = NodeConfig>,
        deadline: Duration,
    ) -> Vec<Node> {
        cluster(configs, deadline, async |config, seed| {
            let node = self.start(config).await;
            join(&node, seed).await;
            node
        })
        .await
    }
}

/// A member of a test cluster: a bare node, an agent, or a test's own wrapper of either.
pub trait Member {
    fn node(&self) -> &Node;
}

impl Member for Node {
    fn node(&self) -> &Node {
        self
    }
}

impl Member for Agent {
    fn node(&self) -> &Node {
        Agent::node(self)
    }
}

/// `node` joins the cluster through `seed`, if it has one.
pub async fn join(node: &Node, seed: Option<SocketAddr>) {
    if let Some(seed) = seed {
        node.join(vec![seed]).await.expect("joins through the seed");
    }
}

/// Starts a member per item, in order, with `start(item, seed)`: `seed` is the first member's
/// address for every member after it (none for the first), to join the cluster through.
pub async fn start_cluster<T, M: Member>(
    items: impl IntoIterator<Item = T>,
    mut start: impl AsyncFnMut(T, Option<SocketAddr>) -> M,
) -> Vec<M> {
    let mut members: Vec<M> = Vec::new();
    for item in items {
        let seed = members.first().map(|m| m.node().addr());
        members.push(start(item, seed).await);
    }
    members
}

/// [`start_cluster`], then waits up to `deadline` until every member sees all the others alive.
pub async fn cluster<T, M: Member>(
    items: impl IntoIterator<Item = T>,
    deadline: Duration,
    start: impl AsyncFnMut(T, Option<SocketAddr>) -> M,
) -> Vec<M> {
    let members = start_cluster(items, start).await;
    converged(&members, deadline).await;
    members
}

/// The members of a cluster of a known size, to name each: `let [a, b] = array(members)`.
pub fn array<M, const N: usize>(members: Vec<M>) -> [M; N] {
    let n = members.len();
    members
        .try_into()
        .unwrap_or_else(|_| panic!("{n} members, not {N}"))
}

/// Waits up to `deadline` until every member sees all the others alive.
pub async fn converged<M: Member>(members: &[M], deadline: Duration) {
    let n = members.len();
    let what = format!("{n} members see each other alive");
    eventually(&what, deadline, async || {
        members.iter().all(|m| alive_count(m.node()) == n - 1)
    })
    .await;
}

/// Every test shuts its nodes down; then no task may be left on the runtime.
pub async fn no_task_left() {
    let metrics = tokio::runtime::Handle::current().metrics();
    eventually("no task left", Duration::from_secs(1), async || {
        metrics.num_alive_tasks() == 0
    })
    .await;
}
