//! One SyncDocument stream, from the client's `sync_start` to its half-close.
//!
//! 1. The first request is `{sync_start, sync_state: SYNCING}`. The stream is registered with
//!    the document and answered with the diff against the client's state vector as SYNCING
//!    messages of at most [`CHUNK_BYTES`], each carrying `update`, the server's state vector
//!    and `is_read_only`.
//! 2. The client's DONE update (chunks until `complete`) is applied, then `{sync_state: DONE}`
//!    is sent, then, as UPDATE, whatever other clients changed since the SYNCING diff. Only now
//!    does the stream receive other clients' updates. Awareness flows from the start.
//! 3. Steady state: complete UPDATEs are applied, stored and fanned out; document updates from
//!    others are sent as UPDATE and awareness as AWARENESS, both chunked.
//! 4. When the stream ends, however it ends, the other streams get an awareness update removing
//!    the awareness states this one announced (as y-protocols does for a peer that leaves).
//!    The client half-closing ends the stream with OK. A read-only stream whose update would
//!    change the document ends with PERMISSION_DENIED; a malformed one with INVALID_ARGUMENT;
//!    a stream too slow to take the updates it is sent with RESOURCE_EXHAUSTED.

use std::collections::HashMap;
use std::sync::Arc;

use tdx_volt::proto::volt as pb;
use tokio::sync::oneshot;
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, StateVector};

use crate::call::{Caller, Code, Failure, Inbound, Outbound};
use crate::services::access::names;
use crate::services::Services;

use super::document::{Document, Event, Subscription};
use super::{authorize_write, open_document, MAX_UPDATE_BYTES};

use pb::sync_document_request::Payload;
use pb::SyncState;

/// The largest chunk of an update one message carries.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// The most awareness clients one stream is remembered to have announced.
pub const MAX_PRESENT: usize = 64;

/// Serves one SyncDocument call.
pub async fn sync_document(
    svc: &Arc<Services>,
    caller: &Caller,
    mut inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    let Some(first) = inbound.next::<pb::SyncDocumentRequest>().await? else {
        return Ok(());
    };
    let Some(Payload::SyncStart(start)) = first.payload else {
        return Err(Failure::invalid(
            "SyncDocument: the first request must carry sync_start",
        ));
    };
    let writable = may_write(svc, caller, &start)?;
    let document = open_document(svc, caller, &start.database_id, &start.document_id).await?;
    let client_sv = decode_state_vector(&start.state_vector)?;
    let joined = document.join(&client_sv).await;
    let sent_sv = decode_state_vector(&joined.state_vector)?;
    tracing::debug!(
        document = %start.document_id,
        writable,
        diff_bytes = joined.diff.len(),
        "SyncDocument: handshake"
    );
    let mut stream = Stream {
        document,
        subscription: joined.subscription,
        outbound,
        writable,
        incoming: Incoming::default(),
        present: HashMap::new(),
    };
    let syncing = pb::SyncDocumentResponse {
        state_vector: joined.state_vector,
        is_read_only: !writable,
        ..Default::default()
    };
    stream
        .send_chunked(SyncState::Syncing, &joined.diff, syncing)
        .await?;
    // However the stream ends, dropping it tells the others it left: also when the client
    // resets the call and the call's task is aborted mid-await.
    match stream.handshake(&mut inbound, &sent_sv).await {
        Ok(true) => stream.steady(&mut inbound).await,
        other => other.map(|_| ()),
    }
}

/// Whether the stream may change the document: `read_only` asks not to; without
/// `volt:database-write` it may not, and is refused unless it asked for `read_only_fallback`.
fn may_write(
    svc: &Services,
    caller: &Caller,
    start: &pb::SyncDocumentStart,
) -> Result<bool, Failure> {
    if start.read_only {
        return Ok(false);
    }
    match authorize_write(svc, caller, &start.database_id, &start.document_id) {
        Ok(()) => Ok(true),
        Err(_) if start.read_only_fallback => Ok(false),
        // Refused for reading too: open_document says so (NOT_FOUND, or its own refusal).
        Err(refused) => match open_check(svc, caller, start) {
            Err(first) => Err(first),
            Ok(()) => Err(refused),
        },
    }
}

/// Whether the stream may read the document at all (the refusal to report first).
fn open_check(
    svc: &Services,
    caller: &Caller,
    start: &pb::SyncDocumentStart,
) -> Result<(), Failure> {
    let (resource, _) = crate::services::sqlite::databases::find_database(svc, &start.database_id)?;
    svc.authorize_document(
        caller,
        &resource.id,
        names::DATABASE_READ,
        &start.document_id,
    )
}

