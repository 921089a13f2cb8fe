//! The frame around every packet and stream message:
//! `[magic: "DC"][frame_version: u8][flags: u8][body]`.
//!
//! `flags` bit 0 says the body is encrypted (then it is `[key_id: u8][nonce: 24][ciphertext+tag]`,
//! see `docs/protocol.md`); other bits are reserved and must be zero.

/// The two bytes every frame starts with.
pub const MAGIC: [u8; 2] = *b"DC";
/// Frame layout version.
pub const FRAME_VERSION: u8 = 1;
/// Bytes of the frame header.
pub const FRAME_HEADER_BYTES: usize = 4;
/// Extra bytes an encrypted body takes: key id, XChaCha20 nonce, Poly1305 tag.
pub const ENCRYPTION_OVERHEAD_BYTES: usize = 1 + 24 + 16;
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
    fn bad_frames_are_refused() {
        assert_eq!(decode(b"DC1"), Err(DecodeFrameError::Truncated));
        assert_eq!(decode(b"XX\x01\x00"), Err(DecodeFrameError::Magic));
        assert_eq!(decode(b"DC\x02\x00"), Err(DecodeFrameError::Version(2)));
        assert_eq!(decode(b"DC\x01\x80"), Err(DecodeFrameError::Flags(0x80)));
    }
}
