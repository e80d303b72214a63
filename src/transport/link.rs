//! The interface every transport implements: a live connection that opens calls ([`Link`]),
//! and the caller's side of one call ([`CallIo`]). The client sees transports only through it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::Value;

use super::delivery::{Receivers, Unread};
use super::Transport;
use crate::{Error, ErrorKind, Result};

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
    #[cfg_attr(not(feature = "websocket"), allow(dead_code))] // websocket only
    pub timeout: Duration,
    /// How much the call may hold unread.
    pub unread: Unread,
}

/// A call just opened: how to write to it, and its events.
pub(crate) struct Opened {
    pub io: Box<dyn CallIo>,
    pub receivers: Receivers,
}

/// Where a call to a service a Volt client hosts goes (through the Volt, end-to-end encrypted
/// with the host).
#[derive(Debug, Clone)]
pub(crate) struct ServiceRoute {
    /// The host's client id: the last hop, and the audience of the call's token.
    pub host_client_id: String,
    /// The service resource's id (`host_service_id`).
    pub service_id: String,
    /// The host's key, which signs its half of the key exchange.
    pub host_key: crate::PublicKey,
}

/// A call of raw protobuf messages to open to a hosted service.
#[derive(Debug)]
pub(crate) struct ServiceSpec {
    /// The method path, `/package.Service/Method`.
    pub path: Arc<str>,
    /// The method's shape.
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))] // gRPC only
    pub kind: crate::protocol::schema::MethodKind,
    /// Where it goes.
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))] // gRPC only
    pub route: ServiceRoute,
}

/// A call of raw protobuf messages, as [`Link::open_service`] opened it.
pub(crate) struct RawOpened {
    /// Requests (protobuf bytes); dropping the sender ends the client side.
    pub requests: Option<tokio::sync::mpsc::Sender<bytes::Bytes>>,
    /// Responses, then an error if the call failed; the end of the channel is the call's.
    pub responses: tokio::sync::mpsc::Receiver<Result<bytes::Bytes>>,
    /// The call's task: aborting it cancels the call.
    pub task: tokio::task::AbortHandle,
}

/// A live connection to a Volt, shared by every call on it.
pub(crate) trait Link: Send + Sync {
    /// Which transport this is.
    fn transport(&self) -> Transport;

    /// How calls on it are named in spans: `grpc`, `tunnel` (gRPC through a relay),
    /// `websocket` or `legacy`.
    fn label(&self) -> &'static str {
        super::transport_label(self.transport())
    }

    /// Whether a call whose caller stops reading holds the Volt back (HTTP/2 flow control)
    /// rather than being ended as too slow (a socket shared by every call).
    fn holds_back_slow_readers(&self) -> bool;

    /// Opens a call; returns once the connection has it.
    fn open(&self, spec: CallSpec) -> BoxFuture<'_, Result<Opened>>;

    /// Opens a call of raw protobuf messages to a hosted service: the gRPC transport tunnels
    /// it through `VoltAPI/Invoke`.
    fn open_service(&self, spec: ServiceSpec) -> Result<RawOpened> {
        Err(not_here(&spec.path, "raw protobuf messages go over gRPC"))
    }

    /// Opens a call of JSON messages to a hosted service: the websocket gateway (protocol v1)
    /// routes it by its opening frame's meta. `input` checks the requests.
    fn open_routed(
        &self,
        spec: CallSpec,
        _route: ServiceRoute,
        _input: Option<prost_reflect::MessageDescriptor>,
    ) -> BoxFuture<'_, Result<Opened>> {
        let e = not_here(
            &spec.path,
            "JSON calls go over the websocket gateway (protocol v1)",
        );
        Box::pin(std::future::ready(Err(e)))
    }
}

fn not_here(path: &str, why: &str) -> crate::Error {
    crate::Error::new(
        crate::ErrorKind::Config,
        format!("{path}: this transport does not call hosted services that way ({why})"),
    )
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

    /// The call's id on the connection, where the transport has one (the websocket
    /// gateway's); for spans.
    fn call_id(&self) -> Option<u64> {
        None
    }

    /// Sends a request given as JSON text that was built to fit the method's input message
    /// (so it is not checked against the schema again). A transport that carries JSON sends
    /// the text as it is; the others parse it and [`send`](Self::send) it.
    fn send_json_text(&self, json: String) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let message: Value = serde_json::from_str(&json).map_err(|e| {
                Error::new(ErrorKind::Schema, "the request is not JSON").with_source(e)
            })?;
            self.send(&message).await
        })
    }

    /// Whether the transport carries requests in the method's protobuf encoding (gRPC), so
    /// that [`send_encoded`](Self::send_encoded) may be used instead of JSON.
    fn carries_protobuf(&self) -> bool {
        false
    }

    /// Sends a request already encoded as the method's input message (for a transport that
    /// [`carries_protobuf`](Self::carries_protobuf)).
    fn send_encoded(&self, _message: Bytes) -> BoxFuture<'_, Result<()>> {
        Box::pin(std::future::ready(Err(Error::new(
            ErrorKind::Unsupported,
            "this transport carries JSON requests",
        ))))
    }
}
