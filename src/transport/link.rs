//! The interface every transport implements: a live connection that opens calls ([`Link`]),
//! and the caller's side of one call ([`CallIo`]). The client sees transports only through it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;

use super::delivery::{Receivers, Unread};
use super::Transport;
use crate::Result;

/// A call to open.
#[derive(Debug)]
pub(crate) struct CallSpec {
    /// The method path, `/package.Service/Method`.
    pub path: Arc<str>,
    /// The request, when given at open.
    pub first: Option<Value>,
    /// End the client side right after the request (unary and server-streaming calls).
    pub end_after_first: bool,
    /// The request timeout: on the websocket gateway, how long the key exchange may take.
    pub timeout: Duration,
    /// How much the call may hold unread.
    pub unread: Unread,
}

/// A call just opened: how to write to it, and its events.
pub(crate) struct Opened {
    pub io: Box<dyn CallIo>,
    pub receivers: Receivers,
}

/// A live connection to a Volt, shared by every call on it.
pub(crate) trait Link: Send + Sync {
    /// Which transport this is.
    fn transport(&self) -> Transport;

    /// Whether a call whose caller stops reading holds the Volt back (HTTP/2 flow control)
    /// rather than being ended as too slow (a socket shared by every call).
    fn holds_back_slow_readers(&self) -> bool;

    /// Opens a call; returns once the connection has it.
    fn open(&self, spec: CallSpec) -> BoxFuture<'_, Result<Opened>>;
}

/// The caller's side of one call.
pub(crate) trait CallIo: Send + Sync {
    /// Sends a request message (the call's request, if none was sent yet).
    fn send<'a>(&'a self, message: &'a Value) -> BoxFuture<'a, Result<()>>;

    /// Ends the client side; harmless twice.
    fn end(&self) -> BoxFuture<'_, Result<()>>;

    /// The caller has gone: the call is ended on the wire and forgotten.
    fn cancel(&self);

    /// Whether the call's outcome comes after its last response (gRPC trailers), so that a
    /// unary call should read on to it.
    fn outcome_follows_response(&self) -> bool;
}
