//! `dcore local`: the real-network twin of `dcore sim`. N real nodes in this process, each on
//! its own loopback address 127.1.x.y (OS-chosen ports, real UDP and TCP, real codec and
//! crypto), join through the first on the simulator's schedule, converge, then K of them crash (stop without leaving). With `--json` the figures are printed
//! as one JSON object with the keys of `dcore sim --json` plus `cpu_s`, `rss_mb` and the
//! transport's stream counters; without it, as a few readable lines.

use anyhow::{bail, Context};
use clap::Args;
use distributed_core::cluster::{Config, Event};
use distributed_core::diagnostics::chaos::{Chaos, ChaosConfig};
use distributed_core::identity::Key;
use distributed_core::node::{Node, NodeConfig};
use distributed_core::sim::Detect;
use distributed_core::transport::crypto::Keyring;
use distributed_core::transport::TransportConfig;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most nodes `dcore local` runs (one loopback address each, see `local_ip`).
const NODES_MAX: usize = 50_000;

/// Flags of `dcore local`.
#[derive(Debug, Args)]
pub struct LocalArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// Seconds to run in all (formation included).
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Crash K nodes (stopped without leaving) once the cluster has converged.
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub kill: usize,
    /// Encrypt every frame (one random key shared by all nodes).
    #[arg(long)]
    pub encrypt: bool,
    /// Share of datagrams each node drops on sending (the chaos layer's `drop`).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Seed for the choice of crashed nodes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Protocol preset: lan, wan or local.
    #[arg(long, default_value = "lan")]
    pub preset: String,
    /// Queries once the cluster has formed, before any crash, over real UDP (every node
    /// answers at once from an in-process handler); the report gains `queries`, as in
    /// `dcore sim --queries`.
    #[command(flatten)]
    pub query: super::sim::QueryFlags,
    /// Run the scenario (--duration, --kill) and print one JSON object.
    #[arg(long, conflicts_with = "summary")]
    pub json: bool,
    /// Run the scenario and print a readable summary. Without --json or --summary the cluster
    /// is interactive: a live membership matrix and commands (type help).
    #[arg(long)]
    pub summary: bool,
    /// Interactive, with a web page as well: the membership matrix live and the commands as
    /// buttons, at the address printed at start (see --ui-addr).
    #[arg(long, conflicts_with_all = ["json", "summary"])]
    pub ui: bool,
    /// Where `--ui` serves its page (port 0: one the system picks). Default 127.0.0.1:0.
    #[arg(
        long,
        default_value = "127.0.0.1:0",
        value_name = "ADDR",
        requires = "ui"
    )]
    pub ui_addr: SocketAddr,
}

/// The figures of a run; the first keys are those of `dcore sim --json`.
#[derive(Debug, Serialize)]
struct LocalReport {
    nodes: usize,
    seed: u64,
    duration_s: f64,
    converged_ms: Option<u64>,
    detect_ms: Detect,
    false_positives: usize,
    false_suspicions: usize,
    converged_at_end: bool,
    msgs_per_node_s: f64,
    bytes_per_node_s: f64,
    wall_ms: u64,
    cpu_s: f64,
    cpu_s_per_node_min: f64,
    rss_mb: f64,
    killed: Vec<usize>,
    rejected: u64,
    /// Stream records sent, connections opened for them, records dropped (all nodes).
    streams_out: u64,
    connections_opened: u64,
    streams_out_dropped: u64,
    /// Probes ended late, suspicions raised, refutations (survivors, whole run).
    probes_late: u64,
    suspicions_raised: u64,
    refutations: u64,
    /// Events the run's reader lost (it fell behind a node's event queue): a false suspicion
    /// or a detection among them is not counted, so a run with some is a lower bound.
    events_missed: u64,
    encrypted: bool,
    /// With `--queries`: what they measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    queries: Option<distributed_core::sim::QueryReport>,
}

impl LocalArgs {
    /// The protocol config of the run, once the flags are checked.
    pub fn protocol(&self) -> anyhow::Result<Config> {
        let nodes_ok = (2..=NODES_MAX).contains(&self.nodes);
        if !nodes_ok || self.kill >= self.nodes || !(0.0..1.0).contains(&self.loss) {
            bail!("need --nodes in [2, {NODES_MAX}], --kill < --nodes and --loss in [0, 1)");
        }
        let Some(protocol) = Config::preset(&self.preset) else {
            bail!("--preset must be lan, wan or local");
        };
        Ok(protocol)
    }

