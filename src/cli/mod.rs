//! The `dcore` command line. `main.rs` parses and dispatches; each command lives in its own file.

mod bench;
mod local;
mod sim;
mod wal;

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
    /// Run the deterministic simulator: N protocol cores over a modelled network, in virtual time.
    Sim(SimArgs),
    /// Run N real nodes in this process on 127.0.0.1, crash K, and report like `sim --json`.
    Local(LocalArgs),
    /// Inspect, verify or repair a write-ahead log directory.
    Wal(WalArgs),
    /// Benchmarks (`dcore bench wal`).
    Bench(BenchArgs),
}

/// Runs the parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Commands::Sim(args) => sim::run(args),
        Commands::Local(args) => local::run(args),
        Commands::Wal(args) => wal::run(args),
        Commands::Bench(args) => bench::run(args),
    }
}
