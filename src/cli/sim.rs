//! `dcore sim`: the simulator from the command line.

use super::faults;
use anyhow::{bail, Context};
use clap::Args;
use distributed_core::cluster::Config;
use distributed_core::sim::{self, HostileKind, HostileSpec, Report, Scenario};
use std::path::PathBuf;
use std::time::Duration;

/// Flags of `dcore sim`.
#[derive(Debug, Args)]
#[command(after_help = "\
Nodes start min(5 ms, 5 s / N) apart and join through node 0. Faults (--kill, --pause, --slow)
hit nodes chosen by the seed once the cluster has converged (plus 1 s), or at a third of the run
if it has not converged by then.
The same seed gives the same run: compare the printed trace_hash.

--hostile K adds K nodes that join like the others, then each sends --hostile-rate messages a
second to random honest nodes, by datagram and by stream: alive/suspect/dead claims about real
and invented members at extreme incarnations, push-pulls with many rows, user events at extreme
Lamport times, pings, ping-reqs naming third addresses, acks, nacks, and replays. Every run checks
its invariants (no honest node declared dead by an honest one, honest convergence, member tables
and broadcast queues bounded) and reports them under \"invariants\" (\"ok\": all hold).

--config takes a TOML file of protocol settings, the fields of the [protocol] table of the agent
config, at the top level (e.g. probe_interval = \"1s\"); unknown keys are errors. --preset picks
the base the file overrides; --no-lifeguard overrides both.

Example: dcore sim --nodes 1000 --kill 1 --duration 120 --json")]
pub struct SimArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Seed deciding every random choice of the run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Virtual seconds to simulate.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Probability that a datagram is lost (streams are retransmitted, and slowed).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    #[arg(long, default_value_t = 0.0)]
    pub dup: f64,
    /// One-way latency range in ms, uniform: LO..HI.
    #[arg(long, default_value = "1..5", value_name = "LO..HI")]
    pub latency_ms: String,
    /// Crash K nodes (no leave) after convergence.
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub kill: usize,
    /// Pause K nodes for SECS seconds after convergence.
    #[arg(long, value_name = "K:SECS")]
    pub pause: Option<String>,
    /// Make K nodes handle every incoming message MS milliseconds late.
    #[arg(long, value_name = "K:MS")]
    pub slow: Option<String>,
    /// Cut the last FRACTION of the nodes off from the rest from FROM to TO seconds.
    #[arg(long, value_name = "FRACTION:FROM..TO")]
    pub partition: Option<String>,
    /// Make N random nodes' wall clocks jump by up to an hour (membership must not care).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub clock_jumps: usize,
    /// Count encryption overhead (key id, nonce, tag) in every message's bytes.
    #[arg(long)]
    pub encrypt: bool,
    /// Protocol preset the config starts from: lan, wan or local.
    #[arg(long, default_value = "lan")]
    pub preset: String,
    /// TOML file of protocol settings (see below).
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Switch Lifeguard off (plain SWIM: fixed suspicion timeout, no local health, no nacks).
    #[arg(long)]
    pub no_lifeguard: bool,
    /// K hostile nodes on top of --nodes: they join normally, then send random well-formed
    /// messages with extreme values (see below).
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub hostile: usize,
    /// Hostile messages per second per hostile node.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub hostile_rate: u32,
    /// Kinds of hostile message, comma-separated: all, alive, suspect, dead, push_pull,
    /// user_event, ping, ping_req, ack, nack, replay, sync, direct, coord; `-kind` takes one
    /// out (all,-dead).
    #[arg(long, default_value = "all", value_name = "LIST")]
    pub hostile_kinds: String,
    /// Rows in one hostile push-pull at most (most carry a few).
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub hostile_rows_max: usize,
    /// Regions as one-way ms along a line, comma-separated (e.g. 0,40,150): node i is in
    /// region i % count, adds its own 0.1-0.5 ms each way, and a message also takes the
    /// distance between the two regions; the report then measures the network coordinates.
    #[arg(long, value_name = "MS,MS,...")]
    pub regions: Option<String>,
    /// Queries once the cluster converged (--queries N ...).
    #[command(flatten)]
    pub query: QueryFlags,
    /// Print one JSON object on stdout instead of the readable summary.
    #[arg(long)]
    pub json: bool,
}

/// Queries to measure, as `dcore sim` and `dcore local` ask them.
#[derive(Debug, Args)]
pub struct QueryFlags {
    /// N queries once the cluster has converged, one --query-interval-ms apart, each from a
    /// random live node; every selected node answers at once. Odd queries name a random third
    /// of the nodes. The report measures the time to the last answer and the share of
    /// selected live nodes that answered.
    #[arg(long, value_name = "N")]
    pub queries: Option<usize>,
    /// Between two query starts, ms.
    #[arg(long, default_value_t = 200, value_name = "MS")]
    pub query_interval_ms: u64,
    /// Relay factor of the queries (0 to 5).
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub query_relay: u8,
    /// Timeout of the queries, ms (default: the protocol's, scaled with the cluster).
    #[arg(long, value_name = "MS")]
    pub query_timeout_ms: Option<u64>,
}

