//! A call's events on their way from a transport to the caller: a bounded queue counted in
//! events and in bytes, and the call's outcome settled once after the last event.
//!
//! The transport holds the [`Delivery`] and either offers each event without waiting (a
//! connection shared by many calls, which must never wait for one slow reader) or delivers it
//! as room frees up (a call with flow control of its own). The caller holds the [`Receivers`].

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use prost_reflect::MessageDescriptor;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::protocol::schema;
use crate::{Error, ErrorKind, Result, Status};

/// What a call delivers, in arrival order.
///
/// A call's last event is [`End`](Self::End) or [`Failed`](Self::Failed); an
/// [`Error`](Self::Error) never ends it.
#[derive(Debug)]
#[non_exhaustive]
pub enum CallEvent {
    /// A response message, as proto3 JSON.
    Data(Value),
    /// An error the Volt reported in a response (a `status` with a non-empty message). The
    /// call goes on: more events follow.
    Error(Error),
    /// The call failed: the Volt ended it with an error, or the connection, a bound or a
    /// malformed message ended it on our side. This is the last event.
    Failed(Error),
    /// The Volt ended the call normally; this is the last event.
    End,
}

impl CallEvent {
    /// Whether this is the call's last event ([`End`](Self::End) or [`Failed`](Self::Failed)).
    pub fn is_last(&self) -> bool {
        matches!(self, CallEvent::End | CallEvent::Failed(_))
    }

    /// The error this event carries, if any, whether or not it ends the call.
    pub fn error(&self) -> Option<&Error> {
        match self {
            CallEvent::Error(e) | CallEvent::Failed(e) => Some(e),
            CallEvent::Data(_) | CallEvent::End => None,
        }
    }
}

/// Bytes of responses a call may hold unread (besides the one that arrives when it holds
/// none): 64 MiB.
pub(crate) const MAX_UNREAD_BYTES: usize = 64 * 1024 * 1024;

/// The caller's end of a call's events.
#[derive(Debug)]
pub(crate) struct Receivers {
    events: mpsc::Receiver<Queued>,
    unread_bytes: Arc<Semaphore>,
    outcome: oneshot::Receiver<Result<()>>,
    finished: bool,
}

impl Receivers {
    /// An encoded response as its event. A response that does not decode fails the call
    /// (and closes it, so the transport drops it).
    pub(crate) fn decoded(&mut self, encoded: EncodedResponse) -> CallEvent {
        encoded.into_event().unwrap_or_else(|e| {
            self.close();
            self.finished = true;
            CallEvent::Failed(e)
        })
    }

    /// A response as JSON text, as its event. Text that is not JSON fails the call (and
    /// closes it, so the transport drops it).
    #[cfg_attr(not(feature = "websocket"), allow(dead_code))] // websocket only
    pub(crate) fn decoded_json(&mut self, text: &str) -> CallEvent {
        match serde_json::from_str::<Value>(text) {
            Ok(value) => response_event(value),
            Err(e) => {
                self.close();
                self.finished = true;
                CallEvent::Failed(
                    Error::new(ErrorKind::Protocol, "a response that is not JSON").with_source(e),
                )
            }
        }
    }

    /// The next arrival, as the transport handed it; `None` after the last.
    pub(crate) fn poll_arrival(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arrival>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.events.poll_recv(cx) {
            Poll::Ready(Some(queued)) => {
                let (arrival, bytes) = *queued;
                self.unread_bytes.add_permits(bytes);
                Poll::Ready(Some(arrival))
            }
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                // Every event is delivered; the outcome was settled before the sender went.
                self.finished = true;
                let event = match self.outcome.try_recv() {
                    Ok(Ok(())) => CallEvent::End,
                    Ok(Err(e)) => CallEvent::Failed(e),
                    Err(_) => CallEvent::Failed(Error::new(
                        ErrorKind::Closed,
                        "the connection was dropped before the call ended",
                    )),
                };
                Poll::Ready(Some(Arrival::Event(event)))
            }
        }
    }

    /// Events that have arrived and wait to be read.
    pub(crate) fn unread(&self) -> usize {
        self.events.len()
    }

    /// Whether the last event has been read.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }

    /// Refuses further events: the transport sees the caller gone.
    pub(crate) fn close(&mut self) {
        self.events.close();
    }
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
    events: mpsc::Sender<Queued>,
    unread_bytes: Arc<Semaphore>,
    /// The semaphore's size: bytes the call may hold unread.
    byte_budget: usize,
    outcome: Option<oneshot::Sender<Result<()>>>,
}

