//! `dcore`: the distributed-core command line. The commands live in `cli/`, part of this binary
//! (not the library), which is the one place `anyhow` is used.

mod cli;

use clap::Parser;

fn main() {
    let code = match cli::run(cli::Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}
