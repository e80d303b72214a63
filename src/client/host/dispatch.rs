//! The host's dispatcher: one task that reads the invocation messages the session receives,
//! answers each new caller's key exchange (signed with this client's own key), opens what
//! callers seal, hands each started call to the application as an [`Invocation`], and feeds
//! it the caller's later requests. It never waits on the session's task, which never waits on
//! it.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};

use super::caller_check::{self, CallerCheck};
use super::invocation::{Framing, Invocation};
use super::outgoing::Outgoing;
use super::wire;
use crate::client::session::{Session, SessionState};
use crate::proto::volt::{
    invoke_request, invoke_response, method_invoke, method_payload, remote_response, InvokeRequest,
    InvokeResponse, RemoteResponse,
};
use crate::protocol::body::Body;
use crate::protocol::service_protos::ServiceProtos;
use crate::protocol::token::{Claims, IdentityToken};
use crate::protocol::tunnel::{self, TunnelKey};
use crate::PrivateKey;

/// Callers waiting for their key exchange, or in a call, at once; more are refused.
pub(super) const MAX_INVOCATIONS: usize = 4096;

/// gRPC codes the dispatcher answers with.
const UNAUTHENTICATED: i32 = 16;
const RESOURCE_EXHAUSTED: i32 = 8;
const FAILED_PRECONDITION: i32 = 9;
const INVALID_ARGUMENT: i32 = 3;
const UNIMPLEMENTED: i32 = 12;

/// One caller's call, from its key exchange on.
struct Slot {
    key: Arc<TunnelKey>,
    claims: Claims,
    token: String,
    service_id: String,
    /// The started call's requests; `None` before the `method_invoke` and after the caller's
    /// end.
    requests: Option<mpsc::Sender<Bytes>>,
    started: bool,
    /// The caller seals JSON bodies (it is on the websocket gateway), not protobuf.
    json: bool,
    framing: Framing,
}

/// A request as the caller sent it.
enum Request {
    Protobuf(Bytes),
    Json(String),
}

/// What one opened message of a caller asks.
enum Step {
    Invoke {
        method_name: String,
        first: Option<Request>,
    },
    Payload(Request),
    End,
    Nothing,
}

impl Step {
    fn from_remote(message: Option<RemoteResponse>) -> Step {
        match message.and_then(|m| m.payload) {
            Some(remote_response::Payload::MethodInvoke(invoke)) => Step::Invoke {
                method_name: invoke.method_name,
                first: match invoke.invoke_request {
                    Some(method_invoke::InvokeRequest::Request(bytes)) => {
                        Some(Request::Protobuf(Bytes::from(bytes)))
                    }
                    Some(method_invoke::InvokeRequest::JsonRequest(json)) => {
                        Some(Request::Json(json))
                    }
                    None => None,
                },
            },
            Some(remote_response::Payload::MethodPayload(payload)) => {
                match payload.method_payload {
                    Some(method_payload::MethodPayload::Payload(bytes)) => {
                        Step::Payload(Request::Protobuf(Bytes::from(bytes)))
                    }
                    Some(method_payload::MethodPayload::JsonPayload(json)) => {
                        Step::Payload(Request::Json(json))
                    }
                    None => Step::Nothing,
                }
            }
            Some(remote_response::Payload::MethodEnd(_)) => Step::End,
            _ => Step::Nothing,
        }
    }

    fn from_body(body: Body) -> Step {
        match body {
            Body::Invoke {
                method_name,
                json_request,
                ..
            } => Step::Invoke {
                method_name,
                first: (!json_request.trim().is_empty()).then_some(Request::Json(json_request)),
            },
            Body::Payload { json_payload } => Step::Payload(Request::Json(json_payload)),
            Body::End { .. } => Step::End,
        }
    }
}

/// A request as protobuf, for the application: a JSON one converted with the method's input
/// type. The error says why it does not convert.
fn protobuf(framing: &Framing, request: Request) -> std::result::Result<Bytes, String> {
    match (request, framing) {
        (Request::Protobuf(bytes), _) => Ok(bytes),
        (Request::Json(text), Framing::Json(method)) => serde_json::from_str::<Value>(&text)
            .map_err(|e| e.to_string())
            .and_then(|json| method.encode_request(&json).map_err(|e| e.to_string()))
            .map(Bytes::from)
            .map_err(|e| format!("a request that does not fit the method: {e}")),
        (Request::Json(_), Framing::Protobuf) => {
            Err("a JSON request in a protobuf call".to_owned())
        }
    }
}

/// Who the host is.
pub(super) struct Ids {
    /// This client's id: the audience of the tokens callers send it.
    pub client_id: String,
    /// Its Volt's id: a caller through a cloud relay prefixes method names with it.
    pub volt_id: String,
}

