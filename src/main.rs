//! `dcore`: the distributed-core command line. The commands live in `cli/`, part of this binary
//! (not the library), which is the one place `anyhow` is used.

mod cli;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let code = cli::run(cli::Cli::parse())?;
    std::process::exit(code);
}
