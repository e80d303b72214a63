//! Document sync: a yrs [`Doc`] kept in step with a document of a Volt sync database through
//! `SyncAPI/SyncDocument`, across reconnections, never losing an edit.
//!
//! - `wire`: the messages (chunks, base64 in proto3 JSON);
//! - `task`: the task that owns the call (handshake, both ways, reconnect, stop);
//! - here: [`SyncOptions`], [`SyncStatus`], [`SyncProvider`] and
//!   [`VoltClient::sync`].

mod task;
mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Notify};
use yrs::Doc;

use super::VoltClient;
use crate::{Error, ErrorKind, Result};
use task::{Command, Shared, Task};

// A provider is usable from any tokio task, and its handle can be shared.
const _: fn() = || {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<SyncProvider>();
};

/// The origin of the transactions that apply the Volt's updates: the provider does not send
/// them back.
const ORIGIN: &str = "tdx-volt-sync";

/// How a [`SyncProvider`] syncs. By value, `#[must_use]`.
///
/// | Setting | Default |
/// |---|---|
/// | [`read_only`](SyncOptions::read_only) | off |
/// | [`read_only_fallback`](SyncOptions::read_only_fallback): read-only when writing is not allowed | off |
/// | [`flush`](SyncOptions::flush): local edits made within it go in one update | 50 ms (as the official provider) |
#[derive(Debug, Clone)]
#[must_use]
pub struct SyncOptions {
    read_only: bool,
    read_only_fallback: bool,
    flush: Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions::new()
    }
}

impl SyncOptions {
    /// The defaults.
    pub fn new() -> SyncOptions {
        SyncOptions {
            read_only: false,
            read_only_fallback: false,
            flush: Duration::from_millis(50),
        }
    }

    /// Asks for the document read-only: the Volt's updates come in, local edits stay local.
    pub fn read_only(mut self, on: bool) -> SyncOptions {
        self.read_only = on;
        self
    }

    /// Falls back to read-only when the client may read the document but not write it.
    pub fn read_only_fallback(mut self, on: bool) -> SyncOptions {
        self.read_only_fallback = on;
        self
    }

    /// Local edits made within `interval` of one another go in one update (kept between 0
    /// and 10 s).
    pub fn flush(mut self, interval: Duration) -> SyncOptions {
        self.flush = interval.min(Duration::from_secs(10));
        self
    }
}

/// Where a [`SyncProvider`] stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncStatus {
    /// Opening the call.
    Connecting,
    /// Exchanging state vectors and diffs.
    Syncing,
    /// In step: edits flow both ways as they are made.
    Synced,
    /// The connection was lost; the provider connects again as the client's reconnect policy
    /// says, and the handshake then carries what changed meanwhile, both ways.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// Stopped on request ([`SyncProvider::stop`]).
    Stopped,
    /// Stopped for good: the Volt refused (no access, no such database), or the reconnect
    /// policy gave up.
    Failed {
        /// Why.
        reason: String,
    },
}

/// A document kept in sync. Made by [`VoltClient::sync`]. Dropping it stops the sync
/// (sending what is pending first); the [`Doc`] is the caller's and stays usable.
pub struct SyncProvider {
    doc: Doc,
    status: watch::Receiver<SyncStatus>,
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    observer: String,
}

impl std::fmt::Debug for SyncProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncProvider")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl SyncProvider {
    /// Waits until the document is in step with the Volt (now, if it is): `Ok` once synced,
    /// an error if the sync stops or fails first.
    pub async fn synced(&self) -> Result<()> {
        let mut status = self.status.clone();
        let reached = status
            .wait_for(|s| {
                matches!(
                    s,
                    SyncStatus::Synced | SyncStatus::Stopped | SyncStatus::Failed { .. }
                )
            })
            .await
            .map(|s| s.clone())
            .map_err(|_| Error::new(ErrorKind::Closed, "the sync has stopped"))?;
        match reached {
            SyncStatus::Synced => Ok(()),
            SyncStatus::Failed { reason } => Err(Error::new(ErrorKind::Closed, reason)),
            _ => Err(Error::new(ErrorKind::Closed, "the sync has stopped")),
        }
    }

    /// The status, as a watch: its current value and each change.
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.status.clone()
    }

    /// Whether the Volt gave the document read-only (asked for, or the fallback): local edits
    /// then stay local.
    pub fn is_read_only(&self) -> bool {
        self.shared.read_only.load(Ordering::Acquire)
    }

    /// The document.
    pub fn doc(&self) -> &Doc {
        &self.doc
    }

    /// Sets this client's awareness state (presence: a cursor, a name; any JSON), sent to
    /// the document's other clients at once (and again after each reconnection). `null`
    /// clears it.
    pub fn set_awareness(&self, state: &serde_json::Value) {
        {
            let mut awareness = self.shared.awareness();
            if state.is_null() {
                awareness.clean_local_state();
            } else {
                awareness.set_local_state_raw(state.to_string());
            }
        }
        self.shared.awareness_changed();
        self.shared
            .awareness_dirty
            .store(true, std::sync::atomic::Ordering::Release);
        self.shared.changed.notify_one();
    }

    /// The awareness states known now, by client (the document's client id): ours, and the
    /// other clients' while connected (they are forgotten when the connection is lost).
    pub fn awareness(&self) -> Vec<(u64, serde_json::Value)> {
        let awareness = self.shared.awareness();
        awareness
            .iter()
            .filter_map(|(id, state)| {
                let json = serde_json::from_str(state.data.as_deref()?).ok()?;
                (json != serde_json::Value::Null).then_some((id.get(), json))
            })
            .collect()
    }

    /// Counts changes of the awareness states: wait on it, then read
    /// [`awareness`](SyncProvider::awareness).
    pub fn awareness_changes(&self) -> watch::Receiver<u64> {
        self.shared.awareness_changes.subscribe()
    }

    /// Stops: sends the local edits not yet sent, ends the call, and waits for the Volt to end
    /// it (at most 5 s). The document stays as it is.
    pub async fn stop(self) {
        let (done, stopped) = oneshot::channel();
        if self.commands.send(Command::Stop(done)).await.is_ok() {
            let _ = stopped.await;
        }
    }
}

