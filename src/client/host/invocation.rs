//! One call a caller made to a hosted service: who called which method, its requests, and
//! how the host answers.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::outgoing::Outgoing;
use crate::proto::volt::InvokeResponse;
use crate::protocol::body::Body;
use crate::protocol::schema::Method;
use crate::protocol::token::Claims;
use crate::protocol::tunnel::{self, TunnelKey};
use crate::{Error, ErrorKind, Result, Status};

/// How a caller's messages are carried: as it sent them.
#[derive(Clone)]
pub(super) enum Framing {
    /// Protobuf (a caller on gRPC).
    Protobuf,
    /// Proto3 JSON (a caller on the websocket gateway); the method converts the answers.
    Json(Box<Method>),
}

/// One answer to a caller.
enum Reply {
    Payload(Vec<u8>),
    End(Option<(i32, String)>),
}

/// A call to a service this client hosts. Made by [`Host`](super::Host).
///
/// Read the requests with [`request`](Invocation::request) (the first one came with the call;
/// a streaming caller sends more, until it ends its side), answer with
/// [`respond`](Invocation::respond) (once for a unary method, as often as needed for a
/// streaming one), then [`finish`](Invocation::finish). Every message is sealed with the key
/// agreed with this caller alone. Dropping an invocation unfinished ends it with an error.
pub struct Invocation {
    id: u64,
    method: String,
    service_id: String,
    caller: Claims,
    token: String,
    requests: mpsc::Receiver<Bytes>,
    key: Arc<TunnelKey>,
    outgoing: Outgoing,
    framing: Framing,
    finished: bool,
}

impl std::fmt::Debug for Invocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The caller's token is a credential: never shown.
        f.debug_struct("Invocation")
            .field("id", &self.id)
            .field("method", &self.method)
            .field("service_id", &self.service_id)
            .field("caller", &self.caller.sub)
            .finish_non_exhaustive()
    }
}

impl Invocation {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        id: u64,
        method: String,
        service_id: String,
        caller: Claims,
        token: String,
        requests: mpsc::Receiver<Bytes>,
        key: Arc<TunnelKey>,
        outgoing: Outgoing,
        framing: Framing,
    ) -> Invocation {
        Invocation {
            id,
            method,
            service_id,
            caller,
            token,
            requests,
            key,
            outgoing,
            framing,
            finished: false,
        }
    }

    /// The method called: its full path, `/package.Service/Method`.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The service resource the caller addressed (`target_service_id`; empty if none).
    pub fn service_id(&self) -> &str {
        &self.service_id
    }

    /// The caller's identity token claims, as the Volt passed them on (the Volt checked the
    /// token before routing the call; check what your service needs, or ask the Volt with
    /// [`raw_token`](Invocation::raw_token)).
    pub fn caller(&self) -> &Claims {
        &self.caller
    }

    /// The caller's identity token as it came: the subject of `CanAccessResource`, for a
    /// host that asks the Volt what this caller may do. A credential: keep it out of logs.
    pub fn raw_token(&self) -> &str {
        &self.token
    }

    /// Takes the call's requests (for a body that streams them); the invocation then has
    /// none left to read.
    pub(super) fn take_requests(&mut self) -> mpsc::Receiver<Bytes> {
        let (_, closed) = mpsc::channel(1);
        std::mem::replace(&mut self.requests, closed)
    }

    /// Whether the caller is on the websocket gateway and speaks proto3 JSON. Requests and
    /// responses are protobuf here all the same: they are converted with the service's
    /// proto files ([`HostOptions::protos`](super::HostOptions::protos)).
    pub fn caller_speaks_json(&self) -> bool {
        matches!(self.framing, Framing::Json(_))
    }

    /// The next request as raw protobuf bytes; `None` once the caller has ended its side.
    pub async fn request_bytes(&mut self) -> Option<Bytes> {
        self.requests.recv().await
    }

    /// The next request decoded as `T`; `None` once the caller has ended its side.
    pub async fn request<T: prost::Message + Default>(&mut self) -> Result<Option<T>> {
        match self.requests.recv().await {
            None => Ok(None),
            Some(bytes) => T::decode(bytes).map(Some).map_err(|e| {
                Error::new(
                    ErrorKind::Protocol,
                    format!("{}: a request that does not decode", self.method),
                )
                .with_source(e)
            }),
        }
    }

    /// Sends one response (raw protobuf bytes of the method's output message).
    pub async fn respond_bytes(&self, response: Vec<u8>) -> Result<()> {
        let sealed = self.seal(Reply::Payload(response))?;
        self.outgoing.send(sealed).await
    }

    /// Sends one response.
    pub async fn respond<T: prost::Message>(&self, response: &T) -> Result<()> {
        self.respond_bytes(response.encode_to_vec()).await
    }

    /// Ends the call: `Ok` for success, or the status the caller's call fails with
    /// ([`Status::new`] with a gRPC code and a message).
    pub async fn finish(mut self, outcome: std::result::Result<(), Status>) -> Result<()> {
        self.finished = true;
        let error = outcome.err().map(|s| (s.code, s.message));
        let sealed = self.seal(Reply::End(error))?;
        self.outgoing.send(sealed).await
    }

    /// Seals an answer the way the caller reads them (a response to a JSON-mode caller is
    /// converted with the method's output type first).
    fn seal(&self, reply: Reply) -> Result<InvokeResponse> {
        let end = matches!(reply, Reply::End(_));
        let mut sealed = match (&self.framing, reply) {
            (Framing::Protobuf, Reply::Payload(bytes)) => {
                self.key.seal_downstream(&tunnel::downstream_payload(bytes))
            }
            (Framing::Json(method), Reply::Payload(bytes)) => {
                let json = method.decode_response(&bytes)?;
                let body = Body::Payload {
                    json_payload: json.to_string(),
                };
                self.key.seal_json_downstream(&body)
            }
            (framing, Reply::End(error)) => {
                sealed_end(&self.key, matches!(framing, Framing::Json(_)), error)
            }
        };
        sealed.invoke_id = self.id;
        sealed.server_end = end;
        Ok(sealed)
    }
}

impl Drop for Invocation {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let dropped = Reply::End(Some((1, "the service dropped the call".to_owned())));
        if let Ok(sealed) = self.seal(dropped) {
            self.outgoing.send_later(sealed);
        }
    }
}

/// The end of a call, sealed as its caller reads them (a JSON body for a caller on the
/// websocket gateway, a `RemoteRequest` otherwise): `error` (code, message) when it failed.
pub(super) fn sealed_end(
    key: &TunnelKey,
    json: bool,
    error: Option<(i32, String)>,
) -> InvokeResponse {
    if !json {
        return key.seal_downstream(&tunnel::downstream_end(error));
    }
    let (error_code, error) = match error {
        Some((code, message)) => (code, Some(message)),
        None => (0, None),
    };
    key.seal_json_downstream(&Body::End { error, error_code })
}

/// A status for [`Invocation::finish`].
pub(super) fn status(code: i32, message: impl Into<String>) -> Status {
    Status::new(code, message, "")
}

#[cfg(test)]
mod tests {
    #[test]
    fn statuses_keep_code_and_message() {
        let s = super::status(5, "no such thing");
        assert_eq!((s.code, s.message.as_str()), (5, "no such thing"));
    }
}
