//! The agent's settings: a TOML file, `DCORE_*` environment variables and flags (in rising order
//! of precedence; the CLI merges them into one [`AgentConfig`]).

use super::handlers::QueryHandlerConfig;
use crate::common::ConfigError;
use crate::diagnostics::chaos::{ChaosConfig, ChaosError};
use crate::node::NodeConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything an agent needs: the node's settings ([`NodeConfig`], at the top level of the
/// file and in its `[protocol]` and `[transport]` tables) and the agent's own. Every field has
/// a default; [`AgentConfig::validate`] checks them. Unknown keys are refused when the file is
/// read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "AgentConfigFile")]
pub struct AgentConfig {
    /// The node: `name` (default: the host name), `bind` (default `0.0.0.0:7946`),
    /// `advertise`, `tags`, `data_dir`, `label`, `[protocol]`, `[transport]`; see
    /// [`NodeConfig`] for each default. Its `seeds` come from `join`, its keyring from
    /// `encrypt_key_file`.
    #[serde(flatten)]
    pub node: NodeConfig,
    /// Admin HTTP API address. Default `127.0.0.1:7947` (loopback only).
    pub http_addr: SocketAddr,
    /// Seeds to join at start: `host:port` (every A and AAAA record of `host`), `ip:port`,
    /// `[v6]:port` or `srv:NAME` (every SRV record). At least one must resolve at start, or the
    /// agent does not start; until joined the seeds are resolved again and joined every
    /// `retry_interval`. Default none.
    pub join: Vec<String>,
    /// Seeds as `join`, but none need resolve at start (consul's `retry_join`): resolved again
    /// and joined every `retry_interval` until joined, at most `retry_join_max` times, after
    /// which the agent exits with an error. Default none.
    pub retry_join: Vec<String>,
    /// Join attempts through `retry_join` at most; 0 (the default) tries until joined.
    pub retry_join_max: u32,
    /// Between two join attempts (each resolves the seeds again). Default 30 s (consul's);
    /// 100 ms to 10 min.
    #[serde(with = "humantime_serde")]
    pub retry_interval: std::time::Duration,
    /// Key file (base64 keys, one per line, the first primary; mode 0600). Default none: plain.
    pub encrypt_key_file: Option<PathBuf>,
    /// File holding the admin API's bearer token (mode 0600, like the key file). Default none:
    /// no auth (loopback only).
    pub token_file: Option<PathBuf>,
    /// Extra names the admin API answers to in `Host` (and `Origin`), besides IP literals and
    /// `localhost` at its own port: `name` (any port) or `name:port`, e.g. the name a reverse
    /// proxy forwards. Other names are refused (a DNS-rebinding defence). Default none.
    pub http_allowed_hosts: Vec<String>,
    /// A connection that has not sent a complete request head within this is closed (an idle
    /// keep-alive connection too); a state change's body must arrive within it too, once its
    /// head has (408 otherwise). Default 10 s; 100 ms to 5 min.
    #[serde(with = "humantime_serde")]
    pub http_header_timeout: std::time::Duration,
    /// Admin connections open at once; more are closed as soon as they are accepted. Default
    /// 256; 2 to 65,536.
    pub http_connections_max: usize,
    /// `GET /v1/events/stream` subscribers at once; the next gets 503. Default 64; at least 1
    /// and below `http_connections_max` (each holds a connection).
    pub http_event_streams_max: usize,
    /// Log format, `text` or `json`. Default `text`.
    pub log_format: String,
    /// Log filter, in `RUST_LOG`'s syntax (`info`, `debug`, `info,distributed_core=debug`);
    /// `RUST_LOG`, when set, wins. Changes with SIGHUP. Default `info`.
    pub log_level: String,
    /// How long a graceful leave may take before the agent exits anyway. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub leave_timeout: std::time::Duration,
    /// Chaos injection at start (`[chaos]` table; see `diagnostics::chaos::ChaosConfig`).
    /// Default: off. It can be changed at runtime through the API.
    pub chaos: ChaosConfig,
    /// Query handlers (`[[query_handler]]` tables with `name` and `command`): a query of that
    /// name that selects this node runs the command with the payload on stdin and answers with
    /// its stdout (see `agent::handlers`). Default none. Names are unique and may not start
    /// with `_dcore`.
    pub query_handler: Vec<QueryHandlerConfig>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            node: NodeConfig::default(),
            http_addr: "127.0.0.1:7947".parse().expect("literal"),
            join: Vec::new(),
            retry_join: Vec::new(),
            retry_join_max: 0,
            retry_interval: std::time::Duration::from_secs(30),
            encrypt_key_file: None,
            token_file: None,
            http_allowed_hosts: Vec::new(),
            http_header_timeout: std::time::Duration::from_secs(10),
            http_connections_max: 256,
            http_event_streams_max: 64,
            log_format: "text".into(),
            log_level: "info".into(),
            leave_timeout: std::time::Duration::from_secs(5),
            chaos: ChaosConfig::default(),
            query_handler: Vec::new(),
        }
    }
}

