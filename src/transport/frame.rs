//! The frame around every packet and stream message:
//! `[magic: "DC"][frame_version: u8][flags: u8][body]`.
//!
//! `flags` bit 0 says the body is encrypted: then it is `[key_id: u8][nonce: 24][ciphertext+tag]`
//! and the plaintext is `[sent_ms: u64 big-endian][packet]`, so the time stamp that the
//! [`ReplayWindow`] checks is authenticated and hidden. Bit 1 (plain frames only) says a cluster
//! label tag follows the header: `[label_tag: 8][packet]`. Other bits are reserved and must be
//! zero (see `docs/protocol.md`).
//!
//! [`seal`] and [`open`] take the [`Security`] of one call and the time from the caller; a
//! [`FrameSealer`] owns a node's keyring, label and replay window, reads the wall clock, and
//! seals or opens with them from any task.

use super::crypto::{CryptoError, Keyring, SEAL_OVERHEAD_BYTES};
use super::replay::{ReplayError, ReplayWindow};
use crate::identity::NONCE_BYTES;
use rand::{CryptoRng, RngCore};
use std::borrow::Cow;
use std::sync::{Arc, Mutex, RwLock};

/// The two bytes every frame starts with.
pub const MAGIC: [u8; 2] = *b"DC";
/// Frame layout version.
pub const FRAME_VERSION: u8 = 1;
/// Bytes of the frame header.
pub const FRAME_HEADER_BYTES: usize = 4;
/// Bytes of the sender's time stamp at the head of a sealed plaintext.
pub const STAMP_BYTES: usize = 8;
/// Extra bytes an encrypted body takes: key id, XChaCha20 nonce, time stamp, Poly1305 tag.
pub const ENCRYPTION_OVERHEAD_BYTES: usize = SEAL_OVERHEAD_BYTES + STAMP_BYTES;
/// Bytes of the label tag a plain frame of a labelled cluster carries.
pub const LABEL_TAG_BYTES: usize = 8;
/// IPv4 + UDP header bytes, for bandwidth figures that match what an interface counts.
pub const UDP_IP_HEADER_BYTES: usize = 28;

/// Frame flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(u8);

impl Flags {
    /// The body is encrypted.
    pub const ENCRYPTED: Flags = Flags(1);
    /// A plain body starts with the cluster's label tag.
    pub const LABELLED: Flags = Flags(2);
    const KNOWN: u8 = 3;

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
    /// Shorter than the header (or than a plain frame's label tag).
    #[error("frame shorter than its header")]
    Truncated,
    /// Not our magic: another protocol or garbage.
    #[error("bad magic")]
    Magic,
    /// A frame version this build does not read.
    #[error("unsupported frame version {0}")]
    Version(u8),
    /// Reserved flag bits set, or a label tag on an encrypted frame.
    #[error("unknown flags {0:#04x}")]
    Flags(u8),
}

/// How this node protects its frames.
#[derive(Debug, Clone, Copy)]
pub enum Security<'a> {
    /// Plain frames only; an encrypted frame is refused. A non-empty `label` is carried as a
    /// tag in every frame, and a frame with another tag (or none) is refused.
    Plain {
        /// The cluster label (empty: none, and frames carry no tag).
        label: &'a [u8],
    },
    /// Seal with the keyring's primary key, binding the cluster `label` (and the frame header)
    /// as associated data. `accept_plain` lets plain frames in during a migration to encryption
    /// (their label tag is checked as for [`Security::Plain`]).
    Encrypted {
        /// The keys.
        keyring: &'a Keyring,
        /// The cluster label: two clusters with different labels never accept each other's frames.
        label: &'a [u8],
        /// Accept plain frames too (migration only).
        accept_plain: bool,
    },
}

impl Security<'_> {
    /// Plain frames, no label.
    pub const PLAIN: Security<'static> = Security::Plain { label: &[] };
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
    /// A plain frame of another cluster: its label tag (or its lack of one) does not match.
    #[error("plain frame refused: cluster label mismatch")]
    Label,
    /// A sealed frame that authenticated, but stale or seen before.
    #[error(transparent)]
    Replay(#[from] ReplayError),
}

/// What a sealed frame says about itself, for the [`ReplayWindow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// When the sender sealed it: milliseconds since the Unix epoch, by the sender's clock.
    pub sent_ms: u64,
    /// Its random nonce.
    pub nonce: [u8; NONCE_BYTES],
}

/// An opened frame: its body, and for a sealed one its stamp (not yet checked for replay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened<'f> {
    /// The packet, decrypted if it was sealed.
    pub body: Cow<'f, [u8]>,
    /// `Some` for a sealed frame.
    pub stamp: Option<Stamp>,
}

