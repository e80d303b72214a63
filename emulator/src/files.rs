//! Writing the emulator's state files: atomically (temp file, then rename) and, for secrets,
//! readable by the owner only.

use std::io::Write as _;
use std::path::Path;

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
    let io = |what: &str, e: std::io::Error| {
        Error::new(ErrorKind::Io, format!("{what} {}", path.display())).with_source(e)
    };
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("new")
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if access == Access::Private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(|e| io("creating", e))?;
    file.write_all(bytes).map_err(|e| io("writing", e))?;
    file.sync_all().map_err(|e| io("syncing", e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| io("replacing", e))
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
