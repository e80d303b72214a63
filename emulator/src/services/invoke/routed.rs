//! A tunnel routed to a client hosting a service. The emulator only relays: the key exchange
//! is end to end between caller and host, and nothing sealed is ever opened here (the
//! emulator has no key).
//!
//! 1. The opening goes to the host as `invoke_request{invoke_id, token, target_did,
//!    target_service_id}`.
//! 2. The host's `invoke_response{key_exchange}` comes back to the caller as
//!    `InvokeResponse{key_exchange}`, within the Volt's host key-exchange wait
//!    (`Services::host_key_exchange_wait`); past it the caller gets DEADLINE_EXCEEDED and the
//!    host `client_end`.
//! 3. Then both ways at once: each caller message goes to the host as
//!    `invoke_request{invoke_id, iv, payload}`, and the caller's half-close (or a bare
//!    `client_end`) as a separate `invoke_request{invoke_id, client_end}`. Each host answer
//!    `{iv, payload}` goes to the caller as `InvokeResponse{iv, payload}`; one with
//!    `server_end` ends the caller's stream with OK after it, and one with a status is
//!    forwarded as `InvokeResponse.status`, then the stream ends.
//! 4. A host that goes away fails the call with UNAVAILABLE ([`HOST_WENT_AWAY`]); a caller that
//!    goes away (or whose tunnel fails) is reported to the host as `client_end`.

use std::sync::Arc;

use tdx_volt::proto::volt::{
    invoke_response, InvokeRequest, InvokeRequestKeyExchange, InvokeResponse, Status,
};
use tracing::debug;

use super::super::hosting::registry::{HostEvent, Invocation};
use super::super::Services;
use super::{fail, send_status};
use crate::call::{Code, Failure, Inbound, Outbound};

/// What the caller hears when the host's connection ends during the call.
pub const HOST_WENT_AWAY: &str = "the service's host went away";

/// How the call ended, for the caller.
pub(crate) enum Ending {
    /// The host ended it (`server_end`): the stream ends with OK.
    Done,
    /// The host ended it with this status.
    HostStatus(Status),
    /// The tunnel failed here.
    Failed(Code, String),
}

/// Relays one tunnel between its caller and the host `invocation` reaches.
pub async fn relay(
    svc: &Arc<Services>,
    mut invocation: Invocation,
    opening: InvokeRequest,
    inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    let ending = run(svc, &mut invocation, opening, inbound, outbound).await?;
    match ending {
        Ending::Done => {
            invocation.host_ended();
            Ok(())
        }
        Ending::HostStatus(status) => {
            invocation.host_ended();
            send_status(outbound, status).await
        }
        // The host hears `client_end` as the invocation goes.
        Ending::Failed(code, message) => fail(outbound, code, message).await,
    }
}

async fn run(
    svc: &Arc<Services>,
    invocation: &mut Invocation,
    opening: InvokeRequest,
    mut inbound: Inbound,
    outbound: &Outbound,
) -> Result<Ending, Failure> {
    let first = InvokeRequest {
        token: opening.token,
        target_did: opening.target_did,
        target_service_id: opening.target_service_id,
        hop_index: opening.hop_index,
        ..InvokeRequest::default()
    };
    if invocation.send(first).await.is_err() {
        return Ok(host_gone());
    }
    let wait = svc.host_key_exchange_wait();
    let exchange = tokio::select! {
        waited = tokio::time::timeout(wait, key_exchange(invocation)) => waited,
        // The caller went: dropping the invocation tells the host.
        () = outbound.closed() => return Err(Failure::cancelled()),
    };
    match exchange {
        Err(_) => {
            return Ok(Ending::Failed(
                Code::DeadlineExceeded,
                format!("the service's host sent no key exchange within {wait:?}"),
            ))
        }
        Ok(Err(ending)) => return Ok(ending),
        Ok(Ok(answer)) => {
            outbound
                .send(&InvokeResponse {
                    key_exchange: Some(answer),
                    ..InvokeResponse::default()
                })
                .await?
        }
    }
    let mut caller_open = true;
    loop {
        tokio::select! {
            message = inbound.next::<InvokeRequest>(), if caller_open => match message {
                // A message that does not decode fails the tunnel, as a status.
                Err(f) => return Ok(Ending::Failed(f.code(), f.message().to_owned())),
                Ok(Some(message)) => {
                    svc.connections().tunnel_message();
                    if let Some(ending) = upstream(invocation, message).await {
                        return Ok(ending);
                    }
                }
                Ok(None) => {
                    caller_open = false;
                    if invocation.end_input().await.is_err() {
                        return Ok(host_gone());
                    }
                }
            },
            event = invocation.next() => match event {
                HostEvent::Answer(answer) => {
                    if let Some(ending) = downstream(outbound, answer).await? {
                        return Ok(ending);
                    }
                }
                HostEvent::HostGone => return Ok(host_gone()),
                HostEvent::Overflow => return Ok(overflow()),
            },
            () = outbound.closed() => return Err(Failure::cancelled()),
        }
    }
}