fn decode_state_vector(bytes: &[u8]) -> Result<StateVector, Failure> {
    if bytes.is_empty() {
        return Ok(StateVector::default());
    }
    StateVector::decode_v1(bytes)
        .map_err(|e| Failure::invalid(format!("a malformed Yjs v1 state vector: {e}")))
}

/// Chunks being gathered into a complete update, per kind.
#[derive(Default)]
struct Incoming {
    update: Vec<u8>,
    awareness: Vec<u8>,
}

impl Incoming {
    /// Adds a chunk; answers the whole payload once `complete`.
    fn add(
        &mut self,
        awareness: bool,
        update: Option<pb::SyncDocumentUpdate>,
    ) -> Result<Option<Vec<u8>>, Failure> {
        let update = update.unwrap_or_default();
        let buffer = if awareness {
            &mut self.awareness
        } else {
            &mut self.update
        };
        if buffer.len().saturating_add(update.chunk.len()) > MAX_UPDATE_BYTES {
            return Err(Failure::reply(
                Code::ResourceExhausted,
                format!("SyncDocument: an update of more than {MAX_UPDATE_BYTES} bytes"),
            ));
        }
        buffer.extend_from_slice(&update.chunk);
        Ok(update.complete.then(|| std::mem::take(buffer)))
    }
}

struct Stream<'a> {
    document: Arc<Document>,
    subscription: Subscription,
    outbound: &'a Outbound,
    writable: bool,
    incoming: Incoming,
    /// The awareness clients this stream announced (client id → clock), to announce their
    /// removal to the others when it ends. Nothing else of awareness is kept.
    present: HashMap<ClientID, u32>,
}

/// What the next step of a stream is.
enum Next {
    Request(Option<pb::SyncDocumentRequest>),
    Event(Option<Event>),
    CutOff,
    Gone,
}

