//! Digests for delta anti-entropy: a Bloom filter over the rows of a member table.
//!
//! A sync (see [`super::message::Sync`]) sends a digest of the sender's table instead of the
//! table; the receiver answers with the rows whose key the digest does not hold. A row's key is
//! its member's name, incarnation and state ([`row_key`]), so a row the peer has in another
//! version counts as missing too (the receiver of an older version ignores it, as it ignores a
//! stale claim). A Bloom filter has false positives: about 6 % of the rows a peer lacks are
//! left out of one answer. Every digest has its own random salt, so the next sync (with this
//! peer or another) misses other rows; nothing is missed for good.
//!
//! The layout is part of the wire format (`docs/protocol.md`): the key is
//! `mix(crc32c(name) | state << 32 ^ incarnation * 0x9E3779B97F4A7C15)`, where `mix` is the
//! SplitMix64 finaliser; the bit positions of a key are `(g_i * m) >> 32` with
//! `g_i = (h1 + i * h2) mod 2^32` for `i < hashes`, where `h = mix(key ^ salt)`, `h1` is its low
//! and `h2` its high 32 bits (made odd), and `m = 8 * bits.len()` (a multiply and a shift map a
//! 32-bit hash onto `0..m` without a division); bit `p` is bit `p % 8` of byte `p / 8`.

use super::message::MemberState;
use serde::{Deserialize, Serialize};

/// Bits of digest per row: with [`DIGEST_HASHES`] hash functions about 5.6 % false positives,
/// under a byte a row against the 15 to 100 bytes of the row itself. (8 bits and 5 hashes miss
/// 2.2 %, and at 1,000 and 2,000 nodes forming at once cost 0.3 tables more per node for no
/// faster formation.)
pub const DIGEST_BITS_PER_ROW: usize = 6;
/// Hash functions (bit positions per key) in the digests this build writes.
pub const DIGEST_HASHES: u8 = 4;
/// Most hash functions a received digest may ask for; more is refused.
pub const DIGEST_HASHES_MAX: u8 = 16;

/// A Bloom filter over row keys, salted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Mixed into every key, chosen at random per digest.
    pub salt: u64,
    /// Bit positions per key, 1 to [`DIGEST_HASHES_MAX`].
    pub hashes: u8,
    /// The filter (at least one byte).
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
    mix((u64::from(name_hash) | state << 32) ^ incarnation.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

impl Digest {
    /// A digest of `rows` keys (`keys` yields them) sized for `rows`.
    pub fn build(salt: u64, rows: usize, keys: impl Iterator<Item = u64>) -> Digest {
        let bytes = (rows * DIGEST_BITS_PER_ROW).div_ceil(8).max(8);
        let mut d = Digest {
            salt,
            hashes: DIGEST_HASHES,
            bits: vec![0; bytes],
        };
        for key in keys {
            d.insert(key);
        }
        d
    }

    /// The bit positions of `key` (see the module doc): the first and the step.
    fn start(&self, key: u64) -> (u32, u32, u64) {
        let h = mix(key ^ self.salt);
        (h as u32, (h >> 32) as u32 | 1, self.bits.len() as u64 * 8)
    }

    fn insert(&mut self, key: u64) {
        let (mut g, step, m) = self.start(key);
        for _ in 0..self.hashes {
            let p = ((u64::from(g) * m) >> 32) as usize;
            self.bits[p >> 3] |= 1 << (p & 7);
            g = g.wrapping_add(step);
        }
    }

    /// Whether the digest (probably) holds `key`; `false` is certain.
    pub fn contains(&self, key: u64) -> bool {
        let (mut g, step, m) = self.start(key);
        for _ in 0..self.hashes {
            let p = ((u64::from(g) * m) >> 32) as usize;
            if self.bits[p >> 3] & (1 << (p & 7)) == 0 {
                return false;
            }
            g = g.wrapping_add(step);
        }
        true
    }

    /// Whether a received digest can be used: one byte at least, at most `bytes_max`, and
    /// 1 to [`DIGEST_HASHES_MAX`] hash functions.
    pub fn is_valid(&self, bytes_max: usize) -> bool {
        !self.bits.is_empty()
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
        assert_eq!(d.bits.len(), 7_500);
        assert!(keys(10_000, 1).all(|k| d.contains(k)));
        let false_pos = keys(10_000, 2).filter(|&k| d.contains(k)).count();
        assert!((350..800).contains(&false_pos), "{false_pos} of 10,000");
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
            0xa2a3_091a_28b9_89da
        );
    }

    #[test]
    fn odd_digests_from_the_wire_are_refused_or_harmless() {
        let mut d = Digest::build(0, 0, std::iter::empty());
        assert!(d.is_valid(64));
        d.hashes = 0;
        assert!(!d.is_valid(64));
        d.hashes = 17;
        assert!(!d.is_valid(64));
        d.hashes = 16;
        d.bits = vec![];
        assert!(!d.is_valid(64));
        d.bits = vec![0xFF; 65];
        assert!(!d.is_valid(64));
        d.bits = vec![0xFF; 1];
        d.salt = u64::MAX;
        assert!(d.is_valid(64) && d.contains(u64::MAX));
    }
}
