//! What a node keeps of itself across restarts: its name, so a data dir is never used by
//! another node, and the highest incarnation it has used, so a restarted node starts above it
//! and its `Alive` claim beats whatever peers remember of its previous life.
//!
//! The runtime stores these under [`PersistedIdentity::ID_KEY`] and
//! [`PersistedIdentity::INCARNATION_KEY`] in the node's state store; this module holds the
//! format and the rule, not the I/O.

use super::IdentityError;

/// The identity a node starts with, from what its data dir holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedIdentity {
    /// The node's name (also the stored id).
    pub name: String,
    /// The incarnation to start at: one above the stored one, or the configured one if that is
    /// higher or nothing was stored.
    pub incarnation: u64,
}

impl PersistedIdentity {
    /// Store key of the node's name.
    pub const ID_KEY: &'static [u8] = b"node/id";
    /// Store key of the highest incarnation used (decimal text).
    pub const INCARNATION_KEY: &'static [u8] = b"node/incarnation";

    /// The identity node `name` resumes, given the stored id and incarnation (either may be
    /// absent; an unreadable incarnation counts as absent). Refused when the data dir belongs
    /// to another node.
    pub fn resume(
        name: &str,
        stored_id: Option<&[u8]>,
        stored_incarnation: Option<&[u8]>,
        configured: u64,
    ) -> Result<Self, IdentityError> {
        if let Some(id) = stored_id.filter(|id| *id != name.as_bytes()) {
            return Err(IdentityError::OtherNode {
                stored: String::from_utf8_lossy(id).into_owned(),
                name: name.to_string(),
            });
        }
        let stored =
            stored_incarnation.and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
        Ok(PersistedIdentity {
            name: name.to_string(),
            incarnation: stored.map_or(configured, |s| configured.max(s.saturating_add(1))),
        })
    }

    /// An incarnation as stored under [`PersistedIdentity::INCARNATION_KEY`].
    pub fn encode_incarnation(incarnation: u64) -> Vec<u8> {
        incarnation.to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_starts_above_the_stored_incarnation_and_refuses_another_node() {
        let resume = |id: Option<&[u8]>, inc: Option<&[u8]>, configured| {
            PersistedIdentity::resume("a", id, inc, configured).map(|p| p.incarnation)
        };
        assert_eq!(resume(None, None, 3), Ok(3));
        assert_eq!(resume(Some(b"a"), Some(b"7"), 0), Ok(8));
        assert_eq!(resume(Some(b"a"), Some(b"7"), 20), Ok(20));
        assert_eq!(resume(Some(b"a"), Some(b"junk"), 2), Ok(2));
        let enc = PersistedIdentity::encode_incarnation(41);
        assert_eq!(resume(None, Some(&enc), 0), Ok(42));
        assert_eq!(
            resume(Some(b"b"), None, 0),
            Err(IdentityError::OtherNode {
                stored: "b".into(),
                name: "a".into()
            })
        );
    }
}
