//! [`WalReader`]: the records of a log from an index on, each one verified again as it is read.

use super::format::{decode_segment_header, read_slot, record_len, RecordType, Slot};
use super::format::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::fs::Fs;
use super::recovery::Corruption;
use super::segment::{read_segment, SegmentRef};
use super::WalError;
use std::sync::Arc;

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its index.
    pub index: u64,
    /// Its type.
    pub kind: RecordType,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Iterator over records `from..=last` (the acknowledged ones when it was made). Reads one
/// segment at a time into memory. After the first error it returns `None`.
#[derive(Debug)]
pub struct WalReader {
    fs: Arc<dyn Fs>,
    segments: std::vec::IntoIter<SegmentRef>,
    current: Option<SegmentRef>,
    buf: Vec<u8>,
    offset: usize,
    next: u64,
    last: u64,
    done: bool,
}

impl WalReader {
    pub(crate) fn new(fs: Arc<dyn Fs>, segments: Vec<SegmentRef>, from: u64, last: u64) -> Self {
        WalReader {
            fs,
            segments: segments.into_iter(),
            current: None,
            buf: Vec::new(),
            offset: 0,
            next: from,
            last,
            done: false,
        }
    }

    fn corrupt(&self, offset: usize, what: Corruption) -> WalError {
        WalError::Corrupt {
            path: self
                .current
                .as_ref()
                .map(|s| s.path.clone())
                .unwrap_or_default(),
            offset: offset as u64,
            what,
        }
    }

    /// Loads the next segment; `Ok(false)` if there is none.
    fn load_next(&mut self) -> Result<bool, WalError> {
        let Some(seg) = self.segments.next() else {
            return Ok(false);
        };
        read_segment(&*self.fs, &seg.path, Some(seg.data_end), &mut self.buf)?;
        self.current = Some(seg);
        let first = decode_segment_header(&self.buf)
            .map_err(|reason| self.corrupt(0, Corruption::SegmentHeader { reason }))?;
        self.offset = SEGMENT_HEADER_LEN;
        let mut index = first;
        // Skip the records before the one asked for (a segment has no index of offsets).
        while index < self.next {
            let h = self.record_at(index)?;
            self.offset += record_len(h.len as usize);
            index += 1;
        }
        Ok(true)
    }

    fn record_at(&self, index: u64) -> Result<super::format::RecordHeader, WalError> {
        match read_slot(&self.buf, self.offset, Some(index)) {
            Slot::Record(h) => Ok(h),
            Slot::Bad(reason) => Err(self.corrupt(
                self.offset,
                Corruption::Record {
                    reason,
                    expected_index: index,
                    valid_record_after: None,
                },
            )),
            Slot::End => Err(self.corrupt(
                self.offset,
                Corruption::Record {
                    reason: super::BadRecord::StrayBytes,
                    expected_index: index,
                    valid_record_after: None,
                },
            )),
        }
    }

    fn read_one(&mut self) -> Result<Entry, WalError> {
        loop {
            if self.current.is_some() {
                match read_slot(&self.buf, self.offset, Some(self.next)) {
                    Slot::End => {} // end of this segment's records: on to the next one
                    _ => break,
                }
            }
            if !self.load_next()? {
                let what = Corruption::Record {
                    reason: super::BadRecord::StrayBytes,
                    expected_index: self.next,
                    valid_record_after: None,
                };
                return Err(self.corrupt(self.offset, what));
            }
        }
        let h = self.record_at(self.next)?;
        let start = self.offset + RECORD_HEADER_LEN;
        let payload = self.buf[start..start + h.len as usize].to_vec();
        self.offset += record_len(h.len as usize);
        Ok(Entry {
            index: h.index,
            kind: h.kind,
            payload,
        })
    }
}

impl Iterator for WalReader {
    type Item = Result<Entry, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.next > self.last {
            return None;
        }
        let r = self.read_one();
        match &r {
            Ok(_) => self.next += 1,
            Err(_) => self.done = true,
        }
        Some(r)
    }
}
