//! [`NodeConfig`]: what a node is started with, its defaults (memberlist's LAN defaults: the
//! host name, `0.0.0.0:7946`), its validation, and a builder.
//!
//! The agent's TOML file holds the same fields at its top level (`name`, `bind`, `advertise`,
//! `tags`, `data_dir`, `label`) and in its `[protocol]` and `[transport]` tables.

use crate::cluster::Config;
use crate::common::ConfigError;
use crate::diagnostics::chaos::Chaos;
use crate::identity::{check_tag_sizes, NodeId, Tags};
use crate::transport::crypto::Keyring;
use crate::transport::TransportConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Settings of a node. Every field has a default ([`NodeConfig::default`]);
/// [`NodeConfig::validate`] checks them (and [`crate::Node::start`] calls it).
///
/// The runtime-only fields (`seeds`, `keyring`, `incarnation`, `seed`, `chaos`) are not read
/// from or written to a config file: the agent fills them from `join`, `encrypt_key_file` and
/// `[chaos]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique member name, 1 to 128 bytes. Default: the host name (`$HOSTNAME`, then
    /// `/etc/hostname`, then `dcore`).
    pub name: String,
    /// UDP and TCP bind address; port 0 picks a free port (tests). Default `0.0.0.0:7946`.
    pub bind: SocketAddr,
    /// Address announced to peers. Default: the bound address. Must be a concrete address
    /// with a port when set.
    pub advertise: Option<SocketAddr>,
    /// Published tags; keys 1 to 128 bytes, values up to 512, and the whole set within the
    /// protocol's `tags_bytes_max`. Default none.
    pub tags: Tags,
    /// Seeds to join through at start (retried with backoff until one answers). Default none.
    #[serde(skip)]
    pub seeds: Vec<SocketAddr>,
    /// Where the node keeps its id, highest incarnation and last known members (a WAL-backed
    /// store). Default `None`: memory only. With it, a restarted node starts above its old
    /// incarnation and also joins the members it knew.
    pub data_dir: Option<PathBuf>,
    /// Protocol settings (`[protocol]` table). Default: the LAN preset, [`Config::lan`].
    pub protocol: Config,
    /// Transport limits and timeouts (`[transport]` table). Default:
    /// [`TransportConfig::default`].
    pub transport: TransportConfig,
    /// Encrypt with this keyring (and refuse plain frames); keys can be rotated at runtime.
    /// Default `None`: plain frames.
    #[serde(skip)]
    pub keyring: Option<Keyring>,
    /// Cluster label: bound into every encrypted frame as associated data, and carried as an
    /// 8-byte tag in every plain frame when not empty; a frame of another label is refused
    /// (`dcore_rejected_total{reason="key"}` or `{reason="label"}`). Default empty.
    pub label: String,
    /// Incarnation to start at (a data dir raises it above any used before). Default 0.
    #[serde(skip)]
    pub incarnation: u64,
    /// Seed for the core's RNG. Default `None`: random.
    #[serde(skip)]
    pub seed: Option<u64>,
    /// Chaos injection between the sealed frames and the transport (`diagnostics::chaos`).
    /// Default `None`: no layer at all.
    #[serde(skip)]
    pub chaos: Option<Arc<Chaos>>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: host_name(),
            bind: SocketAddr::from(([0, 0, 0, 0], 7946)),
            advertise: None,
            tags: Tags::new(),
            seeds: Vec::new(),
            data_dir: None,
            protocol: Config::lan(),
            transport: TransportConfig::default(),
            keyring: None,
            label: String::new(),
            incarnation: 0,
            seed: None,
            chaos: None,
        }
    }
}

/// The host name, as the default member name.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "dcore".into())
}

impl NodeConfig {
    /// A node named `name` bound to `bind`, every other field at its default.
    pub fn new(name: &str, bind: SocketAddr) -> Self {
        NodeConfig {
            name: name.to_string(),
            bind,
            ..NodeConfig::default()
        }
    }

    /// A builder starting from [`NodeConfig::new`]; [`NodeConfigBuilder::build`] validates.
    pub fn builder(name: &str, bind: SocketAddr) -> NodeConfigBuilder {
        NodeConfigBuilder(NodeConfig::new(name, bind))
    }

