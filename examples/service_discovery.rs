//! Service discovery on cluster membership: a router keeps a table of healthy peers by role,
//! built from membership events alone.
//!
//! Every node says what it serves in its tags (`role=media`, `port=9001`). A node that routes
//! requests subscribes to [`Node::subscribe`] and folds the events into a routing table:
//! joined, updated and recovered members go in, suspected members go out of rotation (they may
//! still come back), failed and left members are dropped. Nodes run on real UDP + TCP at
//! 127.0.0.1 with the `local` protocol preset, so a crash is detected within seconds.
//!
//! ## One process (a bounded demo; what CI runs)
//!
//! ```text
//! cargo run --release --example service_discovery [-- --nodes 4]
//! ```
//!
//! Starts a router and N service nodes (media and broker in turn) on free ports, waits until
//! the router's table lists them all, then crashes the last media node (`shutdown()` without
//! leaving) and has the last broker leave gracefully (`leave(timeout)`), waits until the table
//! shows both gone and exits 0 (1 with the reason, if a deadline passes). It prints:
//!
//! ```text
//! router up at 127.0.0.1:44538; starting 4 service nodes
//! [router] media-1 joined: media at 127.0.0.1:9001
//! [router] broker-1 joined: broker at 127.0.0.1:9101
//! [router] media-2 joined: media at 127.0.0.1:9002
//! [router] broker-2 joined: broker at 127.0.0.1:9102
//! routing table after 0.0 s (4 healthy):
//!   broker  broker-1@127.0.0.1:9101  broker-2@127.0.0.1:9102
//!   media   media-1@127.0.0.1:9001  media-2@127.0.0.1:9002
//!
//! crashing media-2 (no leave); broker-2 leaves gracefully
//! [router] broker-2 left: dropped
//! [router] media-2 suspected: out of rotation
//! [router] media-2 failed: dropped
//! routing table after 1.1 s (2 healthy):
//!   broker  broker-1@127.0.0.1:9101
//!   media   media-1@127.0.0.1:9001
//!
//! ok: media-2 dropped as failed, broker-2 as left
//! ```
//!
//! ## Several processes
//!
//! With `--name`, the program runs one long-lived node that is its own router: it prints its
//! table on every change until Ctrl-C, then leaves gracefully. Start a few in separate
//! terminals, stop some with Ctrl-C (a leave) or `kill -9` (a crash), and watch the others:
//!
//! ```text
//! cargo run --example service_discovery -- --name broker-1 --bind 127.0.0.1:7946 --role broker --port 9101
//! cargo run --example service_discovery -- --name media-1 --bind 127.0.0.1:7947 --role media --port 9001 --join 127.0.0.1:7946
//! cargo run --example service_discovery -- --name media-2 --bind 127.0.0.1:7948 --role media --port 9002 --join 127.0.0.1:7946
//! ```

use distributed_core::{Config, Event, MemberState, MemberView, Node, NodeConfig, Tags};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

type Error = Box<dyn std::error::Error>;

