//! The frame around every packet and stream message:
//! `[magic: "DC"][frame_version: u8][flags: u8][body]`.
//!
//! `flags` bit 0 says the body is encrypted (then it is `[key_id: u8][nonce: 24][ciphertext+tag]`,
//! see `docs/protocol.md`); other bits are reserved and must be zero.
//!
//! [`seal`] and [`open`] take the [`Security`] of one call; a [`FrameSealer`] owns a node's
//! keyring and label and seals or opens with them from any task.

use super::crypto::{CryptoError, Keyring, SEAL_OVERHEAD_BYTES};
use rand::{CryptoRng, RngCore};
use std::borrow::Cow;
use std::sync::{Arc, RwLock};

/// The two bytes every frame starts with.
pub const MAGIC: [u8; 2] = *b"DC";
/// Frame layout version.
pub const FRAME_VERSION: u8 = 1;
/// Bytes of the frame header.
pub const FRAME_HEADER_BYTES: usize = 4;
/// Extra bytes an encrypted body takes: key id, XChaCha20 nonce, Poly1305 tag.
pub const ENCRYPTION_OVERHEAD_BYTES: usize = SEAL_OVERHEAD_BYTES;
/// IPv4 + UDP header bytes, for bandwidth figures that match what an interface counts.
pub const UDP_IP_HEADER_BYTES: usize = 28;

/// Frame flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(u8);

impl Flags {
    /// The body is encrypted.
    pub const ENCRYPTED: Flags = Flags(1);
    const KNOWN: u8 = 1;

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw byte.
    pub fn bits(self) -> u8 {
        self.0
    }
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeFrameError {
    /// Shorter than the header.
    #[error("frame shorter than its header")]
    Truncated,
    /// Not our magic: another protocol or garbage.
    #[error("bad magic")]
    Magic,
    /// A frame version this build does not read.
    #[error("unsupported frame version {0}")]
    Version(u8),
    /// Reserved flag bits set.
    #[error("unknown flags {0:#04x}")]
    Flags(u8),
}

/// How this node protects its frames.
#[derive(Debug, Clone, Copy)]
pub enum Security<'a> {
    /// Plain frames only; an encrypted frame is refused.
    Plain,
    /// Seal with the keyring's primary key, binding the cluster `label` (and the frame header)
    /// as associated data. `accept_plain` lets plain frames in during a migration to encryption.
    Encrypted {
        /// The keys.
        keyring: &'a Keyring,
        /// The cluster label: two clusters with different labels never accept each other's frames.
        label: &'a [u8],
        /// Accept plain frames too (migration only).
        accept_plain: bool,
    },
}

/// Why a frame was not opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenFrameError {
    /// A bad header.
    #[error(transparent)]
    Header(#[from] DecodeFrameError),
    /// The body did not decrypt.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A plain frame while encryption is on.
    #[error("plain frame refused: encryption is on")]
    PlaintextRefused,
    /// An encrypted frame while this node has no key.
    #[error("encrypted frame refused: no keyring")]
    NoKeyring,
}

fn aad(header: &[u8], label: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + label.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(label);
    aad
}

/// Builds a frame around `body`: plain, or sealed (see [`Security`]).
pub fn seal(body: &[u8], security: Security<'_>, rng: &mut (impl RngCore + CryptoRng)) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + ENCRYPTION_OVERHEAD_BYTES + body.len());
    match security {
        Security::Plain => {
            encode_header(Flags::default(), &mut out);
            out.extend_from_slice(body);
        }
        Security::Encrypted { keyring, label, .. } => {
            encode_header(Flags::ENCRYPTED, &mut out);
            let sealed = keyring.seal(&aad(&out, label), body, rng);
            out.extend_from_slice(&sealed);
        }
    }
    out
}

/// Checks a frame and returns its body, decrypted if it was sealed.
pub fn open<'f>(frame: &'f [u8], security: Security<'_>) -> Result<Cow<'f, [u8]>, OpenFrameError> {
    let (flags, body) = decode(frame)?;
    let encrypted = flags.contains(Flags::ENCRYPTED);
    match (security, encrypted) {
        (Security::Plain, false) => Ok(Cow::Borrowed(body)),
        (Security::Plain, true) => Err(OpenFrameError::NoKeyring),
        (Security::Encrypted { accept_plain, .. }, false) => {
            if accept_plain {
                Ok(Cow::Borrowed(body))
            } else {
                Err(OpenFrameError::PlaintextRefused)
            }
        }
        (Security::Encrypted { keyring, label, .. }, true) => {
            let header = &frame[..FRAME_HEADER_BYTES];
            Ok(Cow::Owned(keyring.open(&aad(header, label), body)?))
        }
    }
}

/// The header on its own: crate-internal (and in `distributed_core::testing` for the fuzz
/// targets); users seal and open whole frames.
pub(crate) mod header {
    use super::{DecodeFrameError, Flags, FRAME_HEADER_BYTES, FRAME_VERSION, MAGIC};

