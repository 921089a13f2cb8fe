//! Check a protocol config in the simulator before rolling it out.
//!
//! The simulator ([`distributed_core::sim::run`]) runs hundreds of protocol cores over a
//! modelled network in virtual time, deterministically per seed. This program runs the same
//! scenario (300 nodes, 60 virtual seconds, 5 % packet loss, 2 nodes crashed once the cluster
//! has converged) for a few seeds with the default config and with a custom one, prints crash
//! detection time, false positives and traffic for both, and exits 1 if the custom config
//! declared a live node dead or missed a crash.
//!
//! ```text
//! cargo run --release --example simulate_config
//! cargo run --release --example simulate_config -- my-config.toml --nodes 500 --seeds 8 --loss 0.1
//! ```
//!
//! Without a file, the custom config is the `lan` preset with faster probing (see
//! `faster_probing`). A file has the keys of `dcore sim --config`: protocol settings at the
//! top level (`probe_interval = "300ms"`, `suspicion_mult = 3`, ...) over the `lan` preset;
//! unknown keys are errors. A config too eager to declare failures shows what a refusal looks
//! like:
//!
//! ```text
//! probe_timeout = "50ms"
//! indirect_checks = 1
//! suspicion_mult = 1
//! suspicion_max_mult = 1
//! ```
//!
//! It prints:
//!
//! ```text
//! scenario: 300 nodes, 60 s virtual, 5.0 % loss, 2 crashes; seeds 1..=4
//! custom: probe_interval = "300ms", probe_timeout = "120ms", suspicion_mult = 3
//! config   detect p50  detect max  false pos  undetected  bytes/node/s   wall
//! default       6.1 s       7.6 s          0           0          1530  2.6 s
//! custom        3.0 s       3.7 s          0           0          1755  3.1 s
//! custom vs default: detection p50 -51 %, bytes/node/s +15 %
//! ok: the custom config detected every crash with no false positive
//! ```

use distributed_core::sim;
use distributed_core::{Config, Report, Scenario};
use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Nodes crashed in every run: enough to measure detection, few enough to stay a small fault.
const KILLS: usize = 2;
/// Virtual time per run: about 15 s to converge, then the crashes, then up to 10 s to detect
/// them and the rest to see that no live node is declared dead.
const DURATION: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("simulate_config: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let Some(opts) = Options::parse(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(());
    };
    let custom = match &opts.config_file {
        Some(path) => read_config(path)?,
        None => faster_probing(),
    };
    println!(
        "scenario: {} nodes, {} s virtual, {:.1} % loss, {KILLS} crashes; seeds 1..={}",
        opts.nodes,
        DURATION.as_secs(),
        opts.loss * 100.0,
        opts.seeds
    );
    println!("custom: {}", changes(&custom)?);

    let default = Summary::of(&opts, Config::default())?;
    let mine = Summary::of(&opts, custom)?;
    println!(
        "{:<8} {:>10}  {:>10}  {:>9}  {:>10}  {:>12}  {:>5}",
        "config", "detect p50", "detect max", "false pos", "undetected", "bytes/node/s", "wall"
    );
    default.print("default");
    mine.print("custom");
    compare(&default, &mine);
    mine.verdict()?;
    println!("ok: the custom config detected every crash with no false positive");
    Ok(())
}

/// The candidate: probe more often and suspect for less long than `lan`, to detect crashes
/// sooner. The question the simulator answers: at what cost in traffic and false alarms?
fn faster_probing() -> Config {
    Config {
        probe_interval: Duration::from_millis(300),
        probe_timeout: Duration::from_millis(120),
        suspicion_mult: 3,
        ..Config::lan()
    }
}

/// A TOML file of protocol settings over the `lan` preset, as `dcore sim --config` reads it.
fn read_config(path: &PathBuf) -> Result<Config> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    // `Config` fills missing keys from its default (`lan`) and refuses unknown ones.
    let config: Config =
        toml::from_str(&text).map_err(|e| format!("in {}: {e}", path.display()))?;
    config
        .validate()
        .map_err(|e| format!("in {}: {e}", path.display()))?;
    Ok(config)
}

/// The settings where `config` differs from `lan`, as TOML.
fn changes(config: &Config) -> Result<String> {
    let base = toml::Table::try_from(Config::lan())?;
    let mine = toml::Table::try_from(config)?;
    let changed: Vec<String> = mine
        .iter()
        .filter(|(key, value)| base.get(*key) != Some(*value))
        .map(|(key, value)| format!("{key} = {value}"))
        .collect();
    if changed.is_empty() {
        return Ok("same as the default (lan)".into());
    }
    Ok(changed.join(", "))
}

// ---------------------------------------------------------------------------------------------
// Runs and their summary.

/// The reports of one config over every seed.
struct Summary {
    runs: Vec<Report>,
}

