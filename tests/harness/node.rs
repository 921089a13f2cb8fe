//! Nodes for the system tests: what a node sees of its members, and the transport to start
//! nodes on.

use distributed_core::cluster::MemberState;
use distributed_core::node::{Node, NodeConfig};
use distributed_core::transport::mem::MemNetwork;

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