/// How long the demo waits for the table to list every service node.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(10);
/// How long the demo waits for the crash and the leave to show; the `local` preset detects a
/// crash in a few seconds, so this leaves a wide margin on a busy machine.
const FAULT_DEADLINE: Duration = Duration::from_secs(20);
/// How long a leaving node waits for its `Left` claim to go out.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a node that left keeps running before it shuts down. `leave` returns once the
/// claim went out once, perhaps only to a member that is itself down; lingering lets gossip
/// carry it to everyone, so no peer probes the node in vain and declares it failed. (One CI
/// run on a loaded machine saw the router declare the leaver failed after a 1 s linger.)
const LEAVE_PROPAGATE: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() -> ExitCode {
    let result = match parse_args(std::env::args().skip(1)) {
        Ok(Mode::Demo { services }) => demo(services).await,
        Ok(Mode::Single(opts)) => single(opts).await,
        Ok(Mode::Help) => {
            println!("{USAGE}");
            Ok(())
        }
        Err(usage) => Err(usage.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("service_discovery: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The routing table: what a router knows, from events only.

/// Where requests for one instance go: the member's IP and the port it advertised.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    role: String,
    service: SocketAddr,
}

impl Route {
    /// The route a member advertises; `None` for members that serve nothing (no `role` tag or
    /// no valid `port` tag), such as a pure router.
    fn of(member: &MemberView) -> Option<Route> {
        let tags = &member.info.tags;
        let role = tags.get("role")?.clone();
        let port = tags.get("port")?.parse().ok()?;
        Some(Route {
            role,
            service: SocketAddr::new(member.info.addr.ip(), port),
        })
    }
}

/// Why an instance left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gone {
    Failed,
    Left,
}

/// Instances by node name: the healthy ones get traffic, suspected ones wait to be cleared.
#[derive(Debug, Clone, Default)]
struct RoutingTable {
    healthy: BTreeMap<String, Route>,
    suspected: BTreeMap<String, Route>,
    gone: BTreeMap<String, Gone>,
}

impl RoutingTable {
    /// Folds one membership event in; returns a line describing the change, if any.
    fn apply(&mut self, event: &Event) -> Option<String> {
        let member = event.member()?;
        let name = member.info.id.to_string();
        match event {
            Event::MemberJoined(_) | Event::MemberUpdated(_) | Event::MemberRecovered(_) => {
                self.suspected.remove(&name);
                self.gone.remove(&name);
                // A member may drop its role tags in an update: it then serves nothing.
                let Some(route) = Route::of(member) else {
                    return self
                        .healthy
                        .remove(&name)
                        .map(|_| format!("{name}: no service"));
                };
                let line = format!(
                    "{name} {}: {} at {}",
                    verb(event),
                    route.role,
                    route.service
                );
                self.healthy.insert(name, route);
                Some(line)
            }
            Event::MemberSuspected(_) => {
                // Out of rotation, but kept: a suspect often refutes and comes back.
                let route = self.healthy.remove(&name)?;
                self.suspected.insert(name.clone(), route);
                Some(format!("{name} suspected: out of rotation"))
            }
            Event::MemberFailed(_) | Event::MemberLeft(_) => {
                // Dropped from both lists; only a change if it was in one of them.
                let was_healthy = self.healthy.remove(&name).is_some();
                let was_suspected = self.suspected.remove(&name).is_some();
                let why = match event {
                    Event::MemberFailed(_) => Gone::Failed,
                    _ => Gone::Left,
                };
                self.gone.insert(name.clone(), why);
                (was_healthy || was_suspected).then(|| format!("{name} {}: dropped", verb(event)))
            }
            _ => None,
        }
    }

    /// A table rebuilt from a membership snapshot, for a router that missed events.
    fn from_members(members: Vec<MemberView>) -> RoutingTable {
        let mut table = RoutingTable::default();
        for m in members {
            let event = match m.state {
                MemberState::Alive => Event::MemberJoined(m),
                MemberState::Suspect => Event::MemberSuspected(m),
                MemberState::Dead => Event::MemberFailed(m),
                MemberState::Left => Event::MemberLeft(m),
            };
            table.apply(&event);
        }
        table
    }
}

fn verb(event: &Event) -> &'static str {
    match event {
        Event::MemberJoined(_) => "joined",
        Event::MemberUpdated(_) => "updated",
        Event::MemberRecovered(_) => "recovered",
        Event::MemberSuspected(_) => "suspected",
        Event::MemberFailed(_) => "failed",
        Event::MemberLeft(_) => "left",
        _ => "changed",
    }
}

impl fmt::Display for RoutingTable {
    /// One line per role, healthy instances only; then the suspects, if any.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut by_role: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (name, route) in &self.healthy {
            let entry = format!("{name}@{}", route.service);
            by_role.entry(&route.role).or_default().push(entry);
        }
        if by_role.is_empty() {
            writeln!(f, "  (no healthy instance)")?;
        }
        for (role, instances) in by_role {
            writeln!(f, "  {role:<7} {}", instances.join("  "))?;
        }
        if !self.suspected.is_empty() {
            let names: Vec<&str> = self.suspected.keys().map(String::as_str).collect();
            writeln!(f, "  suspected (no traffic): {}", names.join(", "))?;
        }
        Ok(())
    }
}

/// Runs the router of `node` in a task: every event goes into the table, whose latest state
/// the returned receiver holds. Each change is printed, and with `print_table` the whole table.
fn spawn_router(node: &Node, print_table: bool) -> watch::Receiver<RoutingTable> {
    // Subscribe before returning, so no event after this call is missed.
    let mut events = node.subscribe();
    let node = node.clone();
    let me = node.local_member().info.id.to_string();
    let (tx, rx) = watch::channel(RoutingTable::default());
    tokio::spawn(async move {
        // The task owns the table; watchers get a copy after each change is printed.
        let mut table = RoutingTable::default();
        loop {
            let line = match events.recv().await {
                Ok(event) => table.apply(&event),
                // Events were lost (this task fell over a thousand behind): the table cannot be
                // patched, so it is rebuilt from the node's member list, the one other source.
                Err(RecvError::Lagged(missed)) => {
                    table = RoutingTable::from_members(node.members());
                    Some(format!("missed {missed} events: table rebuilt"))
                }
                Err(RecvError::Closed) => return,
            };
            let Some(line) = line else { continue };
            println!("[{me}] {line}");
            if print_table {
                print!("{table}");
            }
            tx.send_replace(table.clone());
        }
    });
    rx
}