/// The tag a plain frame of a cluster labelled `label` carries: the first 8 bytes of
/// SHA-256(label). It tells clusters apart by accident, not by attack: anyone can compute it.
pub fn label_tag(label: &[u8]) -> [u8; LABEL_TAG_BYTES] {
    let digest = ring::digest::digest(&ring::digest::SHA256, label);
    let mut tag = [0u8; LABEL_TAG_BYTES];
    tag.copy_from_slice(&digest.as_ref()[..LABEL_TAG_BYTES]);
    tag
}

fn aad(header: &[u8], label: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + label.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(label);
    aad
}

/// Builds a frame around `body`: plain (with the label tag if there is a label), or sealed
/// with the time stamp `now_ms` (see [`Security`]).
pub fn seal(
    body: &[u8],
    security: Security<'_>,
    now_ms: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + ENCRYPTION_OVERHEAD_BYTES + body.len());
    match security {
        Security::Plain { label: &[] } => {
            encode_header(Flags::default(), &mut out);
            out.extend_from_slice(body);
        }
        Security::Plain { label } => {
            encode_header(Flags::LABELLED, &mut out);
            out.extend_from_slice(&label_tag(label));
            out.extend_from_slice(body);
        }
        Security::Encrypted { keyring, label, .. } => {
            encode_header(Flags::ENCRYPTED, &mut out);
            let mut plain = Vec::with_capacity(STAMP_BYTES + body.len());
            plain.extend_from_slice(&now_ms.to_be_bytes());
            plain.extend_from_slice(body);
            let sealed = keyring.seal(&aad(&out, label), &plain, rng);
            out.extend_from_slice(&sealed);
        }
    }
    out
}

/// Checks a frame and returns its body, decrypted if it was sealed, with its stamp. This does
/// not check for replay: a [`FrameSealer`] passes the stamp to its [`ReplayWindow`].
pub fn open<'f>(frame: &'f [u8], security: Security<'_>) -> Result<Opened<'f>, OpenFrameError> {
    let (flags, body) = decode(frame)?;
    match (security, flags.contains(Flags::ENCRYPTED)) {
        (Security::Plain { label }, false) => open_plain(flags, body, label),
        (Security::Plain { .. }, true) => Err(OpenFrameError::NoKeyring),
        (Security::Encrypted { accept_plain, .. }, false) if !accept_plain => {
            Err(OpenFrameError::PlaintextRefused)
        }
        (Security::Encrypted { label, .. }, false) => open_plain(flags, body, label),
        (Security::Encrypted { keyring, label, .. }, true) => {
            let header = &frame[..FRAME_HEADER_BYTES];
            open_sealed(keyring, &aad(header, label), body)
        }
    }
}

/// A plain body: its label tag checked against `label` and stripped.
fn open_plain<'f>(
    flags: Flags,
    body: &'f [u8],
    label: &[u8],
) -> Result<Opened<'f>, OpenFrameError> {
    let body = match (flags.contains(Flags::LABELLED), label.is_empty()) {
        (false, true) => body,
        (true, false) => {
            let tag = body
                .get(..LABEL_TAG_BYTES)
                .ok_or(DecodeFrameError::Truncated)?;
            if tag != label_tag(label) {
                return Err(OpenFrameError::Label);
            }
            &body[LABEL_TAG_BYTES..]
        }
        _ => return Err(OpenFrameError::Label),
    };
    Ok(Opened {
        body: Cow::Borrowed(body),
        stamp: None,
    })
}

/// A sealed body: decrypted, its time stamp split off.
fn open_sealed<'f>(
    keyring: &Keyring,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Opened<'f>, OpenFrameError> {
    let mut plain = keyring.open(aad, sealed)?;
    let nonce = sealed[1..1 + NONCE_BYTES]
        .try_into()
        .expect("an opened body holds a nonce");
    let stamp: [u8; STAMP_BYTES] = plain
        .get(..STAMP_BYTES)
        .and_then(|s| s.try_into().ok())
        .ok_or(CryptoError::Truncated)?;
    plain.drain(..STAMP_BYTES);
    Ok(Opened {
        body: Cow::Owned(plain),
        stamp: Some(Stamp {
            sent_ms: u64::from_be_bytes(stamp),
            nonce,
        }),
    })
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
        // A label tag rides on plain frames only: a sealed frame binds the label inside.
        if flags & !Flags::KNOWN != 0 || flags == Flags::KNOWN {
            return Err(DecodeFrameError::Flags(flags));
        }
        Ok((Flags(flags), &frame[FRAME_HEADER_BYTES..]))
    }
}
pub(crate) use header::{decode, encode_header};

/// Milliseconds since the Unix epoch by the system clock (0 before 1970).
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().try_into().unwrap_or(u64::MAX))
}

