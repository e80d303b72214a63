//! The local end of a tunnel: the emulator answers the key exchange with the Volt key, reads
//! the sealed `method_invoke`, runs that method as any other call of the caller's, and seals
//! each response into a `method_payload`. When the method finishes it sends `method_end` and
//! the stream closes with OK.

use std::sync::Arc;

use bytes::Bytes;
use tdx_volt::proto::volt::{
    method_invoke, method_payload, remote_response, InvokeRequest, InvokeResponse,
};
use tdx_volt::protocol::schema;
use tdx_volt::protocol::tunnel::{self, TunnelKey};
use tokio::sync::mpsc;

use super::super::Services;
use super::{fail, TunnelFailure, TunnelFault, METHOD};
use crate::call::{Caller, Code, Failure, Inbound, InboundSender, Outbound};

/// Ends a tunnel here: `key` is the caller's `k` claim.
pub async fn serve(
    svc: &Arc<Services>,
    caller: Caller,
    key: &str,
    inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    let (answer, key) = match tunnel::answer_key_exchange(key, svc.identity().signing_key()) {
        Ok((mut answer, key)) => {
            if svc.tunnel_fault() == TunnelFault::CorruptSignature {
                if let Some(byte) = answer.signature.first_mut() {
                    *byte ^= 1;
                }
            }
            (answer, key)
        }
        Err(e) => {
            return fail(
                outbound,
                Code::Unauthenticated,
                format!("key exchange: {e}"),
            )
            .await
        }
    };
    outbound
        .send(&InvokeResponse {
            key_exchange: Some(answer),
            ..InvokeResponse::default()
        })
        .await?;
    let key = Arc::new(key);
    match run_method(svc, caller, &key, inbound, outbound).await {
        Ok(()) => Ok(()),
        Err(TunnelFailure(code, message)) => fail(outbound, code, message).await,
    }
}

/// Reads the sealed `method_invoke`, runs the method, and relays its requests and responses
/// until it finishes.
async fn run_method(
    svc: &Arc<Services>,
    caller: Caller,
    key: &Arc<TunnelKey>,
    mut inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), TunnelFailure> {
    let invoke = loop {
        let Some(message) = inbound.next::<InvokeRequest>().await? else {
            // Ended before starting a method.
            return Ok(());
        };
        svc.connections().tunnel_message();
        match open(key, &message)? {
            Some(remote_response::Payload::MethodInvoke(invoke)) => break invoke,
            None if message.client_end => return Ok(()),
            None => {}
            Some(_) => {
                return Err(TunnelFailure(
                    Code::FailedPrecondition,
                    "the tunnel's first sealed message must start a method (method_invoke)".into(),
                ))
            }
        }
    };
    let own = svc.identity().id();
    let name = tunnel::strip_cloud_prefix(&invoke.method_name, own);
    if name.len() != invoke.method_name.len() {
        svc.connections().cloud_method_name();
    }
    let method = match schema::methods().get(name) {
        Some(method) if method.name() != METHOD => method,
        _ => {
            let failure = Failure::unimplemented(name);
            return end(key, outbound, Some(&failure)).await;
        }
    };
    let (requests, handler_inbound) = Inbound::channel();
    let (handler_outbound, mut responses) = Outbound::channel();
    let handler =
        tokio::spawn(
            svc.clone()
                .call_boxed(caller, method, handler_inbound, handler_outbound),
        );
    let handler_abort = handler.abort_handle();
    let _abort_on_return = AbortOnDrop(handler_abort);
    let first = match invoke.invoke_request {
        Some(method_invoke::InvokeRequest::Request(bytes)) => Some(Bytes::from(bytes)),
        Some(method_invoke::InvokeRequest::JsonRequest(_)) => {
            return Err(TunnelFailure(
                Code::InvalidArgument,
                "a JSON request in a protobuf tunnel".into(),
            ))
        }
        None => None,
    };
    let (failed_tx, mut failed) = mpsc::channel::<TunnelFailure>(1);
    let pump = tokio::spawn(pump_requests(
        svc.clone(),
        key.clone(),
        inbound,
        requests,
        first,
        failed_tx,
    ));
    let _abort_pump = AbortOnDrop(pump.abort_handle());

    let mut handler = handler;
    loop {
        tokio::select! {
            response = responses.recv() => match response {
                Some(bytes) => {
                    let sealed = key.seal_downstream(&tunnel::downstream_payload(bytes.to_vec()));
                    outbound.send(&sealed).await?;
                }
                // Every sender is gone: the handler has returned; its result follows.
                None => {
                    let result = (&mut handler).await;
                    return finish(key, outbound, result).await;
                }
            },
            result = &mut handler => {
                // What it queued goes out before the end.
                while let Ok(bytes) = responses.try_recv() {
                    let sealed = key.seal_downstream(&tunnel::downstream_payload(bytes.to_vec()));
                    outbound.send(&sealed).await?;
                }
                return finish(key, outbound, result).await;
            }
            Some(failure) = failed.recv() => return Err(failure),
        }
    }
}

