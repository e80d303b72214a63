//! [`Call`]: one streaming call, whatever the transport. Messages go out with
//! [`Call::send`] and [`Call::end`]; what the Volt sends comes back as a [`Stream`] of
//! [`CallEvent`]s, in arrival order.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

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
/// **Reading slowly.** A call holds at most
/// [`call_buffer`](crate::VoltClientBuilder::call_buffer) responses (1,024 by default) or
/// 64 MiB unread. Over gRPC, a call that is full simply stops reading: HTTP/2 flow control
/// holds the Volt back until the caller reads on, and nothing is lost. On the websocket
/// gateway every call shares one socket, which must never wait for one slow reader, so a call
/// that is full is ended with a [`Limit`](crate::ErrorKind::Limit) error (its caller "fell
/// behind") while the connection and the other calls carry on. To read a large result slowly
/// there, page it (`page_size` with `next` on `Execute`, as
/// [`sql_rows`](crate::VoltClient::sql_rows) does by itself) or raise `call_buffer`.
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
    unread_bytes: Arc<Semaphore>,
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

    /// How many events have arrived and wait to be read: at most the client's
    /// [`call_buffer`](crate::VoltClientBuilder::call_buffer) (a paged
    /// [`sql_rows`](crate::VoltClient::sql_rows) query holds at most a page and its headers).
    pub fn unread(&self) -> usize {
        self.events.len()
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
                self.unread_bytes.add_permits(bytes);
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
    unread_bytes: Arc<Semaphore>,
    outcome: oneshot::Receiver<Result<()>>,
}

/// The sending ends a transport writes a call's events into. Data and in-call errors are
/// either offered without waiting ([`Delivery::offer`], for a connection shared by many
/// calls) or delivered as room frees up ([`Delivery::deliver`], for a call with flow control
/// of its own); the end (or the error that ends the call) is settled once.
///
/// Room is counted twice: events (the channel's capacity) and bytes (a semaphore of
/// [`MAX_UNREAD_BYTES`] permits, taken by the transport and given back as the caller reads).
#[derive(Debug)]
pub(crate) struct Delivery {
    events: mpsc::Sender<(CallEvent, usize)>,
    unread_bytes: Arc<Semaphore>,
    /// The semaphore's size: bytes the call may hold unread.
    byte_budget: usize,
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

/// How much a call may hold unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unread {
    /// Events and at most [`MAX_UNREAD_BYTES`]: any call.
    Bounded,
    /// Events alone: a call whose caller bounds what the Volt sends ahead itself (a paged
    /// query asks for each page once it has read the last), so that a page of large rows is
    /// never mistaken for a slow caller.
    EventsOnly,
}

/// A call's channel pair, with room for `capacity` unread events (and, when `unread` says
/// so, at most [`MAX_UNREAD_BYTES`]).
pub(crate) fn channels(capacity: usize, unread: Unread) -> (Delivery, Receivers) {
    // A paged call holds a page of rows and their headers, one row a page at the least.
    let least = if unread == Unread::EventsOnly { 4 } else { 1 };
    let (events_tx, events_rx) = mpsc::channel(capacity.clamp(least, Semaphore::MAX_PERMITS));
    let (outcome_tx, outcome_rx) = oneshot::channel();
    let byte_budget = match unread {
        Unread::Bounded => MAX_UNREAD_BYTES,
        Unread::EventsOnly => Semaphore::MAX_PERMITS,
    };
    let unread_bytes = Arc::new(Semaphore::new(byte_budget));
    (
        Delivery {
            events: events_tx,
            unread_bytes: unread_bytes.clone(),
            byte_budget,
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
    /// The byte permits an event of `bytes` bytes takes: a message larger than the whole
    /// budget takes all of it (it is let in when nothing else is unread).
    fn permits(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.min(self.byte_budget)).unwrap_or(u32::MAX)
    }

    /// Offers a data message or an in-call error of `bytes` bytes, never waiting.
    pub(crate) fn offer(&self, event: CallEvent, bytes: usize) -> Offer {
        let wanted = self.permits(bytes);
        // Taken before it is queued, so the reader never gives back what was not taken.
        match self.unread_bytes.try_acquire_many(wanted) {
            Ok(permit) => permit.forget(),
            Err(_) if self.events.is_closed() => return Offer::Gone,
            Err(_) => return Offer::Full,
        }
        let refused = match self.events.try_send((event, wanted as usize)) {
            Ok(()) => return Offer::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Offer::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Gone,
        };
        self.unread_bytes.add_permits(wanted as usize);
        refused
    }

    /// Delivers a data message or an in-call error of `bytes` bytes, waiting for room. Returns
    /// `false` when the caller has dropped the call (the event is then discarded).
    pub(crate) async fn deliver(&self, event: CallEvent, bytes: usize) -> bool {
        let wanted = self.permits(bytes);
        // The caller gives permits back as it reads; one that has gone gives none back, so
        // its leaving ends the wait too.
        let taken = tokio::select! {
            taken = self.unread_bytes.acquire_many(wanted) => taken,
            () = self.events.closed() => return false,
        };
        match taken {
            Ok(permit) => permit.forget(),
            Err(_) => return false,
        }
        if self.events.send((event, wanted as usize)).await.is_ok() {
            true
        } else {
            self.unread_bytes.add_permits(wanted as usize);
            false
        }
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
    let bytes = if delivery.byte_budget == MAX_UNREAD_BYTES {
        format!(" or {} MiB", MAX_UNREAD_BYTES >> 20)
    } else {
        String::new()
    };
    Error::new(
        ErrorKind::Limit,
        format!(
            "{path}: the caller fell behind (over {} responses{bytes} unread); the call was \
             ended",
            delivery.events.max_capacity(),
        ),
    )
}
