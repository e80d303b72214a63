//! A state file rewritten whole after every change (`resources.json`, `access.json`), from
//! snapshots taken under the state's lock and written after it is released.
//!
//! Writers do not wait for one another while they write: each writes and syncs its own
//! temporary file (named after its version), and only the rename that puts it in place is
//! taken in turn, under `written`, which is never held across a write or a sync. A snapshot
//! older than the one in the file is dropped instead of renamed, so the file only moves
//! forward; the newer snapshot already holds the older one's change.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::call::Failure;
use crate::files::{replace, temp_path, write_synced, Access};

/// The state serialised for the file just after a change, and the version it is (changes
/// are numbered from 1, in the order they were made under the state's lock).
pub struct Snapshot {
    /// The change's number.
    pub version: u64,
    /// The whole file's new text.
    pub text: String,
}

/// A file kept in step with some state through [`Snapshot`]s. Written readable by the owner
/// only.
pub struct SnapshotFile {
    path: PathBuf,
    /// The version of the snapshot in the file (0: as loaded).
    written: Mutex<u64>,
}

impl SnapshotFile {
    /// The file at `path`, taken to hold the state as loaded (version 0).
    pub fn new(path: PathBuf) -> Arc<SnapshotFile> {
        Arc::new(SnapshotFile {
            path,
            written: Mutex::new(0),
        })
    }

    fn written(&self) -> MutexGuard<'_, u64> {
        // A version number is always whole, so a poisoned lock is still usable.
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn failed(&self, e: impl std::fmt::Display) -> Failure {
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        Failure::internal(&format!("saving {name}"), e)
    }

    /// Puts `snapshot` in the file, unless a newer one is there already. Blocks on the write:
    /// async code goes through [`SnapshotFile::save`].
    pub fn write(&self, snapshot: &Snapshot) -> Result<(), Failure> {
        if *self.written() >= snapshot.version {
            return Ok(());
        }
        let tmp = temp_path(&self.path, &snapshot.version.to_string());
        let placed = write_synced(&tmp, &self.path, snapshot.text.as_bytes(), Access::Private)
            .and_then(|()| {
                let mut written = self.written();
                if *written >= snapshot.version {
                    return Ok(false);
                }
                replace(&tmp, &self.path)?;
                *written = snapshot.version;
                Ok(true)
            });
        if !matches!(placed, Ok(true)) {
            // Not renamed: a newer snapshot won, or the write failed part way.
            let _ = std::fs::remove_file(&tmp);
        }
        placed.map(|_| ()).map_err(|e| self.failed(e))
    }

    /// Writes `snapshot` on a blocking thread, off the async runtime, and returns once the file
    /// holds it. The write finishes even when the caller stops waiting.
    pub async fn save(self: &Arc<Self>, snapshot: Snapshot) -> Result<(), Failure> {
        let file = Arc::clone(self);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime
                .spawn_blocking(move || file.write(&snapshot))
                .await
                .map_err(|e| self.failed(e))?,
            // Not on a runtime after all: nothing else to keep going meanwhile.
            Err(_) => file.write(&snapshot),
        }
    }
}
