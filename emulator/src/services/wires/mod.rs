//! WireAPI: wires with fan-out to every subscriber.
//!
//! A wire is a resource of kind `wire`, made with `SaveWire` (or `VoltAPI/SaveResource` with that
//! kind). Publishing and subscribing both need the wire resource to exist, as on a real Volt
//! where the access policy of the wire is checked on the first message: an unknown id is a
//! `NOT_FOUND` status reply, and a resource of another kind an `INVALID_ARGUMENT` one. This is
//! what lets the official clients' "send `{wire_id}` first to fail fast" idiom work.
//!
//! * `PublishWire` (declared bidi; used as a client stream): the first request names `wire_id`
//!   and may carry a chunk; later requests carry chunks (repeating the same `wire_id` is fine,
//!   naming another wire is `INVALID_ARGUMENT`). Every non-empty chunk is handed, in order, to
//!   every subscriber of the wire at that moment; empty chunks are not delivered. When the
//!   publisher ends its side the call answers one `PublishWireResponse` with a `status` of code
//!   0 and an empty message, then ends. Nothing is sent before that unless the call fails.
//! * `SubscribeWire` (bidi): the first request is `{wire_id}`; the call then streams
//!   `{chunk}` for every chunk published after the subscription was registered. A later
//!   `{stop: true}`, or the client ending its side, ends the call normally with no further
//!   response. Other later requests are ignored.
//! * `SaveWire`: creates the wire (under `create_in_parent_id`, else the caller's home) when
//!   `create` is set or the id is unknown, otherwise updates it. With `persist` the wire
//!   becomes a persistent one (`persist.rs`: chunks stored in a table of its own database,
//!   `persist_table`, and `do_not_persist` on a publish request).
//!
//! Limits and the slow-subscriber policy:
//! * A chunk may be at most [`MAX_CHUNK_BYTES`] (16 MiB); a bigger one fails the publish call
//!   with `INVALID_ARGUMENT` (chunks published before it have been delivered).
//! * Each subscriber has its own queue of [`SUBSCRIBER_QUEUE`] chunks. Publishing never waits
//!   for a subscriber: a chunk is offered to each queue without blocking. A subscriber whose
//!   queue is full when a chunk arrives is removed from the wire at once, the chunks still
//!   queued for it are discarded, and its call ends with a `RESOURCE_EXHAUSTED` status reply
//!   ("subscriber too slow: N chunks behind, subscription ended"). The publisher and every
//!   other subscriber carry on unaffected. Worst-case memory per subscriber is therefore
//!   `SUBSCRIBER_QUEUE` chunks (chunk buffers are shared between subscribers, not copied).
//! * A subscription is removed from the hub whenever its call ends, however it ends (stop,
//!   client end, client gone, error, or the handler being dropped), so nothing leaks.
//!
//! The hub's lock is a `std::sync::Mutex` held only for map updates and non-blocking queue
//! offers, never across an `.await`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use prost::Message;
use tdx_volt::proto::volt as pb;
use tokio::sync::{mpsc, oneshot, watch};

use crate::call::{Caller, Code, Failure, Inbound, Outbound};

use super::access::names;
use super::resources::kind;
use super::{unary, Services};

pub mod persist;

/// The largest chunk a publisher may send, in bytes.
pub const MAX_CHUNK_BYTES: usize = 16 * 1024 * 1024;

/// Chunks queued per subscriber before it counts as too slow and is cut off.
pub const SUBSCRIBER_QUEUE: usize = 256;

struct Subscriber {
    id: u64,
    /// Pre-encoded `SubscribeWireResponse { chunk }` messages.
    queue: mpsc::Sender<Bytes>,
    /// Fired (with how far behind it was) when the subscriber is cut off for being slow.
    cut_off: Option<oneshot::Sender<usize>>,
}

/// The live wires of this Volt: who is subscribed to what.
pub struct WireHub {
    wires: Mutex<HashMap<String, Vec<Subscriber>>>,
    next_id: AtomicU64,
    /// Bumped whenever a subscription is added or removed.
    changes: watch::Sender<u64>,
}

impl Default for WireHub {
    fn default() -> Self {
        WireHub::new()
    }
}