impl QueryFlags {
    /// The queries these flags ask for, if any.
    pub fn spec(&self) -> Option<distributed_core::sim::QuerySpec> {
        self.queries.map(|count| distributed_core::sim::QuerySpec {
            count,
            interval: Duration::from_millis(self.query_interval_ms),
            relay_factor: self.query_relay,
            timeout: self.query_timeout_ms.map(Duration::from_millis),
        })
    }
}

impl SimArgs {
    /// The scenario these flags describe.
    pub fn scenario(&self) -> anyhow::Result<Scenario> {
        let mut config = self.protocol_config()?;
        if self.no_lifeguard {
            config.lifeguard = false;
        }
        if !(self.duration.is_finite() && self.duration > 0.0) {
            bail!("--duration must be a positive number of seconds");
        }
        let s = Scenario {
            nodes: self.nodes,
            seed: self.seed,
            duration: Duration::from_secs_f64(self.duration),
            loss: self.loss,
            dup: self.dup,
            latency: faults::parse_latency(&self.latency_ms)?,
            kill: self.kill,
            pause: self
                .pause
                .as_deref()
                .map(|p| faults::parse_node_fault(p, "--pause", 1000))
                .transpose()?,
            slow: self
                .slow
                .as_deref()
                .map(|p| faults::parse_node_fault(p, "--slow", 1))
                .transpose()?,
            partition: self
                .partition
                .as_deref()
                .map(faults::parse_partition)
                .transpose()?,
            clock_jumps: self.clock_jumps,
            encrypt: self.encrypt,
            config,
            hostile: HostileSpec {
                count: self.hostile,
                rate: self.hostile_rate,
                kinds: HostileKind::parse_list(&self.hostile_kinds).map_err(anyhow::Error::msg)?,
                rows_max: self.hostile_rows_max,
            },
            regions: match &self.regions {
                None => Vec::new(),
                Some(list) => list
                    .split(',')
                    .map(|ms| {
                        ms.trim()
                            .parse::<f64>()
                            .ok()
                            .filter(|v| v.is_finite() && *v >= 0.0 && *v <= 5000.0)
                            .map(|v| Duration::from_secs_f64(v / 1000.0))
                            .ok_or_else(|| anyhow::anyhow!("--regions: {ms:?} is not 0..=5000 ms"))
                    })
                    .collect::<anyhow::Result<_>>()?,
            },
            queries: self.query.spec(),
        };
        s.validate()?;
        Ok(s)
    }

    fn protocol_config(&self) -> anyhow::Result<Config> {
        let Some(base) = Config::preset(&self.preset) else {
            bail!("--preset must be lan, wan or local, not '{}'", self.preset);
        };
        let Some(path) = &self.config else {
            return Ok(base);
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let table: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let mut merged = toml::Table::try_from(&base).context("encoding the preset")?;
        merged.extend(table);
        let config: Config = merged
            .try_into()
            .with_context(|| format!("in {}", path.display()))?;
        config.validate()?;
        Ok(config)
    }
}

/// Runs `dcore sim`.
pub fn run(args: SimArgs) -> anyhow::Result<i32> {
    let scenario = args.scenario()?;
    let report = sim::run(&scenario)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", readable(&report, &scenario));
    }
    Ok(0)
}

fn opt_ms(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |ms| format!("{ms} ms"))
}

