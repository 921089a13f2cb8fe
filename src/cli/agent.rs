//! `dcore agent`: one node with its admin HTTP API, until SIGINT/SIGTERM (graceful leave).

use anyhow::Context;
use clap::Args;
use distributed_core::agent::{Agent, AgentConfig, QueryHandlerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags of `dcore agent`. Each flag can also come from a `DCORE_*` environment variable.
#[derive(Debug, Args)]
#[command(
    after_long_help = "Precedence, highest first: flags, DCORE_* environment variables, \
the --config TOML file, built-in defaults. Unknown keys in the file are errors. \
docs/operations.md lists every key with its default."
)]
pub struct AgentArgs {
    /// TOML config file.
    #[arg(long, env = "DCORE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Member name (default: host name).
    #[arg(long, env = "DCORE_NAME")]
    pub name: Option<String>,
    /// Gossip address, UDP and TCP (default 0.0.0.0:7946).
    #[arg(long, env = "DCORE_BIND")]
    pub bind: Option<SocketAddr>,
    /// Address announced to peers (default: the bind address).
    #[arg(long, env = "DCORE_ADVERTISE")]
    pub advertise: Option<SocketAddr>,
    /// Admin HTTP API address (default 127.0.0.1:7947).
    #[arg(long, env = "DCORE_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Seed to join: host:port (every A/AAAA record), ip:port (IPv6 in brackets) or srv:NAME
    /// (every SRV record); repeatable (env: comma-separated). One must resolve at start;
    /// resolved again and joined every --retry-interval until joined.
    #[arg(long, env = "DCORE_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,
    /// Seed as --join, but it need not resolve at start: resolved again and joined every
    /// --retry-interval until joined (consul's -retry-join); repeatable (env: comma-separated).
    #[arg(long, env = "DCORE_RETRY_JOIN", value_delimiter = ',')]
    pub retry_join: Vec<String>,
    /// Join attempts through --retry-join at most, then exit with an error (0: no limit).
    #[arg(long, env = "DCORE_RETRY_JOIN_MAX")]
    pub retry_join_max: Option<u32>,
    /// Between two join attempts, each resolving the seeds again (default 30s).
    #[arg(long, env = "DCORE_RETRY_INTERVAL", value_name = "DURATION")]
    pub retry_interval: Option<String>,
    /// Directory for persistent state.
    #[arg(long, env = "DCORE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Tag KEY=VALUE; repeatable (env: comma-separated).
    #[arg(long = "tag", env = "DCORE_TAGS", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Key file: base64 keys, one per line, the first primary; must be mode 0600.
    #[arg(long, env = "DCORE_ENCRYPT_KEY_FILE")]
    pub encrypt_key_file: Option<PathBuf>,
    /// Cluster label: bound into encrypted frames, tagged on plain ones.
    #[arg(long, env = "DCORE_LABEL")]
    pub label: Option<String>,
    /// File holding the admin API's bearer token; must be mode 0600.
    #[arg(long, env = "DCORE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// A name the admin API answers to in Host/Origin besides IP literals and localhost (NAME
    /// or NAME:PORT); repeatable (env: comma-separated).
    #[arg(
        long = "http-allowed-host",
        env = "DCORE_HTTP_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub http_allowed_hosts: Vec<String>,
    /// Query handler NAME=COMMAND: a query NAME that selects this node runs COMMAND (sh -c)
    /// with the payload on stdin and answers with its stdout; repeatable (also
    /// `[[query_handler]]` in the file; a flag replaces the file's handler of that name).
    #[arg(long = "query-handler", value_name = "NAME=COMMAND")]
    pub query_handlers: Vec<String>,
    /// Log format: text or json (filter with RUST_LOG, default info).
    #[arg(long, env = "DCORE_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Validate the config, print it, and exit (0 if valid, 2 if not).
    #[arg(long)]
    pub check_config: bool,
}

/// Merges file, environment and flags into one config (flags and env already merged by clap).
pub fn effective_config(args: &AgentArgs) -> anyhow::Result<AgentConfig> {
    let mut c = match &args.config {
        Some(path) => AgentConfig::from_file(path)?,
        None => AgentConfig::default(),
    };
    if let Some(v) = &args.name {
        c.node.name = v.clone();
    }
    if let Some(v) = args.bind {
        c.node.bind = v;
    }
    if let Some(v) = args.advertise {
        c.node.advertise = Some(v);
    }
    if let Some(v) = args.http_addr {
        c.http_addr = v;
    }
    if !args.join.is_empty() {
        c.join = args.join.clone();
    }
    if !args.retry_join.is_empty() {
        c.retry_join = args.retry_join.clone();
    }
    if let Some(v) = args.retry_join_max {
        c.retry_join_max = v;
    }
    if let Some(v) = &args.retry_interval {
        c.retry_interval = humantime_serde::re::humantime::parse_duration(v)
            .with_context(|| format!("--retry-interval {v:?}: a duration such as 30s"))?;
    }
    if let Some(v) = &args.data_dir {
        c.node.data_dir = Some(v.clone());
    }
    for t in &args.tags {
        let (k, v) = t
            .split_once('=')
            .with_context(|| format!("--tag {t:?}: use KEY=VALUE"))?;
        c.node.tags.insert(k.to_string(), v.to_string());
    }
    if let Some(v) = &args.encrypt_key_file {
        c.encrypt_key_file = Some(v.clone());
    }
    if let Some(v) = &args.label {
        c.node.label = v.clone();
    }
    if let Some(v) = &args.token_file {
        c.token_file = Some(v.clone());
    }
    if !args.http_allowed_hosts.is_empty() {
        c.http_allowed_hosts = args.http_allowed_hosts.clone();
    }
    if let Some(v) = &args.log_format {
        c.log_format = v.clone();
    }
    for h in &args.query_handlers {
        let h = QueryHandlerConfig::parse(h)
            .with_context(|| format!("--query-handler {h:?}: use NAME=COMMAND"))?;
        c.query_handler.retain(|old| old.name != h.name);
        c.query_handler.push(h);
    }
    c.validate()?;
    Ok(c)
}