impl Summary {
    /// Runs the scenario once per seed (each run is deterministic: same seed, same result).
    fn of(opts: &Options, config: Config) -> Result<Summary> {
        let mut runs = Vec::new();
        for seed in 1..=opts.seeds {
            let scenario = Scenario {
                nodes: opts.nodes,
                seed,
                duration: DURATION,
                loss: opts.loss,
                kill: KILLS,
                config: config.clone(),
                ..Scenario::default()
            };
            runs.push(sim::run(&scenario)?);
        }
        Ok(Summary { runs })
    }

    /// Median over the runs of each run's median detection time, ms.
    fn detect_p50_ms(&self) -> Option<u64> {
        let mut p50s: Vec<u64> = self.runs.iter().filter_map(|r| r.detect_ms.p50).collect();
        p50s.sort_unstable();
        p50s.get(p50s.len() / 2).copied()
    }

    fn detect_max_ms(&self) -> Option<u64> {
        self.runs.iter().filter_map(|r| r.detect_ms.max).max()
    }

    fn false_positives(&self) -> usize {
        self.runs.iter().map(|r| r.false_positives).sum()
    }

    fn undetected(&self) -> usize {
        self.runs.iter().map(|r| r.detect_ms.undetected).sum()
    }

    fn bytes_per_node_s(&self) -> f64 {
        let total: f64 = self.runs.iter().map(|r| r.bytes_per_node_s).sum();
        total / self.runs.len() as f64
    }

    fn print(&self, name: &str) {
        let secs =
            |ms: Option<u64>| ms.map_or("-".into(), |ms| format!("{:.1} s", ms as f64 / 1e3));
        let wall_ms: u64 = self.runs.iter().map(|r| r.wall_ms).sum();
        println!(
            "{name:<8} {:>10}  {:>10}  {:>9}  {:>10}  {:>12.0}  {:>5}",
            secs(self.detect_p50_ms()),
            secs(self.detect_max_ms()),
            self.false_positives(),
            self.undetected(),
            self.bytes_per_node_s(),
            secs(Some(wall_ms)),
        );
    }

    /// Why this config should not be rolled out, if it should not.
    fn verdict(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.false_positives() > 0 {
            problems.push(format!(
                "{} false positives (live nodes declared dead)",
                self.false_positives()
            ));
        }
        if self.undetected() > 0 {
            problems.push(format!(
                "{} (survivor, crashed node) pairs never detected",
                self.undetected()
            ));
        }
        // A run that never converged applies its crashes late or not at all: no verdict then.
        let no_crash = self.runs.iter().filter(|r| r.killed.len() != KILLS).count();
        if no_crash > 0 {
            problems.push(format!("{no_crash} runs where the crashes never happened"));
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(format!("the custom config fails: {}", problems.join("; ")).into())
    }
}

/// Prints the custom config's change against the default in detection time and traffic.
fn compare(default: &Summary, custom: &Summary) {
    let change = |old: f64, new: f64| format!("{:+.0} %", (new - old) / old * 100.0);
    let detect = match (default.detect_p50_ms(), custom.detect_p50_ms()) {
        (Some(old), Some(new)) => change(old as f64, new as f64),
        _ => "n/a".into(),
    };
    let bytes = change(default.bytes_per_node_s(), custom.bytes_per_node_s());
    println!("custom vs default: detection p50 {detect}, bytes/node/s {bytes}");
}

// ---------------------------------------------------------------------------------------------
// Arguments, by hand: the example needs no parser crate.

struct Options {
    config_file: Option<PathBuf>,
    nodes: usize,
    seeds: u64,
    loss: f64,
}

const USAGE: &str =
    "usage: simulate_config [FILE.toml] [--nodes N (300)] [--seeds K (4)] [--loss P (0.05)]";

impl Options {
    /// The options, or `None` when help was asked for.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Options>> {
        let mut opts = Options {
            config_file: None,
            nodes: 300,
            seeds: 4,
            loss: 0.05,
        };
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or(format!("{arg} needs a value\n{USAGE}"));
            match arg.as_str() {
                "--nodes" => opts.nodes = parse(&arg, &value()?)?,
                "--seeds" => opts.seeds = parse(&arg, &value()?)?,
                "--loss" => opts.loss = parse(&arg, &value()?)?,
                "-h" | "--help" => return Ok(None),
                _ if arg.starts_with('-') => {
                    return Err(format!("unknown flag {arg}\n{USAGE}").into())
                }
                _ => opts.config_file = Some(arg.into()),
            }
        }
        if opts.seeds == 0 {
            return Err("--seeds must be at least 1".into());
        }
        Ok(Some(opts))
    }
}

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T> {
    value
        .parse()
        .map_err(|_| format!("{flag}: '{value}' is not valid").into())
}