    /// Without `--json` or `--summary` the cluster is interactive.
    pub fn interactive(&self) -> bool {
        !self.json && !self.summary
    }
}

/// Runs the `dcore local` scenario (`--json` or `--summary`) with `protocol`.
pub fn run(args: LocalArgs, protocol: Config) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(run_cluster(&args, protocol))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", summary(&report));
    }
    Ok(0)
}

/// The report as a few lines for a person.
fn summary(r: &LocalReport) -> String {
    let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
    let mut s = format!(
        "dcore local: {} nodes on 127.1.0.0/16, {:.0} s, {}\n",
        r.nodes,
        r.duration_s,
        if r.encrypted { "encrypted" } else { "plain" }
    );
    s += &format!(
        "  formed:   all members alive everywhere after {}\n",
        ms(r.converged_ms)
    );
    if r.killed.is_empty() {
        s += "  crashed:  none (use --kill K)\n";
    } else {
        let names: Vec<String> = r.killed.iter().map(|k| format!("n{k}")).collect();
        let d = &r.detect_ms;
        s += &format!(
            "  crashed:  {}; declared failed after p50 {} / p99 {} / max {}; {} observers never did\n",
            names.join(", "),
            ms(d.p50),
            ms(d.p99),
            ms(d.max),
            d.undetected
        );
    }
    s += &format!(
        "  mistakes: {} live members declared failed, {} suspected; converged at the end: {}\n",
        r.false_positives,
        r.false_suspicions,
        if r.converged_at_end { "yes" } else { "no" }
    );
    s += &format!(
        "  traffic:  {} msgs and {} B per node per second; {} stream records on {} connections; {} inputs rejected\n",
        r.msgs_per_node_s, r.bytes_per_node_s, r.streams_out, r.connections_opened, r.rejected
    );
    s += &format!(
        "  cost:     {} CPU s in all ({} per node per minute), peak RSS {} MB\n",
        r.cpu_s, r.cpu_s_per_node_min, r.rss_mb
    );
    s
}

struct Observed {
    detected: BTreeMap<(usize, usize), Duration>,
    false_dead: BTreeSet<(usize, usize)>,
    false_suspect: BTreeSet<(usize, usize)>,
    /// Events lost because this reader fell behind a node's event queue.
    missed: u64,
}

