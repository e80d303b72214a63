//! [`Call`]: one streaming call, whatever the transport. Messages go out with
//! [`Call::send`] and [`Call::end`]; what the Volt sends comes back as a [`Stream`] of
//! [`CallEvent`]s, in arrival order.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;

use crate::transport::{CallEvent, CallIo, Opened, Receivers};
use crate::Result;

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
#[must_use = "dropping a call cancels it"]
pub struct Call {
    path: Arc<str>,
    io: Box<dyn CallIo>,
    events: Receivers,
    _permit: OwnedSemaphorePermit,
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
    pub(crate) fn new(path: Arc<str>, opened: Opened, permit: OwnedSemaphorePermit) -> Call {
        Call {
            path,
            io: opened.io,
            events: opened.receivers,
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
        self.io.send(&message).await
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

impl Stream for Call {
    type Item = CallEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<CallEvent>> {
        self.events.poll_event(cx)
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
