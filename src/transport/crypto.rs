//! Authenticated encryption of frame bodies with a keyring.
//!
//! XChaCha20-Poly1305 with a random 24-byte nonce per message: random nonces of that size stay
//! safe for far more messages than a cluster sends under one key in years (AES-GCM's random
//! 12-byte nonces, as memberlist uses, cap a key at about 2^32 messages: days at 1,000 nodes).
//!
//! A sealed body is `[key_id: u8][nonce: 24 bytes][ciphertext][tag: 16 bytes]`. The key id is
//! derived from the key itself, so every node that holds a key computes the same id and a
//! receiver picks the key directly instead of trying each one. The keyring has one primary key,
//! which encrypts; every installed key decrypts, so a cluster rotates keys without downtime:
//! install the new key everywhere, make it primary everywhere, remove the old one.
//!
//! The caller passes associated data (the frame header and the cluster label), which is
//! authenticated but not encrypted: a frame from another cluster, or with its flags changed,
//! fails to open.
//!
//! The cipher itself (XChaCha20-Poly1305 on `ring`) and key files live with the key, in
//! [`crate::identity::Key`].

use crate::identity::{read_key_file, IdentityError, Key, NONCE_BYTES, TAG_BYTES};
use rand::{CryptoRng, RngCore};
use std::fmt;
use std::path::Path;
/// Bytes a sealed body adds to its plaintext: key id, nonce, tag.
pub const SEAL_OVERHEAD_BYTES: usize = 1 + NONCE_BYTES + TAG_BYTES;
/// Keys a keyring holds at most (a rotation needs two; a few spare are harmless).
pub const KEYRING_KEYS_MAX: usize = 8;

/// What went wrong. Nothing in the keyring changed unless the variant says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Shorter than a key id, nonce and tag.
    #[error("sealed body too short")]
    Truncated,
    /// No installed key has this id.
    #[error("no installed key has id {0:#04x}")]
    UnknownKey(u8),
    /// The tag did not verify: wrong key, other associated data (label), or tampering.
    #[error("decryption failed (wrong key, cluster label mismatch, or tampered data)")]
    Decrypt,
    /// Another installed key derives the same id; install refused.
    #[error("key id {0:#04x} is taken by another installed key")]
    KeyIdCollision(u8),
    /// The keyring is full; install refused.
    #[error("keyring holds {KEYRING_KEYS_MAX} keys at most")]
    KeyringFull,
    /// The key is not installed.
    #[error("key is not installed")]
    NotInstalled,
    /// The primary key cannot be removed; make another key primary first.
    #[error("the primary key cannot be removed")]
    RemovePrimary,
    /// The key file could not be read, or a key in it is not valid; nothing was loaded.
    #[error(transparent)]
    Key(#[from] IdentityError),
}

#[derive(Clone)]
struct Slot {
    id: u8,
    key: Key,
}

/// What `Keyring::keys` tells about one key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key's id.
    pub id: u8,
    /// Whether it encrypts.
    pub primary: bool,
}

/// One primary key that encrypts; every installed key decrypts.
#[derive(Clone)]
pub struct Keyring {
    slots: Vec<Slot>,
    primary: usize,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys()).finish()
    }
}

impl Keyring {
    /// A keyring with `primary` as its only key.
    pub fn new(primary: Key) -> Self {
        Keyring {
            slots: vec![Self::slot(primary)],
            primary: 0,
        }
    }

    fn slot(key: Key) -> Slot {
        Slot { id: key.id(), key }
    }

    /// Adds a key for decryption. Installing a key twice is not an error.
    pub fn install(&mut self, key: Key) -> Result<(), CryptoError> {
        if let Some(s) = self.slots.iter().find(|s| s.id == key.id()) {
            return if s.key == key {
                Ok(())
            } else {
                Err(CryptoError::KeyIdCollision(s.id))
            };
        }
        if self.slots.len() >= KEYRING_KEYS_MAX {
            return Err(CryptoError::KeyringFull);
        }
        self.slots.push(Self::slot(key));
        Ok(())
    }

    /// Makes an installed key the one that encrypts.
    pub fn use_key(&mut self, key: &Key) -> Result<(), CryptoError> {
        self.primary = self.position(key)?;
        Ok(())
    }

