//! [`Call`]: one streaming call, whatever the transport. Messages go out with
//! [`Call::send`] and [`Call::end`]; what the Volt sends comes back as a [`Stream`] of
//! [`CallEvent`]s, in arrival order.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use crate::transport::{grpc, websocket};
use crate::{Error, ErrorKind, Result, Status};

/// What a call delivers.
#[derive(Debug)]
pub enum CallEvent {
    /// A response message, as proto3 JSON.
    Data(Value),
    /// An error. When the Volt reports it in a response (a `status` with a non-empty
    /// message) the call goes on and more events may follow; any other error ends the call
    /// and is its last event.
    Error(Error),
    /// The Volt ended the call normally; this is the last event.
    End,
}

/// A live call to a Volt method.
///
/// Read it as a [`Stream`] of [`CallEvent`]s (the stream is over after
/// [`CallEvent::End`] or an error that ends the call), or with [`Call::message`]. Dropping a
/// call that is still live cancels it: the connection ends it on the wire and forgets it.
///
/// ```no_run
/// use futures_util::StreamExt as _;
/// use serde_json::json;
/// use tdx_volt::client::CallEvent;
///
/// # async fn demo(client: tdx_volt::VoltClient) -> tdx_volt::Result<()> {
/// let mut sub = client.subscribe_wire(json!({"wire_id": "my-wire"})).await?;
/// while let Some(event) = sub.next().await {
///     match event {
///         CallEvent::Data(message) => println!("{message}"),
///         CallEvent::Error(e) => eprintln!("{e}"),
///         CallEvent::End => break,
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Call {
    path: Arc<str>,
    io: CallIo,
    events: mpsc::Receiver<(CallEvent, usize)>,
    unread_bytes: Arc<AtomicUsize>,
    outcome: oneshot::Receiver<Result<()>>,
    finished: bool,
    _permit: OwnedSemaphorePermit,
}

/// The transport's side of a call: how `send` and `end` reach the wire.
pub(crate) enum CallIo {
    Websocket(websocket::CallHandle),
    Grpc(grpc::CallHandle),
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("path", &self.path)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Call {
    pub(crate) fn new(
        path: Arc<str>,
        io: CallIo,
        receivers: Receivers,
        permit: OwnedSemaphorePermit,
    ) -> Call {
        Call {
            path,
            io,
            events: receivers.events,
            unread_bytes: receivers.unread_bytes,
            outcome: receivers.outcome,
            finished: false,
            _permit: permit,
        }
    }

    /// The method path this call invokes.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Sends a request message (proto3 JSON). The first message of a call opened without a
    /// request becomes its request. Waits while the connection's (or, on gRPC, the call's)
    /// queue is full, and on the websocket gateway while the call's key exchange is under way
    /// (bounded by the request timeout).
    ///
    /// Fails with [`ErrorKind::Closed`] once the call has ended or [`Call::end`] was called,
    /// and with [`ErrorKind::Limit`] for a message over the client's size limit.
    pub async fn send(&self, message: Value) -> Result<()> {
        match &self.io {
            CallIo::Websocket(h) => h.send(to_json_text(&message)?).await,
            CallIo::Grpc(h) => h.send(&message).await,
        }
    }

    /// Ends the client's side of the call (no more messages); responses keep coming until
    /// the Volt ends the call. Calling it twice is harmless.
    pub async fn end(&self) -> Result<()> {
        match &self.io {
            CallIo::Websocket(h) => h.end().await,
            CallIo::Grpc(h) => {
                h.end();
                Ok(())
            }
        }
    }

    /// Whether the call's end carries its outcome after the last response (gRPC trailers),
    /// so that a unary call should read it.
    pub(crate) fn waits_for_trailers(&self) -> bool {
        matches!(self.io, CallIo::Grpc(_))
    }

    /// The next response message: `Ok(Some(message))`, `Ok(None)` once the call has ended
    /// normally, or the error the Volt (or the connection) reported.
    pub async fn message(&mut self) -> Result<Option<Value>> {
        match futures_util::StreamExt::next(self).await {
            Some(CallEvent::Data(value)) => Ok(Some(value)),
            Some(CallEvent::Error(e)) => Err(e),
            Some(CallEvent::End) | None => Ok(None),
        }
    }
}

impl Stream for Call {
    type Item = CallEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<CallEvent>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.events.poll_recv(cx) {
            Poll::Ready(Some((event, bytes))) => {
                self.unread_bytes.fetch_sub(bytes, Ordering::AcqRel);
                Poll::Ready(Some(event))
            }
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                // Every event is delivered; the outcome was settled before the sender went.
                self.finished = true;
                let event = match self.outcome.try_recv() {
                    Ok(Ok(())) => CallEvent::End,
                    Ok(Err(e)) => CallEvent::Error(e),
                    Err(_) => CallEvent::Error(Error::new(
                        ErrorKind::Closed,
                        "the connection was dropped before the call ended",
                    )),
                };
                Poll::Ready(Some(event))
            }
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // Closed first, so the transport sees the caller gone as soon as the notice exists.
        self.events.close();
        // Also for a finished call: the transport keeps a little state until the handle goes.
        match &self.io {
            CallIo::Websocket(h) => h.cancel(),
            CallIo::Grpc(h) => h.cancel(),
        }
    }
}

