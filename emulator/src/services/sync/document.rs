//! One synced document: its yrs state, its persistence, and the streams following it.
//!
//! All changes to a document go through its `state` lock, which is held while an update is
//! checked, applied, stored (`store.rs`, on a blocking thread, through the document's own
//! connection) and fanned out. So every
//! subscriber sees the updates in the order they were applied, and a stream finishing its
//! handshake (`finish_handshake`) gets exactly the updates it has not seen: those applied since
//! its SYNCING diff, computed under the same lock that makes it live.
//!
//! Fan-out never waits: each subscriber has a queue of [`SUBSCRIBER_QUEUE`] events, and one
//! whose queue is full is cut off (its stream ends with RESOURCE_EXHAUSTED; a client that
//! reconnects reruns the handshake and loses nothing). Awareness updates go to every other
//! subscriber, live or still in its handshake, and are never stored.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, TransactionMut, Update};

use crate::call::{Code, Failure};

use super::store;

/// Events queued per subscriber before it counts as too slow and is cut off.
pub const SUBSCRIBER_QUEUE: usize = 1024;

/// What a stream following a document is sent.
#[derive(Debug, Clone)]
pub enum Event {
    /// A Yjs v2 update another client (or WriteSynapsePath) made.
    Update(Bytes),
    /// A y-protocols awareness update from another client.
    Awareness(Bytes),
}

struct Subscriber {
    id: u64,
    /// Whether document updates are sent to it yet (after its DONE).
    live: bool,
    queue: mpsc::Sender<Event>,
    cut_off: Option<oneshot::Sender<()>>,
}

struct State {
    doc: Doc,
    /// Rows stored for the document since it was last compacted.
    stored: u64,
}

/// A document of a sync database, loaded.
pub struct Document {
    /// The document's rows, through its own connection (used by one store at a time: the
    /// `state` lock is held meanwhile).
    store: Arc<Mutex<store::Store>>,
    document_id: String,
    state: tokio::sync::Mutex<State>,
    subscribers: Mutex<Vec<Subscriber>>,
    next_id: AtomicU64,
    /// Bumped after every applied change (for WatchSynapsePath).
    version: watch::Sender<u64>,
}

/// A stream's registration with a document; dropping it unregisters the stream.
pub struct Subscription {
    document: Arc<Document>,
    /// The subscriber id (updates it sent are not echoed to it).
    pub id: u64,
    /// Events for the stream.
    pub events: mpsc::Receiver<Event>,
    /// Fires when the stream was cut off for being too slow.
    pub cut_off: oneshot::Receiver<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.document.lock_subscribers().retain(|s| s.id != self.id);
    }
}

/// A document's first answer to a stream: the diff against the client's state vector and the
/// server's state vector (v1), with the stream registered.
pub struct Joined {
    pub subscription: Subscription,
    pub diff: Vec<u8>,
    pub state_vector: Vec<u8>,
}

/// Decodes a Yjs v2 update, as a reply failure when it is malformed.
pub fn decode_update(bytes: &[u8]) -> Result<Update, Failure> {
    Update::decode_v2(bytes)
        .map_err(|e| Failure::invalid(format!("a malformed Yjs v2 update: {e}")))
}

/// Whether applying `update` would change the document `txn` reads: new blocks, or deletions of
/// items not deleted yet.
fn adds_to<T: ReadTxn>(txn: &T, update: &Update) -> bool {
    let known = txn.state_vector();
    let inserted = update.insertions(true);
    let new_blocks = inserted.iter().any(|(client, ranges)| {
        let clock = known.get(client);
        ranges.iter().any(|range| range.end > clock)
    });
    if new_blocks {
        return true;
    }
    let deleted = txn.snapshot().delete_set;
    !update.delete_set().diff(&deleted).is_empty()
}

impl Document {
    /// Loads a document from the sync database file `path` (empty when it has no rows yet).
    /// Blocks on SQLite.
    pub fn load_blocking(path: PathBuf, document_id: &str) -> Result<Document, Failure> {
        let store = store::Store::open(&path, document_id)?;
        let rows = store.load()?;
        let doc = Doc::new();
        {
            let mut txn = doc.transact_mut();
            for (i, row) in rows.iter().enumerate() {
                let applied = Update::decode_v2(row)
                    .map_err(|e| e.to_string())
                    .and_then(|u| txn.apply_update(u).map_err(|e| e.to_string()));
                if let Err(e) = applied {
                    tracing::warn!("document {document_id}: stored update {i} is unusable: {e}");
                }
            }
        }
        Ok(Document {
            store: Arc::new(Mutex::new(store)),
            document_id: document_id.to_owned(),
            state: tokio::sync::Mutex::new(State {
                doc,
                stored: u64::try_from(rows.len()).unwrap_or(u64::MAX),
            }),
            subscribers: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            version: watch::channel(0).0,
        })
    }

