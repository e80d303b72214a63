//! Calls through a relay tunnel: each call is its own `VoltAPI/Invoke` stream on the
//! connection's one HTTP/2 connection (to the relay), end-to-end encrypted with the Volt (or
//! a service's host).
//!
//! The call opens with the identity token and the route; nothing else leaves until the far
//! end's key exchange has verified (fail closed). The caller's requests wait in the call's
//! queue meanwhile, then go out sealed: the first as the `method_invoke`, the rest as
//! `method_payload`s; ending the client side half-closes the stream. The far end's
//! `method_payload`s are the call's responses, its `method_end` error the call's error, and
//! the call ends when the stream does.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use http::uri::PathAndQuery;
use prost::Message as _;
use prost_reflect::MessageDescriptor;
use tokio::sync::{mpsc, oneshot};
use tonic::metadata::MetadataValue;

use super::call::{self, CallHandle, Showed};
use super::observed::{Observed, Seen};
use super::{Connection, REQUEST_QUEUE};
use crate::proto::volt::{remote_request, InvokeResponse};
use crate::protocol::exchange::ClientKeyExchange;
use crate::protocol::grpc::{Encoded, TOKEN_METADATA};
use crate::protocol::schema::{self, Method, MethodKind};
use crate::protocol::tunnel::{self, Downstream, TunnelKey};
use crate::transport::delivery::{self, response_event, Delivery};
use crate::transport::link::Opened;
use crate::{Error, ErrorKind, PublicKey, Reached, Result, Status};

/// Where tunnelled calls go, and who answers them.
#[derive(Debug)]
pub(crate) struct Route {
    /// `target_did` of each call: the hops, the Volt's id last.
    pub target_did: Vec<String>,
    /// The key that signs the far end's key exchange: the Volt's.
    pub signer: PublicKey,
}

/// Bytes a sealed message may add to the request it carries (envelope, padding, IV).
const SEALING_OVERHEAD: usize = 1024;

/// Opens a tunnelled call of `method`, with its first request (already encoded) if given.
pub(super) fn open(
    connection: &Connection,
    route: &Route,
    path: Arc<str>,
    method: &Method,
    first: Option<Bytes>,
    end_after_first: bool,
    unread: delivery::Unread,
) -> Result<Opened> {
    let settings = &connection.settings;
    let exchange = ClientKeyExchange::new();
    let signer = &settings.signer;
    let jwt = signer
        .sign(&signer.session_claims().with_key(exchange.token_claim()))?
        .to_jwt();
    let mut token = MetadataValue::try_from(jwt.as_str()).map_err(|e| {
        Error::new(ErrorKind::Token, "the identity token is not valid metadata").with_source(e)
    })?;
    token.set_sensitive(true);
    let opening = tunnel::opening_request(jwt, route.target_did.clone(), None).encode_to_vec();

    let (requests, queue) = mpsc::channel::<Bytes>(REQUEST_QUEUE);
    if let Some(message) = first {
        // A fresh queue always has room for the first message.
        let _ = requests.try_send(message);
    }
    let requests = (!end_after_first).then_some(requests);
    let (key_tx, key_rx) = oneshot::channel();
    let sealer = Sealer {
        method_name: path.to_string(),
        kind: method.kind(),
    };
    let body = sealed_requests(Bytes::from(opening), key_rx, queue, sealer);
    let mut request = tonic::Request::new(body);
    request.metadata_mut().insert(TOKEN_METADATA, token);

    let (service, seen) = Observed::new(connection.channel.clone());
    let grpc = tonic::client::Grpc::new(service)
        .max_decoding_message_size(settings.max_inbound + SEALING_OVERHEAD)
        .max_encoding_message_size(settings.max_outbound + SEALING_OVERHEAD);
    let (delivery, receivers) = delivery::channels(settings.call_buffer, unread);
    let reader = Reader {
        path: path.clone(),
        output: method.output().clone(),
        exchange,
        signer: route.signer.clone(),
        key_tx,
        seen,
    };
    let task = tokio::spawn(reader.run(grpc, request, delivery));
    let handle = CallHandle::new(
        path,
        method.input().clone(),
        settings.clone(),
        requests,
        task.abort_handle(),
    );
    Ok(Opened {
        io: Box::new(handle),
        receivers,
    })
}

