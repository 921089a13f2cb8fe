//! The write-ahead log on disk: its segment files, every record of a log, and a filesystem that
//! fails when a test says.

use distributed_core::persistence::wal::fs::Fs;
use distributed_core::persistence::wal::Wal;
use distributed_core::testing::{FaultPlan, FaultyFs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How many segment files (`*.wal`) the log directory `dir` holds.
pub fn wal_segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "wal")
        })
        .count()
}

/// Every record of `log`, first to last: (index, payload).
pub fn wal_records(log: &Wal) -> Vec<(u64, Vec<u8>)> {
    log.read_from(log.first_index())
        .unwrap()
        .map(|r| r.map(|e| (e.index, e.payload)).unwrap())
        .collect()
}

/// A filesystem that fails as its plan says, and the plan (to steer it while it is in use).
pub fn faulty_fs() -> (Arc<FaultPlan>, Arc<dyn Fs>) {
    let plan = Arc::new(FaultPlan::default());
    let fs: Arc<dyn Fs> = Arc::new(FaultyFs::new(plan.clone()));
    (plan, fs)
}

/// Paths with their permission bits (`mode & 0o777`).
pub type Modes = Vec<(PathBuf, u32)>;

/// Every directory (`dir` included) and every file under `dir` with its permission bits, in
/// walk order.
pub fn modes_under(dir: &Path) -> (Modes, Modes) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let (mut dirs, mut files) = (vec![(dir.to_path_buf(), mode(dir))], Vec::new());
    let mut i = 0;
    while i < dirs.len() {
        let d = dirs[i].0.clone();
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push((p.clone(), mode(&p)));
            } else {
                files.push((p.clone(), mode(&p)));
            }
        }
        i += 1;
    }
    (dirs, files)
}
