//! One gRPC call: the caller's handle (`send`, `end`, cancel on drop) and the task that reads
//! the Volt's responses into the call's events, no faster than the caller takes them.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::Stream;
use http::uri::PathAndQuery;
use prost_reflect::MessageDescriptor;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tonic::transport::Channel;
use tonic::Code;

use super::Settings;
use crate::protocol::grpc::Encoded;
use crate::protocol::schema;
use crate::transport::delivery::{response_event, Delivery};
use crate::transport::link::CallIo;
use crate::{Error, ErrorKind, Result, Status};

/// The caller's side of one call.
pub(crate) struct CallHandle {
    path: Arc<str>,
    input: MessageDescriptor,
    settings: Arc<Settings>,
    /// The request queue; `None` once the client side has ended.
    requests: Mutex<Option<mpsc::Sender<Bytes>>>,
    task: AbortHandle,
}

impl CallHandle {
    pub(super) fn new(
        path: Arc<str>,
        input: MessageDescriptor,
        settings: Arc<Settings>,
        requests: Option<mpsc::Sender<Bytes>>,
        task: AbortHandle,
    ) -> CallHandle {
        CallHandle {
            path,
            input,
            settings,
            requests: Mutex::new(requests),
            task,
        }
    }

    /// Encodes and queues a request; waits while the call's queue is full.
    async fn send(&self, message: &Value) -> Result<()> {
        let ended = || Error::new(ErrorKind::Closed, "the client side of this call has ended");
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(ended)?;
        let bytes = super::encode(&self.path, &self.input, message, self.settings.max_outbound)?;
        requests
            .send(bytes)
            .await
            .map_err(|_| Error::new(ErrorKind::Closed, "the call has ended"))
    }

    /// Ends the client side: the request stream finishes once what is queued has gone out.
    fn end(&self) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

impl CallIo for CallHandle {
    fn send<'a>(&'a self, message: &'a Value) -> BoxFuture<'a, Result<()>> {
        Box::pin(CallHandle::send(self, message))
    }

    fn end(&self) -> BoxFuture<'_, Result<()>> {
        CallHandle::end(self);
        Box::pin(async { Ok(()) })
    }

    /// Stops the call's task, which resets the HTTP/2 stream.
    fn cancel(&self) {
        self.task.abort();
    }

    fn outcome_follows_response(&self) -> bool {
        true
    }
}

/// The request body of a call: what its handle queues, until the handle ends it.
pub(super) fn request_stream(
    mut queue: mpsc::Receiver<Bytes>,
) -> impl Stream<Item = Bytes> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| queue.poll_recv(cx))
}

/// Runs one call to its end and settles its outcome.
pub(super) async fn run<S>(
    grpc: tonic::client::Grpc<Channel>,
    request: tonic::Request<S>,
    rpc: PathAndQuery,
    path: Arc<str>,
    output: MessageDescriptor,
    delivery: Delivery,
) where
    S: Stream<Item = Bytes> + Send + 'static,
{
    let outcome = tokio::select! {
        // A caller that has gone needs nothing more; returning drops the call's streams,
        // which resets it on the wire.
        () = delivery.gone() => return,
        outcome = read(grpc, request, rpc, &path, &output, &delivery) => outcome,
    };
    delivery.finish(outcome);
}

async fn read<S>(
    mut grpc: tonic::client::Grpc<Channel>,
    request: tonic::Request<S>,
    rpc: PathAndQuery,
    path: &str,
    output: &MessageDescriptor,
    delivery: &Delivery,
) -> Result<()>
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    grpc.ready().await.map_err(|e| transport_error(path, &e))?;
    let mut responses = grpc
        .streaming(request, rpc, Encoded)
        .await
        .map_err(|s| status_error(path, s))?
        .into_inner();
    while let Some(bytes) = responses
        .message()
        .await
        .map_err(|s| status_error(path, s))?
    {
        let value = schema::protobuf_to_json(output, &bytes).map_err(|e| {
            Error::new(
                ErrorKind::Protocol,
                format!("{path}: a response that does not decode"),
            )
            .with_source(e)
        })?;
        // A caller behind on its reading holds this call's reader, and HTTP/2 flow control
        // holds the Volt back: nothing is lost and no other call waits.
        if !delivery.deliver(response_event(value), bytes.len()).await {
            return Ok(());
        }
    }
    Ok(())
}

