//! The bytes on disk (`docs/wal.md` has the picture). All integers are little-endian.
//!
//! Segment header, 32 bytes: magic `DCOREWAL`, version u16, flags u16 (0), reserved u32 (0),
//! first index u64, CRC32C of bytes 0..24, reserved u32 (0).
//!
//! Record, 8-byte aligned: a 24-byte header (payload length u32, type u8, three reserved zero
//! bytes, index u64, CRC32C of the payload, CRC32C of header bytes 0..20), the payload, zero
//! padding to the next multiple of 8. A header of 24 zero bytes marks the end of the data (the
//! rest of a preallocated segment is zeros); no valid header is all zeros, since the CRC32C of 20
//! zero bytes is not zero.

use std::fmt;
use std::num::NonZeroU8;

/// Segment header length in bytes.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Record header length in bytes.
pub const RECORD_HEADER_LEN: usize = 24;
/// Every record starts at a multiple of this.
pub const ALIGN: usize = 8;
/// The first eight bytes of every segment.
pub const MAGIC: [u8; 8] = *b"DCOREWAL";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;

const _: () =
    assert!(SEGMENT_HEADER_LEN.is_multiple_of(ALIGN) && RECORD_HEADER_LEN.is_multiple_of(ALIGN));

/// A record's type: any non-zero byte, chosen by the user of the log (the store uses 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordType(NonZeroU8);

impl RecordType {
    /// Type 1, for logs with a single kind of record.
    pub const DATA: RecordType = RecordType(NonZeroU8::MIN);

    /// The type `v`; `None` for 0, which marks the end of the data on disk.
    pub const fn new(v: u8) -> Option<Self> {
        match NonZeroU8::new(v) {
            Some(n) => Some(RecordType(n)),
            None => None,
        }
    }

    /// The byte on disk.
    pub const fn get(self) -> u8 {
        self.0.get()
    }
}

/// Why a record (or what should have been one) is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRecord {
    /// The header's own checksum does not match: its length and index cannot be trusted.
    HeaderChecksum,
    /// The checksum matched but reserved bytes or the type are not valid for this version.
    HeaderFields,
    /// The length runs past the end of the segment.
    LengthOutOfBounds {
        /// The length the header claims.
        len: u32,
    },
    /// The index is not the next one (a hole or a repeat).
    UnexpectedIndex {
        /// The index that should be here.
        expected: u64,
        /// The index found.
        found: u64,
    },
    /// The payload's checksum does not match.
    PayloadChecksum,
    /// The padding after the payload is not zero.
    Padding,
    /// A zero header (the end of the data) followed by stray non-zero bytes.
    StrayBytes,
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadRecord::HeaderChecksum => write!(f, "record header checksum mismatch"),
            BadRecord::HeaderFields => {
                write!(f, "record header has invalid type or reserved bytes")
            }
            BadRecord::LengthOutOfBounds { len } => {
                write!(f, "record length {len} runs past the end of the segment")
            }
            BadRecord::UnexpectedIndex { expected, found } => {
                write!(f, "record index {found} where {expected} was expected")
            }
            BadRecord::PayloadChecksum => write!(f, "record payload checksum mismatch"),
            BadRecord::Padding => write!(f, "non-zero padding after the record payload"),
            BadRecord::StrayBytes => write!(f, "non-zero bytes after the end of the data"),
        }
    }
}

