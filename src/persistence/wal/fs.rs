//! The filesystem as the WAL sees it: a small trait and the real implementation ([`OsFs`]).
//! Tests put a fault-injecting one in its place (`FaultyFs`, feature `testing`: a disk that
//! fills up, an fsync that fails, an fsync that is slow) to break the log on purpose without
//! root or a special mount.
//!
//! Everything the log and the store write is private to the user that runs the node: a
//! directory they create is `0700` ([`DIR_MODE`]), a file `0600` ([`FILE_MODE`]). An existing
//! directory open to the group or others is used as it is, with a warning (see
//! [`make_private_dir`] and `docs/operations.md`).

use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of a directory the log or the store creates: the owner only.
pub const DIR_MODE: u32 = 0o700;
/// Mode of a file the log or the store creates: the owner only.
pub const FILE_MODE: u32 = 0o600;

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
    /// Creates `dir` and its missing parents, each with mode [`DIR_MODE`]; returns the
    /// directories it created, outermost first (empty if `dir` existed). The caller flushes each
    /// new entry into its parent ([`make_private_dir`] does).
    fn create_dir_all(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// The permission bits (`mode & 0o777`) of `path`.
    fn mode(&self, path: &Path) -> io::Result<u32>;
    /// The paths of the regular files directly in `dir`.
    fn list_files(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Opens an existing file for reading.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Opens an existing file for reading and writing.
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Creates a file that must not exist yet, for reading and writing, with mode
    /// [`FILE_MODE`].
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
    fn create_dir_all(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut missing = Vec::new();
        let mut at = Some(dir);
        while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            missing.push(d.to_path_buf());
            at = d.parent();
        }
        missing.reverse();
        let mut builder = DirBuilder::new();
        builder.mode(DIR_MODE);
        let mut created = Vec::with_capacity(missing.len());
        for d in missing {
            match builder.create(&d) {
                Ok(()) => created.push(d),
                // Made by someone else meanwhile: theirs, not ours to flush.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(created)
    }
    fn mode(&self, path: &Path) -> io::Result<u32> {
        Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
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
            .mode(FILE_MODE)
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

/// What [`make_private_dir`] found or did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirReport {
    /// Directories created (mode [`DIR_MODE`], each flushed into its parent), outermost first.
    pub created: Vec<PathBuf>,
    /// The mode of `dir` when it already existed open to the group or others (left as it is).
    pub loose_mode: Option<u32>,
}

/// Creates `dir` (and its missing parents) private to the owner and flushes every new entry
/// into its parent, so the directory survives a power loss. An existing `dir` with group or
/// other permission bits is not changed (an operator may have set them on purpose, and every
/// file inside is [`FILE_MODE`] anyway): it is reported and a warning is logged.
pub fn make_private_dir(fs: &dyn Fs, dir: &Path) -> io::Result<DirReport> {
    let created = fs.create_dir_all(dir)?;
    for d in &created {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs.sync_dir(parent)?;
        }
    }
    let mut report = DirReport {
        created,
        loose_mode: None,
    };
    if report.created.last().map(PathBuf::as_path) != Some(dir) {
        let mode = fs.mode(dir)?;
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                mode = format_args!("{mode:o}"),
                "data directory is open to other users; its files are private (0600), but \
                 `chmod 700` it to hide their names and sizes too"
            );
            report.loose_mode = Some(mode);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relative path is climbed up to the first directory that exists, not past it (the
    /// empty path above a relative one is no directory to make).
    #[test]
    fn create_dir_all_makes_what_is_missing_of_a_relative_path() {
        let base = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let name = base.path().file_name().unwrap().to_owned();
        let rel = Path::new(&name).join("a").join("b");
        let made = OsFs.create_dir_all(&rel).unwrap();
        assert_eq!(made, [Path::new(&name).join("a"), rel.clone()]);
        assert!(base.path().join("a/b").is_dir());
        assert_eq!(OsFs.create_dir_all(&rel).unwrap(), Vec::<PathBuf>::new());
    }

    /// Only a directory that already exists is taken as made by someone else: a file in the
    /// way, or a dangling symlink where the directory should be, is an error.
    #[test]
    fn create_dir_all_refuses_a_file_or_a_dangling_link_in_the_way() {
        let base = tempfile::tempdir().unwrap();
        let file = base.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(OsFs.create_dir_all(&file.join("sub")).is_err());
        let link = base.path().join("link");
        std::os::unix::fs::symlink(base.path().join("nowhere"), &link).unwrap();
        let e = OsFs.create_dir_all(&link).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    }
}