/// A message as the JSON text the websocket gateway carries.
pub(crate) fn to_json_text(message: &Value) -> Result<String> {
    serde_json::to_string(message)
        .map_err(|e| Error::new(ErrorKind::Schema, "the message does not serialize").with_source(e))
}

/// Bytes of responses a call may hold unread (besides the one that arrives when it holds
/// none): 64 MiB.
pub(crate) const MAX_UNREAD_BYTES: usize = 64 * 1024 * 1024;

/// The receiving ends a [`Call`] reads.
pub(crate) struct Receivers {
    events: mpsc::Receiver<(CallEvent, usize)>,
    unread_bytes: Arc<AtomicUsize>,
    outcome: oneshot::Receiver<Result<()>>,
}

/// The sending ends a transport writes a call's events into. Data and in-call errors are
/// offered without ever waiting; the end (or the error that ends the call) is settled once.
#[derive(Debug)]
pub(crate) struct Delivery {
    events: mpsc::Sender<(CallEvent, usize)>,
    unread_bytes: Arc<AtomicUsize>,
    outcome: Option<oneshot::Sender<Result<()>>>,
}

/// What became of an offered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Queued for the caller.
    Queued,
    /// The caller has too many events, or too many bytes, unread: it is too slow for this call.
    Full,
    /// The caller dropped the call.
    Gone,
}

/// A call's channel pair, with room for `capacity` unread events (and at most
/// [`MAX_UNREAD_BYTES`]).
pub(crate) fn channels(capacity: usize) -> (Delivery, Receivers) {
    let (events_tx, events_rx) = mpsc::channel(capacity.max(1));
    let (outcome_tx, outcome_rx) = oneshot::channel();
    let unread_bytes = Arc::new(AtomicUsize::new(0));
    (
        Delivery {
            events: events_tx,
            unread_bytes: unread_bytes.clone(),
            outcome: Some(outcome_tx),
        },
        Receivers {
            events: events_rx,
            unread_bytes,
            outcome: outcome_rx,
        },
    )
}

impl Delivery {
    /// Offers a data message or an in-call error of `bytes` bytes, never waiting.
    pub(crate) fn offer(&self, event: CallEvent, bytes: usize) -> Offer {
        let unread = self.unread_bytes.load(Ordering::Acquire);
        if unread > 0 && unread.saturating_add(bytes) > MAX_UNREAD_BYTES {
            return if self.events.is_closed() {
                Offer::Gone
            } else {
                Offer::Full
            };
        }
        // Counted before it is queued, so the reader never subtracts what was not added.
        self.unread_bytes.fetch_add(bytes, Ordering::AcqRel);
        let refused = match self.events.try_send((event, bytes)) {
            Ok(()) => return Offer::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Offer::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Gone,
        };
        self.unread_bytes.fetch_sub(bytes, Ordering::AcqRel);
        refused
    }

    /// Whether the caller has dropped the call.
    pub(crate) fn is_gone(&self) -> bool {
        self.events.is_closed()
    }

    /// Settles how the call ended. The caller sees it after every event already queued.
    pub(crate) fn finish(mut self, outcome: Result<()>) {
        if let Some(tx) = self.outcome.take() {
            let _ = tx.send(outcome);
        }
    }

    /// Resolves once the caller has dropped the call.
    pub(crate) async fn gone(&self) {
        self.events.closed().await;
    }
}

/// The event for a response: an in-call error when its `status` has a message (the rule of
/// every official client), else the response itself.
pub(crate) fn response_event(response: Value) -> CallEvent {
    match response.get("status").and_then(Status::from_json) {
        Some(status) if status.is_error() => CallEvent::Error(Error::from_status(status)),
        _ => CallEvent::Data(response),
    }
}

/// The error that ends a call whose caller left too many responses unread.
pub(crate) fn fell_behind(path: &str, delivery: &Delivery) -> Error {
    Error::new(
        ErrorKind::Limit,
        format!(
            "{path}: the caller fell behind (over {} responses or {} MiB unread); the call was \
             ended",
            delivery.events.max_capacity(),
            MAX_UNREAD_BYTES >> 20
        ),
    )
}
