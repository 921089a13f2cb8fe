//! What a node is: its id (the unique member name), its incarnation, the address and tags it
//! announces, the cluster keys it holds, and what it keeps of itself across restarts.
//!
//! These types are shared by the protocol core, the transport and the runtime; this module
//! imports only `common`. A [`NodeInfo`] is immutable once built and shared behind an `Arc`: a
//! membership table of ten thousand entries per node in the simulator would otherwise hold a
//! hundred million copies of the same strings.
//!
//! Layout: `id.rs` ([`NodeId`], [`Incarnation`]), `info.rs` ([`NodeInfo`], [`Tags`] and their
//! limit), `key.rs` ([`Key`]: generation, base64, key files, the cipher), `persisted.rs`
//! ([`PersistedIdentity`]: the id and incarnation a node keeps in its data dir).

mod id;
mod info;
mod key;
mod persisted;

pub use id::{Incarnation, NodeId, NODE_ID_BYTES_MAX};
pub use info::{
    check_tag_sizes, check_tags, tags_len, NodeInfo, Tags, TAG_KEY_BYTES_MAX, TAG_VALUE_BYTES_MAX,
};
pub use key::{check_private_file, read_key_file, Key, KEY_BYTES, NONCE_BYTES, TAG_BYTES};
pub use persisted::PersistedIdentity;

use std::path::PathBuf;

/// Why an id, a tag set, a key or a stored identity was refused. Nothing was changed.
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
    /// A tag key is empty or too long, or its value is too long.
    #[error("tag {key:?}: keys 1-{TAG_KEY_BYTES_MAX} bytes, values up to {TAG_VALUE_BYTES_MAX}")]
    TagSize {
        /// The tag's key.
        key: String,
    },
    /// Not a base64 key of 32 bytes.
    #[error("a key is 32 bytes in standard base64: {0}")]
    BadKey(String),
    /// The key file could not be read, or holds no key.
    #[error("key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key file can be read by users other than its owner.
    #[error("key file {path} has mode {mode:o}: others can read it; chmod 600 it")]
    KeyFilePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The data dir holds another node's identity.
    #[error("belongs to node {stored:?}, not {name:?}")]
    OtherNode {
        /// The name stored.
        stored: String,
        /// The name of the node starting.
        name: String,
    },
}
