//! Websocket calls (protocol v1) routed to a client hosting a service: a key-exchange frame
//! whose meta names a route (`d`, the hops, and `s`, the service) that does not end here.
//!
//! The emulator relays and never opens anything (it has no key): the caller's token, rebuilt
//! as a full JWT, and its route go to the host as the invocation's first `invoke_request`;
//! the host's `key_exchange` comes back as the call's key-exchange frame; each sealed frame of
//! the caller goes on as `invoke_request{iv, json_payload}` (its ciphertext as it came; a
//! frame whose meta says `client_end` is followed by a separate `client_end`); each
//! `invoke_response{iv, json_payload}` of the host comes back as a sealed frame. The host's
//! `server_end` ends the call (its last frame carries the sealed `method_end`). A failure of
//! the route, the host or its key exchange is a meta `error` frame on the call.

use std::sync::Arc;

use serde_json::{Map, Value};
use tdx_volt::proto::volt::{invoke_request, invoke_response, InvokeRequest, InvokeResponse};
use tdx_volt::protocol::frame::{FrameType, SealedFrame, ServerHello};
use tdx_volt::protocol::token::IdentityToken;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::super::gateway::Upstream;
use super::super::outgoing::Outgoing;
use super::error_frame;
use crate::call::Code;
use crate::services::hosting::registry::{HostEvent, Invocation};
use crate::services::invoke::routed::{host_gone, key_exchange, overflow, Ending};
use crate::services::invoke::{open_tunnel, Opened, TunnelFailure};
use crate::services::Services;

/// Where a call whose key-exchange frame has this meta goes.
pub(crate) enum Route {
    /// It ends here (no route, or one whose last hop is this Volt, naming no service).
    Here,
    /// To a host: the invocation started on its connection, and the first request for it.
    Host(Invocation, InvokeRequest),
    /// Refused: why, for the caller.
    Refused(String),
}

/// Reads the route in a key-exchange frame's meta (`d`: the hops, `s`: the service) and, when
/// it leads to a host, checks it as a gRPC tunnel's opening is checked and starts the
/// invocation.
pub(crate) fn route(svc: &Services, meta: &Map<String, Value>, token: &IdentityToken) -> Route {
    let hops = match meta.get("d") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(hops)) => {
            let hops: Option<Vec<String>> =
                hops.iter().map(|h| h.as_str().map(str::to_owned)).collect();
            match hops {
                Some(hops) => hops,
                None => return Route::Refused("meta d must be a list of ids".into()),
            }
        }
        Some(_) => return Route::Refused("meta d must be a list of ids".into()),
    };
    let service = match meta.get("s") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Route::Refused("meta s must be a service id".into()),
    };
    let own = svc.identity().id();
    let ends_here = hops.last().is_none_or(|hop| hop.is_empty() || hop == own);
    if ends_here && service.is_empty() {
        return Route::Here;
    }
    let opening = InvokeRequest {
        token: token.to_jwt(),
        target_did: hops,
        target_service_id: service,
        ..InvokeRequest::default()
    };
    match open_tunnel(svc, &opening) {
        Ok(Opened::Here { .. }) => Route::Here,
        Ok(Opened::ToHost {
            host,
            service_connection,
        }) => match svc.hosts().start(&host, &service_connection) {
            Some(invocation) => {
                svc.connections().invocation_routed();
                Route::Host(invocation, opening)
            }
            None => Route::Refused(format!("{host} is not online")),
        },
        Err(TunnelFailure(_, message)) => Route::Refused(message),
    }
}

/// Relays one routed call until either side ends it.
pub(crate) async fn relay(
    svc: Arc<Services>,
    mut invocation: Invocation,
    opening: InvokeRequest,
    call_id: u64,
    upstream: mpsc::Receiver<Upstream>,
    outgoing: Outgoing,
) {
    let ending = run(&svc, &mut invocation, opening, call_id, upstream, &outgoing).await;
    let message = match ending {
        Some(Ending::Done) => {
            invocation.host_ended();
            return;
        }
        Some(Ending::HostStatus(status)) => {
            invocation.host_ended();
            status.message
        }
        Some(Ending::Failed(_, message)) => message,
        // The caller went (its socket, or its call failed here): the host hears `client_end`
        // as the invocation goes.
        None => return,
    };
    if let Some(frame) = error_frame(Some(call_id), &message) {
        send(&outgoing, frame).await;
    }
}