/// The file as read: the agent's own keys with their defaults, the node's keys, and whatever
/// keys neither knows (serde cannot refuse unknown keys next to a flattened struct, so they are
/// collected and refused in `try_from`).
#[derive(Deserialize)]
struct AgentConfigFile {
    #[serde(flatten)]
    node: NodeConfig,
    #[serde(flatten)]
    own: AgentOwn,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

/// The agent's own keys, each defaulting as in [`AgentConfig::default`].
#[derive(Deserialize)]
#[serde(default)]
struct AgentOwn {
    http_addr: SocketAddr,
    join: Vec<String>,
    retry_join: Vec<String>,
    retry_join_max: u32,
    #[serde(with = "humantime_serde")]
    retry_interval: std::time::Duration,
    encrypt_key_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
    http_allowed_hosts: Vec<String>,
    #[serde(with = "humantime_serde")]
    http_header_timeout: std::time::Duration,
    http_connections_max: usize,
    http_event_streams_max: usize,
    log_format: String,
    log_level: String,
    #[serde(with = "humantime_serde")]
    leave_timeout: std::time::Duration,
    chaos: ChaosConfig,
    query_handler: Vec<QueryHandlerConfig>,
}

impl Default for AgentOwn {
    fn default() -> Self {
        let d = AgentConfig::default();
        AgentOwn {
            http_addr: d.http_addr,
            join: d.join,
            retry_join: d.retry_join,
            retry_join_max: d.retry_join_max,
            retry_interval: d.retry_interval,
            encrypt_key_file: d.encrypt_key_file,
            token_file: d.token_file,
            http_allowed_hosts: d.http_allowed_hosts,
            http_header_timeout: d.http_header_timeout,
            http_connections_max: d.http_connections_max,
            http_event_streams_max: d.http_event_streams_max,
            log_format: d.log_format,
            log_level: d.log_level,
            leave_timeout: d.leave_timeout,
            chaos: d.chaos,
            query_handler: d.query_handler,
        }
    }
}

impl TryFrom<AgentConfigFile> for AgentConfig {
    type Error = String;