impl Drop for SyncProvider {
    fn drop(&mut self) {
        let _ = self.doc.unobserve_update_v2(self.observer.as_str());
        // The task stops (after sending what is pending) once its command queue closes.
    }
}

impl VoltClient {
    /// Keeps `doc` in sync with the document `document_id` of the sync database
    /// `database_id` (its id, or an `@alias`), until the provider is stopped or dropped.
    ///
    /// The first handshake exchanges state vectors (Yjs v1) and diffs (v2) both ways, so
    /// edits made before it, on either side, merge. Then each local edit goes out (edits made
    /// within [`SyncOptions::flush`] together), and the Volt's come in. A lost connection is
    /// made again as the client's reconnect policy says, and the handshake runs again: no
    /// edit is queued anywhere, so none can be dropped, whatever the load; each send is the
    /// diff of the document against what the Volt is known to hold.
    ///
    /// The provider applies the Volt's updates in a write transaction of its own: as with any
    /// yrs document shared between tasks, do not hold a transaction across an `.await`, nor
    /// open a second one while holding the first (it can wait forever behind that write).
    ///
    /// ```no_run
    /// # async fn demo(client: tdx_volt::VoltClient) -> tdx_volt::Result<()> {
    /// use tdx_volt::client::SyncOptions;
    /// use yrs::{GetString, Text, Transact};
    ///
    /// let doc = yrs::Doc::new();
    /// let text = doc.get_or_insert_text("content");
    /// let provider = client
    ///     .sync("@notes", "today", doc.clone(), SyncOptions::new())
    ///     .await?;
    /// provider.synced().await?;
    /// text.insert(&mut doc.transact_mut(), 0, "hello ");
    /// println!("{}", text.get_string(&doc.transact()));
    /// provider.stop().await;
    /// # Ok(()) }
    /// ```
    pub async fn sync(
        &self,
        database_id: &str,
        document_id: &str,
        doc: Doc,
        options: SyncOptions,
    ) -> Result<SyncProvider> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        if database_id.is_empty() || document_id.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                "sync needs a database id and a document id",
            ));
        }
        let (awareness_changes, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            dirty: AtomicBool::new(false),
            awareness_dirty: AtomicBool::new(false),
            changed: Notify::new(),
            read_only: AtomicBool::new(false),
            awareness: std::sync::Mutex::new(yrs::sync::Awareness::new(doc.clone())),
            awareness_changes,
        });
        let observer = format!("tdx-volt-sync-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let watching = Arc::clone(&shared);
        doc.observe_update_v2(observer.as_str(), move |txn, _| {
            // The Volt's own updates are not sent back.
            let from_volt = txn
                .origin()
                .is_some_and(|o| o.as_ref() == ORIGIN.as_bytes());
            if !from_volt {
                task::mark_changed(&watching);
            }
        })
        .map_err(|e| {
            Error::new(
                ErrorKind::Config,
                "the document is in a transaction; it cannot be watched",
            )
            .with_source(e)
        })?;
        let (status_tx, status) = watch::channel(SyncStatus::Connecting);
        let (commands, commands_rx) = mpsc::channel(1);
        let task = Task {
            client: self.clone(),
            database_id: database_id.to_owned(),
            document_id: document_id.to_owned(),
            doc: doc.clone(),
            options,
            shared: Arc::clone(&shared),
            status: status_tx,
            commands: commands_rx,
            known: None,
            awareness_in: wire::Assembly::default(),
        };
        tokio::spawn(task.run());
        Ok(SyncProvider {
            doc,
            status,
            shared,
            commands,
            observer,
        })
    }
}