impl WireHub {
    /// An empty hub.
    pub fn new() -> WireHub {
        WireHub {
            wires: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            changes: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<Subscriber>>> {
        // Every mutation under the lock is a single push/retain/remove, so a poisoned map is
        // still consistent.
        self.wires.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// How many subscribers a wire has right now.
    pub fn subscriber_count(&self, wire_id: &str) -> usize {
        self.lock().get(wire_id).map_or(0, Vec::len)
    }

    /// How many wires have at least one subscriber.
    pub fn active_wires(&self) -> usize {
        self.lock().len()
    }

    /// A receiver that changes whenever a subscription is added or removed (for observers and
    /// tests that must wait for a subscription to be in place).
    pub fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Registers a subscriber; it is removed again when the [`Subscription`] is dropped.
    pub fn subscribe(&self, wire_id: &str) -> Subscription<'_> {
        let (queue, chunks) = mpsc::channel(SUBSCRIBER_QUEUE);
        let (cut_off, cut_off_rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .entry(wire_id.to_owned())
            .or_default()
            .push(Subscriber {
                id,
                queue,
                cut_off: Some(cut_off),
            });
        self.changed();
        Subscription {
            hub: self,
            wire_id: wire_id.to_owned(),
            id,
            chunks,
            cut_off: cut_off_rx,
        }
    }

    /// Offers one chunk to every current subscriber of the wire without waiting; subscribers
    /// with a full queue are cut off. Returns how many subscribers took the chunk.
    pub fn publish(&self, wire_id: &str, chunk: Vec<u8>) -> usize {
        let encoded = Bytes::from(
            pb::SubscribeWireResponse {
                payload: Some(pb::subscribe_wire_response::Payload::Chunk(chunk)),
            }
            .encode_to_vec(),
        );
        let mut delivered = 0;
        let mut removed = false;
        {
            let mut wires = self.lock();
            let Some(subscribers) = wires.get_mut(wire_id) else {
                return 0;
            };
            subscribers.retain_mut(|s| match s.queue.try_send(encoded.clone()) {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if let Some(cut_off) = s.cut_off.take() {
                        // The subscription may be ending anyway; nobody to tell then.
                        let _ = cut_off.send(s.queue.max_capacity());
                    }
                    removed = true;
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    removed = true;
                    false
                }
            });
            if subscribers.is_empty() {
                wires.remove(wire_id);
            }
        }
        if removed {
            self.changed();
        }
        delivered
    }

    fn remove(&self, wire_id: &str, id: u64) {
        let removed = {
            let mut wires = self.lock();
            match wires.get_mut(wire_id) {
                Some(subscribers) => {
                    let before = subscribers.len();
                    subscribers.retain(|s| s.id != id);
                    let removed = subscribers.len() != before;
                    if subscribers.is_empty() {
                        wires.remove(wire_id);
                    }
                    removed
                }
                None => false,
            }
        };
        if removed {
            self.changed();
        }
    }
}

/// One registered subscriber; dropping it unregisters it.
pub struct Subscription<'a> {
    hub: &'a WireHub,
    wire_id: String,
    id: u64,
    chunks: mpsc::Receiver<Bytes>,
    cut_off: oneshot::Receiver<usize>,
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        self.hub.remove(&self.wire_id, self.id);
    }
}

fn too_slow(behind: usize) -> Failure {
    Failure::reply(
        Code::ResourceExhausted,
        format!("subscriber too slow: {behind} chunks behind, subscription ended"),
    )
}

/// Routes a WireAPI method.
pub async fn dispatch(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    match name {
        "SaveWire" => {
            unary(inbound, outbound, |r: pb::SaveWireRequest| async move {
                save_wire(svc, caller, r).await
            })
            .await
        }
        "PublishWire" => publish(svc, caller, inbound, outbound).await,
        "SubscribeWire" => subscribe(svc, caller, inbound, outbound).await,
        _ => Err(Failure::unimplemented(&format!(
            "/tdx.volt_api.volt.v1.WireAPI/{name}"
        ))),
    }
}

fn is_wire(resource: &pb::Resource) -> bool {
    kind::has(&resource.kind, kind::Role::Wire)
}

/// The wire resource, once `caller` is found to have `access` to it, or the reply failure
/// for an unusable id.
fn require_wire(
    svc: &Services,
    caller: &Caller,
    wire_id: &str,
    access: &str,
) -> Result<pb::Resource, Failure> {
    let resource = svc
        .resources()
        .get(wire_id)
        .ok_or_else(|| Failure::not_found(format!("wire not found: {wire_id}")))?;
    if !is_wire(&resource) {
        return Err(Failure::invalid(format!(
            "resource {wire_id} is not a wire"
        )));
    }
    svc.authorize(caller, &resource.id, access)?;
    Ok(resource)
}

async fn save_wire(
    svc: &Services,
    caller: &Caller,
    r: pb::SaveWireRequest,
) -> Result<pb::SaveWireResponse, Failure> {
    let store = svc.resources();
    let mut resource = r
        .resource
        .ok_or_else(|| Failure::invalid("SaveWire needs a resource"))?;
    let existing = store.get(&resource.id).filter(|_| !r.create);
    if r.persist {
        let kinds = existing.as_ref().map_or(&[][..], |e| &e.kind[..]);
        persist::enable(&mut resource, kinds, &r.persist_table)?;
    }
    let saved = if existing.is_none() {
        let parent = if r.create_in_parent_id.is_empty() {
            super::volt_api::home_of(svc, caller).await
        } else {
            r.create_in_parent_id
        };
        svc.authorize(caller, &parent, names::CREATE)?;
        if !is_wire(&resource) {
            resource.kind.push(kind::WIRE.to_owned());
        }
        store.create(&parent, &caller.client_id, resource).await?
    } else {
        require_wire(svc, caller, &resource.id, names::WRITE)?;
        if !resource.kind.is_empty() && !is_wire(&resource) {
            resource.kind.push(kind::WIRE.to_owned());
        }
        store.update(&resource, r.purge_attributes).await?
    };
    Ok(pb::SaveWireResponse {
        status: None,
        resource: Some(saved),
    })
}