/// Bytes a record with a payload of `len` bytes takes on disk, padding included.
pub const fn record_len(payload_len: usize) -> usize {
    (RECORD_HEADER_LEN + payload_len).div_ceil(ALIGN) * ALIGN
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The segment header for a segment whose first record has index `first_index`.
pub fn encode_segment_header(first_index: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_index.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The first index a segment header names, or why the header is not valid.
pub fn decode_segment_header(b: &[u8]) -> Result<u64, &'static str> {
    if b.len() < SEGMENT_HEADER_LEN {
        return Err("file shorter than a segment header");
    }
    if b[0..8] != MAGIC {
        return Err("bad magic");
    }
    if crc32c::crc32c(&b[0..24]) != u32_at(b, 24) {
        return Err("segment header checksum mismatch");
    }
    if u16::from_le_bytes([b[8], b[9]]) != VERSION {
        return Err("unsupported segment version");
    }
    if b[10..16].iter().any(|&x| x != 0) || u32_at(b, 28) != 0 {
        return Err("segment header has non-zero reserved bytes");
    }
    Ok(u64_at(b, 16))
}

/// Appends one record (header, payload, padding) to `out`; `payload_crc` is the payload's
/// CRC32C, computed by the caller (outside any lock).
pub fn encode_record(
    out: &mut Vec<u8>,
    kind: RecordType,
    index: u64,
    payload: &[u8],
    payload_crc: u32,
) {
    let len = u32::try_from(payload.len()).expect("payload length checked against the limit");
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[4] = kind.get();
    h[8..16].copy_from_slice(&index.to_le_bytes());
    h[16..20].copy_from_slice(&payload_crc.to_le_bytes());
    let hcrc = crc32c::crc32c(&h[0..20]);
    h[20..24].copy_from_slice(&hcrc.to_le_bytes());
    let start = out.len();
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    out.resize(start + record_len(payload.len()), 0);
}

/// A record header whose checksum matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Payload length in bytes.
    pub len: u32,
    /// Record type.
    pub kind: RecordType,
    /// Record index.
    pub index: u64,
    /// CRC32C of the payload.
    pub payload_crc: u32,
}

/// What is at an offset of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A valid record; its payload is `seg[offset + RECORD_HEADER_LEN..][..len]`.
    Record(RecordHeader),
    /// A zero header, or too little room left for a header: the end of the data.
    End,
    /// Not a valid record.
    Bad(BadRecord),
}

