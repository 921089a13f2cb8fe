//! What a node says about itself: its id, address and tags.

use super::{IdentityError, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Key/value metadata a node publishes about itself (role, zone, version, ...).
pub type Tags = BTreeMap<String, String>;

/// Bytes `tags` take in the limit check: the sum of key and value lengths plus two per pair.
pub fn tags_len(tags: &Tags) -> usize {
    tags.iter().map(|(k, v)| k.len() + v.len() + 2).sum()
}

/// Longest tag key in bytes (keys are at least one byte).
pub const TAG_KEY_BYTES_MAX: usize = 128;
/// Longest tag value in bytes.
pub const TAG_VALUE_BYTES_MAX: usize = 512;

/// `Ok` when every key is 1 to [`TAG_KEY_BYTES_MAX`] bytes and every value at most
/// [`TAG_VALUE_BYTES_MAX`]: the shape of one tag, checked where tags are configured.
pub fn check_tag_sizes(tags: &Tags) -> Result<(), IdentityError> {
    let bad = |(k, v): &(&String, &String)| {
        k.is_empty() || k.len() > TAG_KEY_BYTES_MAX || v.len() > TAG_VALUE_BYTES_MAX
    };
    match tags.iter().find(bad) {
        Some((k, _)) => Err(IdentityError::TagSize { key: k.clone() }),
        None => Ok(()),
    }
}

/// `Ok` when `tags` take at most `max` bytes (see [`tags_len`]; the limit is the protocol
/// config's `tags_bytes_max`).
pub fn check_tags(tags: &Tags, max: usize) -> Result<(), IdentityError> {
    let len = tags_len(tags);
    if len > max {
        return Err(IdentityError::TagsTooLarge { len, max });
    }
    Ok(())
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
    fn tags_len_counts_keys_values_and_separators() {
        let mut t = Tags::new();
        t.insert("zone".into(), "a".into());
        assert_eq!(tags_len(&t), 7);
        assert_eq!(check_tags(&t, 7), Ok(()));
        assert_eq!(
            check_tags(&t, 6),
            Err(IdentityError::TagsTooLarge { len: 7, max: 6 })
        );
        assert_eq!(check_tag_sizes(&t), Ok(()));
        t.insert("v".into(), "x".repeat(TAG_VALUE_BYTES_MAX + 1));
        assert_eq!(
            check_tag_sizes(&t),
            Err(IdentityError::TagSize { key: "v".into() })
        );
    }
}
