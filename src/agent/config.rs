//! The agent's settings: a TOML file, `DCORE_*` environment variables and flags (in rising order
//! of precedence; the CLI merges them into one [`AgentConfig`]).

use crate::cluster::Config;
use crate::common::ConfigError;
use crate::diagnostics::chaos::{ChaosConfig, ChaosError};
use crate::transport::TransportConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything an agent needs. Every field has a default; [`AgentConfig::validate`] checks them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Unique member name. Default: the host name.
    pub name: String,
    /// Gossip address, UDP and TCP. Default `0.0.0.0:7946`.
    pub bind: SocketAddr,
    /// Address announced to peers. Default: the bind address (required when binding `0.0.0.0`
    /// on a host with several addresses; the agent refuses an unspecified advertise address).
    pub advertise: Option<SocketAddr>,
    /// Admin HTTP API address. Default `127.0.0.1:7947` (loopback only).
    pub http_addr: SocketAddr,
    /// Seeds to join at start (`host:port`), retried with backoff. Default none.
    pub join: Vec<String>,
    /// Directory for persistent state. Default none (memory only).
    pub data_dir: Option<PathBuf>,
    /// Tags published with this member. Default none.
    pub tags: BTreeMap<String, String>,
    /// Key file (base64 keys, one per line, the first primary; mode 0600). Default none: plain.
    pub encrypt_key_file: Option<PathBuf>,
    /// Cluster label bound into every encrypted frame. Default empty.
    pub label: String,
    /// File holding the admin API's bearer token. Default none: no auth (loopback only).
    pub token_file: Option<PathBuf>,
    /// Log format, `text` or `json`. Default `text`.
    pub log_format: String,
    /// How long a graceful leave may take before the agent exits anyway. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub leave_timeout: std::time::Duration,
    /// Protocol settings (`[protocol]` table; see `cluster::Config`). Default: LAN preset.
    pub protocol: Config,
    /// Transport limits (`[transport]` table). Default: see `transport::TransportConfig`.
    pub transport: TransportConfig,
    /// Chaos injection at start (`[chaos]` table; see `diagnostics::chaos::ChaosConfig`).
    /// Default: off. It can be changed at runtime through the API.
    pub chaos: ChaosConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            name: default_name(),
            bind: "0.0.0.0:7946".parse().expect("literal"),
            advertise: None,
            http_addr: "127.0.0.1:7947".parse().expect("literal"),
            join: Vec::new(),
            data_dir: None,
            tags: BTreeMap::new(),
            encrypt_key_file: None,
            label: String::new(),
            token_file: None,
            log_format: "text".into(),
            leave_timeout: std::time::Duration::from_secs(5),
            protocol: Config::lan(),
            transport: TransportConfig::default(),
            chaos: ChaosConfig::default(),
        }
    }
}

fn default_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "dcore".into())
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
        if let Err(e) = crate::identity::NodeId::new(&self.name) {
            return field("name", e.to_string());
        }
        if let Some(a) = self.advertise {
            if a.ip().is_unspecified() || a.port() == 0 {
                return field(
                    "advertise",
                    format!("{a} is not an address peers can reach"),
                );
            }
        }
        if !self.http_addr.ip().is_loopback() && self.token_file.is_none() {
            return field(
                "http_addr",
                format!(
                    "{} is not loopback: set token_file (the API can change keys and inject faults)",
                    self.http_addr
                ),
            );
        }
        if !["text", "json"].contains(&self.log_format.as_str()) {
            return field(
                "log_format",
                format!("{:?}: use text or json", self.log_format),
            );
        }
        for j in &self.join {
            if !j.contains(':') {
                return field("join", format!("{j:?}: use host:port"));
            }
        }
        if let Err(e) = crate::identity::check_tag_sizes(&self.tags) {
            return field("tags", e.to_string());
        }
        if self.leave_timeout.is_zero() || self.leave_timeout > std::time::Duration::from_secs(300)
        {
            return field("leave_timeout", "must be above zero and at most 5m".into());
        }
        self.protocol.validate()?;
        self.transport.validate()?;
        match self.chaos.validate() {
            Err(ChaosError::Invalid(e)) => Err(e.into()),
            Err(e) => Err(ConfigError::new("chaos", e.field(), e.to_string()).into()),
            Ok(()) => Ok(()),
        }
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
        assert_eq!(c.tags["zone"], "eu");
        assert_eq!(c.protocol.probe_interval, std::time::Duration::from_secs(1));
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
        let back: AgentConfig = toml::from_str(&AgentConfig::default().redacted_toml()).unwrap();
        assert_eq!(back, AgentConfig::default());
    }
}