impl Stream<'_> {
    async fn next(&mut self, inbound: &mut Inbound, events: bool) -> Result<Next, Failure> {
        let cut_off = &mut self.subscription.cut_off;
        let queue = &mut self.subscription.events;
        tokio::select! {
            fired = cut_off => Ok(match fired {
                Ok(()) => Next::CutOff,
                Err(oneshot::error::RecvError { .. }) => Next::Gone,
            }),
            request = inbound.next::<pb::SyncDocumentRequest>() => Ok(Next::Request(request?)),
            event = queue.recv(), if events => Ok(Next::Event(event)),
            () = self.outbound.closed() => Ok(Next::Gone),
        }
    }

    /// Until the client's DONE: awareness both ways, the DONE update applied. `false` when
    /// the client ended first.
    async fn handshake(
        &mut self,
        inbound: &mut Inbound,
        sent_sv: &StateVector,
    ) -> Result<bool, Failure> {
        loop {
            let request = match self.next(inbound, true).await? {
                Next::Request(Some(request)) => request,
                Next::Request(None) => return Ok(false),
                Next::Event(Some(event)) => {
                    // Document updates are not queued for a stream before its DONE.
                    self.send_event(event).await?;
                    continue;
                }
                Next::Event(None) => return Err(self.dropped()),
                Next::Gone => return Err(Failure::cancelled()),
                Next::CutOff => return Err(too_slow()),
            };
            match SyncState::try_from(request.sync_state) {
                Ok(SyncState::Done) => {
                    let Some(update) = self.incoming.add(false, update_of(request))? else {
                        continue;
                    };
                    let held = self
                        .document
                        .finish_handshake(self.subscription.id, sent_sv, &update, self.writable)
                        .await?;
                    self.send(pb::SyncDocumentResponse {
                        sync_state: SyncState::Done as i32,
                        ..Default::default()
                    })
                    .await?;
                    if let Some(held) = held {
                        self.send_chunked(SyncState::Update, &held, Default::default())
                            .await?;
                    }
                    return Ok(true);
                }
                Ok(SyncState::Awareness) => self.awareness(request)?,
                Ok(SyncState::Update) => self.update(request).await?,
                _ => {
                    return Err(Failure::invalid(
                        "SyncDocument: expected the client's DONE update",
                    ))
                }
            }
        }
    }

    /// After the handshake, until the client ends.
    async fn steady(&mut self, inbound: &mut Inbound) -> Result<(), Failure> {
        loop {
            let request = match self.next(inbound, true).await? {
                Next::Request(Some(request)) => request,
                Next::Request(None) => return Ok(()),
                Next::Event(Some(event)) => {
                    self.send_event(event).await?;
                    continue;
                }
                Next::Event(None) => return Err(self.dropped()),
                Next::Gone => return Err(Failure::cancelled()),
                Next::CutOff => return Err(too_slow()),
            };
            match SyncState::try_from(request.sync_state) {
                Ok(SyncState::Update) => self.update(request).await?,
                Ok(SyncState::Awareness) => self.awareness(request)?,
                _ => {
                    return Err(Failure::invalid(
                        "SyncDocument: after DONE only UPDATE and AWARENESS are expected",
                    ))
                }
            }
        }
    }

    /// Why the document let go of this stream: cut off for being slow, or the call ending.
    fn dropped(&mut self) -> Failure {
        match self.subscription.cut_off.try_recv() {
            Ok(()) => too_slow(),
            Err(_) => Failure::cancelled(),
        }
    }

    async fn update(&mut self, request: pb::SyncDocumentRequest) -> Result<(), Failure> {
        if let Some(update) = self.incoming.add(false, update_of(request))? {
            self.document
                .apply(self.subscription.id, &update, self.writable)
                .await?;
        }
        Ok(())
    }

    fn awareness(&mut self, request: pb::SyncDocumentRequest) -> Result<(), Failure> {
        if let Some(update) = self.incoming.add(true, update_of(request))? {
            // Awareness is relayed as it came; one that does not decode is relayed too, only
            // not remembered for the removal at the end.
            if let Ok(decoded) = AwarenessUpdate::decode_v1(&update) {
                for (client, entry) in decoded.clients {
                    if &*entry.json == "null" {
                        self.present.remove(&client);
                    } else if self.present.len() < MAX_PRESENT || self.present.contains_key(&client)
                    {
                        self.present.insert(client, entry.clock);
                    }
                }
            }
            self.document.awareness(self.subscription.id, update);
        }
        Ok(())
    }

    /// Tells the other streams that the awareness states this one announced are gone.
    /// (Synchronous, so that it runs on drop.)
    fn leave(&mut self) {
        if self.present.is_empty() {
            return;
        }
        let removal = AwarenessUpdate {
            clients: self
                .present
                .drain()
                .map(|(client, clock)| {
                    let entry = AwarenessUpdateEntry {
                        clock: clock.wrapping_add(1),
                        json: Arc::from("null"),
                    };
                    (client, entry)
                })
                .collect(),
        };
        self.document
            .awareness(self.subscription.id, removal.encode_v1());
    }

    async fn send_event(&self, event: Event) -> Result<(), Failure> {
        match event {
            Event::Update(update) => {
                self.send_chunked(SyncState::Update, &update, Default::default())
                    .await
            }
            Event::Awareness(update) => {
                self.send_chunked(SyncState::Awareness, &update, Default::default())
                    .await
            }
        }
    }

    async fn send(&self, response: pb::SyncDocumentResponse) -> Result<(), Failure> {
        self.outbound.send(&response).await
    }

    /// Sends `payload` in chunks of at most [`CHUNK_BYTES`] (one empty chunk when it is empty),
    /// each message a copy of `template` with the chunk and `sync_state`.
    async fn send_chunked(
        &self,
        state: SyncState,
        payload: &[u8],
        template: pb::SyncDocumentResponse,
    ) -> Result<(), Failure> {
        let mut chunks = payload.chunks(CHUNK_BYTES).peekable();
        if chunks.peek().is_none() {
            return self.send(message(&template, state, &[], true)).await;
        }
        while let Some(chunk) = chunks.next() {
            let complete = chunks.peek().is_none();
            self.send(message(&template, state, chunk, complete))
                .await?;
        }
        Ok(())
    }
}

fn message(
    template: &pb::SyncDocumentResponse,
    state: SyncState,
    chunk: &[u8],
    complete: bool,
) -> pb::SyncDocumentResponse {
    pb::SyncDocumentResponse {
        sync_state: state as i32,
        update: Some(pb::SyncDocumentUpdate {
            chunk: chunk.to_vec(),
            complete,
        }),
        ..template.clone()
    }
}

fn update_of(request: pb::SyncDocumentRequest) -> Option<pb::SyncDocumentUpdate> {
    match request.payload {
        Some(Payload::Update(update)) => Some(update),
        _ => None,
    }
}

fn too_slow() -> Failure {
    Failure::reply(
        Code::ResourceExhausted,
        "SyncDocument: the client fell too far behind the document's updates; stream ended",
    )
}

impl Drop for Stream<'_> {
    fn drop(&mut self) {
        self.leave();
    }
}