/// Seals and opens a node's frames: its keyring (if encryption is on), cluster label and replay
/// window, shared by its tasks. The keyring can change at runtime (key rotation), so every seal
/// and open takes a short read lock (never held across an await); an open of a sealed frame
/// also takes the replay window's lock for one admission.
#[derive(Clone)]
pub struct FrameSealer {
    keyring: Option<Arc<RwLock<Keyring>>>,
    label: Arc<[u8]>,
    replay: Arc<Mutex<ReplayWindow>>,
}

impl FrameSealer {
    /// Plain frames when `keyring` is `None`; else sealed with it. Either way bound to `label`.
    /// The replay window has its defaults ([`ReplayWindow::default`]).
    pub fn new(keyring: Option<Keyring>, label: String) -> Self {
        FrameSealer {
            keyring: keyring.map(|k| Arc::new(RwLock::new(k))),
            label: label.into_bytes().into(),
            replay: Arc::default(),
        }
    }

    /// The same, with `window` as the replay window.
    pub fn with_replay_window(self, window: ReplayWindow) -> Self {
        FrameSealer {
            replay: Arc::new(Mutex::new(window)),
            ..self
        }
    }

    /// The keyring, to change it; `None` when encryption is off.
    pub fn keyring(&self) -> Option<&RwLock<Keyring>> {
        self.keyring.as_deref()
    }

