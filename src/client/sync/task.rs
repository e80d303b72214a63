//! The task that keeps one document in sync: it owns the `SyncDocument` call, runs the
//! state-vector handshake on every (re)connection, then sends local edits and applies the
//! Volt's.
//!
//! Local edits are never queued, so none can be dropped: the document's observer only marks
//! it changed, and each flush sends the diff of the whole document against the state the
//! Volt is known to hold (`known`), whatever happened since. A connection lost with edits in
//! flight loses nothing either: the next handshake sends the diff against the Volt's own
//! state vector. Updates from the Volt are applied with the provider's origin, which the
//! observer ignores.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use yrs::sync::{Awareness, AwarenessUpdate};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use super::wire::{self, Assembly};
use super::{SyncOptions, SyncStatus, ORIGIN};
use crate::client::{Call, CallEvent, VoltClient};
use crate::{Error, ErrorKind, Result};

/// How long a stop waits for the Volt to end the call after our end.
const STOP_WAIT: Duration = Duration::from_secs(5);

pub(super) enum Command {
    /// Send what is pending, end the call, and stop.
    Stop(oneshot::Sender<()>),
}

/// What the handle and the observer share with the task.
pub(super) struct Shared {
    /// The document has local edits not yet sent.
    pub dirty: AtomicBool,
    /// Our awareness state changed and is not yet sent.
    pub awareness_dirty: AtomicBool,
    /// Wakes the task for either.
    pub changed: Notify,
    pub read_only: AtomicBool,
    /// Every peer's awareness state and ours (y-protocols), never held across an await.
    pub awareness: std::sync::Mutex<Awareness>,
    /// Counts changes of the awareness states.
    pub awareness_changes: watch::Sender<u64>,
}

impl Shared {
    pub(super) fn awareness(&self) -> std::sync::MutexGuard<'_, Awareness> {
        // Each change under the lock is one yrs call: a panic cannot leave it half made.
        self.awareness
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn awareness_changed(&self) {
        self.awareness_changes.send_modify(|n| *n += 1);
    }

    /// Forgets every peer's awareness state (the connection is gone), keeping ours.
    fn forget_peers(&self) {
        let changed = {
            let mut awareness = self.awareness();
            let own = awareness.client_id();
            let peers: Vec<_> = awareness
                .iter()
                .map(|(id, _)| id)
                .filter(|id| *id != own)
                .collect();
            for id in &peers {
                awareness.remove_state(*id);
            }
            !peers.is_empty()
        };
        if changed {
            self.awareness_changed();
        }
    }
}

pub(super) struct Task {
    pub client: VoltClient,
    pub database_id: String,
    pub document_id: String,
    pub doc: Doc,
    pub options: SyncOptions,
    pub shared: Arc<Shared>,
    pub status: watch::Sender<SyncStatus>,
    pub commands: mpsc::Receiver<Command>,
    /// What the Volt is known to hold (from the handshake on): diffs are taken against it.
    pub known: Option<StateVector>,
    /// Awareness chunks put back together.
    pub awareness_in: Assembly,
}

/// How one connection ended.
enum Ended {
    /// Stopped on request (`done` told once the call is over).
    Stopped(Option<oneshot::Sender<()>>),
    /// Lost; `synced` says whether the handshake had completed (the backoff starts over).
    Lost { error: Error, synced: bool },
    /// Refused for good (no access, no such database): no reconnecting.
    Refused(Error),
}

impl Task {
    pub(super) async fn run(mut self) {
        let mut delays = self.client.reconnect_policy().delays();
        loop {
            match self.connection().await {
                Ended::Stopped(done) => {
                    self.status.send_replace(SyncStatus::Stopped);
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
                Ended::Refused(error) => {
                    self.status.send_replace(SyncStatus::Failed {
                        reason: error.to_string(),
                    });
                    return;
                }
                Ended::Lost { error, synced } => {
                    tracing::debug!(%error, document = %self.document_id, "volt sync: connection lost");
                    self.shared.forget_peers();
                    if synced {
                        delays = self.client.reconnect_policy().delays();
                    }
                    self.status.send_replace(SyncStatus::Disconnected {
                        reason: error.to_string(),
                    });
                    let Some(delay) = delays.next() else {
                        self.status.send_replace(SyncStatus::Failed {
                            reason: format!("gave up reconnecting: {error}"),
                        });
                        return;
                    };
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        command = self.commands.recv() => {
                            self.status.send_replace(SyncStatus::Stopped);
                            if let Some(Command::Stop(done)) = command {
                                let _ = done.send(());
                            }
                            return;
                        }
                    }
                }
            }
        }
    }

