//! Digests for delta anti-entropy: a Bloom filter over the rows of a member table.
//!
//! A sync (see [`super::message::Sync`]) sends a digest of the sender's table instead of the
//! table; the receiver answers with the rows whose key the digest does not hold. A row's key is
//! its member's name, incarnation and state ([`row_key`]), so a row the peer has in another
//! version counts as missing too (the receiver of an older version ignores it, as it ignores a
//! stale claim). A Bloom filter has false positives: about 7 % of the rows a peer lacks are
//! left out of one answer. Every digest has its own random salt, so the next sync (with this
//! peer or another) misses other rows; nothing is missed for good.
//!
//! The filter is blocked: each key sets and tests bits of one 64-bit block only, so a lookup
//! is one hash and one word (the scan of a table against a peer's digest is the sync's main
//! cost). The layout is part of the wire format (`docs/protocol.md`): the key is
//! `(crc32c(name) | state << 32) ^ incarnation * 0x9E3779B97F4A7C15`; with `h = mix(key ^ salt)`
//! (`mix` is the SplitMix64 finaliser), the key's block is `((h >> 32) * blocks) >> 32` (a
//! multiply and a shift map 32 bits onto `0..blocks` without a division), where `blocks` is
//! the number of whole 8-byte blocks in the filter, and it sets bit `(h >> 6i) & 63` of that
//! block for `i < hashes`; a block is 8 bytes, little-endian (bytes past the last whole block,
//! which only an older build writes, are ignored).

use super::message::MemberState;
use serde::{Deserialize, Serialize};

/// Bits of digest per row: with [`DIGEST_HASHES`] bits a key in 64-bit blocks about 7 % false
/// positives, under a byte a row against the 15 to 100 bytes of the row itself. (8 bits and 5
/// hashes in an unblocked filter miss 2.2 %, and at 1,000 and 2,000 nodes forming at once cost
/// 0.3 tables more per node for no faster formation.)
pub const DIGEST_BITS_PER_ROW: usize = 6;
/// Bits a key sets in its block, in the digests this build writes.
pub const DIGEST_HASHES: u8 = 3;
/// Most bits a key a received digest may ask for (five 6-bit positions stay clear of the 32
/// bits that pick the block); more is refused.
pub const DIGEST_HASHES_MAX: u8 = 5;

/// A Bloom filter over row keys, salted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Mixed into every key, chosen at random per digest.
    pub salt: u64,
    /// Bits per key, 1 to [`DIGEST_HASHES_MAX`].
    pub hashes: u8,
    /// The filter: whole 8-byte blocks, one at least (see [`Digest::is_valid`]).
    pub bits: Vec<u8>,
}

/// SplitMix64's finaliser: a bijection on `u64` that spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of a member row in a digest.
pub fn row_key(name: &str, incarnation: u64, state: MemberState) -> u64 {
    key_of(name_hash(name), incarnation, state)
}

/// The part of a row key that depends on the name alone: tables keep it per row.
pub(crate) fn name_hash(name: &str) -> u32 {
    crc32c::crc32c(name.as_bytes())
}

