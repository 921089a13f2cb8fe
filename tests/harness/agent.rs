//! In-process agents for the system tests, on 127.0.0.1 with OS-chosen ports.

use super::node::{cluster, start_cluster};
use distributed_core::agent::{Agent, AgentConfig};
use distributed_core::cluster::Config;
use distributed_core::node::NodeConfig;
use std::net::SocketAddr;
use std::time::Duration;

/// An agent `name` on 127.0.0.1 (gossip and API on OS-chosen ports) with the `local` protocol
/// preset (fast failure detection).
pub fn agent_config(name: &str) -> AgentConfig {
    AgentConfig {
        node: NodeConfig {
            protocol: Config::local(),
            ..NodeConfig::new(name, "127.0.0.1:0".parse().unwrap())
        },
        http_addr: "127.0.0.1:0".parse().unwrap(),
        ..AgentConfig::default()
    }
}

/// Starts an agent; panics (failing the test), naming it, if it cannot.
pub async fn start_agent(config: AgentConfig) -> Agent {
    let name = config.node.name.clone();
    Agent::start(config)
        .await
        .unwrap_or_else(|e| panic!("agent {name} starts: {e}"))
}

/// Starts an agent per config, each after the first joining the first at start (its `join`).
pub async fn start_agents(configs: impl IntoIterator<Item = AgentConfig>) -> Vec<Agent> {
    start_cluster(configs, with_seed).await
}

/// [`start_agents`], then waits up to `deadline` until every agent sees all the others alive.
pub async fn agents(
    configs: impl IntoIterator<Item = AgentConfig>,
    deadline: Duration,
) -> Vec<Agent> {
    cluster(configs, deadline, with_seed).await
}

/// Starts the agent of `config`, joining `seed` at start if there is one.
async fn with_seed(mut config: AgentConfig, seed: Option<SocketAddr>) -> Agent {
    if let Some(seed) = seed {
        config.join = vec![seed.to_string()];
    }
    start_agent(config).await
}
