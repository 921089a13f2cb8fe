//! The agent: a [`Node`] plus the admin HTTP API, as `dcore agent` runs it and as
//! `dcore local` runs several of them in one process.
//!
//! - `GET /health` is 200 while the process serves; `GET /ready` is 200 once the node has
//!   joined (at once without seeds) and 503 before that and while it leaves.
//! - `/v1/...` routes read and change the node (members, join, leave, user events, an event
//!   stream, chaos, keys); `/metrics` and `/v1/metrics` expose its figures.
//! - With a token configured every route but `/health` needs `Authorization: Bearer <token>`.
//! - A browser page cannot drive it (`guard`): `Host` and `Origin` must name this API, and
//!   every request but GET and HEAD needs `Content-Type: application/json` or
//!   `X-Dcore-Request: 1`. Connections are capped and must send their request head in time;
//!   event streams are capped.
//!
//! Errors are JSON `{"error": "...", "code": "..."}` with the fitting status.

mod config;
pub mod discovery;
mod guard;
pub mod handlers;
mod http;
pub mod ui;
pub mod views;

pub use config::{AgentConfig, AgentConfigError};
pub use guard::REQUEST_HEADER;
pub use handlers::QueryHandlerConfig;

use crate::cluster::Event;
use crate::diagnostics::chaos::{Chaos, ChaosError};
use crate::node::{Node, NodeError};
use crate::transport::crypto::{CryptoError, Keyring};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Why an agent did not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A setting is wrong.
    #[error(transparent)]
    Config(#[from] AgentConfigError),
    /// The key file could not be used.
    #[error(transparent)]
    Keys(#[from] CryptoError),
    /// The `[chaos]` settings are invalid.
    #[error(transparent)]
    Chaos(#[from] ChaosError),
    /// The token file could not be read or is empty.
    #[error("token file {path}: {reason}")]
    Token {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The node did not start.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The HTTP address could not be bound.
    #[error("http address {addr}: {source}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A seed address did not resolve.
    #[error("join address {addr}: {reason}")]
    Resolve {
        /// The address as given.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// State shared by the agent's tasks and HTTP handlers.
pub(crate) struct Shared {
    pub node: Node,
    pub token: Option<String>,
    pub ready: AtomicBool,
    pub leaving: AtomicBool,
    pub chaos: Arc<Chaos>,
    pub leave_timeout: std::time::Duration,
    /// Set when someone asked the agent to stop (`POST /v1/leave`).
    pub stop_requested: watch::Sender<bool>,
    /// Set when the agent shuts down: ends event streams and the server.
    pub closing: watch::Sender<bool>,
    /// The hosts the API answers to, and the count of what it refused.
    pub guard: Arc<guard::Guard>,
    /// One permit per event stream that may open (`http_event_streams_max`).
    pub event_streams: Arc<tokio::sync::Semaphore>,
    /// Set when `retry_join` gave up: the agent stops with an error.
    pub join_failed: AtomicBool,
}

/// A running agent. Dropping it without [`Agent::shutdown`] aborts its tasks.
pub struct Agent {
    shared: Arc<Shared>,
    http_addr: SocketAddr,
    tasks: JoinSet<()>,
}

/// Resolves seeds as `join` takes them (every record of a name, `srv:` names; see
/// [`discovery`]); an error names the first seed that gave no address.
pub async fn resolve(addrs: &[String]) -> Result<Vec<SocketAddr>, AgentError> {
    let found = discovery::resolve_seeds(addrs).await;
    match found.failed.into_iter().next() {
        Some((addr, reason)) => Err(AgentError::Resolve { addr, reason }),
        None => Ok(found.addrs),
    }
}

impl Agent {
    /// Starts the node and the HTTP API; joins the configured seeds (in the background, with
    /// retries). Chaos starts as `config.chaos` says (off by default) and can change at runtime.
    pub async fn start(config: AgentConfig) -> Result<Agent, AgentError> {
        config.validate()?;
        let keyring = config
            .encrypt_key_file
            .as_deref()
            .map(Keyring::load)
            .transpose()?;
        let token = config.token_file.as_deref().map(read_token).transpose()?;
        let chaos = Arc::new(Chaos::new(config.chaos.clone())?);
        let mut nc = config.node.clone();
        // Seeds are joined below, once readiness is watched: `join` resolved (one must
        // resolve), then any the node config names; `retry_join` by the join loop.
        let first = discovery::resolve_seeds(&config.join).await;
        for (seed, reason) in &first.failed {
            tracing::warn!(%seed, %reason, "join seed did not resolve");
        }
        if first.addrs.is_empty() {
            if let Some((addr, reason)) = first.failed.first() {
                return Err(AgentError::Resolve {
                    addr: addr.clone(),
                    reason: reason.clone(),
                });
            }
        }
        let mut seeds = first.addrs;
        seeds.append(&mut nc.seeds);
        // `retry_join` need not resolve yet; what does joins at once.
        for a in discovery::resolve_seeds(&config.retry_join).await.addrs {
            if !seeds.contains(&a) {
                seeds.push(a);
            }
        }
        let discovered = !config.join.is_empty() || !config.retry_join.is_empty();
        nc.keyring = keyring;
        nc.chaos = Some(chaos.clone());
        let node = Node::start(nc).await?;
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| AgentError::Http {
                addr: config.http_addr,
                source,
            })?;
        let http_addr = listener.local_addr().map_err(|source| AgentError::Http {
            addr: config.http_addr,
            source,
        })?;
        let shared = Arc::new(Shared {
            node: node.clone(),
            token,
            ready: AtomicBool::new(seeds.is_empty() && !discovered),
            leaving: AtomicBool::new(false),
            chaos,
            leave_timeout: config.leave_timeout,
            stop_requested: watch::channel(false).0,
            closing: watch::channel(false).0,
            guard: Arc::new(guard::Guard::new(
                http_addr.port(),
                &config.http_allowed_hosts,
                config.http_header_timeout,
            )),
            event_streams: Arc::new(tokio::sync::Semaphore::new(config.http_event_streams_max)),
            join_failed: AtomicBool::new(false),
        });
        let limits = http::Limits {
            header_timeout: config.http_header_timeout,
            connections_max: config.http_connections_max,
        };
        let mut tasks = JoinSet::new();
        // Subscribed before the join is sent, so its JoinCompleted cannot be missed.
        tasks.spawn(watch_ready(shared.clone(), node.subscribe()));
        tasks.spawn(http::serve(
            listener,
            http::router(shared.clone()),
            shared.guard.clone(),
            shared.closing.subscribe(),
            limits,
        ));
        let answer_max = config.node.protocol.query_response_len_max();
        for h in &config.query_handler {
            let queries = node.query_handler(&h.name).await?;
            let closing = shared.closing.clone();
            let serve = handlers::serve(node.clone(), h.clone(), queries, answer_max, closing);
            tasks.spawn(serve);
        }
        if discovered {
            let names: Vec<String> = config
                .join
                .iter()
                .chain(&config.retry_join)
                .cloned()
                .collect();
            tasks.spawn(join_loop(
                shared.clone(),
                JoinPlan {
                    names,
                    first: seeds,
                    max: if config.retry_join.is_empty() {
                        0
                    } else {
                        config.retry_join_max
                    },
                    interval: config.retry_interval,
                },
            ));
        } else if !seeds.is_empty() {
            node.join(seeds).await?;
        }
        if let Some(risk) = plain_gossip_risk(&config) {
            tracing::warn!("{risk}");
        }
        tracing::info!(name = %config.node.name, gossip = %node.addr(), http = %http_addr, "agent started");
        Ok(Agent {
            shared,
            http_addr,
            tasks,
        })
    }

    /// Whether the agent is ready (`GET /ready`): joined, or the first node of its cluster,
    /// and not leaving.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::SeqCst)
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.shared.node
    }

    /// Where the HTTP API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The chaos layer's settings and counters (off unless configured or set at runtime).
    pub fn chaos(&self) -> &Arc<Chaos> {
        &self.shared.chaos
    }

    /// Whether `retry_join` gave up (the agent then stops as if asked to: see
    /// [`Agent::stop_requested`]).
    pub fn join_failed(&self) -> bool {
        self.shared.join_failed.load(Ordering::SeqCst)
    }

    /// Resolves when someone asked the agent to stop through the API (`POST /v1/leave`), or
    /// `retry_join` gave up.
    pub async fn stop_requested(&self) {
        let mut rx = self.shared.stop_requested.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Leaves gracefully (the Left claim reaches peers, or the leave timeout passes), then
    /// shuts down. Returns whether the leave was announced in time.
    pub async fn leave_and_shutdown(mut self) -> bool {
        let announced = leave(&self.shared).await;
        self.close().await;
        announced
    }

    /// Stops without leaving (peers will detect a failure).
    pub async fn shutdown(mut self) {
        self.close().await;
    }

    async fn close(&mut self) {
        /// In-flight requests may finish (the server drains its connections) within this.
        const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);
        self.shared.closing.send_replace(true);
        let drained = tokio::time::timeout(DRAIN, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("admin API did not drain within {DRAIN:?}: aborted");
            self.tasks.shutdown().await;
        }
        self.shared.node.shutdown().await;
    }
}

/// Reads the admin token: the file must be private (mode 0600, like the key file) and hold a
/// token.
fn read_token(path: &std::path::Path) -> Result<String, AgentError> {
    let err = |reason: String| AgentError::Token {
        path: path.to_path_buf(),
        reason,
    };
    crate::identity::check_private_file(path).map_err(|e| match e {
        crate::identity::IdentityError::KeyFilePermissions { mode, .. } => {
            err(format!("mode {mode:o}: others can read it; chmod 600 it"))
        }
        other => err(other.to_string()),
    })?;
    let t = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let t = t.trim().to_string();
    if t.is_empty() {
        return Err(err("empty".into()));
    }
    Ok(t)
}

/// The warning an agent logs at start when its gossip travels in the clear beyond this host:
/// `None` when encryption is on or both the bound and the advertised address are loopback.
fn plain_gossip_risk(config: &AgentConfig) -> Option<String> {
    if config.encrypt_key_file.is_some() {
        return None;
    }
    let exposed = [Some(config.node.bind), config.node.advertise]
        .into_iter()
        .flatten()
        .find(|a| !a.ip().is_loopback())?;
    Some(format!(
        "gossip on {exposed} is not loopback and encryption is off: anyone who can reach it \
         can read the membership and send forged messages (mark members failed, inject user \
         events, join fake members); set --encrypt-key-file (a key from `dcore keygen`) on \
         every node, and --label"
    ))
}

/// A graceful leave: not ready from now on; the Left claim goes out.
pub(crate) async fn leave(shared: &Shared) -> bool {
    shared.leaving.store(true, Ordering::SeqCst);
    shared.ready.store(false, Ordering::SeqCst);
    match shared.node.leave(shared.leave_timeout).await {
        Ok(done) => done,
        Err(e) => {
            tracing::warn!(error = %e, "leave failed");
            false
        }
    }
}

/// The seeds of the join loop.
struct JoinPlan {
    /// `join` then `retry_join`, as written.
    names: Vec<String>,
    /// What they resolved to at start, with the node config's seeds.
    first: Vec<SocketAddr>,
    /// Attempts at most (0: until joined).
    max: u32,
    interval: std::time::Duration,
}

/// Joins through the seeds until joined, resolving them again before each attempt after the
/// first: a record that changed is seen at the next attempt. A node whose seeds all resolve to
/// itself is the first of its cluster: ready at once. After `max` attempts (when set) it gives
/// up and stops the agent.
async fn join_loop(shared: Arc<Shared>, plan: JoinPlan) {
    let me = shared.node.addr();
    let mut closing = shared.closing.subscribe();
    let mut addrs = plan.first;
    let mut attempt: u32 = 0;
    loop {
        if shared.ready.load(Ordering::SeqCst) {
            return;
        }
        attempt += 1;
        let only_me = !addrs.is_empty() && addrs.iter().all(|a| *a == me);
        addrs.retain(|a| *a != me);
        if only_me {
            tracing::info!("every seed is this node: the first of its cluster");
            shared.ready.store(true, Ordering::SeqCst);
            return;
        }
        if addrs.is_empty() {
            tracing::warn!(attempt, "no seed resolved; trying again");
        } else {
            tracing::info!(attempt, seeds = ?addrs, "joining");
            if let Err(e) = shared.node.join(addrs.clone()).await {
                tracing::warn!(error = %e, "join refused");
            }
        }
        let deadline = tokio::time::Instant::now() + plan.interval;
        while tokio::time::Instant::now() < deadline {
            if shared.ready.load(Ordering::SeqCst) {
                return;
            }
            tokio::select! {
                _ = closing.wait_for(|v| *v) => return,
                () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            }
        }
        if plan.max > 0 && attempt >= plan.max {
            tracing::error!(attempts = attempt, "retry_join: not joined; giving up");
            shared.join_failed.store(true, Ordering::SeqCst);
            shared.stop_requested.send_replace(true);
            return;
        }
        let found = discovery::resolve_seeds(&plan.names).await;
        for (seed, reason) in &found.failed {
            tracing::warn!(%seed, %reason, "seed did not resolve");
        }
        addrs = found.addrs;
    }
}

/// Marks the agent ready once a join completes (until it leaves).
async fn watch_ready(shared: Arc<Shared>, mut events: tokio::sync::broadcast::Receiver<Event>) {
    let mut closing = shared.closing.subscribe();
    loop {
        tokio::select! {
            _ = closing.wait_for(|v| *v) => return,
            e = events.recv() => match e {
                Ok(Event::JoinCompleted { .. }) if !shared.leaving.load(Ordering::SeqCst) => {
                    shared.ready.store(true, Ordering::SeqCst);
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bind: &str, advertise: Option<&str>, key: bool) -> AgentConfig {
        let mut c = AgentConfig::default();
        c.node.bind = bind.parse().unwrap();
        c.node.advertise = advertise.map(|a| a.parse().unwrap());
        c.encrypt_key_file = key.then(|| "/etc/dcore/keys".into());
        c
    }

    #[test]
    fn plain_gossip_beyond_loopback_is_a_risk_named_with_its_fix() {
        let warned = [
            ("0.0.0.0:7946", None, "0.0.0.0:7946"),
            ("[::]:7946", None, "[::]:7946"),
            ("10.0.0.1:7946", None, "10.0.0.1:7946"),
            ("127.0.0.1:7946", Some("10.0.0.1:7946"), "10.0.0.1:7946"),
            ("0.0.0.0:7946", Some("127.0.0.1:7946"), "0.0.0.0:7946"),
        ];
        for (bind, advertise, named) in warned {
            let risk = plain_gossip_risk(&config(bind, advertise, false))
                .unwrap_or_else(|| panic!("{bind} {advertise:?}: a warning"));
            assert!(risk.contains(named), "{risk}");
            assert!(risk.contains("encryption is off"), "{risk}");
            assert!(risk.contains("--encrypt-key-file"), "{risk}");
            assert_eq!(plain_gossip_risk(&config(bind, advertise, true)), None);
        }
        for (bind, advertise) in [
            ("127.0.0.1:7946", None),
            ("127.0.0.5:0", Some("127.0.0.5:7946")),
            ("[::1]:7946", None),
        ] {
            assert_eq!(plain_gossip_risk(&config(bind, advertise, false)), None);
        }
    }
}
