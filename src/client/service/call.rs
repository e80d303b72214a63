//! One call to a hosted service's method, in protobuf or proto3 JSON whatever the transport
//! carries: protobuf through a gRPC tunnel, JSON through the websocket gateway. A message in
//! the other form is converted with the method's types from the service's proto files.

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::client::trace::CallSpan;
use crate::client::Call;
use crate::protocol::schema::Method;
use crate::transport::RawOpened;
use crate::{Error, ErrorKind, Result};

/// A message of a call, in the form it was given or came in.
pub(super) enum Message {
    Bytes(Vec<u8>),
    Json(Value),
}

impl Message {
    /// The message as protobuf (a JSON one converted with the method's output type).
    pub(super) fn into_bytes(self, path: &str) -> Result<Bytes> {
        match self {
            Message::Bytes(bytes) => Ok(Bytes::from(bytes)),
            Message::Json(_) => Err(Error::new(
                ErrorKind::Protocol,
                format!("{path}: a JSON response where protobuf was expected"),
            )),
        }
    }

    /// The message as JSON.
    pub(super) fn into_json(self, path: &str) -> Result<Value> {
        match self {
            Message::Json(value) => Ok(value),
            Message::Bytes(_) => Err(Error::new(
                ErrorKind::Protocol,
                format!("{path}: a protobuf response where JSON was expected"),
            )),
        }
    }
}

/// How the call travels.
enum Io {
    /// Tunnelled over gRPC: protobuf both ways.
    Raw {
        requests: Option<mpsc::Sender<Bytes>>,
        responses: mpsc::Receiver<Result<Bytes>>,
        task: tokio::task::AbortHandle,
        /// The call's span (a routed call's is its [`Call`]'s).
        trace: CallSpan,
    },
    /// Routed through the websocket gateway: proto3 JSON both ways.
    Json(Call),
}

/// One call to a hosted service's method. Send requests with [`send`](ServiceCall::send)
/// (prost types), [`send_bytes`](ServiceCall::send_bytes) or
/// [`send_json`](ServiceCall::send_json), end the client side with
/// [`end`](ServiceCall::end), and read responses the same three ways until `None` (the call's
/// end) or an error (the host's status, or the tunnel's). Messages that are not in the form
/// the transport carries are converted with the method's types from the service's proto
/// files; without them that is a [`Schema`](ErrorKind::Schema) error.
///
/// Dropping it cancels the call.
pub struct ServiceCall {
    path: String,
    method: Option<Method>,
    io: Io,
}

impl std::fmt::Debug for ServiceCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCall")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Drop for ServiceCall {
    fn drop(&mut self) {
        if let Io::Raw { task, .. } = &self.io {
            task.abort();
        }
    }
}

impl ServiceCall {
    pub(super) fn raw(
        path: &str,
        method: Option<Method>,
        opened: RawOpened,
        trace: CallSpan,
    ) -> ServiceCall {
        ServiceCall {
            path: path.to_owned(),
            method,
            io: Io::Raw {
                requests: opened.requests,
                responses: opened.responses,
                task: opened.task,
                trace,
            },
        }
    }

    pub(super) fn json(path: &str, method: Option<Method>, call: Call) -> ServiceCall {
        ServiceCall {
            path: path.to_owned(),
            method,
            io: Io::Json(call),
        }
    }

    /// The method's types, for a conversion.
    fn method(&self) -> Result<&Method> {
        schema(&self.method, &self.path)
    }

    /// Sends a request (protobuf bytes of the method's input). It waits for the key exchange
    /// with the host, and leaves only once that verified. A call that is over fails the send
    /// with why it ended (a key exchange that did not verify, say), when that is known.
    pub async fn send_bytes(&mut self, request: impl Into<Bytes>) -> Result<()> {
        self.send_message(Message::Bytes(request.into().to_vec()))
            .await
    }

    /// Sends a request.
    pub async fn send<T: prost::Message>(&mut self, request: &T) -> Result<()> {
        self.send_message(Message::Bytes(request.encode_to_vec()))
            .await
    }

    /// Sends a request in proto3 JSON.
    pub async fn send_json(&mut self, request: Value) -> Result<()> {
        self.send_message(Message::Json(request)).await
    }