    /// Removes an installed key other than the primary.
    pub fn remove(&mut self, key: &Key) -> Result<(), CryptoError> {
        let i = self.position(key)?;
        if i == self.primary {
            return Err(CryptoError::RemovePrimary);
        }
        self.slots.remove(i);
        if i < self.primary {
            self.primary -= 1;
        }
        Ok(())
    }

    fn position(&self, key: &Key) -> Result<usize, CryptoError> {
        self.slots
            .iter()
            .position(|s| &s.key == key)
            .ok_or(CryptoError::NotInstalled)
    }

    /// The installed keys, by id, the primary marked.
    pub fn keys(&self) -> Vec<KeyInfo> {
        let info = |(i, s): (usize, &Slot)| KeyInfo {
            id: s.id,
            primary: i == self.primary,
        };
        self.slots.iter().enumerate().map(info).collect()
    }

    /// Encrypts `plaintext` under the primary key, authenticating `aad` too.
    pub fn seal(
        &self,
        aad: &[u8],
        plaintext: &[u8],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Vec<u8> {
        let slot = &self.slots[self.primary];
        let mut nonce = [0u8; NONCE_BYTES];
        rng.fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(SEAL_OVERHEAD_BYTES + plaintext.len());
        out.push(slot.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = slot
            .key
            .seal_in_place(&nonce, aad, &mut out[1 + NONCE_BYTES..]);
        out.extend_from_slice(&tag);
        out
    }

    /// Decrypts a sealed body with the key its id names, checking `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < SEAL_OVERHEAD_BYTES {
            return Err(CryptoError::Truncated);
        }
        let (id, rest) = (sealed[0], &sealed[1..]);
        let (nonce, ct) = rest.split_at(NONCE_BYTES);
        let slot = self
            .slots
            .iter()
            .find(|s| s.id == id)
            .ok_or(CryptoError::UnknownKey(id))?;
        let nonce: &[u8; NONCE_BYTES] = nonce.try_into().expect("split at NONCE_BYTES");
        let mut buf = ct.to_vec();
        let len = slot
            .key
            .open_in_place(nonce, aad, &mut buf)
            .ok_or(CryptoError::Decrypt)?;
        buf.truncate(len);
        Ok(buf)
    }

    /// A keyring of `keys`, the first one primary (as a key file lists them).
    pub fn from_keys(keys: Vec<Key>) -> Result<Self, CryptoError> {
        let mut keys = keys.into_iter();
        let first = keys.next().ok_or(CryptoError::NotInstalled)?;
        let mut ring = Keyring::new(first);
        for key in keys {
            ring.install(key)?;
        }
        Ok(ring)
    }