async fn run_cluster(args: &LocalArgs, protocol: Config) -> anyhow::Result<LocalReport> {
    let duration = Duration::from_secs_f64(args.duration);
    let key = args.encrypt.then(|| Key::generate(&mut rand::rngs::OsRng));
    let mut nodes: Vec<Node> = Vec::with_capacity(args.nodes);
    let cached = fit_open_files(args.nodes, TransportConfig::default().outbound_cached_max);
    // Every node binds its sockets first: a node binding while others connect could find the
    // port its UDP socket got taken for TCP by one of their connections.
    for i in 0..args.nodes {
        let mut c = NodeConfig::new(&format!("n{i}"), SocketAddr::new(local_ip(i), 0));
        c.protocol = protocol.clone();
        // The seed takes a connection from every joiner within seconds.
        c.transport.inbound_streams_max = c.transport.inbound_streams_max.max(args.nodes + 64);
        c.transport.outbound_cached_max = cached;
        c.keyring = key.clone().map(Keyring::new);
        let chaos = Chaos::new(ChaosConfig {
            drop: args.loss,
            ..ChaosConfig::default()
        })?;
        c.chaos = Some(Arc::new(chaos));
        let node = Node::start(c)
            .await
            .with_context(|| format!("starting node n{i}"))?;
        nodes.push(node);
    }
    // Then the simulator's schedule: node i joins through node 0 i * min(5 ms, 5 s / N) after
    // the start (a node alone does nothing), so `dcore sim` and `dcore local` time the same
    // formation from the same instant.
    // Watched from the start: a live node suspected or failed while the cluster forms counts
    // as much as one after the crash.
    let mut subs: Vec<_> = (0..args.nodes).map(|i| (i, nodes[i].subscribe())).collect();
    let mut obs = Observed {
        detected: BTreeMap::new(),
        false_dead: BTreeSet::new(),
        false_suspect: BTreeSet::new(),
        missed: 0,
    };
    let started = Instant::now();
    let gap = Duration::from_millis(5).min(Duration::from_secs(5) / args.nodes.max(1) as u32);
    let seed = nodes[0].addr();
    // Each join on its own time, as in the simulator: a join waits for the joiner's runtime to
    // take the command, and one after the other those waits add up on a loaded host.
    let joins = futures_util::future::try_join_all(nodes.iter().enumerate().skip(1).map(
        |(i, node)| async move {
            tokio::time::sleep_until((started + gap * i as u32).into()).await;
            node.join(vec![seed]).await
        },
    ));
    let (joined, converged) = tokio::join!(
        joins,
        wait_formed(&nodes, started + duration, || {
            drain(&mut subs, &mut obs, &[], started)
        })
    );
    joined?;
    let converged_ms = converged.map(|t| (t - started).as_millis() as u64);
    let queries = match args.query.spec() {
        Some(spec) => Some(run_queries(args.seed, spec, &nodes).await?),
        None => None,
    };
    let mut order: Vec<usize> = (1..args.nodes).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(args.seed));
    let killed: Vec<usize> = order.into_iter().take(args.kill).collect();
    let survivors: Vec<usize> = (0..args.nodes).filter(|i| !killed.contains(i)).collect();
    subs.retain(|(i, _)| !killed.contains(i));
    drain(&mut subs, &mut obs, &[], started);
    let killed_at = Instant::now();
    for &k in &killed {
        nodes[k].shutdown().await;
    }
    while Instant::now() < started + duration {
        tokio::time::sleep(Duration::from_millis(10)).await;
        drain(&mut subs, &mut obs, &killed, killed_at);
    }
    let end_converged = converged_now(&nodes, &survivors);
    let wall = started.elapsed();
    // Before the survivors' figures are asked for and they shut down, which in a storm takes
    // a while and is not the run's cost.
    let cpu_s = process_cpu_s().unwrap_or(f64::NAN);
    let secs = wall.as_secs_f64();
    let (mut msgs, mut bytes, mut rejected) = (0u64, 0u64, 0u64);
    let (mut streams, mut conns, mut dropped) = (0u64, 0u64, 0u64);
    for n in &nodes {
        let t = n.traffic();
        msgs += t.msgs_out;
        bytes += t.bytes_out;
        rejected += t.rejected_frame + t.rejected_key + t.rejected_plain;
        rejected += t.rejected_packet + t.rejected_stream + t.rejected_spoofed;
        rejected += t.transport.stream_oversized + t.transport.stream_timeouts;
        rejected += t.transport.stream_invalid;
        streams += t.transport.streams_out;
        conns += t.transport.connections_opened;
        dropped += t.transport.streams_out_dropped;
    }
    // What the probes did, summed over the survivors: late probes (the node was not running
    // in time: no suspicion raised) tell a loaded host from a lossy one.
    let (mut probes_late, mut suspicions_raised, mut refutations) = (0u64, 0u64, 0u64);
    for &i in &survivors {
        if let Ok(st) = nodes[i].stats().await {
            probes_late += st.core.probes_late;
            suspicions_raised += st.core.suspicions_raised;
            refutations += st.core.refutations;
        }
    }
    // All at once: one by one, each survivor would watch the others go and suspect them.
    futures_util::future::join_all(survivors.iter().map(|&i| nodes[i].shutdown())).await;
    let detect = detect_summary(&obs, killed.len() * survivors.len());
    let per_node_s = |v: u64| round2(v as f64 / args.nodes as f64 / secs);
    Ok(LocalReport {
        nodes: args.nodes,
        seed: args.seed,
        duration_s: round2(secs),
        converged_ms,
        detect_ms: detect,
        false_positives: obs.false_dead.len(),
        false_suspicions: obs.false_suspect.len(),
        converged_at_end: end_converged,
        msgs_per_node_s: per_node_s(msgs),
        bytes_per_node_s: per_node_s(bytes),
        wall_ms: wall.as_millis() as u64,
        cpu_s: round2(cpu_s),
        cpu_s_per_node_min: round2(cpu_s / args.nodes as f64 / (secs / 60.0)),
        rss_mb: peak_rss_mb().unwrap_or(f64::NAN),
        killed,
        rejected,
        streams_out: streams,
        connections_opened: conns,
        streams_out_dropped: dropped,
        probes_late,
        suspicions_raised,
        refutations,
        events_missed: obs.missed,
        encrypted: args.encrypt,
        queries,
    })
}