    fn with<R>(&self, f: impl FnOnce(Security<'_>) -> R) -> R {
        match &self.keyring {
            None => f(Security::Plain { label: &self.label }),
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

    /// A frame around `body`, sealed when encryption is on, stamped with the wall clock.
    pub fn seal(&self, body: &[u8]) -> Vec<u8> {
        self.seal_at(body, wall_ms())
    }

    /// [`FrameSealer::seal`] with the time stamp `now_ms`.
    pub fn seal_at(&self, body: &[u8], now_ms: u64) -> Vec<u8> {
        self.with(|s| seal(body, s, now_ms, &mut rand::thread_rng()))
    }

    /// The body of `bytes`, decrypted when encryption is on; a sealed frame must be fresh by
    /// the wall clock and not seen before (see [`ReplayWindow`]).
    pub fn open(&self, bytes: &[u8]) -> Result<Vec<u8>, OpenFrameError> {
        self.open_at(bytes, wall_ms())
    }

    /// [`FrameSealer::open`] with the clock at `now_ms`.
    pub fn open_at(&self, bytes: &[u8], now_ms: u64) -> Result<Vec<u8>, OpenFrameError> {
        let (body, stamp) =
            self.with(|s| open(bytes, s).map(|o| (o.body.into_owned(), o.stamp)))?;
        if let Some(stamp) = stamp {
            let mut window = self.replay.lock().expect("replay window lock");
            window.admit(now_ms, stamp.sent_ms, &stamp.nonce)?;
        }
        Ok(body)
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

    /// Each flag is its own bit of the header's flags byte, as the wire format gives it.
    #[test]
    fn flags_are_the_header_byte() {
        assert_eq!(Flags::default().bits(), 0);
        assert_eq!(Flags::ENCRYPTED.bits(), 1);
        assert_eq!(Flags::LABELLED.bits(), 2);
        let mut out = Vec::new();
        encode_header(Flags::LABELLED, &mut out);
        assert_eq!(out[3], Flags::LABELLED.bits());
    }

    /// The stamp's clock is the system's wall clock, in milliseconds since 1970.
    #[test]
    fn wall_ms_reads_the_system_clock() {
        let ms = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        };
        let before = ms();
        let got = wall_ms();
        assert!(before <= got && got <= ms(), "{before} {got}");
    }

    /// The keyring a sealer shares is the one key rotation changes: a key made primary through
    /// it seals the next frame.
    #[test]
    fn a_sealers_keyring_is_the_one_it_seals_with() {
        assert!(FrameSealer::new(None, String::new()).keyring().is_none());
        let key = |b: u8| crate::identity::Key::from_bytes([b; crate::identity::KEY_BYTES]);
        let sealer = FrameSealer::new(Some(Keyring::new(key(1))), String::new());
        let ring = sealer.keyring().expect("encryption is on");
        ring.write().unwrap().install(key(2)).unwrap();
        ring.write().unwrap().use_key(&key(2)).unwrap();
        let frame = sealer.seal_at(b"body", NOW);
        let only_new = FrameSealer::new(Some(Keyring::new(key(2))), String::new());
        assert_eq!(only_new.open_at(&frame, NOW).unwrap(), b"body");
    }

    const NOW: u64 = 1_700_000_000_000;

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
        let frame = seal(b"body", enc(b"prod", false), NOW, &mut rng);
        assert_eq!(
            frame.len(),
            FRAME_HEADER_BYTES + ENCRYPTION_OVERHEAD_BYTES + 4
        );
        let opened = open(&frame, enc(b"prod", false)).unwrap();
        assert_eq!(&*opened.body, b"body");
        let stamp = opened.stamp.unwrap();
        assert_eq!(stamp.sent_ms, NOW);
        assert_eq!(stamp.nonce[..], frame[5..5 + NONCE_BYTES]);
        assert!(matches!(
            open(&frame, enc(b"staging", false)),
            Err(OpenFrameError::Crypto(_))
        ));
        assert_eq!(
            open(&frame, Security::PLAIN),
            Err(OpenFrameError::NoKeyring)
        );
        // Flipping the flags (header is authenticated) breaks the frame.
        let mut flipped = frame.clone();
        flipped[3] = 0;
        assert_eq!(
            open(&flipped, enc(b"prod", false)),
            Err(OpenFrameError::PlaintextRefused)
        );
        let plain = seal(b"body", Security::PLAIN, NOW, &mut rng);
        assert_eq!(plain, b"DC\x01\x00body", "no label: the frame of old");
        assert_eq!(&*open(&plain, Security::PLAIN).unwrap().body, b"body");
        assert_eq!(
            open(&plain, enc(b"prod", false)),
            Err(OpenFrameError::PlaintextRefused)
        );
        assert_eq!(
            open(&plain, enc(b"prod", true)),
            Err(OpenFrameError::Label),
            "a migrating node checks the label of plain frames too"
        );
        assert_eq!(&*open(&plain, enc(b"", true)).unwrap().body, b"body");
    }

    #[test]
    fn plain_frames_carry_and_check_the_label_tag() {
        let mut rng = rand::thread_rng();
        let prod = Security::Plain { label: b"prod" };
        let frame = seal(b"body", prod, NOW, &mut rng);
        assert_eq!(frame[..4], [b'D', b'C', 1, 2]);
        assert_eq!(frame[4..12], label_tag(b"prod"));
        assert_eq!(&frame[12..], b"body");
        // SHA-256 of the empty string starts e3b0c442 98fc1c14.
        assert_eq!(
            label_tag(b""),
            [0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14]
        );
        assert_eq!(&*open(&frame, prod).unwrap().body, b"body");
        let staging = Security::Plain { label: b"staging" };
        assert_eq!(open(&frame, staging), Err(OpenFrameError::Label));
        assert_eq!(open(&frame, Security::PLAIN), Err(OpenFrameError::Label));
        let unlabelled = seal(b"body", Security::PLAIN, NOW, &mut rng);
        assert_eq!(open(&unlabelled, prod), Err(OpenFrameError::Label));
        assert_eq!(
            open(&frame[..10], prod),
            Err(OpenFrameError::Header(DecodeFrameError::Truncated))
        );
    }

    #[test]
    fn a_sealer_refuses_a_replayed_or_stale_frame() {
        use crate::identity::{Key, KEY_BYTES};
        let ring = || Some(Keyring::new(Key::from_bytes([3; KEY_BYTES])));
        let a = FrameSealer::new(ring(), "prod".into());
        let b = FrameSealer::new(ring(), "prod".into())
            .with_replay_window(ReplayWindow::new(std::time::Duration::from_secs(30), 100));
        let frame = a.seal_at(b"body", NOW);
        assert_eq!(b.open_at(&frame, NOW + 10).unwrap(), b"body");
        assert_eq!(
            b.open_at(&frame, NOW + 20),
            Err(OpenFrameError::Replay(ReplayError::Replayed))
        );
        let old = a.seal_at(b"body", NOW - 30_001);
        assert!(matches!(
            b.open_at(&old, NOW),
            Err(OpenFrameError::Replay(ReplayError::Stale { .. }))
        ));
        // A clone shares the window: the driver and any other task see one history.
        let fresh = a.seal_at(b"x", NOW);
        assert_eq!(b.clone().open_at(&fresh, NOW).unwrap(), b"x");
        assert!(b.open_at(&fresh, NOW).is_err());
        // Plain frames have no stamp and no window.
        let plain = FrameSealer::new(None, String::new());
        let f = plain.seal_at(b"p", 0);
        assert_eq!(plain.open_at(&f, NOW).unwrap(), b"p");
        assert_eq!(plain.open_at(&f, NOW).unwrap(), b"p");
    }

    #[test]
    fn bad_frames_are_refused() {
        assert_eq!(decode(b"DC1"), Err(DecodeFrameError::Truncated));
        assert_eq!(decode(b"XX\x01\x00"), Err(DecodeFrameError::Magic));
        assert_eq!(decode(b"DC\x02\x00"), Err(DecodeFrameError::Version(2)));
        assert_eq!(decode(b"DC\x01\x80"), Err(DecodeFrameError::Flags(0x80)));
        assert_eq!(decode(b"DC\x01\x03"), Err(DecodeFrameError::Flags(0x03)));
    }
}