    /// One connection: the handshake, then both ways until it ends.
    async fn connection(&mut self) -> Ended {
        self.status.send_replace(SyncStatus::Connecting);
        let mut call = match self.handshake().await {
            Ok(call) => call,
            Err(error) => return lost_or_refused(error, false),
        };
        self.status.send_replace(SyncStatus::Synced);
        match self.steady(&mut call).await {
            Ok(done) => {
                // Ended by us: the Volt ends the call once it has what we sent.
                let _ = call.end().await;
                let _ = tokio::time::timeout(STOP_WAIT, drain(&mut call)).await;
                Ended::Stopped(done)
            }
            Err(error) => lost_or_refused(error, true),
        }
    }

    /// Opens the call and runs the handshake: our state vector; the Volt's diff and state
    /// vector; our diff against it; the Volt's DONE. Returns the call, in UPDATE.
    async fn handshake(&mut self) -> Result<Call> {
        let ours = self.doc.transact().state_vector().encode_v1();
        let start = wire::start(
            &self.database_id,
            &self.document_id,
            &ours,
            self.options.read_only,
            self.options.read_only_fallback,
        );
        let mut call = self
            .client
            .streaming(wire::SYNC_DOCUMENT, Some(start))
            .await?;
        self.status.send_replace(SyncStatus::Syncing);
        let mut assembly = Assembly::default();
        let (diff, server_sv) = loop {
            let message = next(&mut call).await?;
            if message.state != wire::SYNCING {
                continue;
            }
            if message.read_only {
                self.shared.read_only.store(true, Ordering::Release);
            }
            let chunk = message.chunk.unwrap_or_default();
            if let Some(diff) = assembly.add(&chunk, message.complete)? {
                let sv = message.state_vector.ok_or_else(|| {
                    Error::new(
                        ErrorKind::Protocol,
                        "SyncDocument: the handshake's last message has no state vector",
                    )
                })?;
                break (diff, decode_sv(&sv)?);
            }
        };
        apply(&self.doc, &diff)?;
        // Our side: everything the Volt lacks, offline edits included.
        self.shared.dirty.store(false, Ordering::Release);
        let (ours, mine) = {
            let txn = self.doc.transact();
            (txn.encode_diff_v2(&server_sv), txn.state_vector())
        };
        let ours = if self.is_read_only() {
            Vec::new()
        } else {
            ours
        };
        for message in wire::chunks(wire::DONE, &ours) {
            call.send(message).await?;
        }
        loop {
            let message = next(&mut call).await?;
            if message.state == wire::DONE {
                break;
            }
        }
        let mut known = server_sv;
        known.merge(mine);
        self.known = Some(known);
        // Announce our awareness state, if we have one, now that we are live.
        if self.shared.awareness().local_state_raw().is_some() {
            self.shared.awareness_dirty.store(true, Ordering::Release);
        }
        Ok(call)
    }

    fn is_read_only(&self) -> bool {
        self.shared.read_only.load(Ordering::Acquire)
    }