    fn lock_subscribers(&self) -> MutexGuard<'_, Vec<Subscriber>> {
        // Every change under this lock is a single push/retain/flag, so a poisoned list is
        // still consistent.
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver that changes after every applied change.
    pub fn watch_version(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Registers a stream (not live yet) and answers the diff against `client_sv`.
    pub async fn join(self: &Arc<Self>, client_sv: &StateVector) -> Joined {
        let state = self.state.lock().await;
        let (queue, events) = mpsc::channel(SUBSCRIBER_QUEUE);
        let (cut_off, cut_off_rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock_subscribers().push(Subscriber {
            id,
            live: false,
            queue,
            cut_off: Some(cut_off),
        });
        let txn = state.doc.transact();
        Joined {
            diff: txn.encode_state_as_update_v2(client_sv),
            state_vector: txn.state_vector().encode_v1(),
            subscription: Subscription {
                document: Arc::clone(self),
                id,
                events,
                cut_off: cut_off_rx,
            },
        }
    }

    /// Ends a stream's handshake: applies its DONE update (`None` for a read-only stream, whose
    /// update must then add nothing), makes it live, and answers what others changed since its
    /// SYNCING diff (`sent_sv` is the state vector sent with that diff), if anything.
    pub async fn finish_handshake(
        &self,
        subscriber: u64,
        sent_sv: &StateVector,
        update: &[u8],
        writable: bool,
    ) -> Result<Option<Vec<u8>>, Failure> {
        let mut state = self.state.lock().await;
        let held = {
            let txn = state.doc.transact();
            (&txn.state_vector() != sent_sv).then(|| txn.encode_state_as_update_v2(sent_sv))
        };
        self.apply_locked(&mut state, subscriber, update, writable)
            .await?;
        if let Some(s) = self
            .lock_subscribers()
            .iter_mut()
            .find(|s| s.id == subscriber)
        {
            s.live = true;
        }
        Ok(held)
    }

    /// Applies an update a stream sent (a complete UPDATE), stores it and fans it out.
    pub async fn apply(&self, from: u64, update: &[u8], writable: bool) -> Result<(), Failure> {
        let mut state = self.state.lock().await;
        self.apply_locked(&mut state, from, update, writable).await
    }

    async fn apply_locked(
        &self,
        state: &mut State,
        from: u64,
        bytes: &[u8],
        writable: bool,
    ) -> Result<(), Failure> {
        let update = decode_update(bytes)?;
        if !adds_to(&state.doc.transact(), &update) {
            return Ok(());
        }
        if !writable {
            return Err(Failure::denied(format!(
                "document {} is read-only for this stream: its update was refused",
                self.document_id
            )));
        }
        state
            .doc
            .transact_mut()
            .apply_update(update)
            .map_err(|e| Failure::invalid(format!("the update cannot be applied: {e}")))?;
        let _announce = Announce {
            document: self,
            from,
            update: Bytes::copy_from_slice(bytes),
        };
        self.store(state, bytes.to_vec()).await
    }

    /// Makes a change on the server's side (WriteSynapsePath): `edit` runs in one transaction,
    /// and the update it makes is stored and fanned out to every stream.
    pub async fn edit<R>(
        &self,
        edit: impl FnOnce(&mut TransactionMut<'_>) -> Result<R, Failure>,
    ) -> Result<R, Failure> {
        let mut state = self.state.lock().await;
        let (result, update) = {
            let mut txn = state.doc.transact_mut();
            let result = edit(&mut txn);
            (result, txn.encode_update_v2())
        };
        // An edit that failed half-way has still changed what it changed: that is kept too.
        if !decode_update(&update)?.is_empty() {
            let _announce = Announce {
                document: self,
                from: 0,
                update: Bytes::from(update.clone()),
            };
            self.store(&mut state, update).await?;
        }
        result
    }

    /// Runs `read` over the document's current state.
    pub async fn read<R>(&self, read: impl FnOnce(&yrs::Transaction<'_>) -> R) -> R {
        let state = self.state.lock().await;
        let txn = state.doc.transact();
        read(&txn)
    }

    /// Hands an awareness update to every other stream of the document; nothing is kept.
    pub fn awareness(&self, from: u64, update: Vec<u8>) {
        self.fan_out(from, Event::Awareness(Bytes::from(update)), false);
    }

    /// Stores one update just applied, or, when the document has many rows, its whole state
    /// in their place.
    async fn store(&self, state: &mut State, update: Vec<u8>) -> Result<(), Failure> {
        let table = Arc::clone(&self.store);
        // The lock is only ever taken on these blocking threads, one at a time; a poisoned one
        // still holds a usable connection.
        if state.stored.saturating_add(1) >= store::COMPACT_AFTER {
            let whole = state
                .doc
                .transact()
                .encode_state_as_update_v2(&StateVector::default());
            blocking(move || {
                let mut rows = table.lock().unwrap_or_else(|p| p.into_inner());
                rows.compact(&whole)
            })
            .await?;
            state.stored = 1;
        } else {
            blocking(move || {
                let rows = table.lock().unwrap_or_else(|p| p.into_inner());
                rows.append(&update)
            })
            .await?;
            state.stored = state.stored.saturating_add(1);
        }
        Ok(())
    }

    /// Offers `event` to the other subscribers (only to live ones when `live_only`) without
    /// waiting; subscribers with a full queue are cut off.
    fn fan_out(&self, from: u64, event: Event, live_only: bool) {
        self.lock_subscribers().retain_mut(|s| {
            if s.id == from || (live_only && !s.live) {
                return true;
            }
            match s.queue.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if let Some(cut_off) = s.cut_off.take() {
                        // The stream may be ending anyway; then nobody is told.
                        let _ = cut_off.send(());
                    }
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

/// Fans an update the document now holds out to the streams, and bumps the version, when
/// dropped: once it is stored, or if storing it fails, or if the call that applied it is
/// cancelled while it is being stored (a client cut off mid-call). The document holds the
/// update from the moment it is applied (and the blocking write goes on), so every stream
/// must get it: handshakes after it take it as held and never send it again.
struct Announce<'a> {
    document: &'a Document,
    from: u64,
    update: Bytes,
}

impl Drop for Announce<'_> {
    fn drop(&mut self) {
        let update = std::mem::take(&mut self.update);
        self.document
            .fan_out(self.from, Event::Update(update), true);
        self.document
            .version
            .send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// Runs SQLite work on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Failure::reply(Code::Internal, format!("sync storage worker: {e}")))?
}
