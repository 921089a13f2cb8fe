//! A node's name and its incarnation.

use super::IdentityError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Longest node id in bytes. Ids travel in nearly every message, so they stay short.
pub const NODE_ID_BYTES_MAX: usize = 128;

/// A member's unique name, 1 to [`NODE_ID_BYTES_MAX`] bytes, checked when built and when
/// decoded (a name from the wire obeys the same limit as a local one). Cheap to clone (an
/// `Arc<str>` inside).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct NodeId(Arc<str>);

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = NodeId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a node name of 1 to {NODE_ID_BYTES_MAX} bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NodeId, E> {
                NodeId::new(v).map_err(E::custom)
            }
        }
        d.deserialize_str(Name)
    }
}

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

/// A member's incarnation: only the member raises its own, to refute claims about it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Incarnation(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decoded_id_obeys_the_same_limit() {
        let ok = postcard::to_allocvec("n1").unwrap();
        assert_eq!(postcard::from_bytes::<NodeId>(&ok).unwrap().as_str(), "n1");
        for bad in [
            String::new(),
            "x".repeat(NODE_ID_BYTES_MAX + 1),
            "y".repeat(10_000),
        ] {
            let bytes = postcard::to_allocvec(&bad).unwrap();
            assert!(
                postcard::from_bytes::<NodeId>(&bytes).is_err(),
                "{}",
                bad.len()
            );
        }
        let json: NodeId = serde_json::from_str("\"a\\u0062\"").unwrap();
        assert_eq!(json.as_str(), "ab");
    }

    #[test]
    fn id_length_is_bounded() {
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new(&"x".repeat(NODE_ID_BYTES_MAX)).is_ok());
        assert_eq!(
            NodeId::new(&"x".repeat(NODE_ID_BYTES_MAX + 1)),
            Err(IdentityError::IdLength(NODE_ID_BYTES_MAX + 1))
        );
    }
}
