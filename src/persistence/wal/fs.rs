//! The filesystem as the WAL sees it: a small trait, the real implementation ([`OsFs`]) and one
//! that injects faults ([`FaultyFs`]: a disk that fills up, an fsync that fails, an fsync that is
//! slow), so tests can break the log on purpose without root or a special mount.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An open file: positioned reads and writes, and the two flushes.
pub trait FsFile: Send + Sync + fmt::Debug {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`. On error, a prefix of `buf` may have been written.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Flushes the file's data (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// The file's length in bytes.
    fn size(&self) -> io::Result<u64>;
}

/// The directory operations the WAL and the store use.
pub trait Fs: Send + Sync + fmt::Debug {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The paths of the regular files directly in `dir`.
    fn list_files(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Opens an existing file for reading.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Opens an existing file for reading and writing.
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Creates a file that must not exist yet, for reading and writing.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Flushes `dir` itself (fsync of the directory), so created, renamed and removed entries
    /// survive a power loss.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsFs;

#[derive(Debug)]
struct OsFile(File);

impl FsFile for OsFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

impl Fs for OsFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn list_files(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                out.push(entry.path());
            }
        }
        Ok(out)
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(OsFile(File::open(path)?)))
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(OsFile(f)))
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(OsFile(f)))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

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
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan {
            write_budget: AtomicU64::new(u64::MAX),
            fail_next_sync: AtomicBool::new(false),
            sync_delay_us: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            sync_failures: AtomicU64::new(0),
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
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        OsFs.create_dir_all(dir)
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
        OsFs.sync_dir(dir)
    }
}