/// `spec.count` queries from random nodes, `spec.interval` apart, every node answering from
/// an in-process handler; their figures as `dcore sim --queries` reports them.
async fn run_queries(
    seed: u64,
    spec: distributed_core::sim::QuerySpec,
    nodes: &[Node],
) -> anyhow::Result<distributed_core::sim::QueryReport> {
    use distributed_core::cluster::{QueryAnswer, QueryFilter, QueryParams};
    use distributed_core::identity::NodeId;
    use distributed_core::sim::{QueryFigures, QueryReport};
    if spec.relay_factor > distributed_core::cluster::QUERY_RELAY_MAX {
        bail!("--query-relay: at most 5");
    }
    for node in nodes {
        let mut rx = node.query_handler("local").await?;
        let name = node.local_member().info.id.to_string().into_bytes();
        tokio::spawn(async move {
            while let Some(q) = rx.recv().await {
                let _ = q.respond(name.clone()).await;
            }
        });
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x7175_6572_7921);
    let n = nodes.len();
    let count = spec.count;
    let mut tasks = Vec::with_capacity(count);
    let first = Instant::now();
    let interval = spec.interval;
    for k in 0..count {
        tokio::time::sleep_until((first + interval * k as u32).into()).await;
        let origin = rand::Rng::gen_range(&mut rng, 0..n);
        let mut p = QueryParams::new("local", Vec::new());
        p.relay_factor = spec.relay_factor;
        p.timeout = spec.timeout;
        let mut selected = vec![true; n];
        if k % 2 == 1 {
            let mut all: Vec<usize> = (0..n).collect();
            all.shuffle(&mut rng);
            selected = vec![false; n];
            let names = (all[..(n / 3).clamp(1, 100)].iter())
                .map(|&i| {
                    selected[i] = true;
                    NodeId::new(&format!("n{i}")).expect("short id")
                })
                .collect();
            p.filters.push(QueryFilter::Names(names));
        }
        let start = Instant::now();
        let mut stream = nodes[origin].query(p).await?;
        tasks.push(tokio::spawn(async move {
            let mut run = QueryFigures {
                selected: selected.iter().filter(|s| **s).count(),
                filtered: selected.iter().any(|s| !s),
                ..QueryFigures::default()
            };
            let chosen = |id: &NodeId| {
                node_index(id.as_str()).is_some_and(|i| selected.get(i).copied().unwrap_or(false))
            };
            while let Some(a) = stream.next().await {
                match a {
                    QueryAnswer::Ack(from) => {
                        run.acks += 1;
                        run.unselected += u64::from(!chosen(&from));
                    }
                    QueryAnswer::Response { from, .. } => {
                        run.responses += 1;
                        run.unselected += u64::from(!chosen(&from));
                        run.last_ms = Some(start.elapsed().as_millis() as u64);
                    }
                    QueryAnswer::Done(_) => return Some(run),
                }
            }
            None
        }));
    }
    let mut runs = Vec::new();
    for t in tasks {
        if let Some(r) = t.await? {
            runs.push(r);
        }
    }
    Ok(QueryReport::from_figures(count, 0, &runs))
}

/// Takes the events each watched node has seen so far. Events a slow reader missed (the
/// subscription's buffer overflowed) are skipped, so the false figures are lower bounds.
fn drain(
    subs: &mut [(usize, tokio::sync::broadcast::Receiver<Event>)],
    obs: &mut Observed,
    killed: &[usize],
    killed_at: Instant,
) {
    use tokio::sync::broadcast::error::TryRecvError;
    for (i, sub) in subs.iter_mut() {
        loop {
            match sub.try_recv() {
                Ok(e) => record(obs, *i, &e, killed, killed_at),
                Err(TryRecvError::Lagged(n)) => obs.missed += n,
                Err(_) => break,
            }
        }
    }
}

fn record(obs: &mut Observed, observer: usize, e: &Event, killed: &[usize], killed_at: Instant) {
    let Some(v) = e.member() else { return };
    let Some(target) = node_index(v.info.id.as_str()) else {
        return;
    };
    let crashed = killed.contains(&target);
    match e {
        Event::MemberFailed(_) | Event::MemberLeft(_) if crashed => {
            obs.detected
                .entry((observer, target))
                .or_insert_with(|| killed_at.elapsed());
        }
        Event::MemberFailed(_) => {
            obs.false_dead.insert((observer, target));
        }
        Event::MemberSuspected(_) if !crashed => {
            obs.false_suspect.insert((observer, target));
        }
        _ => {}
    }
}

