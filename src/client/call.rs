//! [`Call`]: one streaming call, whatever the transport. Messages go out with
//! [`Call::send`] and [`Call::end`]; what the Volt sends comes back as a [`Stream`] of
//! [`CallEvent`]s, in arrival order.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;

use super::trace::CallSpan;
use crate::transport::{Arrival, CallEvent, CallIo, EncodedResponse, Opened, Receivers};
use crate::{Error, ErrorKind, Result};

/// A live call to a Volt method.
///
/// Read it as a [`Stream`] of [`CallEvent`]s (the stream is over after
/// [`CallEvent::End`] or [`CallEvent::Failed`]), or with [`Call::message`]. Dropping a
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
///         CallEvent::Error(e) => eprintln!("the Volt reported {e}; the call goes on"),
///         CallEvent::Failed(e) => return Err(e),
///         CallEvent::End => break,
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
///
/// **Deadlines.** A streaming call runs until it ends unless given a bound:
/// [`with_deadline`](Call::with_deadline) ends it at a time, and
/// [`with_idle_timeout`](Call::with_idle_timeout) when no event arrives for a while (say a
/// results subscription that must close after 40 s without a message). Either ends the call
/// with a [`Timeout`](crate::ErrorKind::Timeout) error as its last event, and cancels it on
/// the wire. (Unary calls are bounded by the request timeout.)
#[must_use = "dropping a call cancels it"]
pub struct Call {
    path: Arc<str>,
    io: Box<dyn CallIo>,
    events: Receivers,
    _permit: OwnedSemaphorePermit,
    deadline: Option<Pin<Box<Sleep>>>,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    /// The last event was given (its end, its failure, or a timeout of ours).
    over: bool,
    /// The call's span: how it ended is recorded there.
    trace: CallSpan,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("path", &self.path)
            .field("finished", &self.events.is_finished())
            .finish_non_exhaustive()
    }
}

impl Call {
    pub(crate) fn new(
        path: Arc<str>,
        opened: Opened,
        permit: OwnedSemaphorePermit,
        trace: CallSpan,
    ) -> Call {
        Call {
            path,
            io: opened.io,
            events: opened.receivers,
            _permit: permit,
            deadline: None,
            idle: None,
            over: false,
            trace,
        }
    }

    /// Ends the call at `deadline` (a [`Timeout`](crate::ErrorKind::Timeout) error as its
    /// last event; the call is cancelled on the wire) unless it has ended by then.
    pub fn with_deadline(mut self, deadline: std::time::Instant) -> Call {
        self.deadline = Some(Box::pin(tokio::time::sleep_until(deadline.into())));
        self
    }

    /// Ends the call with a [`Timeout`](crate::ErrorKind::Timeout) error (cancelling it on
    /// the wire) when no event arrives for `idle`; each event starts the wait again.
    pub fn with_idle_timeout(mut self, idle: Duration) -> Call {
        self.idle = Some((idle, Box::pin(tokio::time::sleep(idle))));
        self
    }

    /// Ends the call on our side with a timeout error.
    fn expire(&mut self, why: String) -> Poll<Option<CallEvent>> {
        self.over = true;
        // As on drop: closed first, so the transport sees the caller gone with the notice;
        // then the transport's side of the call goes (which is what ends it on the wire).
        self.events.close();
        let io = std::mem::replace(&mut self.io, Box::new(Ended));
        io.cancel();
        drop(io);
        let error = Error::new(ErrorKind::Timeout, format!("{}: {why}", self.path));
        self.trace.failed(&error);
        Poll::Ready(Some(CallEvent::Failed(error)))
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
        self.io.send(&message).await
    }

    /// Sends a request as JSON text built to fit the method's input message; on the
    /// websocket gateway it goes out as it is, with no schema check or re-serialisation.
    pub(crate) async fn send_json_text(&self, json: String) -> Result<()> {
        self.io.send_json_text(json).await
    }

    /// Whether requests go out in the method's protobuf encoding (gRPC): then
    /// [`send_encoded`](Self::send_encoded) skips the JSON of [`send`](Self::send).
    pub(crate) fn carries_protobuf(&self) -> bool {
        self.io.carries_protobuf()
    }

    /// Sends a request already encoded as the method's input message (where the call
    /// [`carries_protobuf`](Self::carries_protobuf)).
    pub(crate) async fn send_encoded(&self, message: bytes::Bytes) -> Result<()> {
        self.io.send_encoded(message).await
    }

    /// Ends the client's side of the call (no more messages); responses keep coming until
    /// the Volt ends the call. Calling it twice is harmless.
    pub async fn end(&self) -> Result<()> {
        self.io.end().await
    }

    /// Whether the call's end carries its outcome after the last response (gRPC trailers),
    /// so that a unary call should read it.
    pub(crate) fn waits_for_trailers(&self) -> bool {
        self.io.outcome_follows_response()
    }

    /// How many events have arrived and wait to be read: at most the client's
    /// [`call_buffer`](crate::VoltClientBuilder::call_buffer) (a paged
    /// [`sql_rows`](crate::VoltClient::sql_rows) query holds at most a page and its headers).
    pub fn unread(&self) -> usize {
        self.events.unread()
    }

    /// The next response message: `Ok(Some(message))`, `Ok(None)` once the call has ended
    /// normally, or the error the Volt (or the connection) reported (after an
    /// [`Error`](CallEvent::Error) the call goes on, and `message` can be called again).
    pub async fn message(&mut self) -> Result<Option<Value>> {
        match futures_util::StreamExt::next(self).await {
            Some(CallEvent::Data(value)) => Ok(Some(value)),
            Some(CallEvent::Error(e) | CallEvent::Failed(e)) => Err(e),
            Some(CallEvent::End) | None => Ok(None),
        }
    }
}