    /// Writes the header for a body with `flags` into `out`.
    pub fn encode_header(flags: Flags, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.push(FRAME_VERSION);
        out.push(flags.0);
    }

    /// Splits a frame into flags and body.
    pub fn decode(frame: &[u8]) -> Result<(Flags, &[u8]), DecodeFrameError> {
        if frame.len() < FRAME_HEADER_BYTES {
            return Err(DecodeFrameError::Truncated);
        }
        if frame[..2] != MAGIC {
            return Err(DecodeFrameError::Magic);
        }
        if frame[2] != FRAME_VERSION {
            return Err(DecodeFrameError::Version(frame[2]));
        }
        let flags = frame[3];
        if flags & !Flags::KNOWN != 0 {
            return Err(DecodeFrameError::Flags(flags));
        }
        Ok((Flags(flags), &frame[FRAME_HEADER_BYTES..]))
    }
}
pub(crate) use header::{decode, encode_header};

/// Seals and opens a node's frames: its keyring (if encryption is on) and cluster label, shared
/// by its tasks. The keyring can change at runtime (key rotation), so every seal and open takes
/// a short read lock (never held across an await).
#[derive(Clone)]
pub struct FrameSealer {
    keyring: Option<Arc<RwLock<Keyring>>>,
    label: Arc<[u8]>,
}

impl FrameSealer {
    /// Plain frames when `keyring` is `None`; else sealed with it, bound to `label`.
    pub fn new(keyring: Option<Keyring>, label: String) -> Self {
        FrameSealer {
            keyring: keyring.map(|k| Arc::new(RwLock::new(k))),
            label: label.into_bytes().into(),
        }
    }

    /// The keyring, to change it; `None` when encryption is off.
    pub fn keyring(&self) -> Option<&RwLock<Keyring>> {
        self.keyring.as_deref()
    }

    fn with<R>(&self, f: impl FnOnce(Security<'_>) -> R) -> R {
        match &self.keyring {
            None => f(Security::Plain),
            Some(k) => {
                let ring = k.read().expect("keyring lock");
                f(Security::Encrypted {
                    keyring: &ring,
                    label: &self.label,
                    accept_plain: false,
                })
            }
        }
    }

    /// A frame around `body`, sealed when encryption is on.
    pub fn seal(&self, body: &[u8]) -> Vec<u8> {
        self.with(|s| seal(body, s, &mut rand::thread_rng()))
    }

    /// The body of `bytes`, decrypted when encryption is on.
    pub fn open(&self, bytes: &[u8]) -> Result<Vec<u8>, OpenFrameError> {
        self.with(|s| open(bytes, s).map(|b| b.into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_golden_bytes() {
        let mut out = Vec::new();
        encode_header(Flags::ENCRYPTED, &mut out);
        assert_eq!(out, [b'D', b'C', 1, 1]);
        out.extend_from_slice(b"body");
        let (flags, body) = decode(&out).unwrap();
        assert!(flags.contains(Flags::ENCRYPTED));
        assert_eq!(body, b"body");
    }

    #[test]
    fn sealed_frames_open_only_with_key_and_label() {
        use crate::identity::{Key, KEY_BYTES};
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let ring = Keyring::new(Key::from_bytes([3; KEY_BYTES]));
        let enc = |label: &'static [u8], accept_plain| Security::Encrypted {
            keyring: &ring,
            label,
            accept_plain,
        };
        let frame = seal(b"body", enc(b"prod", false), &mut rng);
        assert_eq!(
            frame.len(),
            FRAME_HEADER_BYTES + ENCRYPTION_OVERHEAD_BYTES + 4
        );
        assert_eq!(&*open(&frame, enc(b"prod", false)).unwrap(), b"body");
        assert!(matches!(
            open(&frame, enc(b"staging", false)),
            Err(OpenFrameError::Crypto(_))
        ));
        assert_eq!(
            open(&frame, Security::Plain),
            Err(OpenFrameError::NoKeyring)
        );
        // Flipping the flags (header is authenticated) breaks the frame.
        let mut flipped = frame.clone();
        flipped[3] = 0;
        assert_eq!(
            open(&flipped, enc(b"prod", false)),
            Err(OpenFrameError::PlaintextRefused)
        );
        let plain = seal(b"body", Security::Plain, &mut rng);
        assert_eq!(&*open(&plain, Security::Plain).unwrap(), b"body");
        assert_eq!(
            open(&plain, enc(b"prod", false)),
            Err(OpenFrameError::PlaintextRefused)
        );
        assert_eq!(&*open(&plain, enc(b"prod", true)).unwrap(), b"body");
    }

    #[test]
    fn bad_frames_are_refused() {
        assert_eq!(decode(b"DC1"), Err(DecodeFrameError::Truncated));
        assert_eq!(decode(b"XX\x01\x00"), Err(DecodeFrameError::Magic));
        assert_eq!(decode(b"DC\x02\x00"), Err(DecodeFrameError::Version(2)));
        assert_eq!(decode(b"DC\x01\x80"), Err(DecodeFrameError::Flags(0x80)));
    }
}