fn detect_summary(obs: &Observed, pairs: usize) -> Detect {
    let ms: Vec<u64> = obs
        .detected
        .values()
        .map(|t| t.as_millis() as u64)
        .collect();
    let undetected = pairs - ms.len();
    Detect::from_millis(ms, undetected)
}

/// Waits until every node sees all `nodes` alive, or `deadline`, counting in place: the
/// cluster shares the CPU with the check, and copying every node's table every 20 ms took a
/// core from 1,000 nodes just as they converged. Checked every 20 ms from the node last found
/// behind (cheap while most are). `between` runs between checks.
async fn wait_formed(
    nodes: &[Node],
    deadline: Instant,
    mut between: impl FnMut(),
) -> Option<Instant> {
    let n = nodes.len();
    let mut next = 0;
    loop {
        while next < n && nodes[next].num_alive() == n {
            next += 1;
        }
        if next == n {
            // Everyone caught up at some point: check all again at one instant.
            if nodes.iter().all(|node| node.num_alive() == n) {
                return Some(Instant::now());
            }
            next = 0;
        }
        if Instant::now() >= deadline {
            return None;
        }
        between();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether every node in `live` sees every other one in `live` alive now (by name: some of
/// the nodes have crashed, so the count of [`wait_formed`] is not enough). Once, at the end.
fn converged_now(nodes: &[Node], live: &[usize]) -> bool {
    let mut is_live = vec![false; nodes.len()];
    for &i in live {
        is_live[i] = true;
    }
    live.iter().all(|&i| {
        let alive = nodes[i]
            .members()
            .iter()
            .filter(|m| m.state == distributed_core::cluster::MemberState::Alive)
            .filter_map(|m| node_index(m.info.id.as_str()))
            .filter(|&j| j != i && is_live.get(j).copied().unwrap_or(false))
            .count();
        alive + 1 == live.len()
    })
}

/// Every node of a local cluster holds its sockets in this one process: a UDP socket, a
/// listener, and both ends of each cached stream connection. Raises the open-file limit to what
/// `nodes` need (up to the hard limit, or past it where the process may raise it, as root can)
/// and, if that is still short, returns fewer cached outgoing connections per node than
/// `cached` (at least 2; a connection past the cache is opened again when needed), with a
/// notice. 1,000 nodes with 64 cached connections each ran out of the usual 20,000 files.
fn fit_open_files(nodes: usize, cached: usize) -> usize {
    const SPARE: u64 = 1024;
    // Both ends of each cached connection, and as many again for connections being opened
    // and closed (a forming cluster opens thousands a second).
    let per_node = |cached: usize| 4 + 4 * cached as u64;
    let want = nodes as u64 * per_node(cached) + SPARE;
    let nofile = rlimit::Resource::NOFILE;
    let Ok((soft, hard)) = nofile.get() else {
        return cached;
    };
    if soft >= want {
        return cached;
    }
    if want > hard {
        // Allowed only with CAP_SYS_RESOURCE; otherwise the hard limit stays.
        let _ = nofile.set(want, want);
    }
    let (_, hard) = nofile.get().unwrap_or((soft, hard));
    let _ = nofile.set(want.min(hard), hard);
    let soft = nofile.get().map_or(soft, |(s, _)| s);
    if soft >= want {
        return cached;
    }
    let fit = (soft.saturating_sub(SPARE) / nodes.max(1) as u64).saturating_sub(4) / 4;
    let fit = (fit as usize).clamp(2, cached);
    eprintln!(
        "dcore local: open-file limit {soft} is short of {want}; \
         cached connections per node cut from {cached} to {fit}"
    );
    fit
}

/// Node i's address: its own loopback IP (Linux routes all of 127.0.0.0/8 to `lo`), as each
/// host of a real cluster has its own. Sharing 127.0.0.1, 1,000 nodes shared one range of
/// 28,000 ephemeral ports: the syncs' connections (thousands a second while the cluster forms,
/// each leaving a minute of TIME_WAIT) exhausted it and every bind crawled; and the per-IP cap
/// on inbound connections counted the whole cluster as one peer.
fn local_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8))
}

/// `n17` -> 17.
fn node_index(name: &str) -> Option<usize> {
    name.strip_prefix('n')?.parse().ok()
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// User + system CPU seconds of this process, from /proc/self/stat (Linux clock ticks of 1/100 s).
fn process_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Peak resident set size in MB, from /proc/self/status (VmHWM).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(round2(kb / 1024.0))
}