/// Reads the record at `offset` of the segment bytes `seg`, checking everything: header
/// checksum first (so the length is never trusted before it is verified), then bounds, index
/// (`expected`: `None` accepts any index), payload checksum and padding.
pub fn read_slot(seg: &[u8], offset: usize, expected: Option<u64>) -> Slot {
    debug_assert!(offset.is_multiple_of(ALIGN));
    let Some(h) = seg.get(offset..offset + RECORD_HEADER_LEN) else {
        return Slot::End;
    };
    if h.iter().all(|&b| b == 0) {
        return Slot::End;
    }
    if crc32c::crc32c(&h[0..20]) != u32_at(h, 20) {
        return Slot::Bad(BadRecord::HeaderChecksum);
    }
    let Some(kind) = RecordType::new(h[4]) else {
        return Slot::Bad(BadRecord::HeaderFields);
    };
    if h[5..8] != [0, 0, 0] {
        return Slot::Bad(BadRecord::HeaderFields);
    }
    let len = u32_at(h, 0);
    let total = record_len(len as usize);
    if offset + total > seg.len() {
        return Slot::Bad(BadRecord::LengthOutOfBounds { len });
    }
    let index = u64_at(h, 8);
    if let Some(expected) = expected.filter(|&e| e != index) {
        return Slot::Bad(BadRecord::UnexpectedIndex {
            expected,
            found: index,
        });
    }
    let payload_end = offset + RECORD_HEADER_LEN + len as usize;
    let payload_crc = u32_at(h, 16);
    if crc32c::crc32c(&seg[offset + RECORD_HEADER_LEN..payload_end]) != payload_crc {
        return Slot::Bad(BadRecord::PayloadChecksum);
    }
    if seg[payload_end..offset + total].iter().any(|&b| b != 0) {
        return Slot::Bad(BadRecord::Padding);
    }
    Slot::Record(RecordHeader {
        len,
        kind,
        index,
        payload_crc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(index: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_record(
            &mut v,
            RecordType::DATA,
            index,
            payload,
            crc32c::crc32c(payload),
        );
        v
    }

    #[test]
    fn every_record_type_round_trips_and_zero_is_none() {
        assert_eq!(RecordType::new(0), None);
        for t in [1u8, 2, 7, 200, 255] {
            let kind = RecordType::new(t).unwrap();
            assert_eq!(kind.get(), t);
            let mut v = Vec::new();
            encode_record(&mut v, kind, 9, b"typed", crc32c::crc32c(b"typed"));
            assert_eq!(v[4], t, "the type byte on disk");
            match read_slot(&v, 0, Some(9)) {
                Slot::Record(h) => assert_eq!(h.kind, kind),
                other => panic!("type {t}: {other:?}"),
            }
        }
    }

    #[test]
    fn record_round_trips_and_is_aligned() {
        for n in [0usize, 1, 7, 8, 9, 100] {
            let payload = vec![0xAB; n];
            let v = one(42, &payload);
            assert_eq!(v.len(), record_len(n));
            assert_eq!(v.len() % ALIGN, 0);
            match read_slot(&v, 0, Some(42)) {
                Slot::Record(h) => {
                    assert_eq!((h.len as usize, h.index, h.kind), (n, 42, RecordType::DATA))
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn zero_bytes_are_the_end_and_every_flip_is_caught() {
        assert_eq!(read_slot(&[0u8; 64], 0, Some(1)), Slot::End);
        assert_ne!(crc32c::crc32c(&[0u8; 20]), 0);
        let v = one(7, b"hello, world");
        for bit in 0..v.len() * 8 {
            let mut w = v.clone();
            w[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(read_slot(&w, 0, Some(7)), Slot::Bad(_)),
                "bit {bit}"
            );
        }
        assert_eq!(
            read_slot(&v, 0, Some(8)),
            Slot::Bad(BadRecord::UnexpectedIndex {
                expected: 8,
                found: 7
            })
        );
    }

    #[test]
    fn segment_header_round_trips() {
        let h = encode_segment_header(1234);
        assert_eq!(decode_segment_header(&h), Ok(1234));
        let mut bad = h;
        bad[17] ^= 1;
        assert!(decode_segment_header(&bad).is_err());
    }

    /// Every reason names itself: `dcore wal verify` and the open error print these.
    #[test]
    fn every_bad_record_says_what_it_is() {
        let cases = [
            (BadRecord::HeaderChecksum, "record header checksum mismatch"),
            (
                BadRecord::HeaderFields,
                "record header has invalid type or reserved bytes",
            ),
            (
                BadRecord::LengthOutOfBounds { len: 9 },
                "record length 9 runs past the end of the segment",
            ),
            (
                BadRecord::UnexpectedIndex {
                    expected: 4,
                    found: 6,
                },
                "record index 6 where 4 was expected",
            ),
            (
                BadRecord::PayloadChecksum,
                "record payload checksum mismatch",
            ),
            (
                BadRecord::Padding,
                "non-zero padding after the record payload",
            ),
            (
                BadRecord::StrayBytes,
                "non-zero bytes after the end of the data",
            ),
        ];
        for (bad, says) in cases {
            assert_eq!(bad.to_string(), says);
        }
    }

    /// Each check of a segment header refuses with its own reason.
    #[test]
    fn segment_headers_are_refused_with_their_reason() {
        let h = encode_segment_header(7);
        assert_eq!(decode_segment_header(&h), Ok(7));
        assert_eq!(
            decode_segment_header(&h[..31]),
            Err("file shorter than a segment header")
        );
        let mut magic = h;
        magic[0] = b'X';
        assert_eq!(decode_segment_header(&magic), Err("bad magic"));
        // A field changed with its checksum fixed up: the field's own check refuses it.
        let resealed = |at: usize, v: u8| {
            let mut b = h;
            b[at] = v;
            let crc = crc32c::crc32c(&b[0..24]);
            b[24..28].copy_from_slice(&crc.to_le_bytes());
            b
        };
        assert_eq!(
            decode_segment_header(&resealed(8, 2)),
            Err("unsupported segment version")
        );
        for at in [10, 12, 15] {
            assert_eq!(
                decode_segment_header(&resealed(at, 1)),
                Err("segment header has non-zero reserved bytes")
            );
        }
        let mut tail = h;
        tail[31] = 1;
        assert_eq!(
            decode_segment_header(&tail),
            Err("segment header has non-zero reserved bytes")
        );
        let mut crc = h;
        crc[24] ^= 1;
        assert_eq!(
            decode_segment_header(&crc),
            Err("segment header checksum mismatch")
        );
    }

    /// A header whose checksum matches but whose type is 0 or reserved bytes are set.
    #[test]
    fn header_fields_are_checked_after_the_checksum() {
        let good = one(3, b"abc");
        let resealed = |at: usize, v: u8| {
            let mut b = good.clone();
            b[at] = v;
            let crc = crc32c::crc32c(&b[0..20]);
            b[20..24].copy_from_slice(&crc.to_le_bytes());
            b
        };
        for (at, v) in [(4, 0), (5, 1), (7, 1)] {
            assert_eq!(
                read_slot(&resealed(at, v), 0, Some(3)),
                Slot::Bad(BadRecord::HeaderFields),
                "byte {at} = {v}"
            );
        }
    }
}
