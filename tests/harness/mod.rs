//! Shared helpers for the system tests. Each test binary uses only part of them.
#![allow(dead_code)]

use distributed_core::cluster::MemberState;
use distributed_core::node::{Node, NodeConfig};
use distributed_core::sim::{self, Report, Scenario};
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

/// Runs `scenario` once per seed and hands each report to `check`; a failed check names the seed
/// and the whole report, so the run can be replayed with `dcore sim --seed S ...`.
pub fn for_seeds(
    scenario: &Scenario,
    seeds: &[u64],
    check: impl Fn(&Report) -> Result<(), String>,
) {
    for &seed in seeds {
        let s = Scenario {
            seed,
            ..scenario.clone()
        };
        let report = sim::run(&s).unwrap_or_else(|e| panic!("seed {seed}: scenario refused: {e}"));
        if let Err(why) = check(&report) {
            panic!(
                "seed {seed}: {why}\nreport: {}",
                serde_json::to_string(&report).unwrap()
            );
        }
    }
}

/// `Err(msg)` unless `cond`.
pub fn ensure(cond: bool, msg: impl Into<String>) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg.into())
    }
}

/// Polls `cond` every 20 ms until it holds or `deadline` passes; `Err` names what was awaited.
pub async fn eventually(what: &str, deadline: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + deadline;
    while !cond() {
        if tokio::time::Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Tests that run real nodes take this lock so they run one at a time: their timeouts are short
/// (the `local` preset) and a 2-core CI machine running ten clusters at once would make a test
/// about failure detection fail for the wrong reason.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}