pub(super) struct Dispatcher {
    inbox: mpsc::Receiver<Value>,
    deliver: mpsc::Sender<Invocation>,
    outgoing: Outgoing,
    key: Arc<PrivateKey>,
    ids: Ids,
    state: watch::Receiver<SessionState>,
    request_buffer: usize,
    /// The hosted services' own schema, for callers that speak JSON.
    protos: Option<Arc<ServiceProtos>>,
    /// The opt-in check of each caller.
    check: Option<CallerCheck>,
    slots: HashMap<u64, Slot>,
}

impl Dispatcher {
    pub(super) fn new(
        inbox: mpsc::Receiver<Value>,
        deliver: mpsc::Sender<Invocation>,
        session: Session,
        key: Arc<PrivateKey>,
        ids: Ids,
        options: &super::HostOptions,
        check: Option<CallerCheck>,
    ) -> Dispatcher {
        Dispatcher {
            inbox,
            deliver,
            state: session.state(),
            outgoing: Outgoing::new(session),
            key,
            ids,
            request_buffer: options.request_buffer,
            protos: options.protos.clone(),
            check,
            slots: HashMap::new(),
        }
    }

    pub(super) async fn run(mut self) {
        let mut connection = connection_of(&self.state.borrow());
        loop {
            tokio::select! {
                message = self.inbox.recv() => match message {
                    Some(message) => self.on_message(message).await,
                    None => return,
                },
                // Nobody takes invocations any more.
                () = self.deliver.closed() => return,
                changed = self.state.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let now = connection_of(&self.state.borrow_and_update());
                    if now != connection {
                        // Invoke ids belong to one Connect call: a new one starts afresh,
                        // and the calls in flight on the old one are over.
                        self.slots.clear();
                        connection = now;
                    }
                }
            }
        }
    }

    async fn on_message(&mut self, message: Value) {
        let request = match wire::invoke_request(message) {
            Ok(request) => request,
            Err(e) => return tracing::debug!(%e, "volt host: an invocation message skipped"),
        };
        let id = request.invoke_id;
        if id == 0 {
            return tracing::debug!("volt host: an invocation message without an id, skipped");
        }
        if !request.token.is_empty() {
            return self.start(id, request).await;
        }
        if self.slots.len() > 64 {
            // Calls whose invocation is gone (finished or dropped) are forgotten.
            self.slots.retain(|_, slot| {
                !slot.started || slot.requests.as_ref().is_some_and(|r| !r.is_closed())
            });
        }
        let Some(slot) = self.slots.get_mut(&id) else {
            return tracing::debug!(
                id,
                "volt host: a message for an unknown invocation, skipped"
            );
        };
        let step = match &request.request_payload {
            Some(
                invoke_request::RequestPayload::Payload(_)
                | invoke_request::RequestPayload::JsonPayload(_),
            ) if request.iv.is_empty() => {
                // Never read as plaintext: whoever sent it does not have the call's key.
                return self
                    .end_sealed(id, INVALID_ARGUMENT, "an unsealed message in a sealed call")
                    .await;
            }
            Some(invoke_request::RequestPayload::Payload(_)) => {
                slot.json = false;
                slot.key.open_upstream(&request).map(Step::from_remote)
            }
            Some(invoke_request::RequestPayload::JsonPayload(sealed)) => {
                slot.json = true;
                slot.key
                    .open_json_upstream(&request.iv, sealed)
                    .map(Step::from_body)
            }
            None => {
                if request.client_end {
                    slot.requests = None;
                }
                return;
            }
        };
        let Ok(step) = step else {
            return self
                .end_sealed(id, INVALID_ARGUMENT, "a message that does not decrypt")
                .await;
        };
        match step {
            Step::Invoke { .. } if slot.started => {
                self.end_sealed(
                    id,
                    FAILED_PRECONDITION,
                    "a second method_invoke in one call",
                )
                .await;
            }
            Step::Invoke { method_name, first } => {
                // A caller through a cloud relay names the method after the Volt's id.
                let method_name =
                    tunnel::strip_cloud_prefix(&method_name, &self.ids.volt_id).to_owned();
                let framing = if slot.json {
                    match self.protos.as_ref().and_then(|p| p.method(&method_name)) {
                        Some(method) => Framing::Json(Box::new(method.clone())),
                        None => {
                            return self
                                .end_sealed(
                                    id,
                                    UNIMPLEMENTED,
                                    "this host has no proto files for that method, so it \
                                     cannot serve it to a JSON caller",
                                )
                                .await
                        }
                    }
                } else {
                    Framing::Protobuf
                };
                let first = match first.map(|r| protobuf(&framing, r)).transpose() {
                    Ok(first) => first,
                    Err(e) => return self.end_sealed(id, INVALID_ARGUMENT, &e).await,
                };
                let (requests, receiver) = mpsc::channel(self.request_buffer);
                if let Some(first) = first {
                    // A fresh channel has room for one.
                    let _ = requests.try_send(first);
                }
                slot.requests = Some(requests);
                slot.started = true;
                slot.framing = framing.clone();
                let invocation = Invocation::new(
                    id,
                    method_name,
                    slot.service_id.clone(),
                    slot.claims.clone(),
                    slot.token.clone(),
                    receiver,
                    slot.key.clone(),
                    self.outgoing.clone(),
                    framing,
                );
                caller_check::deliver(self.check.as_ref(), &self.deliver, invocation).await;
            }
            Step::Payload(request) => {
                let Some(requests) = &slot.requests else {
                    return;
                };
                let bytes = match protobuf(&slot.framing, request) {
                    Ok(bytes) => bytes,
                    Err(e) => return self.end_sealed(id, INVALID_ARGUMENT, &e).await,
                };
                match requests.try_send(bytes) {
                    Ok(()) | Err(TrySendError::Closed(_)) => {}
                    Err(TrySendError::Full(_)) => {
                        self.end_sealed(
                            id,
                            RESOURCE_EXHAUSTED,
                            "the service fell behind on the call's requests",
                        )
                        .await;
                    }
                }
            }
            Step::End => slot.requests = None,
            Step::Nothing => {}
        }
    }

    /// A new caller: its key exchange, answered with a fresh key signed by this client's own.
    async fn start(&mut self, id: u64, request: InvokeRequest) {
        if self.slots.contains_key(&id) {
            self.slots.remove(&id);
            return self
                .refuse(id, FAILED_PRECONDITION, "a second key exchange in one call")
                .await;
        }
        if self.slots.len() >= MAX_INVOCATIONS {
            return self
                .refuse(id, RESOURCE_EXHAUSTED, "the service has too many calls")
                .await;
        }
        let claims = match IdentityToken::parse(&request.token).and_then(|t| t.claims_unverified())
        {
            Ok(claims) => claims,
            Err(_) => {
                return self
                    .refuse(id, UNAUTHENTICATED, "the caller's token is malformed")
                    .await
            }
        };
        if claims.aud != self.ids.client_id {
            return self
                .refuse(
                    id,
                    UNAUTHENTICATED,
                    "the caller's token is for another audience",
                )
                .await;
        }
        let Some(k) = claims.k.clone() else {
            return self
                .refuse(
                    id,
                    UNAUTHENTICATED,
                    "the caller's token carries no key (claim k)",
                )
                .await;
        };
        let (answer, key) = match tunnel::answer_key_exchange(&k, &self.key) {
            Ok(answered) => answered,
            Err(_) => {
                return self
                    .refuse(id, UNAUTHENTICATED, "the caller's key is unusable")
                    .await
            }
        };
        self.slots.insert(
            id,
            Slot {
                key: Arc::new(key),
                claims,
                token: request.token,
                service_id: request.target_service_id,
                requests: None,
                started: false,
                json: false,
                framing: Framing::Protobuf,
            },
        );
        let response = InvokeResponse {
            invoke_id: id,
            key_exchange: Some(answer),
            ..InvokeResponse::default()
        };
        if let Err(e) = self.outgoing.send(response).await {
            tracing::debug!(%e, "volt host: a key exchange not sent");
        }
    }

    /// Refuses a call before its key exchange: a status, in the clear (there is no key).
    async fn refuse(&self, id: u64, code: i32, message: &str) {
        tracing::debug!(id, message, "volt host: a call refused");
        let response = InvokeResponse {
            invoke_id: id,
            response_payload: Some(invoke_response::ResponsePayload::Status(
                crate::proto::volt::Status {
                    code,
                    message: message.to_owned(),
                    description: String::new(),
                },
            )),
            server_end: true,
            ..InvokeResponse::default()
        };
        let _ = self.outgoing.send(response).await;
    }

    /// Ends a call after its key exchange with a sealed error, and forgets it.
    async fn end_sealed(&mut self, id: u64, code: i32, message: &str) {
        tracing::debug!(id, message, "volt host: a call ended");
        let Some(slot) = self.slots.remove(&id) else {
            return;
        };
        let error = Some((code, message.to_owned()));
        let mut sealed = super::invocation::sealed_end(&slot.key, slot.json, error);
        sealed.invoke_id = id;
        sealed.server_end = true;
        let _ = self.outgoing.send(sealed).await;
    }
}

/// The live Connect call's id, if there is one.
fn connection_of(state: &SessionState) -> Option<String> {
    match state {
        SessionState::Connected { connection_id } => Some(connection_id.clone()),
        _ => None,
    }
}