    /// Checks every field and the rules between them: the name is a valid id, the advertised
    /// address is concrete, tags fit their limits, the protocol and transport settings hold.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, rule: String| ConfigError::fail("node", field, rule);
        if let Err(e) = NodeId::new(&self.name) {
            return bad("name", e.to_string());
        }
        if let Some(a) = self.advertise {
            if a.ip().is_unspecified() || a.port() == 0 {
                return bad(
                    "advertise",
                    format!("{a} is not an address peers can reach"),
                );
            }
        }
        if let Err(e) = check_tag_sizes(&self.tags) {
            return bad("tags", e.to_string());
        }
        self.protocol.validate()?;
        self.transport.validate()?;
        if self.protocol.direct_bytes_max + 1024 > self.transport.stream_record_bytes_max {
            return ConfigError::fail(
                "protocol",
                "direct_bytes_max",
                "direct_bytes_max + 1 KiB must fit transport.stream_record_bytes_max",
            );
        }
        Ok(())
    }
}

/// Builds a [`NodeConfig`] field by field; see each field's documentation for its default.
#[derive(Debug, Clone)]
pub struct NodeConfigBuilder(NodeConfig);

impl NodeConfigBuilder {
    /// See [`NodeConfig::advertise`].
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.0.advertise = Some(addr);
        self
    }

    /// Adds one tag (see [`NodeConfig::tags`]).
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.0.tags.insert(key.to_string(), value.to_string());
        self
    }

    /// See [`NodeConfig::seeds`].
    pub fn seeds(mut self, seeds: Vec<SocketAddr>) -> Self {
        self.0.seeds = seeds;
        self
    }

    /// See [`NodeConfig::data_dir`].
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.0.data_dir = Some(dir.into());
        self
    }

    /// See [`NodeConfig::protocol`].
    pub fn protocol(mut self, protocol: Config) -> Self {
        self.0.protocol = protocol;
        self
    }

    /// See [`NodeConfig::transport`].
    pub fn transport(mut self, transport: TransportConfig) -> Self {
        self.0.transport = transport;
        self
    }

    /// Encrypts with `keyring`, bound to the cluster `label` (see [`NodeConfig::keyring`]).
    pub fn encrypt(mut self, keyring: Keyring, label: &str) -> Self {
        self.0.keyring = Some(keyring);
        self.0.label = label.to_string();
        self
    }

    /// See [`NodeConfig::seed`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.0.seed = Some(seed);
        self
    }

    /// See [`NodeConfig::chaos`].
    pub fn chaos(mut self, chaos: Arc<Chaos>) -> Self {
        self.0.chaos = Some(chaos);
        self
    }

    /// The config, once it validates.
    pub fn build(self) -> Result<NodeConfig, ConfigError> {
        self.0.validate()?;
        Ok(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_and_bad_fields_are_named() {
        let d = NodeConfig::default();
        assert_eq!(d.bind, SocketAddr::from(([0, 0, 0, 0], 7946)));
        assert_eq!(d.protocol, Config::lan());
        d.validate().unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let c = NodeConfig::builder("a", any)
            .tag("role", "media")
            .protocol(Config::local())
            .build()
            .unwrap();
        assert_eq!(c.tags["role"], "media");
        let e = NodeConfig::builder("", any).build().unwrap_err();
        assert_eq!((e.section, e.field), ("node", "name"));
        let e = NodeConfig::builder("a", any)
            .advertise("0.0.0.0:7946".parse().unwrap())
            .build()
            .unwrap_err();
        assert_eq!(e.field, "advertise");
        let e = NodeConfig::builder("a", any)
            .tag("", "x")
            .build()
            .unwrap_err();
        assert_eq!(e.field, "tags");
        let mut slow = Config::lan();
        slow.probe_timeout = slow.probe_interval;
        let e = NodeConfig::builder("a", any)
            .protocol(slow)
            .build()
            .unwrap_err();
        assert_eq!(e.section, "protocol");
        let parsed: NodeConfig =
            toml::from_str("name = \"x\"\n[protocol]\nprobe_interval = \"1s\"").unwrap();
        assert_eq!(parsed.name, "x");
        assert!(toml::from_str::<NodeConfig>("nmae = \"x\"").is_err());
    }
}
