//! One gRPC call: the caller's handle (`send`, `end`, cancel on drop) and the task that reads
//! the Volt's responses into the call's events, no faster than the caller takes them.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::Stream;
use http::uri::PathAndQuery;
use prost_reflect::MessageDescriptor;
use serde_json::Value;
use tokio::task::AbortHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::Code;

use super::observed::{Observed, Seen};
use super::requests::{RequestSender, Requests};
use super::Settings;
use crate::protocol::grpc::Encoded;
use crate::protocol::grpc::TOKEN_METADATA;
use crate::transport::delivery::{Arrival, Delivery, EncodedResponse};
use crate::transport::link::CallIo;
use crate::{Error, ErrorKind, Reached, Result, Status};

/// The caller's side of one call.
pub(crate) struct CallHandle {
    path: Arc<str>,
    input: MessageDescriptor,
    settings: Arc<Settings>,
    requests: RequestSender,
    task: AbortHandle,
}

impl CallHandle {
    pub(super) fn new(
        path: Arc<str>,
        input: MessageDescriptor,
        settings: Arc<Settings>,
        requests: RequestSender,
        task: AbortHandle,
    ) -> CallHandle {
        CallHandle {
            path,
            input,
            settings,
            requests,
            task,
        }
    }

    /// Encodes and queues a request; waits while the call's queue is full.
    async fn send(&self, message: &Value) -> Result<()> {
        let bytes = super::encode(&self.path, &self.input, message, self.settings.max_outbound)?;
        self.requests.send(bytes).await
    }

    /// Queues an encoded request, within the size limit; waits while the queue is full.
    async fn send_encoded(&self, bytes: Bytes) -> Result<()> {
        super::within_limit(&self.path, &bytes, self.settings.max_outbound)?;
        self.requests.send(bytes).await
    }
}

impl CallIo for CallHandle {
    fn send<'a>(&'a self, message: &'a Value) -> BoxFuture<'a, Result<()>> {
        Box::pin(CallHandle::send(self, message))
    }

    fn end(&self) -> BoxFuture<'_, Result<()>> {
        self.requests.end();
        Box::pin(async { Ok(()) })
    }

    /// Stops the call's task, which resets the HTTP/2 stream.
    fn cancel(&self) {
        self.task.abort();
    }

    fn outcome_follows_response(&self) -> bool {
        true
    }

    fn carries_protobuf(&self) -> bool {
        true
    }

    fn send_encoded(&self, message: Bytes) -> BoxFuture<'_, Result<()>> {
        Box::pin(CallHandle::send_encoded(self, message))
    }
}

/// How many times a call is sent again after the connection turned it away unsent (it was
/// closing when the call was queued on it); each time goes out on a new connection.
const UNSENT_RETRIES: usize = 2;

/// What a call sends: its requests, and the identity token in its metadata.
pub(super) struct Outgoing {
    pub requests: Requests,
    pub token: MetadataValue<Ascii>,
}

impl Outgoing {
    fn request(&self) -> tonic::Request<impl Stream<Item = Bytes> + Send + 'static> {
        let mut request = tonic::Request::new(self.requests.stream());
        request
            .metadata_mut()
            .insert(TOKEN_METADATA, self.token.clone());
        request
    }
}

/// A call being sent, until its response begins: boxed, so that tonic's and hyper's
/// futures and the service are freed then, not held by the call's task while it is open.
pub(super) type Starting =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<tonic::Streaming<Bytes>>> + Send>>;

/// Runs one call to its end and settles its outcome.
pub(super) async fn run(
    starting: Starting,
    path: Arc<str>,
    output: MessageDescriptor,
    delivery: Delivery,
    seen: Arc<Seen>,
) {
    let outcome = tokio::select! {
        // A caller that has gone needs nothing more; returning drops the call's streams,
        // which resets it on the wire.
        () = delivery.gone() => return,
        outcome = read(starting, &path, &output, &delivery, &seen) => outcome,
    };
    delivery.finish(outcome);
}

async fn read(
    starting: Starting,
    path: &str,
    output: &MessageDescriptor,
    delivery: &Delivery,
    seen: &Seen,
) -> Result<()> {
    let mut responses = starting.await?;
    while let Some(bytes) = responses
        .message()
        .await
        .map_err(|s| status_error(path, s, Showed::from(seen)))?
    {
        // Decoded on the caller's side, as it reads. A caller behind on its reading holds
        // this call's reader, and HTTP/2 flow control holds the Volt back: nothing is lost
        // and no other call waits.
        let size = bytes.len();
        let encoded = EncodedResponse {
            bytes,
            output: output.clone(),
        };
        if !delivery.deliver(Arrival::Encoded(encoded), size).await {
            return Ok(());
        }
    }
    Ok(())
}

/// Sends the call (again, if the connection turned it away unsent) until its response
/// begins.
pub(super) fn start(
    mut grpc: tonic::client::Grpc<Observed>,
    outgoing: Outgoing,
    rpc: PathAndQuery,
    path: Arc<str>,
    seen: Arc<Seen>,
) -> Starting {
    Box::pin(async move {
        let path = &*path;
        let mut retries = 0;
        loop {
            grpc.ready().await.map_err(|e| transport_error(path, &e))?;
            match grpc
                .streaming(outgoing.request(), rpc.clone(), Encoded)
                .await
            {
                Ok(responses) => return Ok(responses.into_inner()),
                // The connection was closing: tonic's channel makes a new one for the next
                // try.
                Err(status)
                    if retries < UNSENT_RETRIES
                        && never_sent(&status)
                        && outgoing.requests.untouched() =>
                {
                    retries += 1;
                    tracing::debug!(
                        path,
                        retries,
                        "the call was turned away unsent; sending it again"
                    );
                }
                Err(status) => return Err(status_error(path, status, Showed::from(&*seen))),
            }
        }
    })
}