/// Turns the call's requests into sealed tunnel messages.
struct Sealer {
    method_name: String,
    kind: MethodKind,
}

enum Upstream {
    /// The opening message is next.
    Opening(Bytes),
    /// Waiting for the key exchange.
    Keying,
    /// Sending requests; whether the `method_invoke` has gone.
    Open(Arc<TunnelKey>, bool),
}

/// The request body of a tunnelled call: the opening message at once, then, once the key
/// exchange has verified, the call's requests sealed. A failed key exchange drops the key's
/// sender, which ends the body without a request having left.
fn sealed_requests(
    opening: Bytes,
    key: oneshot::Receiver<Arc<TunnelKey>>,
    queue: mpsc::Receiver<Bytes>,
    sealer: Sealer,
) -> impl Stream<Item = Bytes> + Send + 'static {
    let state = (Upstream::Opening(opening), Some(key), queue, sealer);
    futures_util::stream::unfold(state, |(upstream, mut key, mut queue, sealer)| async move {
        let (key, invoked) = match upstream {
            Upstream::Opening(opening) => {
                return Some((opening, (Upstream::Keying, key, queue, sealer)));
            }
            Upstream::Keying => (key.take()?.await.ok()?, false),
            Upstream::Open(key, invoked) => (key, invoked),
        };
        let message = match (queue.recv().await, invoked) {
            (Some(request), true) => tunnel::upstream_payload(request.to_vec()),
            (Some(request), false) => {
                tunnel::method_invoke(sealer.method_name.clone(), sealer.kind, request.to_vec())
            }
            // Ended before any request: the method is still started, with none.
            (None, false) => {
                let mut invoke =
                    tunnel::method_invoke(sealer.method_name.clone(), sealer.kind, vec![]);
                if let Some(crate::proto::volt::remote_response::Payload::MethodInvoke(m)) =
                    &mut invoke.payload
                {
                    m.invoke_request = None;
                }
                invoke
            }
            (None, true) => return None,
        };
        let sealed = Bytes::from(key.seal_upstream(&message).encode_to_vec());
        Some((sealed, (Upstream::Open(key, true), None, queue, sealer)))
    })
}

/// Reads one tunnelled call's responses into its events.
struct Reader {
    path: Arc<str>,
    output: MessageDescriptor,
    exchange: ClientKeyExchange,
    signer: PublicKey,
    key_tx: oneshot::Sender<Arc<TunnelKey>>,
    seen: Arc<Seen>,
}

impl Reader {
    async fn run<S>(
        self,
        grpc: tonic::client::Grpc<Observed>,
        request: tonic::Request<S>,
        delivery: Delivery,
    ) where
        S: Stream<Item = Bytes> + Send + 'static,
    {
        let outcome = tokio::select! {
            () = delivery.gone() => return,
            outcome = self.read(grpc, request, &delivery) => outcome,
        };
        delivery.finish(outcome);
    }

