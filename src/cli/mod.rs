//! The `dcore` command line. `main.rs` parses and dispatches; each command lives in its own file.

mod agent;
mod bench;
mod client;
mod faults;
mod interactive;
mod local;
mod sim;
mod wal;

pub use agent::AgentArgs;
pub use bench::BenchArgs;
pub use local::LocalArgs;
pub use sim::SimArgs;
pub use wal::WalArgs;

use clap::{Parser, Subcommand};

/// distributed-core: cluster membership, failure detection and gossip.
#[derive(Debug, Parser)]
#[command(name = "dcore", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Commands,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run a node with its admin HTTP API until SIGINT/SIGTERM (then leave gracefully).
    Agent(AgentArgs),
    /// List the members an agent knows.
    Members {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
        /// Only members in this state: alive, suspect, failed, left.
        #[arg(long)]
        state: Option<String>,
        /// Only members with this tag, KEY=VALUE.
        #[arg(long)]
        tag: Option<String>,
        #[command(flatten)]
        target: client::Target,
    },
    /// Which members own a key (rendezvous hashing over the live members the agent sees).
    Owner {
        /// The key (any text).
        key: String,
        /// How many owners, best first.
        #[arg(long, default_value_t = 1)]
        n: usize,
        /// Only members whose tag matches, TAG=REGEX (the whole value; repeatable).
        #[arg(long)]
        tag: Vec<String>,
        /// The tag holding each member's weight (a number; absent: 1).
        #[arg(long)]
        weight_tag: Option<String>,
        /// Print `{"key": K, "owners": [names]}`.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: client::Target,
    },
    /// The round trip between two members that the network coordinates predict (B: the agent).
    Rtt {
        /// A member's name.
        a: String,
        /// Another member's name (default: the agent's own node).
        b: Option<String>,
        /// Print `{"a": A, "b": B, "rtt_ms": MS}`.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: client::Target,
    },
    /// Ask the cluster (serf's queries): members the filters select acknowledge and answer
    /// through their query handlers; acks and answers print as they come, a summary at the
    /// timeout.
    Query(client::QueryArgs),
    /// Ask an agent to join a cluster through these seeds.
    Join {
        /// Seeds, host:port.
        #[arg(required = true)]
        addrs: Vec<String>,
        #[command(flatten)]
        target: client::Target,
    },
    /// Ask an agent to leave the cluster gracefully and stop.
    Leave {
        #[command(flatten)]
        target: client::Target,
    },
    /// Send a user event to every member.
    Event {
        /// Event name.
        name: String,
        /// Payload (text).
        payload: Option<String>,
        #[command(flatten)]
        target: client::Target,
    },
    /// Print membership and user events as they happen.
    Monitor {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: client::Target,
    },
    /// Manage an agent's encryption keys (rotation: install everywhere, use, remove old).
    Keys {
        /// What to do.
        #[command(subcommand)]
        cmd: client::KeysCmd,
        #[command(flatten)]
        target: client::Target,
    },
    /// Inject faults into an agent's transport (drop, delay, duplicate, reorder, partition).
    Chaos {
        /// What to do.
        #[command(subcommand)]
        cmd: client::ChaosCmd,
        #[command(flatten)]
        target: client::Target,
    },
    /// Show an agent's identity and main figures.
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: client::Target,
    },
    /// Exit 0 when the agent is ready (joined), 1 while it joins or leaves: for probes.
    Ready {
        #[command(flatten)]
        target: client::Target,
    },
    /// Print a new random encryption key (base64).
    Keygen,
    /// Run the deterministic simulator: N protocol cores over a modelled network, in virtual time.
    Sim(SimArgs),
    /// A local cluster of N agents on loopback addresses: interactive (kill, pause, restart, chaos), or a
    /// scripted crash reported like `sim --json` (--json, --summary).
    Local(LocalArgs),
    /// Inspect, verify or repair a write-ahead log directory.
    Wal(WalArgs),
    /// Benchmarks (`dcore bench wal`).
    Bench(BenchArgs),
}

/// Runs the parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Commands::Agent(args) => agent::run(args),
        Commands::Members {
            json,
            state,
            tag,
            target,
        } => client::members(&target, json, state, tag),
        Commands::Owner {
            key,
            n,
            tag,
            weight_tag,
            json,
            target,
        } => client::owner(&target, &key, n, &tag, weight_tag, json),
        Commands::Rtt { a, b, json, target } => client::rtt(&target, &a, b.as_deref(), json),
        Commands::Query(args) => client::query(args),
        Commands::Join { addrs, target } => client::join(&target, addrs),
        Commands::Leave { target } => client::leave(&target),
        Commands::Event {
            name,
            payload,
            target,
        } => client::event(&target, name, payload),
        Commands::Monitor { json, target } => client::monitor(&target, json),
        Commands::Keys { cmd, target } => client::keys(&target, cmd),
        Commands::Info { json, target } => client::info(&target, json),
        Commands::Chaos { cmd, target } => client::chaos(&target, cmd),
        Commands::Ready { target } => client::ready(&target),
        Commands::Keygen => client::keygen(),
        Commands::Sim(args) => sim::run(args),
        Commands::Local(args) => {
            let protocol = args.protocol()?;
            if args.interactive() {
                interactive::run(interactive::Session {
                    nodes: args.nodes,
                    encrypt: args.encrypt,
                    protocol,
                    ui: args.ui.then_some(args.ui_addr),
                })
            } else {
                local::run(args, protocol)
            }
        }
        Commands::Wal(args) => wal::run(args),
        Commands::Bench(args) => bench::run(args),
    }
}
