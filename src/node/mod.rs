//! The tokio runtime around the protocol core: sockets, timers, tasks, and the `Node` API.
//!
//! One driver task owns the [`Swim`] core and a [`Transport`]. Each turn it fires the timers
//! that are due, then waits on, in this order: an application command, a datagram or stream
//! record from the transport, the earliest armed timer (so a flood of input is handled one
//! datagram a turn and cannot starve the timers). Every input goes through `Swim::handle`; the outputs are carried out at once: packets
//! sealed and sent as datagrams, stream messages sealed and queued on the transport's cached
//! connection to the peer, timers kept in an ordered map, events published to subscribers and
//! folded into the membership snapshot that `Node::members` reads. The driver also shows every
//! ping it sends and every ack it gets to a health tracker (`health.rs`), which keeps a live
//! phi-accrual suspicion level and a round-trip estimate per member for
//! [`Node::member_health`]; the core never sees those figures.
//!
//! [`Node::start`] runs on real UDP + TCP ([`NetTransport`]); [`Node::start_on`] takes any
//! transport, such as the in-memory [`crate::transport::mem::MemNetwork`] of the tests.
//!
//! A stream record is one frame whose body is the sender's advertised address (postcard)
//! followed by a one-message packet, so the address is covered by encryption. Its messages are
//! answered at that address, so the driver drops (`spoofed`) a record whose claimed IP is not
//! its connection's.
//!
//! Layout: `mod.rs` (API, start, shutdown), `driver.rs` (the loop), `record.rs` (stream
//! records), `persist.rs` (the data dir), `traffic.rs` and `stats.rs` (figures), `health.rs`
//! (phi and RTT per member).

mod config;
mod driver;
mod health;
mod persist;
mod query;
pub(crate) mod record;
mod stats;
mod traffic;

pub use config::{NodeConfig, NodeConfigBuilder};
pub use health::MemberHealth;
pub use query::{
    IncomingQuery, KeysAnswer, KeysOp, QueryResults, QueryStream, HANDLER_QUEUE, INTERNAL_PREFIX,
    KEYS_QUERY,
};
pub use stats::{MemberCounts, NodeStats};
pub use traffic::{KindCount, TrafficStats};

use crate::cluster::placement::{self, PlacementFilter};
use crate::cluster::vivaldi::Coordinate;
use crate::cluster::{Command, Event, MemberView, QueryParams, Swim};
use crate::common::ConfigError;
use crate::diagnostics::chaos::ChaosLayer;
use crate::identity::Incarnation;
use crate::identity::Key;
use crate::identity::{IdentityError, NodeId, NodeInfo, Tags};
use crate::persistence::wal::WalFigures;
use crate::transport::crypto::{KeyInfo, Keyring};
use crate::transport::frame::FrameSealer;
use crate::transport::net::NetTransport;
use crate::transport::replay::ReplayWindow;
use crate::transport::{Transport, TransportCounters};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

/// Events buffered per subscriber before a slow subscriber starts missing them.
pub const EVENT_BUFFER: usize = 1024;

