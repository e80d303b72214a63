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

use super::invocation::Invocation;
use super::outgoing::Outgoing;
use super::wire;
use crate::client::session::{Session, SessionState};
use crate::proto::volt::{
    invoke_request, invoke_response, method_invoke, method_payload, remote_response, InvokeRequest,
    InvokeResponse,
};
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
}

pub(super) struct Dispatcher {
    inbox: mpsc::Receiver<Value>,
    deliver: mpsc::Sender<Invocation>,
    outgoing: Outgoing,
    key: Arc<PrivateKey>,
    /// This client's id: the audience of the tokens callers send it.
    client_id: String,
    state: watch::Receiver<SessionState>,
    request_buffer: usize,
    slots: HashMap<u64, Slot>,
}

impl Dispatcher {
    pub(super) fn new(
        inbox: mpsc::Receiver<Value>,
        deliver: mpsc::Sender<Invocation>,
        session: Session,
        key: Arc<PrivateKey>,
        client_id: String,
        request_buffer: usize,
    ) -> Dispatcher {
        Dispatcher {
            inbox,
            deliver,
            state: session.state(),
            outgoing: Outgoing::new(session),
            key,
            client_id,
            request_buffer,
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
        let payload = match &request.request_payload {
            Some(invoke_request::RequestPayload::Payload(_)) if request.iv.is_empty() => {
                // Never read as plaintext: whoever sent it does not have the call's key.
                return self
                    .end_sealed(id, INVALID_ARGUMENT, "an unsealed message in a sealed call")
                    .await;
            }
            Some(invoke_request::RequestPayload::JsonPayload(_)) => {
                return self
                    .end_sealed(
                        id,
                        UNIMPLEMENTED,
                        "this host serves protobuf callers (gRPC) only",
                    )
                    .await;
            }
            Some(invoke_request::RequestPayload::Payload(_)) => {
                match slot.key.open_upstream(&request) {
                    Ok(opened) => opened.and_then(|m| m.payload),
                    Err(_) => {
                        return self
                            .end_sealed(id, INVALID_ARGUMENT, "a message that does not decrypt")
                            .await
                    }
                }
            }
            None => {
                if request.client_end {
                    slot.requests = None;
                }
                return;
            }
        };
        match payload {
            Some(remote_response::Payload::MethodInvoke(invoke)) if !slot.started => {
                let first = match invoke.invoke_request {
                    Some(method_invoke::InvokeRequest::Request(bytes)) => Some(Bytes::from(bytes)),
                    Some(method_invoke::InvokeRequest::JsonRequest(_)) => {
                        return self
                            .end_sealed(id, UNIMPLEMENTED, "this host serves protobuf callers only")
                            .await
                    }
                    None => None,
                };
                let (requests, receiver) = mpsc::channel(self.request_buffer);
                if let Some(first) = first {
                    // A fresh channel has room for one.
                    let _ = requests.try_send(first);
                }
                slot.requests = Some(requests);
                slot.started = true;
                let invocation = Invocation::new(
                    id,
                    invoke.method_name,
                    slot.service_id.clone(),
                    slot.claims.clone(),
                    slot.token.clone(),
                    receiver,
                    slot.key.clone(),
                    self.outgoing.clone(),
                );
                match self.deliver.try_send(invocation) {
                    Ok(()) => {}
                    Err(TrySendError::Full(invocation) | TrySendError::Closed(invocation)) => {
                        // Finished here, so that its drop sends nothing more.
                        let _ = invocation
                            .finish(Err(super::invocation::status(
                                RESOURCE_EXHAUSTED,
                                "the service has too many calls waiting",
                            )))
                            .await;
                    }
                }
            }
            Some(remote_response::Payload::MethodInvoke(_)) => {
                self.end_sealed(
                    id,
                    FAILED_PRECONDITION,
                    "a second method_invoke in one call",
                )
                .await;
            }
            Some(remote_response::Payload::MethodPayload(payload)) => {
                let Some(method_payload::MethodPayload::Payload(bytes)) = payload.method_payload
                else {
                    return self
                        .end_sealed(id, UNIMPLEMENTED, "this host serves protobuf callers only")
                        .await;
                };
                let Some(requests) = &slot.requests else {
                    return;
                };
                match requests.try_send(Bytes::from(bytes)) {
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
            Some(remote_response::Payload::MethodEnd(_)) => slot.requests = None,
            _ => {}
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
        if claims.aud != self.client_id {
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
        let mut sealed = slot
            .key
            .seal_downstream(&tunnel::downstream_end(Some((code, message.to_owned()))));
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
