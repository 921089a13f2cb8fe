//! `dcore wal repair`: truncate a log at its first problem, on request only, keeping a copy of
//! every file it changes or removes. The log itself never does this to corruption in the middle.

use super::fs::{make_private_dir, Fs};
use super::recovery::{scan, Problem};
use super::segment::{list_segments, zero_range};
use super::writer::lock_dir;
use super::WalError;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What a repair did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    /// The problem found (`None`: the log was clean and nothing changed).
    pub problem: Option<Problem>,
    /// Where the copies of the changed and removed segments went.
    pub backup_dir: Option<PathBuf>,
    /// Segments removed (the one with the problem if its header was bad, and all later ones).
    pub segments_removed: Vec<PathBuf>,
    /// Bytes zeroed in the segment with the problem.
    pub bytes_zeroed: u64,
    /// Index of the last record kept (`None`: no record left).
    pub last_index_kept: Option<u64>,
}

/// Truncates the log in `dir` at its first problem (with `dry_run`, only says what it would
/// do). Before changing anything it copies the segment with the problem and every later one to
/// `backup_dir` (created). Takes the directory lock, so it refuses a log that is open.
pub fn repair(
    fs: &dyn Fs,
    dir: &Path,
    backup_dir: &Path,
    dry_run: bool,
) -> Result<RepairReport, WalError> {
    let _lock = lock_dir(dir)?;
    let report = scan(fs, dir, &mut |_| {})?;
    let Some(problem) = report.problem.clone() else {
        let last_index_kept = report.last_index();
        return Ok(RepairReport {
            problem: None,
            backup_dir: None,
            segments_removed: vec![],
            bytes_zeroed: 0,
            last_index_kept,
        });
    };
    let segs = list_segments(fs, dir)?;
    let at = segs
        .iter()
        .position(|(_, p)| *p == problem.path)
        .expect("the problem is in a listed segment");
    // A problem at offset 0 is the segment header (or its place in the sequence): the whole
    // segment goes. Otherwise the segment keeps its records before the problem.
    let whole = problem.offset == 0;
    let removed: Vec<PathBuf> = segs[at + usize::from(!whole)..]
        .iter()
        .map(|(_, p)| p.clone())
        .collect();
    let zeroed = if whole {
        0
    } else {
        problem.garbage_end - problem.offset
    };
    let kept = report
        .segments
        .iter()
        .take(at + usize::from(!whole))
        .rev()
        .find_map(|s| s.last_index());
    let out = RepairReport {
        problem: Some(problem.clone()),
        backup_dir: Some(backup_dir.to_path_buf()),
        segments_removed: removed.clone(),
        bytes_zeroed: zeroed,
        last_index_kept: kept,
    };
    if dry_run {
        return Ok(out);
    }
    backup(fs, &segs[at..], backup_dir)?;
    for p in removed.iter().rev() {
        fs.remove_file(p)
            .map_err(|e| WalError::io("remove", p, e))?;
        fs.sync_dir(dir)
            .map_err(|e| WalError::io("fsync dir", dir, e))?;
    }
    if !whole {
        let file = fs
            .open_write(&problem.path)
            .map_err(|e| WalError::io("open", &problem.path, e))?;
        zero_range(
            &*file,
            &problem.path,
            problem.offset,
            problem.garbage_end,
            false,
        )?;
        file.sync_data()
            .map_err(|e| WalError::io("fsync", &problem.path, e))?;
    }
    Ok(out)
}

fn backup(fs: &dyn Fs, segs: &[(u64, PathBuf)], to: &Path) -> Result<(), WalError> {
    make_private_dir(fs, to).map_err(|e| WalError::io("create dir", to, e))?;
    for (_, p) in segs {
        let name = p.file_name().expect("a segment has a file name");
        let dest = to.join(name);
        let src = fs.open_read(p).map_err(|e| WalError::io("open", p, e))?;
        let len = src.size().map_err(|e| WalError::io("stat", p, e))?;
        let mut buf = vec![0u8; len as usize];
        src.read_exact_at(&mut buf, 0)
            .map_err(|e| WalError::io("read", p, e))?;
        let out = fs
            .create_new(&dest)
            .map_err(|e| WalError::io("create", &dest, e))?;
        out.write_all_at(&buf, 0)
            .and_then(|()| out.sync_data())
            .map_err(|e| WalError::io("write", &dest, e))?;
    }
    fs.sync_dir(to)
        .map_err(|e| WalError::io("fsync dir", to, e))
}