async fn finish(
    key: &TunnelKey,
    outbound: &Outbound,
    result: Result<Result<(), Failure>, tokio::task::JoinError>,
) -> Result<(), TunnelFailure> {
    match result {
        Ok(Ok(())) => end(key, outbound, None).await,
        Ok(Err(failure)) => end(key, outbound, Some(&failure)).await,
        Err(_) => {
            let failure = Failure::abort(Code::Internal, "the call's handler failed");
            end(key, outbound, Some(&failure)).await
        }
    }
}

/// Sends the sealed `method_end` (with the failure, if any); the stream then ends with OK.
async fn end(
    key: &TunnelKey,
    outbound: &Outbound,
    failure: Option<&Failure>,
) -> Result<(), TunnelFailure> {
    let error = failure.map(|f| (f.code().as_i32(), f.message().to_owned()));
    outbound
        .send(&key.seal_downstream(&tunnel::downstream_end(error)))
        .await?;
    Ok(())
}

/// Feeds the caller's later requests to the method: sealed `method_payload`s; a
/// `method_end`, a bare `client_end` or a half-close ends its input.
async fn pump_requests(
    svc: Arc<Services>,
    key: Arc<TunnelKey>,
    mut inbound: Inbound,
    requests: InboundSender,
    first: Option<Bytes>,
    failed: mpsc::Sender<TunnelFailure>,
) {
    if let Some(first) = first {
        if requests.send(first).await.is_err() {
            return;
        }
    }
    let outcome = async {
        while let Some(message) = inbound.next::<InvokeRequest>().await? {
            svc.connections().tunnel_message();
            match open(&key, &message)? {
                Some(remote_response::Payload::MethodPayload(payload)) => {
                    let Some(method_payload::MethodPayload::Payload(bytes)) =
                        payload.method_payload
                    else {
                        return Err(TunnelFailure(
                            Code::InvalidArgument,
                            "a JSON payload in a protobuf tunnel".into(),
                        ));
                    };
                    if requests.send(Bytes::from(bytes)).await.is_err() {
                        // The method takes no more requests (a unary one has its one).
                        return Ok(());
                    }
                }
                Some(remote_response::Payload::MethodEnd(_)) => return Ok(()),
                None if message.client_end => return Ok(()),
                Some(remote_response::Payload::MethodInvoke(_)) => {
                    return Err(TunnelFailure(
                        Code::FailedPrecondition,
                        "a second method_invoke in one tunnel".into(),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
    .await;
    if let Err(failure) = outcome {
        let _ = failed.send(failure).await;
    }
}

/// Opens one sealed message from the caller. A second token (a second key exchange on the
/// same stream) and anything that does not decrypt end the tunnel.
fn open(
    key: &TunnelKey,
    message: &InvokeRequest,
) -> Result<Option<remote_response::Payload>, TunnelFailure> {
    if !message.token.is_empty() {
        return Err(TunnelFailure(
            Code::FailedPrecondition,
            "a second key exchange on one tunnel".into(),
        ));
    }
    match key.open_upstream(message) {
        Ok(opened) => Ok(opened.and_then(|m| m.payload)),
        Err(_) => Err(TunnelFailure(
            Code::InvalidArgument,
            "a tunnel message that does not decrypt".into(),
        )),
    }
}

/// Aborts a task when dropped (the tunnel ended, or its caller went away).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
