//! A filesystem that injects faults: a disk that fills up, an fsync that fails, an fsync that
//! is slow. For the WAL's and the store's tests (feature `testing`).

use super::fs::{Fs, FsFile, OsFs};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
use std::time::Duration;

/// The faults a [`FaultyFs`] injects; shared, adjustable while the log runs. Nothing is injected
/// by default.
#[derive(Debug)]
pub struct FaultPlan {
    /// Bytes that may still be written before the disk is "full"; a write that crosses the limit
    /// writes the bytes that fit and then fails with `StorageFull`, as a real full disk does.
    write_budget: AtomicU64,
    /// The next flush (file or directory) fails with an I/O error.
    fail_next_sync: AtomicBool,
    /// Every flush sleeps this long first (microseconds), to model a slow disk.
    sync_delay_us: AtomicU64,
    syncs: AtomicU64,
    sync_failures: AtomicU64,
    /// Every directory flushed successfully, in order.
    synced_dirs: Mutex<Vec<PathBuf>>,
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan {
            write_budget: AtomicU64::new(u64::MAX),
            fail_next_sync: AtomicBool::new(false),
            sync_delay_us: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            sync_failures: AtomicU64::new(0),
            synced_dirs: Mutex::new(Vec::new()),
        }
    }
}

impl FaultPlan {
    /// The disk holds only `bytes` more bytes (`u64::MAX`: unlimited).
    pub fn set_write_budget(&self, bytes: u64) {
        self.write_budget.store(bytes, Ordering::SeqCst);
    }
    /// The next flush fails (once).
    pub fn fail_next_sync(&self) {
        self.fail_next_sync.store(true, Ordering::SeqCst);
    }
    /// Every flush takes at least `delay`.
    pub fn set_sync_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.sync_delay_us.store(us, Ordering::SeqCst);
    }
    /// Flushes attempted so far (successful or not).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }
    /// The directories flushed so far (successfully), in order.
    pub fn synced_dirs(&self) -> Vec<PathBuf> {
        lock(&self.synced_dirs).clone()
    }
    /// Flushes failed on purpose so far.
    pub fn sync_failures(&self) -> u64 {
        self.sync_failures.load(Ordering::SeqCst)
    }

    fn sync(&self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        let us = self.sync_delay_us.load(Ordering::SeqCst);
        if us > 0 {
            std::thread::sleep(Duration::from_micros(us));
        }
        if self.fail_next_sync.swap(false, Ordering::SeqCst) {
            self.sync_failures.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::other("injected fsync failure"));
        }
        Ok(())
    }

    /// How many of `want` bytes fit; takes them from the budget.
    fn take(&self, want: u64) -> u64 {
        let mut cur = self.write_budget.load(Ordering::SeqCst);
        loop {
            let grant = want.min(cur);
            match self.write_budget.compare_exchange(
                cur,
                cur - grant,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return grant,
                Err(now) => cur = now,
            }
        }
    }
}

/// The real filesystem with the faults of a [`FaultPlan`] injected.
#[derive(Debug, Clone, Default)]
pub struct FaultyFs {
    plan: Arc<FaultPlan>,
}

impl FaultyFs {
    /// A faulty filesystem driven by `plan` (keep a clone of the `Arc` to steer it).
    pub fn new(plan: Arc<FaultPlan>) -> Self {
        FaultyFs { plan }
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Box<dyn FsFile>,
    plan: Arc<FaultPlan>,
}

fn disk_full() -> io::Error {
    io::Error::new(
        io::ErrorKind::StorageFull,
        "injected: no space left on device",
    )
}

impl FsFile for FaultyFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let fits = self.plan.take(buf.len() as u64) as usize;
        self.inner.write_all_at(&buf[..fits], offset)?;
        if fits < buf.len() {
            return Err(disk_full());
        }
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        self.plan.sync()?;
        self.inner.sync_data()
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
}

impl FaultyFs {
    fn wrap(&self, f: io::Result<Box<dyn FsFile>>) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(FaultyFile {
            inner: f?,
            plan: self.plan.clone(),
        }))
    }
}

impl Fs for FaultyFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        OsFs.create_dir_all(dir)
    }
    fn mode(&self, path: &Path) -> io::Result<u32> {
        OsFs.mode(path)
    }
    fn list_files(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        OsFs.list_files(dir)
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.wrap(OsFs.open_read(path))
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.wrap(OsFs.open_write(path))
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.wrap(OsFs.create_new(path))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        OsFs.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        OsFs.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.plan.sync()?;
        lock(&self.plan.synced_dirs).push(dir.to_path_buf());
        OsFs.sync_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_counts_flushes_fails_one_and_delays_each() {
        let plan = FaultPlan::default();
        assert_eq!((plan.syncs(), plan.sync_failures()), (0, 0));
        plan.sync().unwrap();
        plan.sync().unwrap();
        plan.fail_next_sync();
        assert!(plan.sync().is_err());
        plan.sync().unwrap();
        assert_eq!((plan.syncs(), plan.sync_failures()), (4, 1));
        // A delay is a lower bound on each flush (a sleep never returns early).
        plan.set_sync_delay(Duration::from_millis(30));
        let t = std::time::Instant::now();
        plan.sync().unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(30),
            "{:?}",
            t.elapsed()
        );
    }
}
