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
    /// Seed to join: host:port (every A/AAAA record), ip:port, [v6]:port or srv:NAME (every SRV
    /// record); repeatable (env: comma-separated). One must resolve at start; resolved again
    /// and joined every --retry-interval until joined.
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

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
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
    init_logs(&config.log_format);
    eprintln!(
        "# dcore agent: effective config (secrets are files, not shown)\n{}",
        config.redacted_toml()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let agent = Agent::start(config).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let via_api = tokio::select! {
            _ = tokio::signal::ctrl_c() => false,
            _ = term.recv() => false,
            _ = agent.stop_requested() => true,
        };
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