/// `None` when the caller is gone.
async fn run(
    svc: &Services,
    invocation: &mut Invocation,
    opening: InvokeRequest,
    call_id: u64,
    mut upstream: mpsc::Receiver<Upstream>,
    outgoing: &Outgoing,
) -> Option<Ending> {
    if invocation.send(opening).await.is_err() {
        return Some(host_gone());
    }
    let wait = svc.host_key_exchange_wait();
    let answer = match tokio::time::timeout(wait, key_exchange(invocation)).await {
        Err(_) => {
            return Some(Ending::Failed(
                Code::DeadlineExceeded,
                format!("the service's host sent no key exchange within {wait:?}"),
            ))
        }
        Ok(Err(ending)) => return Some(ending),
        Ok(Ok(answer)) => answer,
    };
    let hello = ServerHello {
        call_id,
        public_key: answer.encryption_key,
        nonce: answer.nonce,
        signature: answer.signature,
    };
    match hello.encode() {
        Ok(frame) => send(outgoing, Message::Binary(frame.into())).await,
        Err(e) => {
            return Some(Ending::Failed(
                Code::FailedPrecondition,
                format!("the service's host sent an unusable key exchange: {e}"),
            ))
        }
    }
    loop {
        tokio::select! {
            frame = upstream.recv() => {
                let frame = frame?;
                svc.connections().tunnel_message();
                let sealed = InvokeRequest {
                    iv: frame.iv,
                    request_payload: Some(invoke_request::RequestPayload::JsonPayload(
                        frame.ciphertext,
                    )),
                    ..InvokeRequest::default()
                };
                if invocation.send(sealed).await.is_err()
                    || (frame.client_end && invocation.end_input().await.is_err())
                {
                    return Some(host_gone());
                }
            }
            event = invocation.next() => match event {
                HostEvent::Answer(answer) => {
                    if let Some(ending) = downstream(call_id, answer, outgoing).await {
                        return Some(ending);
                    }
                }
                HostEvent::HostGone => return Some(host_gone()),
                HostEvent::Overflow => return Some(overflow()),
            },
        }
    }
}

/// Passes one host answer to the caller; `Some` when it ends the call.
async fn downstream(call_id: u64, answer: InvokeResponse, outgoing: &Outgoing) -> Option<Ending> {
    match answer.response_payload {
        Some(invoke_response::ResponsePayload::Status(status)) => {
            return Some(Ending::HostStatus(status))
        }
        Some(invoke_response::ResponsePayload::JsonPayload(ciphertext)) => {
            let frame = SealedFrame {
                frame_type: FrameType::Payload,
                call_id,
                meta: Map::new(),
                iv: answer.iv,
                ciphertext,
            };
            match frame.encode() {
                Ok(bytes) => send(outgoing, Message::Binary(bytes.into())).await,
                Err(e) => {
                    return Some(Ending::Failed(
                        Code::ResourceExhausted,
                        format!("the service's answer does not fit a frame: {e}"),
                    ))
                }
            }
        }
        Some(invoke_response::ResponsePayload::Payload(_)) => {
            return Some(Ending::Failed(
                Code::Internal,
                "the service's host answered a websocket caller in protobuf, not JSON".into(),
            ))
        }
        None => {}
    }
    answer.server_end.then_some(Ending::Done)
}

async fn send(outgoing: &Outgoing, frame: Message) {
    let turn = outgoing.turn().await;
    // A frame too large for the queue, or a closing socket: the caller hears nothing more.
    let _ = outgoing.send(turn, frame).await;
}