    /// Reads a key file (see [`read_key_file`]: permissions checked, the first key primary).
    pub fn load(path: &Path) -> Result<Self, CryptoError> {
        Self::from_keys(read_key_file(path)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(7)
    }

    fn key(b: u8) -> Key {
        Key::from_bytes([b; crate::identity::KEY_BYTES])
    }

    /// A keyring in a log line or a panic message shows each key's id and which is primary,
    /// never key bytes.
    #[test]
    fn debug_shows_key_ids_never_key_bytes() {
        let mut ring = Keyring::new(key(0xab));
        ring.install(key(0xcd)).unwrap();
        let shown = format!("{ring:?}");
        for info in ring.keys() {
            assert!(shown.contains(&format!("{info:?}")), "{shown}");
        }
        assert!(shown.contains("primary: true") && shown.contains("primary: false"));
        for secret in ["171, 171", "205, 205", "abab", "cdcd", "ABAB", "CDCD"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn seal_open_round_trip_and_layout() {
        let ring = Keyring::new(key(1));
        let sealed = ring.seal(b"label", b"hello", &mut rng());
        assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD_BYTES);
        assert_eq!(sealed[0], key(1).id());
        assert_eq!(ring.open(b"label", &sealed).unwrap(), b"hello");
    }

    /// An empty message seals to exactly the overhead and opens; one byte less is truncated.
    #[test]
    fn an_empty_message_opens_and_a_shorter_body_is_truncated() {
        let ring = Keyring::new(key(1));
        let sealed = ring.seal(b"label", b"", &mut rng());
        assert_eq!(sealed.len(), SEAL_OVERHEAD_BYTES);
        assert_eq!(ring.open(b"label", &sealed).unwrap(), b"");
        assert_eq!(
            ring.open(b"label", &sealed[..SEAL_OVERHEAD_BYTES - 1]),
            Err(CryptoError::Truncated)
        );
    }

    #[test]
    fn nonces_differ_between_messages() {
        let ring = Keyring::new(key(1));
        let mut r = rng();
        let a = ring.seal(b"", b"same", &mut r);
        let b = ring.seal(b"", b"same", &mut r);
        assert_ne!(a[1..1 + NONCE_BYTES], b[1..1 + NONCE_BYTES]);
        assert_ne!(a, b);
    }

    #[test]
    fn wrong_key_label_or_tampering_fail() {
        let ring = Keyring::new(key(1));
        let sealed = ring.seal(b"cluster-a", b"hello", &mut rng());
        assert_eq!(ring.open(b"cluster-b", &sealed), Err(CryptoError::Decrypt));
        let other = Keyring::new(key(2));
        assert_eq!(
            other.open(b"cluster-a", &sealed),
            Err(CryptoError::UnknownKey(key(1).id()))
        );
        for i in 1..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert_eq!(
                ring.open(b"cluster-a", &t),
                Err(CryptoError::Decrypt),
                "byte {i}"
            );
        }
        assert_eq!(
            ring.open(b"", &sealed[..SEAL_OVERHEAD_BYTES - 1]),
            Err(CryptoError::Truncated)
        );
    }

    #[test]
    fn rotation_install_use_remove_loses_nothing() {
        let (old, new) = (key(1), key(2));
        let mut a = Keyring::new(old.clone());
        let mut b = Keyring::new(old.clone());
        let mut r = rng();
        a.install(new.clone()).unwrap();
        b.install(new.clone()).unwrap();
        a.use_key(&new).unwrap();
        // b still encrypts with the old key, a with the new: both understand each other.
        assert_eq!(b.open(b"", &a.seal(b"", b"x", &mut r)).unwrap(), b"x");
        assert_eq!(a.open(b"", &b.seal(b"", b"y", &mut r)).unwrap(), b"y");
        b.use_key(&new).unwrap();
        assert_eq!(a.remove(&new), Err(CryptoError::RemovePrimary));
        a.remove(&old).unwrap();
        b.remove(&old).unwrap();
        assert_eq!(
            a.keys(),
            vec![KeyInfo {
                id: new.id(),
                primary: true
            }]
        );
        assert_eq!(b.open(b"", &a.seal(b"", b"z", &mut r)).unwrap(), b"z");
        assert_eq!(a.use_key(&old), Err(CryptoError::NotInstalled));
    }

    #[test]
    fn install_is_idempotent_bounded_and_refuses_id_collisions() {
        let mut ring = Keyring::new(key(0));
        ring.install(key(0)).unwrap();
        assert_eq!(ring.keys().len(), 1);
        // Ids are one byte: two keys with the same id exist; the second is refused.
        let first = key(0).id();
        let twin = (1..=255u8).map(key).find(|k| k.id() == first);
        if let Some(twin) = twin {
            assert_eq!(ring.install(twin), Err(CryptoError::KeyIdCollision(first)));
        }
        let mut b = 1u8;
        while ring.keys().len() < KEYRING_KEYS_MAX {
            match ring.install(key(b)) {
                Ok(()) | Err(CryptoError::KeyIdCollision(_)) => {}
                Err(e) => panic!("{e}"),
            }
            b += 1;
        }
        let taken: Vec<u8> = ring.keys().iter().map(|k| k.id).collect();
        let next = (b..=255)
            .map(key)
            .find(|k| !taken.contains(&k.id()))
            .unwrap();
        assert_eq!(ring.install(next), Err(CryptoError::KeyringFull));
    }

    /// `Keyring::load` is `read_key_file` (tested in `identity`) then `from_keys`.
    #[test]
    fn a_keyring_from_a_key_list_makes_the_first_primary() {
        let ring = Keyring::from_keys(vec![key(1), key(2)]).unwrap();
        assert_eq!(
            ring.keys(),
            vec![
                KeyInfo {
                    id: key(1).id(),
                    primary: true
                },
                KeyInfo {
                    id: key(2).id(),
                    primary: false
                }
            ]
        );
        assert_eq!(
            Keyring::from_keys(Vec::new()).unwrap_err(),
            CryptoError::NotInstalled
        );
        assert!(matches!(
            Keyring::load(std::path::Path::new("/nonexistent/dcore-keys")),
            Err(CryptoError::Key(IdentityError::KeyFile { .. }))
        ));
    }
}
