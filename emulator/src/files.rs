//! Writing the emulator's state files: atomically (temp file, then rename) and, for secrets,
//! readable by the owner only; and locking a file against other processes' writers.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tdx_volt::{Error, ErrorKind, Result};

/// Who may read a written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Mode 0600 on Unix: keys and client configurations.
    Private,
    /// Default permissions: certificates and public state.
    Public,
}

/// Writes `bytes` to `path` atomically with the given access. The temporary file is this
/// write's own ([`unique_temp_path`]), so concurrent writers of one file, in this process or
/// another, never write into each other's; it is removed when the write fails.
pub fn write_atomic(path: &Path, bytes: &[u8], access: Access) -> Result<()> {
    let tmp = unique_temp_path(path);
    let written = write_synced(&tmp, path, bytes, access).and_then(|()| replace(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// A [`temp_path`] no other write uses: tagged with this process's id and a counter.
pub fn unique_temp_path(path: &Path) -> PathBuf {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    temp_path(path, &format!("{}-{n}", std::process::id()))
}

/// The temporary file next to `path` that a write goes through before [`replace`] puts it in
/// place: `NAME.EXT.tmp` for `tag` `""`, else `NAME.EXT.TAG.tmp`, so writers with different
/// tags never write the same one.
pub fn temp_path(path: &Path, tag: &str) -> PathBuf {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("new");
    if tag.is_empty() {
        path.with_extension(format!("{extension}.tmp"))
    } else {
        path.with_extension(format!("{extension}.{tag}.tmp"))
    }
}

/// Writes `bytes` to `tmp`, the [`temp_path`] of `path` (which errors name), with the given
/// access, and syncs it to disk.
pub fn write_synced(tmp: &Path, path: &Path, bytes: &[u8], access: Access) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if access == Access::Private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(tmp)
        .map_err(|e| io_error("creating", path, e))?;
    file.write_all(bytes)
        .map_err(|e| io_error("writing", path, e))?;
    file.sync_all().map_err(|e| io_error("syncing", path, e))
}

/// Puts a temporary file written with [`write_synced`] in the place of `path`, atomically.
pub fn replace(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(|e| io_error("replacing", path, e))
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("{what} {}", path.display())).with_source(e)
}

/// Creates a directory and its parents (nothing to do when it exists).
pub fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| {
        Error::new(ErrorKind::Io, format!("creating {}", path.display())).with_source(e)
    })
}

/// Reads a UTF-8 file, or `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => {
            Err(Error::new(ErrorKind::Io, format!("reading {}", path.display())).with_source(e))
        }
    }
}

/// An exclusive advisory lock on a file (`flock` on Unix, `LockFileEx` on Windows), held until
/// dropped. Every process that takes it for the same path waits for the others.
pub struct FileLock {
    _file: std::fs::File,
}

/// How long [`FileLock::acquire`] waits for another holder before giving up.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

impl FileLock {
    /// Locks `path` (created when missing, never truncated; owner-only on Unix), waiting at most
    /// [`LOCK_WAIT`] for whoever holds it.
    pub fn acquire(path: &Path) -> Result<FileLock> {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let file = options
            .open(path)
            .map_err(|e| io_error("opening the lock file", path, e))?;
        let deadline = Instant::now() + LOCK_WAIT;
        let mut pause = Duration::from_millis(1);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(FileLock { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    // Holders keep it for one read-modify-write: poll, backing off to 50 ms.
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!("{} is still locked after {LOCK_WAIT:?}", path.display()),
                    ))
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io_error("locking", path, e)),
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// A fresh, empty directory under the system's temporary folder for a unit test, named after
/// `tag` and 64 random bits (the test removes it).
#[cfg(test)]
pub fn test_dir(tag: &str) -> PathBuf {
    let mut bits = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bits);
    let suffix: String = bits.iter().map(|b| format!("{b:02x}")).collect();
    let dir = std::env::temp_dir().join(format!("volt-{tag}-{suffix}"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}