    pub(super) async fn send_message(&mut self, request: Message) -> Result<()> {
        let ServiceCall { path, method, io } = self;
        match io {
            Io::Raw { requests, .. } => {
                let bytes = match request {
                    Message::Bytes(bytes) => Bytes::from(bytes),
                    Message::Json(value) => {
                        Bytes::from(schema(method, path)?.encode_request(&value)?)
                    }
                };
                let requests = requests.as_ref().ok_or_else(|| {
                    Error::new(ErrorKind::Closed, "the client side of this call has ended")
                })?;
                requests
                    .send(bytes)
                    .await
                    .map_err(|_| Error::new(ErrorKind::Closed, "the call has ended"))
            }
            Io::Json(call) => {
                let value = match request {
                    Message::Json(value) => value,
                    Message::Bytes(bytes) => schema(method, path)?.decode_request(&bytes)?,
                };
                match call.send(value).await {
                    // The call is over: why (a key exchange that did not verify, the host's
                    // refusal) is its last event.
                    Err(e) if e.kind() == ErrorKind::Closed => match call.message().await {
                        Err(cause) => Err(cause),
                        Ok(_) => Err(e),
                    },
                    sent => sent,
                }
            }
        }
    }

    /// Ends the client side (after what was sent). Harmless twice.
    pub async fn end(&mut self) -> Result<()> {
        match &mut self.io {
            Io::Raw { requests, .. } => {
                requests.take();
                Ok(())
            }
            Io::Json(call) => call.end().await,
        }
    }

    /// The next response as the transport carried it; `None` when the call has ended.
    pub(super) async fn next_message(&mut self) -> Option<Result<Message>> {
        match &mut self.io {
            Io::Raw {
                responses, trace, ..
            } => {
                let Some(response) = responses.recv().await else {
                    trace.ok();
                    return None;
                };
                if let Err(e) = &response {
                    // An error is the call's last message.
                    trace.failed(e);
                }
                // One copy, at the edge where the form changes.
                Some(response.map(|b| Message::Bytes(b.to_vec())))
            }
            Io::Json(call) => call
                .message()
                .await
                .transpose()
                .map(|r| r.map(Message::Json)),
        }
    }

    /// The next response as protobuf bytes; `None` when the call has ended, an error when it
    /// failed (the host's status, or the tunnel's).
    pub async fn next_bytes(&mut self) -> Option<Result<Bytes>> {
        let message = match self.next_message().await? {
            Ok(message) => message,
            Err(e) => return Some(Err(e)),
        };
        Some(match message {
            Message::Bytes(bytes) => Ok(Bytes::from(bytes)),
            Message::Json(value) => self
                .method()
                .and_then(|m| m.encode_response(&value))
                .map(Bytes::from),
        })
    }

    /// The next response, in JSON when `json`, else in protobuf.
    pub(super) async fn next_as(&mut self, json: bool) -> Option<Result<Message>> {
        if json {
            Some(self.next_json().await?.map(Message::Json))
        } else {
            Some(self.next_bytes().await?.map(|b| Message::Bytes(b.to_vec())))
        }
    }

    /// The next response decoded as `T`.
    pub async fn next<T: prost::Message + Default>(&mut self) -> Option<Result<T>> {
        let bytes = match self.next_bytes().await? {
            Ok(bytes) => bytes,
            Err(e) => return Some(Err(e)),
        };
        Some(T::decode(bytes).map_err(|e| undecodable(&self.path, e)))
    }

    /// The next response in proto3 JSON.
    pub async fn next_json(&mut self) -> Option<Result<Value>> {
        let message = match self.next_message().await? {
            Ok(message) => message,
            Err(e) => return Some(Err(e)),
        };
        Some(match message {
            Message::Json(value) => Ok(value),
            Message::Bytes(bytes) => self.method().and_then(|m| m.decode_response(&bytes)),
        })
    }
}

/// The method's types, for a conversion between protobuf and JSON.
fn schema<'a>(method: &'a Option<Method>, path: &str) -> Result<&'a Method> {
    method.as_ref().ok_or_else(|| {
        Error::new(
            ErrorKind::Schema,
            format!(
                "{path}: converting between protobuf and JSON needs the method's types, from the \
                 service's proto files (its resource carries none; see ServiceRef::with_protos)"
            ),
        )
    })
}

/// A response that does not decode as the caller's type.
pub(super) fn undecodable(path: &str, e: prost::DecodeError) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("{path}: a response that does not decode"),
    )
    .with_source(e)
}