/// Waits until `done` holds for the table, or fails after `within` with the table as it is.
async fn wait_until(
    table: &mut watch::Receiver<RoutingTable>,
    what: &str,
    within: Duration,
    done: impl FnMut(&RoutingTable) -> bool,
) -> Result<RoutingTable, Error> {
    let waited = tokio::time::timeout(within, async {
        table.wait_for(done).await.map(|t| t.clone())
    })
    .await;
    match waited {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(_)) => Err("the router task stopped".into()),
        Err(_) => {
            let now = table.borrow().clone();
            Err(format!("no {what} within {within:?}; the table is:\n{now}").into())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes.

/// Starts a node on real UDP + TCP with the `local` preset (fast failure detection on one host).
async fn start_node(
    name: &str,
    bind: SocketAddr,
    tags: Tags,
    seeds: Vec<SocketAddr>,
) -> Result<Node, Error> {
    let config = tags
        .iter()
        .fold(NodeConfig::builder(name, bind), |b, (k, v)| b.tag(k, v))
        .protocol(Config::local())
        .seeds(seeds)
        .build()
        .map_err(|e| format!("node {name}: {e}"))?;
    Node::start(config)
        .await
        .map_err(|e| format!("starting {name} on {bind}: {e}").into())
}

/// Announces the leave, lingers while gossip spreads it, then stops the node.
async fn leave_gracefully(node: &Node) -> Result<(), Error> {
    let announced = node.leave(LEAVE_TIMEOUT).await?;
    if announced {
        tokio::time::sleep(LEAVE_PROPAGATE).await;
    }
    node.shutdown().await;
    if !announced {
        let name = name_of(node);
        return Err(format!("{name}: leave not announced within {LEAVE_TIMEOUT:?}").into());
    }
    Ok(())
}

fn tags(role: &str, port: Option<u16>) -> Tags {
    let mut tags = Tags::new();
    tags.insert("role".into(), role.into());
    if let Some(port) = port {
        tags.insert("port".into(), port.to_string());
    }
    tags
}

/// The demo's service roles, in turn, with the base of their made-up service ports.
const ROLES: [(&str, u16); 2] = [("media", 9000), ("broker", 9100)];

/// Service node `i` of the demo: its name, role and service port.
fn service(i: usize) -> (String, &'static str, u16) {
    let (role, base) = ROLES[i % ROLES.len()];
    let n = i / ROLES.len() + 1;
    (format!("{role}-{n}"), role, base + n as u16)
}

/// Index of the last service node with this role (0: media, 1: broker).
fn last_of(services: usize, role: usize) -> usize {
    (0..services)
        .rev()
        .find(|i| i % ROLES.len() == role)
        .expect("--nodes is at least 2")
}

// ---------------------------------------------------------------------------------------------
// The bounded demo.

async fn demo(services: usize) -> Result<(), Error> {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("a literal address");
    let router = start_node("router", any, tags("router", None), Vec::new()).await?;
    let mut table = spawn_router(&router, false);
    println!(
        "router up at {}; starting {services} service nodes",
        router.addr()
    );

    let started = Instant::now();
    let mut nodes = Vec::new();
    for i in 0..services {
        let (name, role, port) = service(i);
        let seeds = vec![router.addr()];
        nodes.push(start_node(&name, any, tags(role, Some(port)), seeds).await?);
    }
    let full = wait_until(&mut table, "full table", CONVERGE_DEADLINE, |t| {
        t.healthy.len() == services
    })
    .await?;
    let secs = started.elapsed().as_secs_f64();
    println!("routing table after {secs:.1} s ({services} healthy):\n{full}");

    // The last media node crashes and the last broker leaves.
    let (crashed, leaver) = (&nodes[last_of(services, 0)], &nodes[last_of(services, 1)]);
    let (crashed_name, leaver_name) = (name_of(crashed), name_of(leaver));
    println!("crashing {crashed_name} (no leave); {leaver_name} leaves gracefully");
    let started = Instant::now();
    crashed.shutdown().await;
    leave_gracefully(leaver).await?;

    let after = wait_until(&mut table, "crash and leave seen", FAULT_DEADLINE, |t| {
        t.gone.get(&crashed_name) == Some(&Gone::Failed)
            && t.gone.get(&leaver_name) == Some(&Gone::Left)
    })
    .await?;
    let secs = started.elapsed().as_secs_f64();
    let healthy = after.healthy.len();
    println!("routing table after {secs:.1} s ({healthy} healthy):\n{after}");

    // Shutting down a node twice is harmless: the second call returns at once.
    for node in nodes.iter().chain([&router]) {
        node.shutdown().await;
    }
    println!("ok: {crashed_name} dropped as failed, {leaver_name} as left");
    Ok(())
}

fn name_of(node: &Node) -> String {
    node.local_member().info.id.to_string()
}

// ---------------------------------------------------------------------------------------------
// One long-lived node per process.

/// The settings of `--name NAME --bind ADDR --role R --port P [--join ADDR]`.
#[derive(Debug)]
struct NodeOpts {
    name: String,
    bind: SocketAddr,
    role: String,
    port: u16,
    join: Vec<SocketAddr>,
}

async fn single(opts: NodeOpts) -> Result<(), Error> {
    let tags = tags(&opts.role, Some(opts.port));
    let node = start_node(&opts.name, opts.bind, tags, opts.join).await?;
    // The node routes too: it prints its table of the others on every change.
    let _table = spawn_router(&node, true);
    println!(
        "{} up at {}, serving {} on port {}; Ctrl-C leaves the cluster",
        opts.name,
        node.addr(),
        opts.role,
        opts.port
    );
    tokio::signal::ctrl_c().await?;
    println!("leaving...");
    leave_gracefully(&node).await
}

// ---------------------------------------------------------------------------------------------
// Arguments, by hand: the example needs no parser crate.

enum Mode {
    Demo { services: usize },
    Single(NodeOpts),
    Help,
}

const USAGE: &str = "usage: service_discovery [--nodes N]
       service_discovery --name NAME --bind ADDR --role ROLE --port PORT [--join ADDR]...";

fn parse_args(args: impl Iterator<Item = String>) -> Result<Mode, String> {
    let mut flags = Flags::read(args)?;
    if flags.0.contains_key("--help") {
        return Ok(Mode::Help);
    }
    let mode = match flags.take("--name") {
        None => {
            let services = flags.optional("--nodes")?.unwrap_or(4);
            if services < 2 {
                return Err(
                    "--nodes must be at least 2 (a media node crashes, a broker leaves)".into(),
                );
            }
            Mode::Demo { services }
        }
        Some(name) => Mode::Single(NodeOpts {
            name,
            bind: flags.required("--bind")?,
            role: flags.required("--role")?,
            port: flags.required("--port")?,
            join: flags.all("--join")?,
        }),
    };
    match flags.0.keys().next() {
        Some(flag) => Err(format!("unknown or misplaced flag {flag}\n{USAGE}")),
        None => Ok(mode),
    }
}

/// `--flag value` pairs; a flag may repeat.
struct Flags(BTreeMap<String, Vec<String>>);

impl Flags {
    fn read(mut args: impl Iterator<Item = String>) -> Result<Flags, String> {
        let mut flags: BTreeMap<String, Vec<String>> = BTreeMap::new();
        while let Some(flag) = args.next() {
            if flag == "-h" || flag == "--help" {
                flags.insert("--help".into(), Vec::new());
                continue;
            }
            let value = args
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            flags.entry(flag).or_default().push(value);
        }
        Ok(Flags(flags))
    }

    /// The last value of `flag`, removed from the set.
    fn take(&mut self, flag: &str) -> Option<String> {
        self.0.remove(flag).and_then(|mut values| values.pop())
    }

    fn optional<T: FromStr>(&mut self, flag: &str) -> Result<Option<T>, String> {
        self.take(flag).map(|v| parse(flag, &v)).transpose()
    }

    fn required<T: FromStr>(&mut self, flag: &str) -> Result<T, String> {
        self.optional(flag)?
            .ok_or_else(|| format!("{flag} is required with --name\n{USAGE}"))
    }

    fn all<T: FromStr>(&mut self, flag: &str) -> Result<Vec<T>, String> {
        let values = self.0.remove(flag).unwrap_or_default();
        values.iter().map(|v| parse(flag, v)).collect()
    }
}

fn parse<T: FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: '{value}' is not valid"))
}
