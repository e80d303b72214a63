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
use super::requests::{RequestSender, REQUEST_QUEUE};
use super::Connection;
use crate::proto::volt::{remote_request, InvokeResponse};
use crate::protocol::exchange::ClientKeyExchange;
use crate::protocol::grpc::{Encoded, TOKEN_METADATA};
use crate::protocol::schema::{self, Method, MethodKind};
use crate::protocol::tunnel::{self, Downstream, TunnelKey};
use crate::transport::delivery::{self, response_event, Delivery};
use crate::transport::link::{Opened, RawOpened};
use crate::{Error, ErrorKind, PublicKey, Reached, Result, Status};

/// Where tunnelled calls go, and who answers them.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// `target_did` of each call: the hops, the far end last.
    pub target_did: Vec<String>,
    /// `target_service_id`: the hosted service called, if any.
    pub service_id: Option<String>,
    /// The token's audience, when not the Volt (a service's host).
    pub audience: Option<String>,
    /// The key that signs the far end's key exchange: the Volt's, or the service host's.
    pub signer: PublicKey,
    /// Through a cloud relay (`volt.relay.cloud`): the Volt's id, which prefixes every
    /// tunnelled method name (`/<volt id>/pkg.Service/Method`) for the relay to route by.
    pub cloud_volt_id: Option<String>,
}

/// Bytes a sealed message may add to the request it carries (envelope, padding, IV).
const SEALING_OVERHEAD: usize = 1024;

/// A tunnelled call set going: the caller's request queue, and what its reader needs.
struct Started<S> {
    requests: Option<mpsc::Sender<Bytes>>,
    grpc: tonic::client::Grpc<Observed>,
    request: tonic::Request<S>,
    reader: Reader,
}

/// Starts a tunnelled call of `path` (of shape `kind`) along `route`, with its first request
/// (already encoded) if given.
fn start(
    connection: &Connection,
    route: &Route,
    path: &Arc<str>,
    kind: MethodKind,
    first: Option<Bytes>,
    end_after_first: bool,
) -> Result<Started<impl Stream<Item = Bytes> + Send + 'static>> {
    let settings = &connection.settings;
    let exchange = ClientKeyExchange::new();
    let signer = &settings.signer;
    let mut claims = signer.session_claims().with_key(exchange.token_claim());
    if let Some(audience) = &route.audience {
        claims.aud.clone_from(audience);
    }
    let jwt = signer.sign(&claims)?.to_jwt();
    let mut token = MetadataValue::try_from(jwt.as_str()).map_err(|e| {
        Error::new(ErrorKind::Token, "the identity token is not valid metadata").with_source(e)
    })?;
    token.set_sensitive(true);
    let opening = tunnel::opening_request(jwt, route.target_did.clone(), route.service_id.clone());

    let (requests, queue) = mpsc::channel::<Bytes>(REQUEST_QUEUE);
    if let Some(message) = first {
        // A fresh queue always has room for the first message.
        let _ = requests.try_send(message);
    }
    let requests = (!end_after_first).then_some(requests);
    let (key_tx, key_rx) = oneshot::channel();
    let method_name = match &route.cloud_volt_id {
        Some(volt_id) => tunnel::cloud_method_name(volt_id, path),
        None => path.to_string(),
    };
    let sealer = Sealer { method_name, kind };
    let body = sealed_requests(Bytes::from(opening.encode_to_vec()), key_rx, queue, sealer);
    let mut request = tonic::Request::new(body);
    request.metadata_mut().insert(TOKEN_METADATA, token);

    let (service, seen) = Observed::new(connection.channel.clone());
    let grpc = tonic::client::Grpc::new(service)
        .max_decoding_message_size(settings.max_inbound + SEALING_OVERHEAD)
        .max_encoding_message_size(settings.max_outbound + SEALING_OVERHEAD);
    Ok(Started {
        requests,
        grpc,
        request,
        reader: Reader {
            path: path.clone(),
            exchange,
            signer: route.signer.clone(),
            key_tx,
            seen,
        },
    })
}

