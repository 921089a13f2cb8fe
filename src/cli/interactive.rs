//! `dcore local` without `--json`: N agents in this process on 127.0.0.1, a live membership
//! matrix, and typed commands to crash, pause, resume, restart nodes and inject faults; with
//! `--ui`, the same matrix and commands on a web page too ([`LocalUi`]).

use anyhow::{bail, Context};
use distributed_core::agent::ui::{LocalCommand, LocalNode, LocalUi, LocalView};
use distributed_core::agent::{Agent, AgentConfig};
use distributed_core::cluster::{Config, Event, MemberState};
use distributed_core::identity::Key;
use distributed_core::node::NodeConfig;
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, watch};

/// Event lines the page shows.
const LOG_KEPT: usize = 200;

/// What a command did: text to show, or the end of the session.
enum Step {
    Say(String),
    Quit,
}

const HELP: &str = "commands (N is a node number or name, e.g. 3 or n3):
  kill N          crash N (stops without leaving: the others detect a failure)
  leave N         N leaves gracefully
  pause N         freeze N (reads nothing, fires no timer), as a stopped process
  resume N        unfreeze N
  restart N       start N again under the same name (it rejoins through n0)
  drop N P        N drops share P of the datagrams it sends (0 stops it)
  block N M       block datagrams between N and M both ways (TCP still works)
  unblock N M     lift that block
  event NAME [P]  send a user event from n0
  show            print the membership matrix now
  help            this text
  quit            stop everything (also Ctrl-D)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Running,
    Paused,
    Killed,
    Left,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Killed => "killed",
            Status::Left => "left",
        }
    }
}

struct Slot {
    name: String,
    agent: Option<Agent>,
    status: Status,
    gossip: Option<SocketAddr>,
    http: Option<SocketAddr>,
}

struct Cluster {
    slots: Vec<Slot>,
    base: AgentConfig,
    key_file: Option<std::path::PathBuf>,
    events: mpsc::UnboundedSender<(String, Event)>,
    started: Instant,
}

impl Cluster {
    fn config_for(&self, i: usize) -> AgentConfig {
        let mut c = self.base.clone();
        c.node.name = format!("n{i}");
        c.encrypt_key_file = self.key_file.clone();
        if i > 0 {
            if let Some(seed) = self.slots.first().and_then(|s| s.gossip) {
                c.join = vec![seed.to_string()];
            }
        }
        c
    }