    /// Both ways, until the call ends (an error) or a stop (`Ok`, with whom to tell).
    async fn steady(&mut self, call: &mut Call) -> Result<Option<oneshot::Sender<()>>> {
        let mut assembly = Assembly::default();
        let shared = Arc::clone(&self.shared);
        // When the pending local edits go: set once, so that the Volt's updates, however
        // often they come, never put the flush off.
        let mut flush_at: Option<tokio::time::Instant> = None;
        loop {
            if shared.awareness_dirty.swap(false, Ordering::AcqRel) {
                self.send_awareness(call).await?;
            }
            if shared.dirty.load(Ordering::Acquire) && !self.is_read_only() {
                let at = *flush_at
                    .get_or_insert_with(|| tokio::time::Instant::now() + self.options.flush);
                // Batch what comes within the flush interval, unless the call needs us first.
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {
                        flush_at = None;
                        self.flush(call).await?;
                    }
                    event = call.next() => self.on_event(event, &mut assembly)?,
                    () = shared.changed.notified() => {}
                    command = self.commands.recv() => {
                        self.flush(call).await?;
                        return Ok(stop_reply(command));
                    }
                }
                continue;
            }
            tokio::select! {
                () = shared.changed.notified() => {}
                event = call.next() => self.on_event(event, &mut assembly)?,
                command = self.commands.recv() => {
                    if !self.is_read_only() {
                        self.flush(call).await?;
                    }
                    return Ok(stop_reply(command));
                }
            }
        }
    }

    /// Sends the local edits the Volt does not have, if any.
    async fn flush(&mut self, call: &Call) -> Result<()> {
        if !self.shared.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let known = self.known.get_or_insert_with(StateVector::default);
        let (diff, now) = {
            let txn = self.doc.transact();
            (txn.encode_diff_v2(known), txn.state_vector())
        };
        for message in wire::chunks(wire::UPDATE, &diff) {
            if let Err(e) = call.send(message).await {
                // Not sent: the next connection's handshake carries it.
                self.shared.dirty.store(true, Ordering::Release);
                return Err(e);
            }
        }
        known.merge(now);
        Ok(())
    }

    /// Sends our awareness state (y-protocols update, v1) at once.
    async fn send_awareness(&mut self, call: &Call) -> Result<()> {
        let update = {
            let awareness = self.shared.awareness();
            let own = awareness.client_id();
            awareness.update_with_clients([own])
        };
        let Ok(update) = update else {
            return Ok(());
        };
        for message in wire::chunks(wire::AWARENESS, &update.encode_v1()) {
            call.send(message).await?;
        }
        Ok(())
    }

    fn on_event(&mut self, event: Option<CallEvent>, assembly: &mut Assembly) -> Result<()> {
        let message = match event {
            Some(CallEvent::Data(value)) => wire::response(&value)?,
            Some(CallEvent::Error(e) | CallEvent::Failed(e)) => return Err(e),
            Some(CallEvent::End) | None => {
                return Err(Error::new(ErrorKind::Closed, "the Volt ended the sync"))
            }
        };
        let chunk = message.chunk.unwrap_or_default();
        if message.state == wire::AWARENESS {
            let whole = self.awareness_in.add(&chunk, message.complete)?;
            if let Some(update) = whole {
                self.on_awareness(&update);
            }
            return Ok(());
        }
        if message.state != wire::UPDATE {
            return Ok(());
        }
        if let Some(update) = assembly.add(&chunk, message.complete)? {
            let decoded = apply(&self.doc, &update)?;
            if let Some(known) = &mut self.known {
                known.merge(decoded);
            }
        }
        Ok(())
    }
}

impl Task {
    /// Applies a peer's awareness update; one that does not decode is skipped (it is
    /// presence, not data).
    fn on_awareness(&self, bytes: &[u8]) {
        let applied = AwarenessUpdate::decode_v1(bytes)
            .map_err(|e| e.to_string())
            .and_then(|update| {
                self.shared
                    .awareness()
                    .apply_update_with(update, ORIGIN)
                    .map_err(|e| e.to_string())
            });
        match applied {
            Ok(()) => self.shared.awareness_changed(),
            Err(e) => tracing::debug!(%e, "volt sync: an awareness update skipped"),
        }
    }
}

fn stop_reply(command: Option<Command>) -> Option<oneshot::Sender<()>> {
    command.map(|Command::Stop(done)| done)
}

/// A lost connection is retried; a refusal that asking again will not change is not.
fn lost_or_refused(error: Error, synced: bool) -> Ended {
    // NOT_FOUND, PERMISSION_DENIED, INVALID_ARGUMENT, UNAUTHENTICATED, FAILED_PRECONDITION.
    let final_codes = [5, 7, 3, 16, 9];
    match error.status().map(|s| s.code) {
        Some(code) if final_codes.contains(&code) => Ended::Refused(error),
        _ => Ended::Lost { error, synced },
    }
}

/// The next response; the call's end or failure is an error.
async fn next(call: &mut Call) -> Result<wire::Response> {
    match call.message().await? {
        Some(value) => wire::response(&value),
        None => Err(Error::new(ErrorKind::Closed, "the Volt ended the sync")),
    }
}

/// Reads the rest of a call we ended.
async fn drain(call: &mut Call) {
    while let Ok(Some(_)) = call.message().await {}
}

fn decode_sv(bytes: &[u8]) -> Result<StateVector> {
    StateVector::decode_v1(bytes).map_err(|e| {
        Error::new(
            ErrorKind::Protocol,
            "SyncDocument: a state vector that does not decode",
        )
        .with_source(e)
    })
}

/// Applies a v2 update from the Volt with the provider's origin; returns its state vector.
fn apply(doc: &Doc, bytes: &[u8]) -> Result<StateVector> {
    let update = Update::decode_v2(bytes).map_err(|e| {
        Error::new(
            ErrorKind::Protocol,
            "SyncDocument: an update that does not decode",
        )
        .with_source(e)
    })?;
    let sv = update.state_vector();
    let mut txn = doc.transact_mut_with(ORIGIN);
    txn.apply_update(update).map_err(|e| {
        Error::new(
            ErrorKind::Protocol,
            "SyncDocument: an update that does not apply",
        )
        .with_source(e)
    })?;
    Ok(sv)
}

/// Marks the document changed: called by the document's observer on every local commit.
pub(super) fn mark_changed(shared: &Shared) {
    shared.dirty.store(true, Ordering::Release);
    shared.changed.notify_one();
}