/// [`row_key`] from the name's [`name_hash`].
pub(crate) fn key_of(name_hash: u32, incarnation: u64, state: MemberState) -> u64 {
    let state = match state {
        MemberState::Alive => 0u64,
        MemberState::Suspect => 1,
        MemberState::Dead => 2,
        MemberState::Left => 3,
    };
    (u64::from(name_hash) | state << 32) ^ incarnation.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl Digest {
    /// A digest of `rows` keys (`keys` yields them) sized for `rows`.
    pub fn build(salt: u64, rows: usize, keys: impl Iterator<Item = u64>) -> Digest {
        let mut d = Digest {
            salt,
            hashes: DIGEST_HASHES,
            bits: vec![0; Digest::bytes_for(rows)],
        };
        for key in keys {
            let (at, mask) = d.place(key);
            let word = d.word(at) | mask;
            d.bits[at..at + 8].copy_from_slice(&word.to_le_bytes());
        }
        d
    }

    /// Bytes of the digest this build writes for `rows` rows: whole 64-bit blocks, one at least.
    pub fn bytes_for(rows: usize) -> usize {
        rows.saturating_mul(DIGEST_BITS_PER_ROW).div_ceil(64).max(1) * 8
    }

    /// Where `key` lives (see the module doc): the byte offset of its 64-bit block and the bits
    /// it sets there.
    fn place(&self, key: u64) -> (usize, u64) {
        let h = mix(key ^ self.salt);
        let blocks = (self.bits.len() / 8) as u64;
        let at = (((h >> 32) * blocks) >> 32) as usize * 8;
        let mask = (0..u32::from(self.hashes)).fold(0u64, |m, i| m | 1 << ((h >> (6 * i)) & 63));
        (at, mask)
    }

    fn word(&self, at: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.bits[at..at + 8]);
        u64::from_le_bytes(w)
    }

    /// Whether the digest (probably) holds `key`; `false` is certain. A digest without a
    /// whole block holds nothing.
    pub fn contains(&self, key: u64) -> bool {
        if self.bits.len() < 8 {
            return false;
        }
        let (at, mask) = self.place(key);
        self.word(at) & mask == mask
    }

    /// Whether a received digest can be used: one 64-bit block at least, at most `bytes_max`
    /// bytes, and 1 to [`DIGEST_HASHES_MAX`] bits per key. Bytes past the last whole block are
    /// ignored: a digest from a build before blocked filters (any length from 8 bytes, 4 hash
    /// functions) is read as a blocked one, holds nearly nothing, and is answered with nearly
    /// every row, as a full-state push-pull would be.
    pub fn is_valid(&self, bytes_max: usize) -> bool {
        self.bits.len() >= 8
            && self.bits.len() <= bytes_max
            && (1..=DIGEST_HASHES_MAX).contains(&self.hashes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: u64, inc: u64) -> impl Iterator<Item = u64> {
        (0..n).map(move |i| row_key(&format!("node-{i}"), inc, MemberState::Alive))
    }

    #[test]
    fn holds_what_was_put_in_and_little_else() {
        let d = Digest::build(7, 10_000, keys(10_000, 1));
        assert_eq!(d.bits.len(), 7_504, "whole 64-bit blocks");
        assert!(keys(10_000, 1).all(|k| d.contains(k)));
        let false_pos = keys(10_000, 2).filter(|&k| d.contains(k)).count();
        assert!((550..900).contains(&false_pos), "{false_pos} of 10,000");
    }

    #[test]
    fn salts_miss_different_rows() {
        let a = Digest::build(1, 1_000, keys(1_000, 1));
        let b = Digest::build(2, 1_000, keys(1_000, 1));
        let missed_by_both = keys(1_000, 2)
            .filter(|&k| a.contains(k) && b.contains(k))
            .count();
        assert!(missed_by_both <= 12, "{missed_by_both}");
    }

    #[test]
    fn the_key_tells_versions_and_states_apart() {
        let k = row_key("a", 3, MemberState::Alive);
        assert_ne!(k, row_key("a", 4, MemberState::Alive));
        assert_ne!(k, row_key("a", 3, MemberState::Suspect));
        assert_ne!(k, row_key("b", 3, MemberState::Alive));
        // Part of the wire format: a change here breaks syncs with older nodes.
        assert_eq!(
            row_key("node-1", 1, MemberState::Alive),
            0x9e37_79b9_8c27_3ceb
        );
    }

    /// The layout is part of the wire format (the module doc, `docs/protocol.md`): a digest
    /// this build writes must be read the same by every other build.
    #[test]
    fn the_layout_is_the_documented_one() {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        // The expected values were computed apart from this code, by a few lines of Python that
        // follow the module doc's formula.
        assert_eq!(mix(1), 0x5692_161d_100b_05e5, "SplitMix64's finaliser");
        let d = Digest::build(0x0123_4567_89AB_CDEF, 100, keys(5, 1));
        assert_eq!(
            hex(&d.bits),
            "00000000000000000000000200040080000000000000000002400000000000040800001001340000\
             08000000004000200000000000000000000000000000000000000000000000000000000000000000"
        );
        // node-3's three bits under salt 7 are 26, 26 and 13: a bit picked twice is set once.
        let d = Digest::build(7, 1, [row_key("node-3", 1, MemberState::Alive)].into_iter());
        assert_eq!(d.bits, 0x0400_2000u64.to_le_bytes());
        let mut five = Digest::build(42, 20, std::iter::empty());
        five.hashes = DIGEST_HASHES_MAX;
        assert_eq!(
            five.place(row_key("node-1", 7, MemberState::Left)),
            (8, 1_443_403_680_639_352_896)
        );
    }

    #[test]
    fn odd_digests_from_the_wire_are_refused_or_harmless() {
        let mut d = Digest::build(0, 0, std::iter::empty());
        assert!(d.is_valid(64));
        d.hashes = 0;
        assert!(!d.is_valid(64));
        d.hashes = DIGEST_HASHES_MAX + 1;
        assert!(!d.is_valid(64));
        d.hashes = DIGEST_HASHES_MAX;
        d.bits = vec![];
        assert!(!d.is_valid(64));
        d.bits = vec![0xFF; 72];
        assert!(!d.is_valid(64), "too long");
        d.bits = vec![0xFF; 64];
        assert!(d.is_valid(64), "as long as allowed");
        d.bits = vec![0xFF; 7];
        assert!(!d.is_valid(64), "not one whole block");
        assert!(!d.contains(1), "and holds nothing");
        d.bits = vec![0xFF; 9];
        d.bits[8] = 0;
        assert!(
            d.is_valid(64) && d.contains(1),
            "bytes past the last block are ignored"
        );
        d.bits = vec![0xFF; 8];
        d.salt = u64::MAX;
        assert!(d.is_valid(64) && d.contains(u64::MAX) && d.contains(0));
        d.bits = vec![0; 64];
        assert!(
            (0..1_000).all(|k| !d.contains(k)),
            "an empty filter holds nothing"
        );
    }
}