    async fn read<S>(
        self,
        mut grpc: tonic::client::Grpc<Observed>,
        request: tonic::Request<S>,
        delivery: &Delivery,
    ) -> Result<()>
    where
        S: Stream<Item = Bytes> + Send + 'static,
    {
        let Reader {
            path,
            output,
            exchange,
            signer,
            key_tx,
            seen,
        } = self;
        let path = &*path;
        let failed = |s| call::status_error(path, s, Showed::from(&*seen));
        grpc.ready()
            .await
            .map_err(|e| call::transport_error(path, &e))?;
        let rpc = PathAndQuery::from_static(tunnel::INVOKE_PATH);
        let mut responses = grpc
            .streaming(request, rpc, Encoded)
            .await
            .map_err(failed)?
            .into_inner();

        // The far end's key exchange comes first; nothing of the call has left before it.
        let key = loop {
            let Some(bytes) = responses.message().await.map_err(failed)? else {
                return Err(Error::new(
                    ErrorKind::Closed,
                    format!("{path}: the tunnel ended before its key exchange"),
                )
                .with_reached(Reached::No));
            };
            match tunnel::classify(decode(path, &bytes)?) {
                Downstream::KeyExchange(answer) => {
                    let key =
                        tunnel::complete_key_exchange(exchange, &answer, &signer).map_err(|e| {
                            Error::new(ErrorKind::KeyExchange, format!("{path}: {e}"))
                                .with_reached(Reached::No)
                        })?;
                    break Arc::new(key);
                }
                Downstream::Failed(status) => {
                    return Err(tunnel_failure(status).with_reached(Reached::No))
                }
                Downstream::Nothing => {}
                Downstream::Sealed { .. } | Downstream::Unexpected(_) => {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!("{path}: a tunnel message before the key exchange"),
                    )
                    .with_reached(Reached::No))
                }
            }
        };
        let _ = key_tx.send(key.clone());

        // The call's answers, until the stream ends.
        let mut ended: Option<Result<()>> = None;
        while let Some(bytes) = responses.message().await.map_err(failed)? {
            let (iv, payload) = match tunnel::classify(decode(path, &bytes)?) {
                Downstream::Sealed { iv, payload } => (iv, payload),
                Downstream::Failed(status) => return Err(tunnel_failure(status)),
                Downstream::Nothing => continue,
                Downstream::KeyExchange(_) => {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!("{path}: a second key exchange in the tunnel"),
                    ))
                }
                Downstream::Unexpected(what) => {
                    return Err(Error::new(ErrorKind::Protocol, format!("{path}: {what}")))
                }
            };
            let message = key
                .open_downstream(&iv, &payload)
                .map_err(|e| Error::new(ErrorKind::Protocol, format!("{path}: {e}")))?;
            match message.payload {
                Some(remote_request::Payload::MethodPayload(answer)) if ended.is_none() => {
                    let Some(crate::proto::volt::method_payload::MethodPayload::Payload(bytes)) =
                        answer.method_payload
                    else {
                        return Err(Error::new(
                            ErrorKind::Protocol,
                            format!("{path}: a tunnelled response without protobuf bytes"),
                        ));
                    };
                    let value = schema::protobuf_to_json(&output, &bytes).map_err(|e| {
                        Error::new(
                            ErrorKind::Protocol,
                            format!("{path}: a response that does not decode"),
                        )
                        .with_source(e)
                    })?;
                    if !delivery.deliver(response_event(value), bytes.len()).await {
                        return Ok(());
                    }
                }
                Some(remote_request::Payload::MethodEnd(end)) if ended.is_none() => {
                    ended = Some(if end.ended && !end.error.is_empty() {
                        Err(Error::from_status(Status {
                            code: end.error_code,
                            message: end.error,
                            description: String::new(),
                        }))
                    } else {
                        Ok(())
                    });
                }
                // Pings, and anything after the end, need nothing.
                _ => {}
            }
        }
        ended.unwrap_or(Ok(()))
    }
}

fn decode(path: &str, bytes: &[u8]) -> Result<InvokeResponse> {
    InvokeResponse::decode(bytes).map_err(|e| {
        Error::new(
            ErrorKind::Protocol,
            format!("{path}: a tunnel message that does not decode"),
        )
        .with_source(e)
    })
}

fn tunnel_failure(status: crate::proto::volt::Status) -> Error {
    Error::from_tunnel_status(Status {
        code: status.code,
        message: status.message,
        description: String::new(),
    })
}