/// Why a node did not start or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node name is not a valid id.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A setting (protocol, transport, node) is invalid; nothing was bound.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Binding or reading a socket failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The node has shut down.
    #[error("the node has shut down")]
    Closed,
    /// A keyring call failed, or encryption is off; the keyring is unchanged.
    #[error(transparent)]
    Crypto(#[from] crate::transport::crypto::CryptoError),
    /// Key calls need encryption to be on.
    #[error("encryption is off: no keyring")]
    NoKeyring,
    /// The core refused the command; the state is unchanged.
    #[error(transparent)]
    Command(#[from] crate::cluster::CommandError),
    /// A reliable direct message could not be queued (the queue to the peer is full, the peer
    /// is unreachable, or the record is too large); nothing was sent.
    #[error("stream: {0}")]
    Stream(#[from] crate::transport::StreamRefused),
    /// The data directory could not be used.
    #[error("data dir: {0}")]
    DataDir(String),
    /// A query handler for a name the node keeps for itself.
    #[error("query names starting with {INTERNAL_PREFIX:?} are the node's own: {0:?}")]
    ReservedName(String),
}

pub(crate) enum Request {
    Command(
        Command,
        oneshot::Sender<Result<(), crate::cluster::CommandError>>,
    ),
    LeaveAnnounced(oneshot::Sender<bool>),
    Stats(oneshot::Sender<NodeStats>),
    Pause(bool),
    Direct {
        to: NodeId,
        payload: Vec<u8>,
        reliable: bool,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    Coordinates(oneshot::Sender<Coordinates>),
    RttEstimate(NodeId, oneshot::Sender<Option<std::time::Duration>>),
    Query(
        QueryParams,
        oneshot::Sender<Result<QueryStream, crate::cluster::CommandError>>,
    ),
    Respond {
        origin: NodeId,
        id: u64,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<(), crate::cluster::CommandError>>,
    },
    QueryHandler(String, mpsc::Sender<IncomingQuery>),
}

/// This node's network coordinate and those of the members that answered its probes (see
/// [`crate::cluster::vivaldi`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinates {
    /// This node's.
    pub me: Coordinate,
    /// Each member's, as its last ack to this node carried it.
    pub members: BTreeMap<NodeId, Coordinate>,
}

impl Coordinates {
    /// The round trip between two members (either may be this node) that the coordinates
    /// predict, if both are known.
    pub fn rtt(&self, me: &NodeId, a: &NodeId, b: &NodeId) -> Option<std::time::Duration> {
        let of = |id: &NodeId| {
            if id == me {
                Some(&self.me)
            } else {
                self.members.get(id)
            }
        };
        Some(of(a)?.rtt_to(of(b)?))
    }
}

struct Shared {
    security: FrameSealer,
    traffic: Arc<traffic::Traffic>,
    transport: Arc<TransportCounters>,
    requests: mpsc::Sender<Request>,
    events: broadcast::Sender<Event>,
    members: Arc<Mutex<Vec<MemberView>>>,
    health: Arc<health::Board>,
    local: MemberView,
    /// This node's tags now (`local` keeps those it started with).
    local_tags: Mutex<Tags>,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    driver: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    /// The task that keeps `data_dir` up to date, and its stop signal.
    persist: tokio::sync::Mutex<Option<(tokio::sync::watch::Sender<bool>, JoinHandle<()>)>>,
    /// The store in `data_dir`, for its figures; released on shutdown (with its lock).
    wal: Mutex<Option<Arc<crate::persistence::store::WalStore>>>,
}

/// A running node. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
}

impl Node {
    /// Binds UDP and TCP on `config.bind`, starts the driver, and returns the running node.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        config.validate()?;
        let transport = NetTransport::bind(config.bind, config.transport.clone()).await?;
        Self::start_on(config, transport).await
    }

    /// Starts a node on a transport bound already (`config.bind` is not used; the advertised
    /// address defaults to the transport's).
    pub async fn start_on(
        config: NodeConfig,
        transport: impl Transport,
    ) -> Result<Node, NodeError> {
        match config.chaos.clone() {
            Some(chaos) => {
                let seed = config
                    .seed
                    .unwrap_or_else(|| rand::RngCore::next_u64(&mut rand::thread_rng()));
                tracing::info!(
                    seed,
                    "chaos layer in place (replay its choices with this seed)"
                );
                Self::launch(config, ChaosLayer::new(transport, chaos, seed)).await
            }
            None => Self::launch(config, transport).await,
        }
    }

    async fn launch(config: NodeConfig, transport: impl Transport) -> Result<Node, NodeError> {
        config.validate()?;
        let id = NodeId::new(&config.name)?;
        let advertise = match config.advertise {
            Some(a) => a,
            None => advertise_for(transport.local_addr())?,
        };
        let restored = match &config.data_dir {
            Some(dir) => Some(persist::restore(dir, &config.name, config.incarnation).await?),
            None => None,
        };
        let incarnation = restored
            .as_ref()
            .map_or(config.incarnation, |r| r.incarnation);
        let info = NodeInfo {
            id,
            addr: advertise,
            tags: config.tags.clone(),
        };
        let seed = config
            .seed
            .unwrap_or_else(|| rand::RngCore::next_u64(&mut rand::thread_rng()));
        let swim = Swim::new(
            config.protocol.clone(),
            info.clone(),
            Incarnation(incarnation),
            seed,
        )?;
        let local = MemberView {
            info: Arc::new(info),
            incarnation: Incarnation(incarnation),
            state: crate::cluster::MemberState::Alive,
        };
        let (req_tx, req_rx) = mpsc::channel(64);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (stop_tx, stop_rx) = oneshot::channel();
        let members = Arc::new(Mutex::new(Vec::new()));
        let window = ReplayWindow::new(
            config.transport.clock_skew_max,
            config.transport.replay_cache_max,
        );
        let security =
            FrameSealer::new(config.keyring, config.label.clone()).with_replay_window(window);
        let traffic: Arc<traffic::Traffic> = Arc::default();
        let tracker = health::Tracker::new(config.protocol.probe_interval);
        let health = Arc::new(health::Board::new(tracker));
        let counters = transport.counters();
        let links = driver::Links {
            me: advertise,
            sec: security.clone(),
            events: events.clone(),
            members: members.clone(),
            traffic: traffic.clone(),
            health: health.clone(),
            requests: req_tx.clone(),
        };
        let mut seeds = config.seeds.clone();
        let mut wal = None;
        let persist = restored.map(|r| {
            for addr in r.members.values() {
                if *addr != advertise && !seeds.contains(addr) {
                    seeds.push(*addr);
                }
            }
            let (stop, stopped) = tokio::sync::watch::channel(false);
            wal = Some(r.store.clone());
            let task = tokio::spawn(persist::keep(
                r.store,
                config.name.clone(),
                r.members,
                members.clone(),
                req_tx.clone(),
                events.subscribe(),
                stopped,
            ));
            (stop, task)
        });
        let mut driver = driver::Driver::new(swim, transport, links);
        // The cluster key commands (`Node::keys_cluster`) are answered by every node.
        let (keys_tx, mut keys_rx) = mpsc::channel::<IncomingQuery>(HANDLER_QUEUE);
        driver.add_handler(KEYS_QUERY.to_string(), keys_tx);
        let sealer = security.clone();
        tokio::spawn(async move {
            while let Some(q) = keys_rx.recv().await {
                let answer = query::keys_command(&sealer, &q.request.payload);
                let bytes = serde_json::to_vec(&answer).expect("plain JSON");
                if let Err(e) = q.respond(bytes).await {
                    tracing::warn!(error = %e, "cluster key command: answer not sent");
                }
            }
        });
        let run = tokio::spawn(driver.run(req_rx, stop_rx));
        let shared = Shared {
            security,
            traffic,
            transport: counters,
            requests: req_tx,
            events,
            members,
            health,
            local_tags: Mutex::new(local.info.tags.clone()),
            local,
            shutdown: Mutex::new(Some(stop_tx)),
            driver: tokio::sync::Mutex::new(Some(run)),
            persist: tokio::sync::Mutex::new(persist),
            wal: Mutex::new(wal),
        };
        let node = Node {
            shared: Arc::new(shared),
        };
        if !seeds.is_empty() {
            node.command(Command::Join(seeds)).await?;
        }
        Ok(node)
    }

    /// This node as it started (id, advertised address, tags).
    pub fn local_member(&self) -> &MemberView {
        &self.shared.local
    }

    /// The address peers reach this node at.
    pub fn addr(&self) -> SocketAddr {
        self.shared.local.info.addr
    }

    /// Every other member this node knows, with its state.
    pub fn members(&self) -> Vec<MemberView> {
        self.shared.members.lock().expect("members lock").clone()
    }

    /// How many members this node sees alive, itself included (memberlist's `NumMembers`):
    /// counted in place, without copying the table as [`Node::members`] does.
    pub fn num_alive(&self) -> usize {
        let views = self.shared.members.lock().expect("members lock");
        let others = views
            .iter()
            .filter(|m| m.state == crate::cluster::MemberState::Alive)
            .count();
        others + 1
    }

    /// What this node measures of each member it has heard an ack from: phi (computed now),
    /// smoothed and last round trip, time since the last ack. Members that left, were reaped,
    /// or never acked one of this node's pings are absent.
    pub fn member_health(&self) -> BTreeMap<NodeId, MemberHealth> {
        self.shared.health.figures()
    }

    /// What this node sent, received and rejected so far.
    pub fn traffic(&self) -> TrafficStats {
        self.shared
            .traffic
            .snapshot(self.shared.transport.snapshot())
    }

    /// The node's figures now: core counters and histograms, members by state, traffic.
    pub async fn stats(&self) -> Result<NodeStats, NodeError> {
        self.ask(Request::Stats).await
    }

    /// The figures of the WAL under `data_dir`, if the node has one.
    pub fn wal_figures(&self) -> Option<WalFigures> {
        let store = self.shared.wal.lock().expect("wal lock").clone()?;
        Some(store.wal().figures())
    }

    /// Freezes the node as a stopped process would be: it reads no input and fires no timer
    /// until [`Node::resume`] (then it handles what waited in the socket buffers, and its
    /// overdue timers fire at once). For tests and `dcore local`.
    pub async fn pause(&self) -> Result<(), NodeError> {
        self.request(Request::Pause(true)).await
    }

    /// Ends a [`Node::pause`].
    pub async fn resume(&self) -> Result<(), NodeError> {
        self.request(Request::Pause(false)).await
    }

    /// Hands `request` to the driver.
    async fn request(&self, request: Request) -> Result<(), NodeError> {
        self.shared
            .requests
            .send(request)
            .await
            .map_err(|_| NodeError::Closed)
    }

    /// Asks the driver a question and waits for its answer.
    async fn ask<R>(
        &self,
        request: impl FnOnce(oneshot::Sender<R>) -> Request,
    ) -> Result<R, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.request(request(tx)).await?;
        rx.await.map_err(|_| NodeError::Closed)
    }

    /// Live membership events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    async fn command(&self, cmd: Command) -> Result<(), NodeError> {
        Ok(self.ask(|tx| Request::Command(cmd, tx)).await??)
    }

    /// Joins a cluster through these seeds (retried by the core until one answers).
    pub async fn join(&self, seeds: Vec<SocketAddr>) -> Result<(), NodeError> {
        self.command(Command::Join(seeds)).await
    }

    /// Replaces this node's tags; peers see `MemberUpdated`.
    pub async fn set_tags(&self, tags: Tags) -> Result<(), NodeError> {
        self.command(Command::SetTags(tags.clone())).await?;
        *self.shared.local_tags.lock().expect("tags lock") = tags;
        Ok(())
    }

    /// This node's tags now.
    pub fn tags(&self) -> Tags {
        self.shared.local_tags.lock().expect("tags lock").clone()
    }

    /// This node as placement sees it: with its tags now.
    fn placement_self(&self) -> MemberView {
        let mut me = self.shared.local.clone();
        let tags = self.tags();
        if tags != me.info.tags {
            let mut info = (*me.info).clone();
            info.tags = tags;
            me.info = Arc::new(info);
        }
        me
    }

    /// The `n` owners of `key` (at most [`placement::OWNERS_MAX`]), best first, among the live
    /// members this node sees, itself included, that `filter` lets in: rendezvous hashing
    /// (see [`crate::cluster::placement`]). Every node that sees the same members names the
    /// same owners; when a member leaves, only the keys it owned move.
    /// A lookup scores every member in place (the table is not copied).
    pub fn owners(&self, key: &[u8], n: usize, filter: &PlacementFilter) -> Vec<MemberView> {
        let me = self.placement_self();
        let views = self.shared.members.lock().expect("members lock");
        placement::owners(key, views.iter().chain([&me]), n, filter)
            .into_iter()
            .cloned()
            .collect()
    }

    /// The first owner of `key`, if any member qualifies (see [`Node::owners`]).
    pub fn owner(&self, key: &[u8], filter: &PlacementFilter) -> Option<MemberView> {
        self.owners(key, 1, filter).pop()
    }

    /// Watches the owners of `key`: the receiver holds their names now and changes when a
    /// membership event changes them (a join, failure, leave or tag change that moves the
    /// key). A burst of events costs one recomputation (one hash per member). The watch ends
    /// when the node shuts down or every receiver is dropped.
    pub fn watch_owners(
        &self,
        key: Vec<u8>,
        n: usize,
        filter: PlacementFilter,
    ) -> tokio::sync::watch::Receiver<Vec<NodeId>> {
        let names = move |node: &Node| -> Vec<NodeId> {
            (node.owners(&key, n, &filter).into_iter())
                .map(|m| m.info.id.clone())
                .collect()
        };
        let (tx, rx) = tokio::sync::watch::channel(names(self));
        let mut events = self.subscribe();
        let node = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    e = events.recv() => match e {
                        Ok(e) if e.member().is_none()
                            && !matches!(e, Event::JoinCompleted { .. }) => continue,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
                // One recomputation for a burst of events (thousands a second while a large
                // cluster forms): take what is already queued first.
                loop {
                    match events.try_recv() {
                        Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                        Err(broadcast::error::TryRecvError::Empty) => break,
                        Err(broadcast::error::TryRecvError::Closed) => return,
                    }
                }
                let now = names(&node);
                tx.send_if_modified(|old| {
                    let changed = *old != now;
                    if changed {
                        *old = now;
                    }
                    changed
                });
            }
        });
        rx
    }

    /// Sends `payload` to `member` in one datagram, best effort: `Ok` means it was handed to
    /// the network, not that it arrived. It must fit a packet (`packet_bytes_max` with the
    /// message's header: about 1,300 bytes by default); refused when `member` is not alive or
    /// suspect in this node's table. The receiver sees [`Event::Message`] with `reliable`
    /// false, or counts and drops it (`direct_refused`) when it does not know this node at
    /// the address the datagram came from.
    pub async fn send(&self, member: &NodeId, payload: Vec<u8>) -> Result<(), NodeError> {
        self.direct(member, payload, false).await
    }

    /// Sends `payload` (up to `direct_bytes_max`, 1 MiB by default) to `member` over the
    /// cached stream connection: messages to one member arrive once each and in the order
    /// sent while that connection lives. `Ok` means queued; an error when `member` is not
    /// alive or suspect here, when the queue to it (`outbound_queue` records) is full, or
    /// when it is unreachable (its last connection failed and the reconnect backoff is not
    /// over): nothing was sent, and the caller may retry. A message queued when the
    /// connection fails is lost and counted (`streams_out_dropped`).
    pub async fn send_reliable(&self, member: &NodeId, payload: Vec<u8>) -> Result<(), NodeError> {
        self.direct(member, payload, true).await
    }

    async fn direct(&self, to: &NodeId, payload: Vec<u8>, reliable: bool) -> Result<(), NodeError> {
        self.ask(|reply| Request::Direct {
            to: to.clone(),
            payload,
            reliable,
            reply,
        })
        .await?
    }

    /// This node's network coordinate and the members' it has (Vivaldi, updated by every acked
    /// probe; see [`crate::cluster::vivaldi`]).
    pub async fn coordinates(&self) -> Result<Coordinates, NodeError> {
        self.ask(Request::Coordinates).await
    }

    /// The round trip to `member` the network coordinates predict: `None` until `member` has
    /// answered one of this node's probes (zero for this node itself).
    pub async fn rtt_estimate(
        &self,
        member: &NodeId,
    ) -> Result<Option<std::time::Duration>, NodeError> {
        let member = member.clone();
        self.ask(|reply| Request::RttEstimate(member, reply)).await
    }

    /// Asks the cluster (serf's queries; see [`crate::cluster::query`]): the members the
    /// filters select acknowledge (when `params.ack`) and may answer through their handler
    /// for `params.name`; the stream yields each acknowledgement and answer as it comes and a
    /// summary at the timeout. Best effort: a member may miss the query or its answer may be
    /// lost (`relay_factor` sends each answer along more paths). Refused when this node has
    /// `queries_max` queries running, has left, or the query is malformed or too large.
    ///
    /// The crate-level docs ("Asking the cluster") have a runnable example with a handler.
    pub async fn query(&self, params: QueryParams) -> Result<QueryStream, NodeError> {
        Ok(self.ask(|reply| Request::Query(params, reply)).await??)
    }

    /// Takes the queries named `name` that select this node: each comes with
    /// [`IncomingQuery::respond`] to answer it. Up to [`HANDLER_QUEUE`] wait in the receiver;
    /// past that new ones are dropped (counted `queries_unhandled`). A second handler for a
    /// name replaces the first; dropping the receiver ends it. Names starting with
    /// [`INTERNAL_PREFIX`] are the node's own.
    pub async fn query_handler(
        &self,
        name: &str,
    ) -> Result<mpsc::Receiver<IncomingQuery>, NodeError> {
        if name.starts_with(INTERNAL_PREFIX) {
            return Err(NodeError::ReservedName(name.to_string()));
        }
        let (tx, rx) = mpsc::channel(HANDLER_QUEUE);
        self.request(Request::QueryHandler(name.to_string(), tx))
            .await?;
        Ok(rx)
    }

    /// Carries out a key command on every node (serf's `keys` commands): an internal query
    /// that each node answers with its keys after the command or its error (see
    /// [`KeysAnswer`]). The results hold each node's answer (JSON of [`KeysAnswer`]) and the
    /// nodes that did not answer in `timeout` (`None`: the query default).
    pub async fn keys_cluster(
        &self,
        op: &KeysOp,
        timeout: Option<Duration>,
    ) -> Result<QueryResults, NodeError> {
        let payload = serde_json::to_vec(op).expect("plain JSON");
        let mut params = QueryParams::new(KEYS_QUERY, payload);
        params.timeout = timeout;
        params.relay_factor = 2;
        self.query(params).await?.collect().await
    }

    /// Sends a user event to every member.
    pub async fn broadcast_event(&self, name: &str, payload: Vec<u8>) -> Result<(), NodeError> {
        self.command(Command::Broadcast {
            name: name.to_string(),
            payload,
        })
        .await
    }

    /// Leaves gracefully: returns once the `Left` claim has gone out (or `timeout` passed).
    pub async fn leave(&self, timeout: std::time::Duration) -> Result<bool, NodeError> {
        self.command(Command::Leave).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.ask(Request::LeaveAnnounced).await? {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    fn with_keyring<R>(
        &self,
        f: impl FnOnce(&mut Keyring) -> Result<R, crate::transport::crypto::CryptoError>,
    ) -> Result<R, NodeError> {
        let ring = self.shared.security.keyring().ok_or(NodeError::NoKeyring)?;
        Ok(f(&mut ring.write().expect("keyring lock"))?)
    }

    /// Adds a key that decrypts (step 1 of a rotation, on every node).
    pub fn install_key(&self, key: Key) -> Result<(), NodeError> {
        self.with_keyring(|r| r.install(key))
    }

    /// Makes an installed key the one that encrypts (step 2, once every node has it).
    pub fn use_key(&self, key: &Key) -> Result<(), NodeError> {
        self.with_keyring(|r| r.use_key(key))
    }

    /// Removes a key that no longer encrypts (step 3, once every node uses the new one).
    pub fn remove_key(&self, key: &Key) -> Result<(), NodeError> {
        self.with_keyring(|r| r.remove(key))
    }

    /// The installed keys by id, the primary marked.
    pub fn keys(&self) -> Result<Vec<KeyInfo>, NodeError> {
        self.with_keyring(|r| Ok(r.keys()))
    }

    /// Stops every task of the node (driver, transport, connections) and waits for them: on
    /// return no task of the node is left and its ports are free. A clone that calls it later
    /// returns at once.
    pub async fn shutdown(&self) {
        /// The driver closes its transport on stop; past this it is aborted.
        const GRACE: Duration = Duration::from_secs(5);
        // The state saver goes first: its last save asks the driver for the incarnation.
        if let Some((stop, mut task)) = self.shared.persist.lock().await.take() {
            stop.send_replace(true);
            if tokio::time::timeout(GRACE, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
        // The store's directory lock goes with the last reference: the data dir is free for a
        // restart once this returns.
        self.shared.wal.lock().expect("wal lock").take();
        if let Some(stop) = self.shared.shutdown.lock().expect("shutdown lock").take() {
            let _ = stop.send(());
        }
        let mut driver = self.shared.driver.lock().await;
        if let Some(mut task) = driver.take() {
            if tokio::time::timeout(GRACE, &mut task).await.is_err() {
                tracing::warn!("node driver did not stop within {GRACE:?}: aborted");
                task.abort();
                let _ = task.await;
            }
        }
    }
}

/// The address to announce when none is configured: the bound one, or, when bound to the
/// unspecified address (`0.0.0.0`, `[::]`), this host's one address of that family that peers
/// can reach (consul's rule; see [`pick_advertise`]).
fn advertise_for(bound: SocketAddr) -> Result<SocketAddr, NodeError> {
    if !bound.ip().is_unspecified() {
        return Ok(bound);
    }
    let ips: Vec<std::net::IpAddr> = if_addrs::get_if_addrs()?
        .into_iter()
        .map(|i| i.ip())
        .collect();
    let ip =
        pick_advertise(bound, &ips).map_err(|rule| ConfigError::new("node", "advertise", rule))?;
    tracing::info!(%ip, %bound, "advertising this host's address");
    Ok(SocketAddr::new(ip, bound.port()))
}

/// Among this host's addresses `ips`, the one to announce for a socket bound to the
/// unspecified address `bound`: of the bound family, neither loopback nor link-local; private
/// ones (10/8, 172.16/12, 192.168/16, 100.64/10; fc00::/7) preferred; exactly one, or the rule
/// broken names the candidates.
pub fn pick_advertise(
    bound: SocketAddr,
    ips: &[std::net::IpAddr],
) -> Result<std::net::IpAddr, String> {
    use std::net::IpAddr;
    let usable: Vec<IpAddr> = (ips.iter().copied())
        .filter(|ip| ip.is_ipv6() == bound.is_ipv6() && !ip.is_loopback() && !ip.is_unspecified())
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_link_local(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect();
    let private: Vec<IpAddr> = (usable.iter().copied())
        .filter(|ip| match ip {
            IpAddr::V4(v4) => {
                v4.is_private() || (v4.octets()[0] == 100 && v4.octets()[1] & 0xc0 == 64)
            }
            IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
        })
        .collect();
    let pool = if private.is_empty() {
        &usable
    } else {
        &private
    };
    match pool.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!(
            "bound to {bound} and this host has no address of that family to announce: set advertise"
        )),
        many => Err(format!(
            "bound to {bound} and this host has {} addresses to announce ({}): set advertise \
             (or bind) to the one peers should use",
            many.len(),
            many.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Config;

    #[test]
    fn the_announced_address_is_the_one_private_address_of_the_bound_family() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let v4: SocketAddr = "0.0.0.0:7946".parse().unwrap();
        let v6: SocketAddr = "[::]:7946".parse().unwrap();
        let host = [
            ip("127.0.0.1"),
            ip("10.1.2.3"),
            ip("::1"),
            ip("fe80::1"),
            ip("fd77::5"),
        ];
        assert_eq!(pick_advertise(v4, &host), Ok(ip("10.1.2.3")));
        assert_eq!(pick_advertise(v6, &host), Ok(ip("fd77::5")));
        // A public address beside a private one: the private one; two private: refused.
        let two = [ip("203.0.113.9"), ip("192.168.1.4")];
        assert_eq!(pick_advertise(v4, &two), Ok(ip("192.168.1.4")));
        let e = pick_advertise(v4, &[ip("10.0.0.1"), ip("10.0.0.2")]).unwrap_err();
        assert!(
            e.contains("10.0.0.1, 10.0.0.2") && e.contains("set advertise"),
            "{e}"
        );
        let e = pick_advertise(v4, &[ip("127.0.0.1"), ip("169.254.0.9")]).unwrap_err();
        assert!(e.contains("no address"), "{e}");
        assert_eq!(
            pick_advertise(v4, &[ip("203.0.113.9")]),
            Ok(ip("203.0.113.9"))
        );
    }

    #[test]
    fn node_is_cheap_to_clone_and_shareable_across_tasks() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        shareable::<Node>();
        assert!(std::mem::size_of::<Node>() <= std::mem::size_of::<usize>());
    }

    #[tokio::test]
    async fn a_node_with_seeds_joins_at_start() {
        let net = crate::transport::mem::MemNetwork::new();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut config = NodeConfig::new("a", any);
        config.protocol = Config::local();
        let a = Node::start_on(config.clone(), net.bind(any).unwrap())
            .await
            .unwrap();
        config.name = "b".into();
        config.seeds = vec![a.addr()];
        let b = Node::start_on(config, net.bind(any).unwrap())
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while a.members().len() + b.members().len() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "b did not join");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        a.shutdown().await;
        b.shutdown().await;
    }
}