pub(crate) fn host_gone() -> Ending {
    Ending::Failed(Code::Unavailable, HOST_WENT_AWAY.into())
}

/// Waits for the host's key exchange; a status or an end before it ends the call.
pub(crate) async fn key_exchange(
    invocation: &mut Invocation,
) -> Result<InvokeRequestKeyExchange, Ending> {
    loop {
        match invocation.next().await {
            HostEvent::Answer(answer) => {
                if let Some(invoke_response::ResponsePayload::Status(status)) =
                    answer.response_payload
                {
                    return Err(Ending::HostStatus(status));
                }
                if let Some(exchange) = answer.key_exchange {
                    return Ok(exchange);
                }
                if answer.response_payload.is_some() {
                    return Err(Ending::Failed(
                        Code::FailedPrecondition,
                        "the service's host answered before its key exchange".into(),
                    ));
                }
                if answer.server_end {
                    invocation.host_ended();
                    return Err(Ending::Failed(
                        Code::Unavailable,
                        "the service's host ended the call before its key exchange".into(),
                    ));
                }
            }
            HostEvent::HostGone => return Err(host_gone()),
            HostEvent::Overflow => return Err(overflow()),
        }
    }
}

/// The caller fell [`INVOCATION_BUFFER`](super::super::hosting::registry::INVOCATION_BUFFER)
/// answers behind its host.
pub(crate) fn overflow() -> Ending {
    Ending::Failed(
        Code::ResourceExhausted,
        "the caller fell too far behind the service's host".into(),
    )
}

/// Forwards one caller message to the host: its sealed payload, then (separately) its
/// `client_end`. A second token on the stream is a second key exchange: refused.
async fn upstream(invocation: &mut Invocation, message: InvokeRequest) -> Option<Ending> {
    if !message.token.is_empty() {
        return Some(Ending::Failed(
            Code::FailedPrecondition,
            "a second key exchange on one tunnel".into(),
        ));
    }
    if let Some(payload) = message.request_payload {
        let sealed = InvokeRequest {
            iv: message.iv,
            request_payload: Some(payload),
            ..InvokeRequest::default()
        };
        if invocation.send(sealed).await.is_err() {
            return Some(host_gone());
        }
    }
    if message.client_end && invocation.end_input().await.is_err() {
        return Some(host_gone());
    }
    None
}

/// Forwards one host answer to the caller; `Some` when it ends the call.
async fn downstream(
    outbound: &Outbound,
    answer: InvokeResponse,
) -> Result<Option<Ending>, Failure> {
    match answer.response_payload {
        Some(invoke_response::ResponsePayload::Status(status)) => {
            return Ok(Some(Ending::HostStatus(status)))
        }
        Some(payload) => {
            outbound
                .send(&InvokeResponse {
                    iv: answer.iv,
                    response_payload: Some(payload),
                    server_end: answer.server_end,
                    ..InvokeResponse::default()
                })
                .await?;
        }
        None if answer.key_exchange.is_some() => {
            debug!("a second key exchange from a host: ignored");
        }
        None => {}
    }
    Ok(answer.server_end.then_some(Ending::Done))
}
