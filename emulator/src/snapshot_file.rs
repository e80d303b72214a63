//! A state file rewritten whole to hold the latest state (`resources.json`, `access.json`),
//! with changes committed in groups.
//!
//! A change is made in memory under the state's lock and numbered there (its version, from 1
//! in the order the changes are made); the caller then waits until the file holds that
//! version ([`SnapshotFile::save`], or [`SnapshotFile::save_blocking`] off the async runtime).
//! One waiter at a time is the writer: it renders the state as it is now (the latest version,
//! which holds every change made so far), writes and syncs it, and puts it in place; the
//! others wait for it. Whoever is still behind when it is done (a change made while it was
//! writing) becomes the next writer and commits every such change in one write. So a burst
//! of N changes costs a handful of writes, not N, and no caller waits longer than the write in
//! progress and the one after it. No lock is held across a write, a sync or an `.await`.
//!
//! A write that fails is answered to its writer; the others still behind try again, each as
//! the writer in turn, so every caller either sees its change in the file or an error.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::call::Failure;
use crate::files::{replace, temp_path, write_synced, Access};

/// The state serialised for the file, and the version it holds (the number of the latest
/// change in it).
pub struct Snapshot {
    /// The latest change's number.
    pub version: u64,
    /// The whole file's text.
    pub text: String,
}

/// Renders the state as it is now. Takes the state's lock only to read it.
pub type Render = Box<dyn Fn() -> Result<Snapshot, Failure> + Send + Sync>;

/// A file kept in step with some state. Written readable by the owner only.
pub struct SnapshotFile {
    path: PathBuf,
    render: Render,
    progress: Mutex<Progress>,
    /// Wakes blocking waiters when a write ends.
    ended: Condvar,
    /// Counts the writes ended, to wake async waiters.
    writes: watch::Sender<u64>,
}

struct Progress {
    /// The version the file holds (0: as loaded).
    durable: u64,
    /// Whether a writer is at work.
    writing: bool,
}

/// What a waiter does next.
enum Turn {
    /// Its change is in the file.
    Done,
    /// It writes.
    Write,
    /// Someone else is writing.
    Wait,
}

impl SnapshotFile {
    /// The file at `path`, taken to hold the state as loaded (version 0); `render` gives the
    /// state to write.
    pub fn new(path: PathBuf, render: Render) -> Arc<SnapshotFile> {
        Arc::new(SnapshotFile {
            path,
            render,
            progress: Mutex::new(Progress {
                durable: 0,
                writing: false,
            }),
            ended: Condvar::new(),
            writes: watch::Sender::new(0),
        })
    }

    fn progress(&self) -> MutexGuard<'_, Progress> {
        // Two plain fields, always whole: a poisoned lock is still usable.
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn failed(&self, e: impl std::fmt::Display) -> Failure {
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        Failure::internal(&format!("saving {name}"), e)
    }

    /// Whether change `version` is in the file, else whether the caller writes (it is then
    /// the writer until [`SnapshotFile::write_latest`] ends).
    fn turn(progress: &mut Progress, version: u64) -> Turn {
        if progress.durable >= version {
            Turn::Done
        } else if progress.writing {
            Turn::Wait
        } else {
            progress.writing = true;
            Turn::Write
        }
    }

    /// Returns once the file holds change `version` (or a later one). Waits on a blocking
    /// thread, off the async runtime; a write it starts finishes even when the caller stops
    /// waiting.
    pub async fn save(self: &Arc<Self>, version: u64) -> Result<(), Failure> {
        if tokio::runtime::Handle::try_current().is_err() {
            // Not on a runtime after all: nothing else to keep going meanwhile.
            return self.save_blocking(version);
        }
        let mut writes = self.writes.subscribe();
        loop {
            // Seen before looking, so a write ending after the look wakes this waiter.
            writes.borrow_and_update();
            let turn = Self::turn(&mut self.progress(), version);
            match turn {
                Turn::Done => return Ok(()),
                Turn::Write => {
                    let file = Arc::clone(self);
                    return tokio::task::spawn_blocking(move || file.write_latest())
                        .await
                        .map_err(|e| self.failed(e))?;
                }
                Turn::Wait => {
                    if writes.changed().await.is_err() {
                        return Err(self.failed("the state file was dropped"));
                    }
                }
            }
        }
    }