impl Call {
    /// The next response as the transport handed it (a message still encoded is not
    /// decoded): for readers with a faster way to the data than proto3 JSON. Events are
    /// accounted for as by the [`Stream`]; a reader that finds a status in an encoded message
    /// reads it with [`status_error`](Self::status_error).
    pub(crate) async fn next_arrival(&mut self) -> Option<Arrival> {
        std::future::poll_fn(|cx| self.poll_arrival(cx)).await
    }

    /// The in-call error a `status` found in an encoded message reports (`None` when its
    /// message is empty: no error), recorded as the [`Stream`] records those it decodes.
    pub(crate) fn status_error(&mut self, status: crate::proto::volt::Status) -> Option<Error> {
        let status = crate::Status::new(status.code, status.message, status.description);
        if !status.is_error() {
            return None;
        }
        let error = Error::from_status(status);
        self.trace.error(&error);
        Some(error)
    }

    /// An encoded response read as the prost message `M` when it is one (`Ok`), else (of
    /// another type, or not decoding as `M`) the event the [`Stream`] would make of it.
    pub(crate) fn decode_as<M>(&mut self, encoded: EncodedResponse) -> Result<M, CallEvent>
    where
        M: prost::Message + prost::Name + Default,
    {
        let output = &encoded.output;
        if output.package_name() == M::PACKAGE && output.name() == M::NAME {
            if let Ok(message) = M::decode(encoded.bytes.clone()) {
                return Ok(message);
            }
        }
        // What does not decode fails the call, as any other call's would.
        Err(self.decoded(encoded))
    }

    /// Decodes an encoded message the way the [`Stream`] does (for a reader of
    /// [`next_arrival`](Self::next_arrival) that has no faster way for this one). An
    /// [`Arrival::Event`] needs no decoding: it was accounted for as it arrived.
    pub(crate) fn decoded(&mut self, encoded: EncodedResponse) -> CallEvent {
        let event = self.events.decoded(encoded);
        self.account(&event);
        event
    }

    /// A response that arrived as JSON text, as its event (parsed the way the [`Stream`]
    /// does it).
    pub(crate) fn decoded_json(&mut self, text: &str) -> CallEvent {
        let event = self.events.decoded_json(text);
        self.account(&event);
        event
    }

    /// The next arrival, as [`next_arrival`](Self::next_arrival) waits for it.
    pub(crate) fn poll_arrival(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arrival>> {
        if self.over {
            return Poll::Ready(None);
        }
        if let Poll::Ready(arrival) = self.events.poll_arrival(cx) {
            match &arrival {
                Some(Arrival::Event(event)) => self.account(event),
                Some(Arrival::Encoded(_) | Arrival::Json(_)) => self.restart_idle(),
                None => self.over = true,
            }
            return Poll::Ready(arrival);
        }
        if let Some(deadline) = &mut self.deadline {
            if deadline.as_mut().poll(cx).is_ready() {
                let failed = self.expire("the call's deadline passed".to_owned());
                return failed.map(|event| event.map(Arrival::Event));
            }
        }
        if let Some((idle, sleep)) = &mut self.idle {
            if sleep.as_mut().poll(cx).is_ready() {
                let why = format!("no message for {idle:?}");
                return self.expire(why).map(|event| event.map(Arrival::Event));
            }
        }
        Poll::Pending
    }

    /// Records what an event says of the call: its end, or an in-call error.
    fn account(&mut self, event: &CallEvent) {
        match event {
            CallEvent::End => {
                self.over = true;
                self.trace.ok();
            }
            CallEvent::Failed(e) => {
                self.over = true;
                self.trace.failed(e);
            }
            CallEvent::Error(e) => {
                self.trace.error(e);
                self.restart_idle();
            }
            CallEvent::Data(_) => self.restart_idle(),
        }
    }

    /// An event arrived: the idle timeout starts again.
    fn restart_idle(&mut self) {
        if let Some((idle, sleep)) = &mut self.idle {
            let next = tokio::time::Instant::now() + *idle;
            sleep.as_mut().reset(next);
        }
    }
}

impl Stream for Call {
    type Item = CallEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<CallEvent>> {
        let this = self.get_mut();
        this.poll_arrival(cx).map(|arrival| {
            arrival.map(|arrival| match arrival {
                // Accounted for as it arrived.
                Arrival::Event(event) => event,
                Arrival::Encoded(encoded) => this.decoded(encoded),
                Arrival::Json(text) => this.decoded_json(&text),
            })
        })
    }
}

/// The caller's side of a call this client ended itself (a deadline passed).
struct Ended;

impl CallIo for Ended {
    fn send<'a>(&'a self, _message: &'a Value) -> futures_util::future::BoxFuture<'a, Result<()>> {
        Box::pin(std::future::ready(Err(Error::new(
            ErrorKind::Closed,
            "the call has ended (its deadline passed)",
        ))))
    }

    fn end(&self) -> futures_util::future::BoxFuture<'_, Result<()>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn cancel(&self) {}

    fn outcome_follows_response(&self) -> bool {
        false
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // Closed first, so the transport sees the caller gone as soon as the notice exists.
        self.events.close();
        // Also for a finished call: the transport keeps a little state until the handle goes.
        self.io.cancel();
    }
}