/// Changes the log filter at runtime (SIGHUP); `None` when `RUST_LOG` pins it.
type LogReload = Option<
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
>;

/// Logs to stderr in `format`, filtered by `RUST_LOG` if set, else by `level` (which SIGHUP can
/// change then).
fn init_logs(format: &str, level: &str) -> LogReload {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;
    let pinned = EnvFilter::try_from_default_env().ok();
    let filter = pinned
        .clone()
        .unwrap_or_else(|| EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let registry = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = if format == "json" {
        registry.with(fmt.json()).try_init()
    } else {
        registry.with(fmt).try_init()
    };
    pinned.is_none().then_some(handle)
}

/// Tells systemd (when it started us with `Type=notify`: `NOTIFY_SOCKET` is set) how we are.
fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "systemd notification not sent");
    }
}

/// SIGHUP: reads the config again (file, environment, flags) and applies what can change at
/// runtime: the log level, the tags, chaos. Says which other settings changed and need a
/// restart.
async fn reload(args: &AgentArgs, running: &mut AgentConfig, agent: &Agent, log: &LogReload) {
    let new = match effective_config(args) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("reload: config invalid, nothing changed: {e:#}");
            return;
        }
    };
    if new.log_level != running.log_level {
        match log {
            Some(h) => {
                let changed = tracing_subscriber::EnvFilter::try_new(&new.log_level)
                    .is_ok_and(|f| h.reload(f).is_ok());
                if changed {
                    tracing::info!(level = %new.log_level, "reload: log level changed");
                } else {
                    tracing::warn!("reload: log level not changed");
                }
            }
            None => tracing::warn!("reload: RUST_LOG is set and keeps the log level"),
        }
    }
    if new.node.tags != running.node.tags {
        match agent.node().set_tags(new.node.tags.clone()).await {
            Ok(()) => tracing::info!(tags = ?new.node.tags, "reload: tags changed"),
            Err(e) => tracing::error!(error = %e, "reload: tags refused"),
        }
    }
    if new.chaos != running.chaos {
        match agent.chaos().set(new.chaos.clone()) {
            Ok(()) => tracing::info!("reload: chaos settings changed"),
            Err(e) => tracing::error!(error = %e, "reload: chaos settings refused"),
        }
    }
    let restart = restart_needed(running, &new);
    if !restart.is_empty() {
        tracing::warn!(
            settings = %restart.join(", "),
            "reload: these changed and take effect only after a restart"
        );
    }
    // What was applied is now what runs; the rest keeps its running value.
    running.log_level = new.log_level;
    running.node.tags = new.node.tags;
    running.chaos = new.chaos;
}

/// The settings other than the log level, tags and chaos that differ between `a` and `b`,
/// as `key` or `table.key`.
fn restart_needed(a: &AgentConfig, b: &AgentConfig) -> Vec<String> {
    let table = |c: &AgentConfig| toml::Value::try_from(c).ok();
    let (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) = (table(a), table(b)) else {
        return vec!["(the config could not be compared)".into()];
    };
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        if ["log_level", "tags", "chaos"].contains(&k.as_str()) {
            continue;
        }
        match (a.get(k), b.get(k)) {
            (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                let inner: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                out.extend(
                    inner
                        .into_iter()
                        .filter(|i| x.get(*i) != y.get(*i))
                        .map(|i| format!("{k}.{i}")),
                );
            }
            (x, y) if x != y => out.push(k.clone()),
            _ => {}
        }
    }
    out
}

/// Runs `dcore agent`.
pub fn run(args: AgentArgs) -> anyhow::Result<i32> {
    let config = match effective_config(&args) {
        Ok(c) => c,
        Err(e) if args.check_config => {
            eprintln!("config invalid: {e:#}");
            return Ok(2);
        }
        Err(e) => return Err(e),
    };
    if args.check_config {
        println!("# config valid\n{}", config.redacted_toml());
        return Ok(0);
    }
    let log = init_logs(&config.log_format, &config.log_level);
    eprintln!(
        "# dcore agent: effective config (secrets are files, not shown)\n{}",
        config.redacted_toml()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        use sd_notify::NotifyState;
        use tokio::signal::unix::{signal, SignalKind};
        let mut running = config.clone();
        let agent = Agent::start(config).await?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut told_ready = false;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        let via_api = loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break false,
                _ = term.recv() => break false,
                _ = agent.stop_requested() => break true,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the config");
                    notify(&[NotifyState::Reloading, NotifyState::monotonic_usec_now()?]);
                    reload(&args, &mut running, &agent, &log).await;
                    notify(&[NotifyState::Ready]);
                }
                // READY=1 once joined (or the first node of its cluster), as `GET /ready`.
                _ = tick.tick(), if !told_ready => {
                    if agent.is_ready() {
                        told_ready = true;
                        let members = agent.node().num_alive();
                        let status = format!("joined: {members} members alive");
                        notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
                    }
                }
            }
        };
        notify(&[NotifyState::Stopping]);
        if via_api && agent.join_failed() {
            agent.shutdown().await;
            anyhow::bail!("retry_join: not joined after retry_join_max attempts");
        } else if via_api {
            tracing::info!("left through the API: stopping");
            agent.shutdown().await;
        } else {
            tracing::info!("signal: leaving the cluster");
            let announced = agent.leave_and_shutdown().await;
            tracing::info!(announced, "left; stopped");
        }
        Ok(0)
    })
}