    async fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let mut config = self.config_for(i);
        if i == 0 {
            // n0 restarted: join anyone still running.
            if let Some(other) = self.slots.iter().skip(1).find(|s| s.agent.is_some()) {
                config.join = other
                    .gossip
                    .map(|a| vec![a.to_string()])
                    .unwrap_or_default();
            }
        }
        // A restart comes back at its old address, as an operator's would: at another one the
        // others would take it only once it has been failed for `dead_reclaim_time`.
        if let Some(addr) = self.slots[i].gossip {
            config.node.bind = addr;
        }
        let agent = Agent::start(config)
            .await
            .with_context(|| format!("starting n{i}"))?;
        let mut sub = agent.node().subscribe();
        let tx = self.events.clone();
        let name = format!("n{i}");
        tokio::spawn(async move {
            loop {
                match sub.recv().await {
                    Ok(e) => {
                        if tx.send((name.clone(), e)).is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        });
        let slot = &mut self.slots[i];
        slot.gossip = Some(agent.node().addr());
        slot.http = Some(agent.http_addr());
        slot.agent = Some(agent);
        slot.status = Status::Running;
        Ok(())
    }

    fn index(&self, word: Option<&str>) -> anyhow::Result<usize> {
        let w = word.context("which node? (a number like 3 or a name like n3)")?;
        let n: usize = w
            .trim_start_matches('n')
            .parse()
            .with_context(|| format!("{w:?} is not a node"))?;
        if n >= self.slots.len() {
            bail!("there is no n{n} (nodes are n0..n{})", self.slots.len() - 1);
        }
        Ok(n)
    }

    fn running(&self, i: usize) -> anyhow::Result<&Agent> {
        self.slots[i]
            .agent
            .as_ref()
            .with_context(|| format!("n{i} is not running (restart it first)"))
    }

    /// Every node's row: what it sees of every node (the page's data, and the terminal's
    /// matrix drawn from it by [`matrix`]).
    fn view(&self) -> Vec<LocalNode> {
        (self.slots.iter())
            .map(|s| {
                let view = self.seen_by(s);
                let sees = (self.slots.iter())
                    .map(|t| {
                        if s.agent.is_none() {
                            "down"
                        } else if t.name == s.name {
                            "alive"
                        } else {
                            match view.get(&t.name) {
                                Some(MemberState::Alive) => "alive",
                                Some(MemberState::Suspect) => "suspect",
                                Some(MemberState::Dead) => "failed",
                                Some(MemberState::Left) => "left",
                                None => "unknown",
                            }
                        }
                        .to_string()
                    })
                    .collect();
                LocalNode {
                    name: s.name.clone(),
                    status: s.status.name().to_string(),
                    http: s.http.filter(|_| s.agent.is_some()).map(|h| h.to_string()),
                    sees,
                }
            })
            .collect()
    }

    /// The members `s` sees, by name (none when it is not running).
    fn seen_by(&self, s: &Slot) -> BTreeMap<String, MemberState> {
        s.agent
            .as_ref()
            .filter(|_| s.status != Status::Killed)
            .map(|a| {
                a.node()
                    .members()
                    .into_iter()
                    .map(|m| (m.info.id.as_str().to_string(), m.state))
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn command(&mut self, line: &str) -> anyhow::Result<Step> {
        let mut w = line.split_whitespace();
        let Some(cmd) = w.next() else {
            return Ok(Step::Say(String::new()));
        };
        let said = match cmd {
            "help" | "?" => HELP.to_string(),
            "quit" | "exit" | "q" => return Ok(Step::Quit),
            "show" | "members" => matrix(&self.view()),
            "kill" => {
                let i = self.index(w.next())?;
                let agent = self.slots[i].agent.take().context("not running")?;
                agent.shutdown().await;
                self.slots[i].status = Status::Killed;
                format!("n{i} crashed (no leave): watch the others suspect it, then mark it failed")
            }
            "leave" => {
                let i = self.index(w.next())?;
                let agent = self.slots[i].agent.take().context("not running")?;
                let announced = agent.leave_and_shutdown().await;
                self.slots[i].status = Status::Left;
                format!("n{i} left (announced: {announced})")
            }
            "pause" => {
                let i = self.index(w.next())?;
                self.running(i)?.node().pause().await?;
                self.slots[i].status = Status::Paused;
                format!("n{i} paused")
            }
            "resume" => {
                let i = self.index(w.next())?;
                self.running(i)?.node().resume().await?;
                self.slots[i].status = Status::Running;
                format!("n{i} resumed")
            }
            "restart" => {
                let i = self.index(w.next())?;
                if let Some(a) = self.slots[i].agent.take() {
                    a.shutdown().await;
                }
                self.start(i).await?;
                format!("n{i} restarted; it rejoins and refutes its old failure")
            }
            "drop" => {
                let i = self.index(w.next())?;
                let p: f64 = w
                    .next()
                    .context("drop N P: give a share, e.g. 0.3")?
                    .parse()
                    .context("P is a number from 0 to 1")?;
                if !(0.0..=1.0).contains(&p) {
                    bail!("P is a number from 0 to 1");
                }
                self.running(i)?.chaos().update(|c| c.drop = p)?;
                format!("n{i} drops {:.0} % of the datagrams it sends", p * 100.0)
            }
            "block" | "unblock" => {
                let i = self.index(w.next())?;
                let j = self.index(w.next())?;
                let (ai, aj) = (self.running(i)?, self.running(j)?);
                let (gi, gj) = (ai.node().addr(), aj.node().addr());
                if cmd == "block" {
                    ai.chaos().block(gj)?;
                    aj.chaos().block(gi)?;
                } else {
                    ai.chaos().unblock(gj);
                    aj.chaos().unblock(gi);
                }
                format!("datagrams between n{i} and n{j} {cmd}ed")
            }
            "event" => {
                let name = w.next().context("event NAME [PAYLOAD]")?;
                let payload = w.collect::<Vec<_>>().join(" ");
                self.running(0)?
                    .node()
                    .broadcast_event(name, payload.into_bytes())
                    .await?;
                format!("event {name} sent from n0")
            }
            other => bail!("unknown command {other:?}; type help"),
        };
        Ok(Step::Say(said))
    }
}

/// The membership matrix as the terminal prints it: one row per node, a letter per node it
/// sees (`.` itself, `-` the whole row when it is not running), its status and admin API.
fn matrix(nodes: &[LocalNode]) -> String {
    let mut out = format!("{:>6} ", "");
    for n in nodes {
        out += &format!("{:>4}", n.name);
    }
    out += "\n";
    for (i, n) in nodes.iter().enumerate() {
        out += &format!("{:>6} ", n.name);
        for (j, state) in n.sees.iter().enumerate() {
            let c = match state.as_str() {
                "down" => "-",
                _ if i == j => ".",
                "alive" => "A",
                "suspect" => "S",
                "failed" => "F",
                "left" => "L",
                _ => " ",
            };
            out += &format!("{c:>4}");
        }
        let http = (n.http.as_ref())
            .map(|h| format!("http://{h}"))
            .unwrap_or_default();
        out += &format!("   {:<8} {http}\n", n.status);
    }
    out += "  (row: what that node sees; A alive, S suspect, F failed, L left)\n";
    out
}

fn describe(e: &Event) -> Option<String> {
    let m = |what: &str, v: &distributed_core::cluster::MemberView| {
        format!("{} {what} (incarnation {})", v.info.id, v.incarnation.0)
    };
    Some(match e {
        Event::MemberJoined(v) => m("joined", v),
        Event::MemberSuspected(v) => m("suspected", v),
        Event::MemberFailed(v) => m("failed", v),
        Event::MemberLeft(v) => m("left", v),
        Event::MemberRecovered(v) => m("alive again", v),
        Event::MemberUpdated(v) => m("updated", v),
        Event::UserEvent(u) => format!("user event {} from {}", u.name, u.origin),
        Event::Refuted { incarnation } => {
            format!("refuted a suspicion (now incarnation {})", incarnation.0)
        }
        Event::MemberConflict { member, claimed } => {
            let v = m("in conflict", member);
            format!("{v}: a claim to move it to {} was refused", claimed.addr)
        }
        Event::Message(d) => format!("message of {} bytes from {}", d.payload.len(), d.from),
        Event::Query(q) => format!("query {:?} from {}", q.name, q.origin),
        Event::JoinCompleted { .. } | Event::QueryAnswer { .. } => return None,
    })
}

/// What an interactive cluster starts with.
pub struct Session {
    /// Agents to start.
    pub nodes: usize,
    /// Share one random key (written to a key file) and encrypt every frame.
    pub encrypt: bool,
    /// Protocol settings of every agent.
    pub protocol: Config,
    /// Serve the page of `--ui` on this address.
    pub ui: Option<SocketAddr>,
}

/// Runs the interactive cluster until `quit` or end of input.
pub fn run(args: Session) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(session(args))
}

async fn session(args: Session) -> anyhow::Result<i32> {
    let protocol = args.protocol.clone();
    let key_dir = std::env::temp_dir().join(format!("dcore-local-{}", std::process::id()));
    let key_file = if args.encrypt {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::create_dir_all(&key_dir)?;
        let path = key_dir.join("keys");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        writeln!(f, "{}", Key::generate(&mut rand::rngs::OsRng).to_base64())?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Some(path)
    } else {
        None
    };
    let base = AgentConfig {
        node: NodeConfig {
            protocol,
            ..NodeConfig::new("n0", "127.0.0.1:0".parse()?)
        },
        http_addr: "127.0.0.1:0".parse()?,
        ..AgentConfig::default()
    };
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut c = Cluster {
        slots: (0..args.nodes)
            .map(|i| Slot {
                name: format!("n{i}"),
                agent: None,
                status: Status::Killed,
                gossip: None,
                http: None,
            })
            .collect(),
        base,
        key_file,
        events: tx,
        started: Instant::now(),
    };
    for i in 0..args.nodes {
        c.start(i).await?;
    }
    println!(
        "dcore local: {} agents on 127.0.0.1{}; each has an admin API, e.g.",
        args.nodes,
        if args.encrypt { ", encrypted" } else { "" }
    );
    let h0 = c.slots[0].http.expect("n0 started");
    println!("  curl http://{h0}/v1/members    curl http://{h0}/metrics");
    println!("  dcore members --http-addr {h0}");
    let (view_tx, view_rx) = watch::channel(LocalView::default());
    let (ui_tx, mut ui_commands) = mpsc::channel::<LocalCommand>(16);
    let ui = match args.ui {
        Some(addr) => {
            let ui = LocalUi::start(addr, view_rx, ui_tx)
                .await
                .context("starting the --ui page")?;
            println!("page: http://{}/", ui.addr());
            Some(ui)
        }
        None => None,
    };
    println!("Type help for commands, quit to stop.\n");
    let mut log: VecDeque<String> = VecDeque::new();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut shown = String::new();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                match c.command(line.trim()).await {
                    Ok(Step::Say(text)) if text.is_empty() => {}
                    Ok(Step::Say(text)) => println!("{}", text.trim_end()),
                    Ok(Step::Quit) => break,
                    Err(e) => println!("error: {e:#}"),
                }
            }
            Some(cmd) = ui_commands.recv() => {
                println!("page: {}", cmd.line);
                let outcome = match c.command(cmd.line.trim()).await {
                    Ok(Step::Say(text)) => {
                        println!("{}", text.trim_end());
                        Ok(text)
                    }
                    // LocalUi sends no quit; refuse one anyway.
                    Ok(Step::Quit) => Err("the page cannot stop the session".to_string()),
                    Err(e) => Err(format!("{e:#}")),
                };
                let _ = cmd.reply.send(outcome);
                view_tx.send_replace(LocalView { nodes: c.view(), log: log.iter().cloned().collect() });
            }
            Some((observer, e)) = events.recv() => {
                if let Some(text) = describe(&e) {
                    let line = format!("{:>7.1}s  {observer}: {text}", c.started.elapsed().as_secs_f64());
                    println!("{line}");
                    if log.len() == LOG_KEPT {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            }
            _ = tick.tick() => {
                let nodes = c.view();
                let m = matrix(&nodes);
                if m != shown {
                    print!("{m}");
                    shown = m;
                }
                if ui.is_some() {
                    view_tx.send_replace(LocalView { nodes, log: log.iter().cloned().collect() });
                }
            }
        }
        std::io::stdout().flush()?;
    }
    for s in &mut c.slots {
        if let Some(a) = s.agent.take() {
            a.shutdown().await;
        }
    }
    if let Some(ui) = ui {
        ui.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&key_dir);
    println!("stopped");
    Ok(0)
}
