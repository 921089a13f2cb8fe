//! Who a node is: its id (the unique member name), its address and its tags.
//!
//! These types are shared by the protocol core, the transport and the runtime. A `NodeInfo` is
//! immutable once built and shared behind an [`Arc`]: a membership table of ten thousand entries
//! per node in the simulator would otherwise hold a hundred million copies of the same strings.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// Longest node id in bytes. Ids travel in nearly every message, so they stay short.
pub const NODE_ID_BYTES_MAX: usize = 128;

/// Why an id or a tag set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The id is empty or longer than [`NODE_ID_BYTES_MAX`]; nothing was changed.
    #[error("node id must be 1..={NODE_ID_BYTES_MAX} bytes, got {0}")]
    IdLength(usize),
    /// The encoded tags exceed the configured limit; the old tags stay in force.
    #[error("tags take {len} bytes, more than the limit of {max}")]
    TagsTooLarge {
        /// Bytes the tags would take.
        len: usize,
        /// The configured limit.
        max: usize,
    },
}

/// A member's unique name. Cheap to clone (an `Arc<str>` inside).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// Builds an id, checking its length.
    pub fn new(name: &str) -> Result<Self, IdentityError> {
        if name.is_empty() || name.len() > NODE_ID_BYTES_MAX {
            return Err(IdentityError::IdLength(name.len()));
        }
        Ok(NodeId(Arc::from(name)))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Key/value metadata a node publishes about itself (role, zone, version, ...).
pub type Tags = BTreeMap<String, String>;

/// Bytes `tags` take in the limit check: the sum of key and value lengths plus two per pair.
pub fn tags_len(tags: &Tags) -> usize {
    tags.iter().map(|(k, v)| k.len() + v.len() + 2).sum()
}

/// Everything a node says about itself in an `Alive` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Unique member name.
    pub id: NodeId,
    /// Where its UDP and TCP listeners are reachable.
    pub addr: SocketAddr,
    /// Published metadata, bounded by the protocol config's `tags_bytes_max`.
    pub tags: Tags,
}

impl NodeInfo {
    /// A node with no tags.
    pub fn new(id: NodeId, addr: SocketAddr) -> Self {
        NodeInfo {
            id,
            addr,
            tags: Tags::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_length_is_bounded() {
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new(&"x".repeat(NODE_ID_BYTES_MAX)).is_ok());
        assert_eq!(
            NodeId::new(&"x".repeat(NODE_ID_BYTES_MAX + 1)),
            Err(IdentityError::IdLength(NODE_ID_BYTES_MAX + 1))
        );
    }

    #[test]
    fn tags_len_counts_keys_values_and_separators() {
        let mut t = Tags::new();
        t.insert("zone".into(), "a".into());
        assert_eq!(tags_len(&t), 7);
    }
}