fn readable(r: &Report, s: &Scenario) -> String {
    let d = &r.detect_ms;
    let lines = [
        ("nodes", r.nodes.to_string()),
        ("seed", r.seed.to_string()),
        (
            "duration",
            format!("{} s virtual, {} ms wall", r.duration_s, r.wall_ms),
        ),
        ("lifeguard", s.config.lifeguard.to_string()),
        ("converged", opt_ms(r.converged_ms)),
        ("converged at end", r.converged_at_end.to_string()),
        ("killed", format!("{:?}", r.killed)),
        (
            "detect p50 / p99 / max",
            format!("{} / {} / {}", opt_ms(d.p50), opt_ms(d.p99), opt_ms(d.max)),
        ),
        ("undetected pairs", d.undetected.to_string()),
        ("false positives", r.false_positives.to_string()),
        ("false suspicions", r.false_suspicions.to_string()),
        ("paused declared dead", r.paused_declared_dead.to_string()),
        (
            "paused recovered",
            r.paused_recovered.map_or("-".into(), |b| b.to_string()),
        ),
        (
            "partition declared dead",
            r.partition_declared_dead.to_string(),
        ),
        ("healed, converged after", opt_ms(r.heal_converged_ms)),
        ("messages / node / s", r.msgs_per_node_s.to_string()),
        ("bytes / node / s", r.bytes_per_node_s.to_string()),
        (
            "steady bytes / node / s",
            r.steady_bytes_per_node_s.to_string(),
        ),
        (
            "formation bytes in (x table)",
            r.formation.as_ref().map_or("-".into(), |f| {
                format!(
                    "mean {} ({}x), p90 {}x, max {} ({}x, node {}), table {}",
                    f.bytes_in_mean,
                    f.ratio_mean,
                    f.ratio_p90,
                    f.bytes_in_max,
                    f.ratio_max,
                    f.max_node,
                    f.table_bytes
                )
            }),
        ),
        (
            "formation bytes in by kind",
            r.formation.as_ref().map_or("-".into(), |f| {
                format!(
                    "datagrams {}, push-pulls {}, syncs {} (means)",
                    f.datagram_mean, f.push_pull_mean, f.sync_mean
                )
            }),
        ),
        ("trace hash", r.trace_hash.clone()),
    ];
    let inv = &r.invariants;
    let mut lines = lines.to_vec();
    if let Some(q) = &r.queries {
        lines.push((
            "queries",
            format!(
                "{} done of {} ({} filtered), {} selected each",
                q.completed, q.started, q.filtered, q.selected_mean
            ),
        ));
        lines.push((
            "answered / acked",
            format!("{} / {} of selected live", q.response_ratio, q.ack_ratio),
        ));
        let l = &q.last_response_ms;
        lines.push((
            "last answer ms",
            format!("p50 {} p90 {} p99 {} max {}", l.p50, l.p90, l.p99, l.max),
        ));
        lines.push(("unselected took", q.unselected_took.to_string()));
    }
    if let Some(h) = &r.hostile {
        let sent: u64 = h.sent.values().sum();
        lines.push(("hostile nodes", format!("{} x {}/s", h.nodes, h.rate_per_s)));
        lines.push((
            "hostile messages",
            format!("{sent} ({} dgram, {} stream)", h.datagrams, h.streams),
        ));
        lines.push((
            "refused (impl/limit/misdir)",
            format!(
                "{} / {} / {}",
                h.honest_implausible, h.honest_over_limit, h.honest_misdirected
            ),
        ));
    }
    lines.push((
        "active rows max / bound",
        format!("{} / {}", inv.active_rows_max, inv.active_rows_bound),
    ));
    lines.push((
        "table rows max / bound",
        format!("{} / {}", inv.table_rows_max, inv.table_rows_bound),
    ));
    lines.push((
        "bcast queue max / bound",
        format!(
            "{} / {}",
            inv.broadcast_queue_max, inv.broadcast_queue_bound
        ),
    ));
    if let Some(a) = &inv.aborted {
        lines.push(("aborted", a.clone()));
    }
    lines.push(("invariants hold", inv.ok.to_string()));
    lines
        .iter()
        .map(|(k, v)| format!("{k:>24}: {v}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> anyhow::Result<Scenario> {
        let cli =
            crate::cli::Cli::try_parse_from(std::iter::once("dcore").chain(args.iter().copied()))?;
        match cli.command {
            crate::cli::Commands::Sim(a) => a.scenario(),
            _ => anyhow::bail!("not a sim command"),
        }
    }

    #[test]
    fn flags_become_a_scenario() {
        let s = parse(&[
            "sim",
            "--nodes",
            "200",
            "--slow",
            "5:400",
            "--no-lifeguard",
            "--partition",
            "0.5:60..120",
        ])
        .unwrap();
        assert_eq!(s.nodes, 200);
        assert_eq!(s.slow.unwrap().amount, Duration::from_millis(400));
        assert!(!s.config.lifeguard);
        assert_eq!(s.partition.unwrap().to, Duration::from_secs(120));
    }

    #[test]
    fn bad_flags_are_refused_with_a_reason() {
        assert!(parse(&["sim", "--loss", "1.5"]).is_err());
        assert!(parse(&["sim", "--nodes", "3", "--kill", "3"]).is_err());
        assert!(parse(&["sim", "--preset", "moon"]).is_err());
        assert!(parse(&["sim", "--latency-ms", "9..1"]).is_err());
    }

    #[test]
    fn config_file_overrides_preset_and_refuses_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("dcore-sim-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(&good, "probe_interval = \"2s\"\nprobe_timeout = \"1s\"\n").unwrap();
        let s = parse(&["sim", "--config", good.to_str().unwrap()]).unwrap();
        assert_eq!(s.config.probe_interval, Duration::from_secs(2));
        assert_eq!(s.config.gossip_fanout, Config::lan().gossip_fanout);
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "probe_intervall = \"2s\"\n").unwrap();
        let err = parse(&["sim", "--config", bad.to_str().unwrap()]).unwrap_err();
        assert!(format!("{err:#}").contains("probe_intervall"), "{err:#}");
        let invalid = dir.join("invalid.toml");
        std::fs::write(&invalid, "probe_timeout = \"5s\"\n").unwrap();
        assert!(parse(&["sim", "--config", invalid.to_str().unwrap()]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