    fn try_from(file: AgentConfigFile) -> Result<Self, String> {
        if let Some(key) = file.unknown.keys().next() {
            return Err(format!("unknown key `{key}`"));
        }
        let own = file.own;
        Ok(AgentConfig {
            node: file.node,
            http_addr: own.http_addr,
            join: own.join,
            retry_join: own.retry_join,
            retry_join_max: own.retry_join_max,
            retry_interval: own.retry_interval,
            encrypt_key_file: own.encrypt_key_file,
            token_file: own.token_file,
            http_allowed_hosts: own.http_allowed_hosts,
            http_header_timeout: own.http_header_timeout,
            http_connections_max: own.http_connections_max,
            http_event_streams_max: own.http_event_streams_max,
            log_format: own.log_format,
            log_level: own.log_level,
            leave_timeout: own.leave_timeout,
            chaos: own.chaos,
            query_handler: own.query_handler,
        })
    }
}

/// A setting is wrong; the message names it.
#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    /// Not valid TOML, or an unknown key.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A field's value is out of range (its section names the table: `agent` for the top
    /// level, `protocol`, `transport`, `chaos`).
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

impl AgentConfig {
    /// Reads a TOML file; unknown keys are errors.
    pub fn from_file(path: &std::path::Path) -> Result<Self, AgentConfigError> {
        let err = |reason: String| AgentConfigError::File {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        toml::from_str(&text).map_err(|e| err(e.to_string()))
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), AgentConfigError> {
        let field = |field, rule: String| Err(ConfigError::new("agent", field, rule).into());
        self.node.validate()?;
        if !self.http_addr.ip().is_loopback() && self.token_file.is_none() {
            return field(
                "http_addr",
                format!(
                    "{} is not loopback: set token_file (the API can change keys and inject faults)",
                    self.http_addr
                ),
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return field(
                "log_level",
                format!(
                    "{:?}: use a level (info, debug) or RUST_LOG's syntax",
                    self.log_level
                ),
            );
        }
        if !["text", "json"].contains(&self.log_format.as_str()) {
            return field(
                "log_format",
                format!("{:?}: use text or json", self.log_format),
            );
        }
        for (name, seeds) in [("join", &self.join), ("retry_join", &self.retry_join)] {
            for j in seeds {
                if let Err(e) = super::discovery::check_seed(j) {
                    return field(name, e);
                }
            }
        }
        let r = self.retry_interval;
        if r < std::time::Duration::from_millis(100) || r > std::time::Duration::from_secs(600) {
            return field("retry_interval", "must be 100ms to 10m".into());
        }
        if self.leave_timeout.is_zero() || self.leave_timeout > std::time::Duration::from_secs(300)
        {
            return field("leave_timeout", "must be above zero and at most 5m".into());
        }
        self.validate_http()?;
        self.validate_handlers()?;
        match self.chaos.validate() {
            Err(ChaosError::Invalid(e)) => Err(e.into()),
            Err(e) => Err(ConfigError::new("chaos", e.field(), e.to_string()).into()),
            Ok(()) => Ok(()),
        }
    }

    /// Query handler names: set, unique, not the node's own.
    fn validate_handlers(&self) -> Result<(), AgentConfigError> {
        let field = |rule: String| Err(ConfigError::new("agent", "query_handler", rule).into());
        let mut seen = std::collections::BTreeSet::new();
        for h in &self.query_handler {
            if h.name.is_empty() || h.command.trim().is_empty() {
                return field(format!("{:?}={:?}: use NAME=COMMAND", h.name, h.command));
            }
            if h.name.starts_with(crate::node::INTERNAL_PREFIX) {
                return field(format!(
                    "{:?}: names starting with {:?} are the node's own",
                    h.name,
                    crate::node::INTERNAL_PREFIX
                ));
            }
            if !seen.insert(&h.name) {
                return field(format!("{:?} has two handlers", h.name));
            }
        }
        Ok(())
    }

    /// The admin API's own limits and names.
    fn validate_http(&self) -> Result<(), AgentConfigError> {
        use std::time::Duration;
        let field = |field, rule: String| Err(ConfigError::new("agent", field, rule).into());
        for h in &self.http_allowed_hosts {
            if super::guard::HostPort::parse(h).is_none() {
                return field(
                    "http_allowed_hosts",
                    format!("{h:?}: use a host name, name:port or [v6]:port (no scheme or path)"),
                );
            }
        }
        let t = self.http_header_timeout;
        if t < Duration::from_millis(100) || t > Duration::from_secs(300) {
            return field("http_header_timeout", "must be 100ms to 5m".into());
        }
        if !(2..=65_536).contains(&self.http_connections_max) {
            return field("http_connections_max", "must be 2 to 65536".into());
        }
        if self.http_event_streams_max == 0
            || self.http_event_streams_max >= self.http_connections_max
        {
            return field(
                "http_event_streams_max",
                format!(
                    "must be at least 1 and below http_connections_max ({}): each stream holds \
                     a connection, and other requests need some",
                    self.http_connections_max
                ),
            );
        }
        Ok(())
    }

    /// The config as TOML with secrets redacted (file paths are shown, never their content).
    pub fn redacted_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print the config: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_unknown_keys_are_errors() {
        AgentConfig::default().validate().unwrap();
        let c: AgentConfig = toml::from_str(
            "name = \"a\"\nbind = \"127.0.0.1:7000\"\n[tags]\nzone = \"eu\"\n[protocol]\nprobe_interval = \"1s\"\n",
        )
        .unwrap();
        assert_eq!(c.node.tags["zone"], "eu");
        assert_eq!(
            c.node.protocol.probe_interval,
            std::time::Duration::from_secs(1)
        );
        assert!(toml::from_str::<AgentConfig>("nmae = \"typo\"").is_err());
        let bad = AgentConfig {
            log_format: "xml".into(),
            ..AgentConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("agent.log_format"));
        for (toml, field) in [
            (
                "http_allowed_hosts = [\"http://x\"]",
                "agent.http_allowed_hosts",
            ),
            ("http_header_timeout = \"0s\"", "agent.http_header_timeout"),
            ("http_connections_max = 1", "agent.http_connections_max"),
            (
                "http_event_streams_max = 256",
                "agent.http_event_streams_max",
            ),
            ("http_event_streams_max = 0", "agent.http_event_streams_max"),
            (
                "[[query_handler]]\nname = \"_dcore_x\"\ncommand = \"true\"",
                "agent.query_handler",
            ),
            (
                "[[query_handler]]\nname = \"a\"\ncommand = \"x\"\n[[query_handler]]\nname = \"a\"\ncommand = \"y\"",
                "agent.query_handler",
            ),
            (
                "[[query_handler]]\nname = \"a\"\ncommand = \" \"",
                "agent.query_handler",
            ),
        ] {
            let c: AgentConfig = toml::from_str(toml).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.starts_with(field), "{toml}: {e}");
        }
        let c: AgentConfig =
            toml::from_str("http_allowed_hosts = [\"dcore.internal\", \"[::1]:8080\"]").unwrap();
        c.validate().unwrap();
        let printed = AgentConfig::default().redacted_toml();
        let back: AgentConfig = toml::from_str(&printed).unwrap();
        assert_eq!(back.redacted_toml(), printed);
        assert_eq!(back.node.name, AgentConfig::default().node.name);
    }
}