/// What the call's stream had shown when tonic reported a status.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Showed {
    /// The Volt sent a gRPC status.
    pub volt_status: bool,
    /// The response body ended.
    pub body_ended: bool,
}

impl From<&Seen> for Showed {
    fn from(seen: &Seen) -> Showed {
        Showed {
            volt_status: seen.volt_status(),
            body_ended: seen.body_ended(),
        }
    }
}

/// The error of a call that failed with `status`, told apart by its cause, by whether the
/// Volt sent a status, and by its code (never by the wording of tonic's messages):
/// - a cause of ours (connect, TLS, timeout): that cause's own kind;
/// - an HTTP/2 ping went unanswered: [`Timeout`](ErrorKind::Timeout);
/// - any other cause (the connection broke or was reset): [`Closed`](ErrorKind::Closed);
/// - a status the Volt sent: the Volt's status, code and message kept;
/// - a status tonic made of what arrived, which has no cause: a message over the size limit
///   ([`Limit`](ErrorKind::Limit): `OutOfRange` or `ResourceExhausted`), a body that ended
///   mid-message ([`Closed`](ErrorKind::Closed): `Internal`), anything else (no status, a
///   malformed stream) [`Protocol`](ErrorKind::Protocol).
pub(super) fn status_error(path: &str, status: tonic::Status, showed: Showed) -> Error {
    if let Some(cause) = std::error::Error::source(&status) {
        if let Some(ours) = find::<Error>(cause) {
            return Error::new(ours.kind(), format!("{path}: {}", chain_text(ours)));
        }
        if never_sent(&status) {
            return Error::new(
                ErrorKind::Closed,
                format!("{path}: the connection closed before the call was sent"),
            )
            .with_reached(Reached::No)
            .with_source(status);
        }
        if find::<hyper::Error>(cause).is_some_and(hyper::Error::is_timeout) {
            return Error::new(
                ErrorKind::Timeout,
                format!("{path}: the Volt stopped answering pings"),
            )
            .with_source(status);
        }
        return Error::new(
            ErrorKind::Closed,
            format!("{path}: the connection failed: {}", status.message()),
        )
        .with_source(status);
    }
    if !showed.volt_status {
        let kind = match status.code() {
            Code::OutOfRange | Code::ResourceExhausted => ErrorKind::Limit,
            Code::Internal if showed.body_ended => ErrorKind::Closed,
            _ => ErrorKind::Protocol,
        };
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

/// Whether the call failed because its connection turned it away before sending anything
/// (hyper cancels a request it had queued when the connection closes, or one queued on a
/// connection that was not ready): sending it again is always safe.
fn never_sent(status: &tonic::Status) -> bool {
    std::error::Error::source(status)
        .and_then(find::<hyper::Error>)
        .is_some_and(hyper::Error::is_canceled)
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
        // Statuses tonic makes of what arrived: the Volt sent none.
        let local = Showed::default();
        let ended = Showed {
            body_ended: true,
            ..Showed::default()
        };
        let volt_sent = Showed {
            volt_status: true,
            body_ended: true,
        };
        let kind = |status: tonic::Status, showed| status_error("/p.S/M", status, showed).kind();
        assert_eq!(
            kind(
                tonic::Status::out_of_range(
                    "Error, decoded message length too large: found 70000000 bytes, the limit \
                     is: 67108864 bytes"
                ),
                local
            ),
            ErrorKind::Limit
        );
        assert_eq!(
            kind(
                tonic::Status::internal("Unexpected EOF decoding stream."),
                ended
            ),
            ErrorKind::Closed
        );
        assert_eq!(
            kind(
                tonic::Status::unknown(
                    "protocol error: missing grpc-status trailer, stream was terminated"
                ),
                ended
            ),
            ErrorKind::Protocol
        );
        assert_eq!(
            kind(
                tonic::Status::unavailable(
                    "grpc-status header missing, mapped from HTTP status code 502"
                ),
                local
            ),
            ErrorKind::Protocol
        );
        // The wording plays no part: the same text from the Volt is the Volt's status.
        let volt_limit = status_error(
            "/p.S/M",
            tonic::Status::out_of_range("Error, decoded message length too large"),
            volt_sent,
        );
        assert_eq!(
            volt_limit.status().map(|s| s.code),
            Some(11),
            "{volt_limit:?}"
        );

        // What the Volt says is kept as its status, even with a code tonic also uses.
        let volt = status_error(
            "/p.S/M",
            tonic::Status::unauthenticated("token has expired"),
            volt_sent,
        );
        assert!(volt.is_status());
        let status = volt.status().expect("status");
        assert_eq!(
            (status.code, status.message.as_str()),
            (16, "token has expired")
        );
        let bare = status_error("/p.S/M", tonic::Status::new(Code::Internal, ""), volt_sent);
        assert_eq!(
            bare.status().map(|s| s.message.as_str()),
            Some("Internal error")
        );
        let deadline = status_error(
            "/p.S/M",
            tonic::Status::deadline_exceeded("slow"),
            volt_sent,
        );
        assert_eq!(deadline.status().map(|s| s.code), Some(4));

        // A failure of ours inside a status keeps its kind.
        let ours = Error::new(ErrorKind::Tls, "TLS handshake with h:1");
        let wrapped = tonic::Status::from_error(Box::new(ours));
        assert_eq!(kind(wrapped, local), ErrorKind::Tls);
    }
}