/// The error of a call that failed with `status`:
/// - the connection failed on our side (connect, TLS, timeout): that failure's own kind;
/// - an HTTP/2 ping went unanswered: [`Timeout`](ErrorKind::Timeout);
/// - the connection broke or was reset: [`Closed`](ErrorKind::Closed);
/// - tonic refused what came (a response over the size limit, a malformed stream, no gRPC
///   status): [`Limit`](ErrorKind::Limit) or [`Protocol`](ErrorKind::Protocol);
/// - otherwise the Volt's status, code and message kept.
pub(super) fn status_error(path: &str, status: tonic::Status) -> Error {
    if let Some(cause) = std::error::Error::source(&status) {
        if let Some(ours) = find::<Error>(cause) {
            return Error::new(ours.kind(), format!("{path}: {}", chain_text(ours)));
        }
        if find::<hyper::Error>(cause).is_some_and(hyper::Error::is_timeout) {
            return Error::new(
                ErrorKind::Timeout,
                format!("{path}: the Volt stopped answering pings"),
            )
            .with_source(status);
        }
        if matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
        ) {
            return Error::new(
                ErrorKind::Closed,
                format!("{path}: the connection failed: {}", status.message()),
            )
            .with_source(status);
        }
    }
    if let Some(kind) = local_failure(&status) {
        return Error::new(kind, format!("{path}: {}", status.message())).with_source(status);
    }
    Error::from_status(Status {
        code: status.code() as i32,
        message: if status.message().is_empty() {
            status.code().description().to_owned()
        } else {
            status.message().to_owned()
        },
        description: String::new(),
    })
}

/// The kind of a status tonic made itself (it carries no cause), recognised by the fixed
/// messages tonic gives them.
fn local_failure(status: &tonic::Status) -> Option<ErrorKind> {
    let message = status.message();
    match status.code() {
        Code::OutOfRange | Code::ResourceExhausted
            if message.starts_with("Error, decoded message length too large")
                || message.starts_with("Error decompressing: size limit") =>
        {
            Some(ErrorKind::Limit)
        }
        Code::Internal if message.starts_with("Unexpected EOF decoding stream") => {
            Some(ErrorKind::Closed)
        }
        Code::Internal | Code::Unknown | Code::Unimplemented | Code::Unavailable
            if message.starts_with("protocol error:")
                || message.starts_with("grpc-status header missing")
                || message.starts_with("Error decompressing") =>
        {
            Some(ErrorKind::Protocol)
        }
        _ => None,
    }
}

/// The error of a connection that could not be made: the cause's own kind when it is one of
/// ours (connect, TLS, timeout, config), else a connect error.
pub(super) fn transport_error(
    address: &str,
    error: &(dyn std::error::Error + Send + Sync + 'static),
) -> Error {
    match find::<Error>(error) {
        Some(ours) => Error::new(ours.kind(), chain_text(ours)),
        None => Error::new(
            ErrorKind::Connect,
            format!("connecting to {address}: {}", chain_text(error)),
        ),
    }
}

/// An error and its causes as one line, for an error whose causes cannot be moved.
fn chain_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

/// The first error of type `E` in a chain of causes.
fn find<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds() {
        let kind = |status: tonic::Status| status_error("/p.S/M", status).kind();
        assert_eq!(
            kind(tonic::Status::out_of_range(
                "Error, decoded message length too large: found 70000000 bytes, the limit is: \
                 67108864 bytes"
            )),
            ErrorKind::Limit
        );
        assert_eq!(
            kind(tonic::Status::internal("Unexpected EOF decoding stream.")),
            ErrorKind::Closed
        );
        assert_eq!(
            kind(tonic::Status::unknown(
                "protocol error: missing grpc-status trailer, stream was terminated"
            )),
            ErrorKind::Protocol
        );
        assert_eq!(
            kind(tonic::Status::unavailable(
                "grpc-status header missing, mapped from HTTP status code 502"
            )),
            ErrorKind::Protocol
        );

        // What the Volt says is kept as its status, even with a code tonic also uses.
        let volt = status_error(
            "/p.S/M",
            tonic::Status::unauthenticated("token has expired"),
        );
        assert!(volt.is_status());
        let status = volt.status().expect("status");
        assert_eq!(
            (status.code, status.message.as_str()),
            (16, "token has expired")
        );
        let bare = status_error("/p.S/M", tonic::Status::new(Code::Internal, ""));
        assert_eq!(
            bare.status().map(|s| s.message.as_str()),
            Some("Internal error")
        );
        let deadline = status_error("/p.S/M", tonic::Status::deadline_exceeded("slow"));
        assert_eq!(deadline.status().map(|s| s.code), Some(4));

        // A failure of ours inside a status keeps its kind.
        let ours = Error::new(ErrorKind::Tls, "TLS handshake with h:1");
        let wrapped = tonic::Status::from_error(Box::new(ours));
        assert_eq!(kind(wrapped), ErrorKind::Tls);
    }
}