/// An event and the byte permits it holds, as queued for the caller. Boxed: a tokio channel
/// allocates its slots 32 at a time when it is made, so with the event inline every call,
/// even an idle subscription, held about 2.8 KiB of empty slots (measured with the
/// side-by-side benchmark's `idle` workload).
type Queued = Box<(Arrival, usize)>;

/// What a transport hands a caller: an event, or a response still in the method's protobuf
/// encoding, decoded on the caller's side when it is read (so that the allocations of a
/// decoded message are made and freed on the same thread, and a reader that wants the
/// message typed skips JSON altogether).
#[derive(Debug)]
pub(crate) enum Arrival {
    Event(CallEvent),
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))] // gRPC only
    Encoded(EncodedResponse),
    /// A response as the JSON text the websocket gateway carried, parsed by the caller (so
    /// the connection task, which every call on the socket shares, does not).
    #[cfg_attr(not(feature = "websocket"), allow(dead_code))] // websocket only
    Json(String),
}

/// A response message as it arrived, with the descriptor of its type.
#[derive(Debug)]
pub(crate) struct EncodedResponse {
    pub bytes: Bytes,
    pub output: MessageDescriptor,
}

impl EncodedResponse {
    /// The message as proto3 JSON, as its event ([`response_event`]).
    pub(crate) fn into_event(self) -> Result<CallEvent> {
        let value = schema::protobuf_to_json(&self.output, &self.bytes).map_err(|e| {
            Error::new(
                ErrorKind::Protocol,
                format!("a {} that does not decode", self.output.full_name()),
            )
            .with_source(e)
        })?;
        Ok(response_event(value))
    }
}

impl From<CallEvent> for Arrival {
    fn from(event: CallEvent) -> Arrival {
        Arrival::Event(event)
    }
}

/// What became of an offered event.
#[cfg_attr(not(feature = "websocket"), allow(dead_code))] // websocket only
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
            finished: false,
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
    #[cfg_attr(not(feature = "websocket"), allow(dead_code))] // websocket only
    pub(crate) fn offer(&self, event: impl Into<Arrival>, bytes: usize) -> Offer {
        let wanted = self.permits(bytes);
        // Taken before it is queued, so the reader never gives back what was not taken.
        match self.unread_bytes.try_acquire_many(wanted) {
            Ok(permit) => permit.forget(),
            Err(_) if self.events.is_closed() => return Offer::Gone,
            Err(_) => return Offer::Full,
        }
        let refused = match self
            .events
            .try_send(Box::new((event.into(), wanted as usize)))
        {
            Ok(()) => return Offer::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Offer::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Gone,
        };
        self.unread_bytes.add_permits(wanted as usize);
        refused
    }

    /// Delivers a data message or an in-call error of `bytes` bytes, waiting for room. Returns
    /// `false` when the caller has dropped the call (the event is then discarded).
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))] // gRPC only
    pub(crate) async fn deliver(&self, event: impl Into<Arrival>, bytes: usize) -> bool {
        let event = event.into();
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
        if self
            .events
            .send(Box::new((event, wanted as usize)))
            .await
            .is_ok()
        {
            true
        } else {
            self.unread_bytes.add_permits(wanted as usize);
            false
        }
    }

    /// Whether the caller has dropped the call.
    #[cfg_attr(not(feature = "websocket"), allow(dead_code))] // websocket only
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
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))] // gRPC only
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
#[cfg_attr(not(feature = "websocket"), allow(dead_code))] // websocket only
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_is_parsed_on_the_callers_side() {
        let (delivery, mut receivers) = channels(4, Unread::Bounded);
        assert!(matches!(
            receivers.decoded_json(r#"{"id":"x"}"#),
            CallEvent::Data(v) if v["id"] == "x"
        ));
        let error = receivers.decoded_json(r#"{"status":{"code":5,"message":"no such"}}"#);
        assert!(matches!(&error, CallEvent::Error(e) if e.to_string().contains("no such")));
        assert!(!receivers.is_finished());
        // Text that is not JSON fails the call and closes it: the transport sees it gone.
        let failed = receivers.decoded_json("{not json");
        assert!(matches!(&failed, CallEvent::Failed(e) if e.kind() == ErrorKind::Protocol));
        assert!(receivers.is_finished());
        assert!(delivery.is_gone());
    }
}