fn check_chunk(chunk: &[u8]) -> Result<(), Failure> {
    if chunk.len() > MAX_CHUNK_BYTES {
        return Err(Failure::invalid(format!(
            "PublishWire: chunk of {} bytes exceeds the {MAX_CHUNK_BYTES}-byte limit",
            chunk.len()
        )));
    }
    Ok(())
}

async fn publish(
    svc: &Arc<Services>,
    caller: &Caller,
    mut inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    let first = inbound
        .next::<pb::PublishWireRequest>()
        .await?
        .ok_or_else(|| Failure::invalid("PublishWire: the call ended before naming a wire"))?;
    if first.wire_id.is_empty() {
        return Err(Failure::invalid(
            "PublishWire: the first request must name wire_id",
        ));
    }
    // The hub knows a wire by its id, whichever way the caller named it (`@alias` too).
    let named = first.wire_id.clone();
    let wire = require_wire(svc, caller, &named, names::WRITE)?;
    let wire_id = wire.id.clone();
    let mut history = match persist::table_of(&wire)? {
        Some(table) => Some(persist::HistoryWriter::start(svc, &wire_id, &table).await?),
        None => None,
    };
    let hub = svc.wires();
    let mut next = Some(first);
    while let Some(request) = next {
        if !request.wire_id.is_empty() && request.wire_id != named && request.wire_id != wire_id {
            return Err(Failure::invalid(format!(
                "PublishWire: this call publishes to {wire_id}, not {}",
                request.wire_id
            )));
        }
        check_chunk(&request.chunk)?;
        if !request.chunk.is_empty() {
            if let Some(history) = history.as_mut().filter(|_| !request.do_not_persist) {
                history
                    .write(&caller.client_id, request.chunk.clone())
                    .await?;
            }
            hub.publish(&wire_id, request.chunk);
        }
        next = inbound.next::<pb::PublishWireRequest>().await?;
    }
    if let Some(history) = history {
        history.finish().await?;
    }
    outbound
        .send(&pb::PublishWireResponse {
            status: Some(pb::Status::default()),
        })
        .await
}

async fn subscribe(
    svc: &Arc<Services>,
    caller: &Caller,
    mut inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    use pb::subscribe_wire_request::Payload;
    let wire_id = match inbound.next::<pb::SubscribeWireRequest>().await? {
        // The client ended (or stopped) before subscribing: nothing to do.
        None => return Ok(()),
        Some(request) => match request.payload {
            Some(Payload::Stop(_)) => return Ok(()),
            Some(Payload::WireId(id)) if !id.is_empty() => id,
            _ => {
                return Err(Failure::invalid(
                    "SubscribeWire: the first request must name wire_id",
                ))
            }
        },
    };
    let wire_id = require_wire(svc, caller, &wire_id, names::READ)?.id;
    let mut subscription = svc.wires().subscribe(&wire_id);
    // A chunk taken from the queue but not yet accepted by the transport.
    let mut pending: Option<Bytes> = None;
    loop {
        tokio::select! {
            biased;
            behind = &mut subscription.cut_off => {
                return match behind {
                    Ok(behind) => Err(too_slow(behind)),
                    // Never fired and never will: the hub let go of this subscriber.
                    Err(_) => Ok(()),
                };
            }
            request = inbound.next::<pb::SubscribeWireRequest>() => {
                match request? {
                    None => return Ok(()),
                    Some(r) if r.payload == Some(Payload::Stop(true)) => return Ok(()),
                    // A repeated wire_id or `stop: false` changes nothing.
                    Some(_) => {}
                }
            }
            () = outbound.closed() => return Err(Failure::cancelled()),
            sent = outbound.send_encoded(pending.clone().unwrap_or_default()), if pending.is_some() => {
                sent?;
                pending = None;
            }
            chunk = subscription.chunks.recv(), if pending.is_none() => match chunk {
                Some(chunk) => pending = Some(chunk),
                None => {
                    // The hub dropped this subscriber; it may have been cut off just now.
                    return match subscription.cut_off.try_recv() {
                        Ok(behind) => Err(too_slow(behind)),
                        Err(_) => Ok(()),
                    };
                }
            },
        }
    }
}

#[cfg(test)]
mod tests;