    /// [`SnapshotFile::save`] on this thread, for code that is not async.
    pub fn save_blocking(&self, version: u64) -> Result<(), Failure> {
        let mut progress = self.progress();
        loop {
            match Self::turn(&mut progress, version) {
                Turn::Done => return Ok(()),
                Turn::Write => {
                    drop(progress);
                    return self.write_latest();
                }
                Turn::Wait => {
                    progress = self.ended.wait(progress).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }

    /// As the writer: renders the state as it is now and puts it in the file, then tells the
    /// waiters (also when rendering panics: another waiter then writes).
    fn write_latest(&self) -> Result<(), Failure> {
        let mut ending = EndOfWrite {
            file: self,
            written: None,
        };
        let snapshot = (self.render)()?;
        self.write(&snapshot.text).map_err(|e| self.failed(e))?;
        ending.written = Some(snapshot.version);
        Ok(())
    }

    /// Writes and syncs `text` to a temporary file, renames it over the file, and syncs the
    /// directory so the rename survives a crash too.
    fn write(&self, text: &str) -> tdx_volt::Result<()> {
        let tmp = temp_path(&self.path, "");
        let placed = write_synced(&tmp, &self.path, text.as_bytes(), Access::Private)
            .and_then(|()| replace(&tmp, &self.path));
        if placed.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        placed?;
        sync_parent(&self.path);
        Ok(())
    }
}

/// Ends the writer's turn when dropped: records the version written, if any, and wakes the
/// waiters.
struct EndOfWrite<'a> {
    file: &'a SnapshotFile,
    written: Option<u64>,
}

impl Drop for EndOfWrite<'_> {
    fn drop(&mut self) {
        {
            let mut progress = self.file.progress();
            if let Some(version) = self.written {
                progress.durable = progress.durable.max(version);
            }
            progress.writing = false;
        }
        self.file.ended.notify_all();
        self.file.writes.send_modify(|n| *n += 1);
    }
}

/// Syncs the directory holding `path`, so a rename into it is on disk (Unix; elsewhere, and
/// when the directory cannot be opened, the rename is left to the system).
fn sync_parent(path: &std::path::Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            dir
        };
        if let Ok(handle) = std::fs::File::open(dir) {
            let _ = handle.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A state that is just a counter of changes, rendered slowly, counting its renders.
    struct Counter {
        version: AtomicU64,
        renders: AtomicUsize,
    }

    fn counter_file(dir: &std::path::Path, fail: bool) -> (Arc<Counter>, Arc<SnapshotFile>) {
        let counter = Arc::new(Counter {
            version: AtomicU64::new(0),
            renders: AtomicUsize::new(0),
        });
        let state = Arc::clone(&counter);
        let render: Render = Box::new(move || {
            state.renders.fetch_add(1, Ordering::SeqCst);
            let version = state.version.load(Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            if fail {
                return Err(Failure::internal("rendering", "refused by the test"));
            }
            Ok(Snapshot {
                version,
                text: version.to_string(),
            })
        });
        (counter, SnapshotFile::new(dir.join("state.json"), render))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_changes_is_committed_in_a_few_writes() {
        let dir = crate::files::test_dir("snapshot");
        let (counter, file) = counter_file(&dir, false);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let version = counter.version.fetch_add(1, Ordering::SeqCst) + 1;
            let file = Arc::clone(&file);
            tasks.spawn(async move { file.save(version).await });
        }
        while let Some(saved) = tasks.join_next().await {
            saved.unwrap().unwrap();
        }
        // A blocking caller whose change is already in the file returns at once.
        file.save_blocking(64).unwrap();
        let text = std::fs::read_to_string(dir.join("state.json")).unwrap();
        assert_eq!(text, "64");
        let renders = counter.renders.load(Ordering::SeqCst);
        assert!(renders < 8, "64 changes took {renders} writes");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_is_an_error_for_every_waiter_and_hangs_none() {
        let dir = crate::files::test_dir("snapshot");
        let (counter, file) = counter_file(&dir, true);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let version = counter.version.fetch_add(1, Ordering::SeqCst) + 1;
            let file = Arc::clone(&file);
            tasks.spawn(async move { file.save(version).await });
        }
        let outcomes = tokio::time::timeout(Duration::from_secs(20), async {
            let mut outcomes = Vec::new();
            while let Some(saved) = tasks.join_next().await {
                outcomes.push(saved.unwrap());
            }
            outcomes
        })
        .await
        .expect("no waiter hangs");
        assert_eq!(outcomes.len(), 8);
        assert!(outcomes.iter().all(Result::is_err));
        assert!(file.save_blocking(8).is_err());
        assert!(!dir.join("state.json").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
