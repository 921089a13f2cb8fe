//! Segment files: names, listing, and creation (temp file, zero-filled to its full size, flushed,
//! renamed into place, directory flushed), so a segment with a final name is always complete.

use super::format::{encode_segment_header, SEGMENT_HEADER_LEN};
use super::fs::{Fs, FsFile};
use super::WalError;
use std::path::{Path, PathBuf};

/// Suffix of segment files.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// Suffix of a segment being created (removed on open: it never held acknowledged records).
pub const TEMP_SUFFIX: &str = ".wal.tmp";
/// Zeros are written in chunks of this size when a segment is preallocated or a tail is cleared.
pub const ZERO_CHUNK: usize = 1 << 20;

/// A segment of the log: the index of its first record and its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRef {
    /// Index of the segment's first record (also in its name and header).
    pub first: u64,
    /// The file.
    pub path: PathBuf,
    /// End of its records (a byte offset): known for sealed segments, updated for the active one.
    pub data_end: u64,
}

/// `{first_index:020}.wal`.
pub fn segment_name(first: u64) -> String {
    format!("{first:020}{SEGMENT_SUFFIX}")
}

/// The first index a segment file name carries, if `path` names a segment.
pub fn parse_segment_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, sorted by first index.
pub fn list_segments(fs: &dyn Fs, dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let files = fs
        .list_files(dir)
        .map_err(|e| WalError::io("list", dir, e))?;
    let mut segs: Vec<(u64, PathBuf)> = files
        .into_iter()
        .filter_map(|p| parse_segment_name(&p).map(|i| (i, p)))
        .collect();
    segs.sort();
    Ok(segs)
}

/// Leftover temp segments in `dir`.
pub fn temp_files(fs: &dyn Fs, dir: &Path) -> Result<Vec<PathBuf>, WalError> {
    let files = fs
        .list_files(dir)
        .map_err(|e| WalError::io("list", dir, e))?;
    Ok(files
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(TEMP_SUFFIX))
        })
        .collect())
}

/// Writes zeros over `[from, to)` of `file`, in chunks from the END backwards, so that a crash
/// part-way leaves a prefix of the old contents followed by zeros (a shorter valid log or a torn
/// tail), never a hole followed by old records. Each chunk is flushed when `flush_each`.
pub fn zero_range(
    file: &dyn FsFile,
    path: &Path,
    from: u64,
    to: u64,
    flush_each: bool,
) -> Result<(), WalError> {
    let zeros = vec![0u8; ZERO_CHUNK];
    let mut end = to;
    while end > from {
        let start = end.saturating_sub(ZERO_CHUNK as u64).max(from);
        let n = (end - start) as usize;
        file.write_all_at(&zeros[..n], start)
            .map_err(|e| WalError::io("zero", path, e))?;
        if flush_each {
            file.sync_data()
                .map_err(|e| WalError::io("fsync", path, e))?;
        }
        end = start;
    }
    Ok(())
}

/// Creates the segment whose first record will be `first`, `size` bytes long, zero-filled and
/// flushed, under its final name; the directory is flushed too. Returns the open file.
pub fn create_segment(
    fs: &dyn Fs,
    dir: &Path,
    first: u64,
    size: u64,
) -> Result<Box<dyn FsFile>, WalError> {
    let path = dir.join(segment_name(first));
    let tmp = dir.join(format!("{}.tmp", segment_name(first)));
    if fs.list_files(dir).is_ok_and(|files| files.contains(&tmp)) {
        fs.remove_file(&tmp)
            .map_err(|e| WalError::io("remove", &tmp, e))?;
    }
    let file = fs
        .create_new(&tmp)
        .map_err(|e| WalError::io("create", &tmp, e))?;
    let filled = fill(&*file, &tmp, first, size);
    if let Err(e) = filled {
        let _ = fs.remove_file(&tmp); // best effort: open removes leftovers anyway
        return Err(e);
    }
    fs.rename(&tmp, &path)
        .map_err(|e| WalError::io("rename", &tmp, e))?;
    fs.sync_dir(dir)
        .map_err(|e| WalError::io("fsync dir", dir, e))?;
    Ok(file)
}

fn fill(file: &dyn FsFile, path: &Path, first: u64, size: u64) -> Result<(), WalError> {
    debug_assert!(size >= SEGMENT_HEADER_LEN as u64);
    let mut chunk = vec![0u8; ZERO_CHUNK];
    chunk[..SEGMENT_HEADER_LEN].copy_from_slice(&encode_segment_header(first));
    let mut at = 0u64;
    while at < size {
        let n = (size - at).min(ZERO_CHUNK as u64) as usize;
        file.write_all_at(&chunk[..n], at)
            .map_err(|e| WalError::io("preallocate", path, e))?;
        if at == 0 {
            chunk[..SEGMENT_HEADER_LEN].fill(0);
        }
        at += n as u64;
    }
    file.sync_data().map_err(|e| WalError::io("fsync", path, e))
}

/// Reads a whole segment file (at most `limit` bytes of it) into `buf`.
pub fn read_segment(
    fs: &dyn Fs,
    path: &Path,
    limit: Option<u64>,
    buf: &mut Vec<u8>,
) -> Result<(), WalError> {
    let file = fs
        .open_read(path)
        .map_err(|e| WalError::io("open", path, e))?;
    let len = file.size().map_err(|e| WalError::io("stat", path, e))?;
    let len = limit.map_or(len, |l| l.min(len));
    buf.clear();
    buf.resize(len as usize, 0);
    file.read_exact_at(buf, 0)
        .map_err(|e| WalError::io("read", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        let n = segment_name(42);
        assert_eq!(n, "00000000000000000042.wal");
        assert_eq!(parse_segment_name(Path::new(&n)), Some(42));
        for other in [
            "42.wal",
            "0000000000000000004x.wal",
            "LOCK",
            "00000000000000000042.wal.tmp",
        ] {
            assert_eq!(parse_segment_name(Path::new(other)), None, "{other}");
        }
    }
}