/// Opens a tunnelled call of a method of the Volt API, with its first request (already
/// encoded) if given: JSON in and out, as on every transport.
pub(super) fn open(
    connection: &Connection,
    route: &Route,
    path: Arc<str>,
    method: &Method,
    first: Option<Bytes>,
    end_after_first: bool,
    unread: delivery::Unread,
) -> Result<Opened> {
    let started = start(
        connection,
        route,
        &path,
        method.kind(),
        first,
        end_after_first,
    )?;
    let (delivery, receivers) = delivery::channels(connection.settings.call_buffer, unread);
    let sink = JsonSink {
        path: path.clone(),
        output: method.output().clone(),
        delivery,
    };
    let task = tokio::spawn(started.reader.run(started.grpc, started.request, sink));
    let handle = CallHandle::new(
        path,
        method.input().clone(),
        connection.settings.clone(),
        RequestSender::over(started.requests),
        task.abort_handle(),
    );
    Ok(Opened {
        io: Box::new(handle),
        receivers,
    })
}

/// Opens a tunnelled call whose messages are raw protobuf bytes (a hosted service's method,
/// described by the caller): requests go in through the returned queue, responses come out
/// of the returned receiver, then the outcome (an error as its last item).
pub(crate) fn open_raw(
    connection: &Connection,
    route: &Route,
    path: Arc<str>,
    kind: MethodKind,
) -> Result<RawOpened> {
    let started = start(connection, route, &path, kind, None, false)?;
    let (responses, receiver) = mpsc::channel(connection.settings.call_buffer.max(1));
    let sink = RawSink { responses };
    let task = tokio::spawn(started.reader.run(started.grpc, started.request, sink));
    Ok(RawOpened {
        requests: started.requests,
        responses: receiver,
        task: task.abort_handle(),
    })
}

/// Where a tunnelled call's responses go.
trait Sink: Send + 'static {
    /// Takes one response; `false` when the caller has gone.
    fn message(&mut self, bytes: Vec<u8>)
        -> impl std::future::Future<Output = Result<bool>> + Send;
    /// Settles the call.
    fn finish(self, outcome: Result<()>) -> impl std::future::Future<Output = ()> + Send;
}

/// Responses as proto3 JSON, into a call's events.
struct JsonSink {
    path: Arc<str>,
    output: MessageDescriptor,
    delivery: Delivery,
}

impl Sink for JsonSink {
    async fn message(&mut self, bytes: Vec<u8>) -> Result<bool> {
        let value = schema::protobuf_to_json(&self.output, &bytes).map_err(|e| {
            Error::new(
                ErrorKind::Protocol,
                format!("{}: a response that does not decode", self.path),
            )
            .with_source(e)
        })?;
        Ok(self
            .delivery
            .deliver(response_event(value), bytes.len())
            .await)
    }

    async fn finish(self, outcome: Result<()>) {
        self.delivery.finish(outcome);
    }
}

/// Responses as they came, into a bounded channel.
struct RawSink {
    responses: mpsc::Sender<Result<Bytes>>,
}

impl Sink for RawSink {
    async fn message(&mut self, bytes: Vec<u8>) -> Result<bool> {
        Ok(self.responses.send(Ok(Bytes::from(bytes))).await.is_ok())
    }

    async fn finish(self, outcome: Result<()>) {
        if let Err(e) = outcome {
            let _ = self.responses.send(Err(e)).await;
        }
    }
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

/// Reads one tunnelled call's responses into its sink.
struct Reader {
    path: Arc<str>,
    exchange: ClientKeyExchange,
    signer: PublicKey,
    key_tx: oneshot::Sender<Arc<TunnelKey>>,
    seen: Arc<Seen>,
}

impl Reader {
    async fn run<S, K: Sink>(
        self,
        grpc: tonic::client::Grpc<Observed>,
        request: tonic::Request<S>,
        mut sink: K,
    ) where
        S: Stream<Item = Bytes> + Send + 'static,
    {
        // A caller that leaves aborts this task (its handle's drop), which resets the call.
        let outcome = self.read(grpc, request, &mut sink).await;
        sink.finish(outcome).await;
    }

    async fn read<S, K: Sink>(
        self,
        mut grpc: tonic::client::Grpc<Observed>,
        request: tonic::Request<S>,
        sink: &mut K,
    ) -> Result<()>
    where
        S: Stream<Item = Bytes> + Send + 'static,
    {
        let Reader {
            path,
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
                    if !sink.message(bytes).await? {
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
