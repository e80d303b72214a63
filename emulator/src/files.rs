//! Writing the emulator's state files: atomically (temp file, then rename) and, for secrets,
//! readable by the owner only.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use tdx_volt::{Error, ErrorKind, Result};

/// Who may read a written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Mode 0600 on Unix: keys and client configurations.
    Private,
    /// Default permissions: certificates and public state.
    Public,
}

/// Writes `bytes` to `path` atomically with the given access.
pub fn write_atomic(path: &Path, bytes: &[u8], access: Access) -> Result<()> {
    let tmp = temp_path(path, "");
    write_synced(&tmp, path, bytes, access)?;
    replace(&tmp, path)
}

/// The temporary file next to `path` that a write goes through before [`replace`] puts it in
/// place: `NAME.EXT.tmp` for `tag` `""` (what [`write_atomic`] uses), else `NAME.EXT.TAG.tmp`, so
/// writers with different tags never write the same one.
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
