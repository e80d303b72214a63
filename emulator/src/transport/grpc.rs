//! Native gRPC: every method of the API served by one generic handler.
//!
//! tonic does the gRPC framing with a pass-through codec; requests and responses stay
//! protobuf bytes end to end, and the method table of the protocol core gives each path its
//! types. Every method is served as a bidi stream, whatever its declared kind: a unary handler
//! answers after the first request message, so a client that never half-closes (the official
//! JS client) is answered at once.
//!
//! Identity: a client certificate issued by this Volt (verified by TLS against the Volt CA),
//! else the `volt-token` metadata. Authenticate needs neither (it is how a client gets them).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Buf as _, BufMut as _, Bytes};
use futures_util::Stream;
use tdx_volt::protocol::schema::{self, Method};
use tdx_volt::protocol::token::IdentityToken;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Status, Streaming};
use tracing::debug;

use crate::auth::verify_token;
use crate::call::{Caller, Code, Failure, Inbound, Outbound};
use crate::services::Services;

/// The metadata key carrying the identity token.
pub const TOKEN_METADATA: &str = "volt-token";
/// The largest message decoded or encoded.
pub const MAX_MESSAGE_LEN: usize = 16 * 1024 * 1024;
/// Streams one connection may have open at once (hyper's default is 200).
pub const MAX_CONCURRENT_STREAMS: u32 = 10_000;

const AUTHENTICATE: &str = "/tdx.volt_api.volt.v1.VoltAPI/Authenticate";

/// Serves HTTP/2 gRPC on an established (TLS or plain) stream until it closes.
/// `peer_certificate` is the DER of the client certificate TLS verified, if one was presented.
pub async fn serve_stream<S>(svc: Arc<Services>, stream: S, peer_certificate: Option<Vec<u8>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = peer_certificate
        .and_then(|der| svc.clients().by_certificate(&der))
        .map(|session| Caller {
            client_id: session.client_id,
            session_id: session.session_id,
        });
    let service = hyper::service::service_fn(move |request| {
        let svc = svc.clone();
        let peer = peer.clone();
        async move { Ok::<_, Infallible>(handle(svc, peer, request).await) }
    });
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
            .http2_only();
    // Long-lived calls (subscriptions) each hold a stream: allow as many as a client may open.
    builder
        .http2()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    if let Err(e) = builder
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await
    {
        debug!("gRPC connection ended: {e}");
    }
}

async fn handle(
    svc: Arc<Services>,
    peer: Option<Caller>,
    request: http::Request<hyper::body::Incoming>,
) -> http::Response<tonic::body::Body> {
    let path = request.uri().path().to_owned();
    let Some(method) = schema::methods().get(&path) else {
        return Status::unimplemented(format!("{path} is not a method of the Volt API"))
            .into_http();
    };
    let mut proof = None;
    let caller = if path == AUTHENTICATE && peer.is_none() {
        // Authenticate is how a client obtains a session: its token is checked against the
        // key the request presents, once the request has arrived.
        let token = request
            .headers()
            .get(TOKEN_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(IdentityToken::parse);
        match token {
            Some(Ok(token)) => proof = Some(token),
            _ => {
                return Status::unauthenticated(
                    "Authenticate needs a volt-token signed by the presented key",
                )
                .into_http()
            }
        }
        Caller {
            client_id: String::new(),
            session_id: String::new(),
        }
    } else {
        match identify(&svc, peer, request.headers()) {
            Ok(caller) => caller,
            Err(f) => return to_status(&f).into_http(),
        }
    };
    let mut grpc = tonic::server::Grpc::new(PassThrough)
        .max_decoding_message_size(MAX_MESSAGE_LEN)
        .max_encoding_message_size(MAX_MESSAGE_LEN);
    grpc.streaming(
        CallService {
            svc,
            caller,
            method,
            proof,
        },
        request,
    )
    .await
}

fn identify(
    svc: &Services,
    peer: Option<Caller>,
    headers: &http::HeaderMap,
) -> Result<Caller, Failure> {
    if let Some(caller) = peer {
        return Ok(caller);
    }
    let jwt = headers
        .get(TOKEN_METADATA)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            Failure::abort(
                Code::Unauthenticated,
                "no volt-token metadata and no client certificate",
            )
        })?;
    let token = IdentityToken::parse(jwt)
        .map_err(|e| Failure::abort(Code::Unauthenticated, format!("bad volt-token: {e}")))?;
    verify_token(svc, &token).map(|(caller, _)| caller)
}

/// Checks an Authenticate caller's token against the key its request presents.
fn check_proof(svc: &Services, token: &IdentityToken, message: &[u8]) -> Result<(), Failure> {
    use prost::Message as _;
    let request = tdx_volt::proto::volt::AuthenticateRequest::decode(message)
        .map_err(|e| Failure::abort(Code::InvalidArgument, format!("bad request: {e}")))?;
    let key = crate::authenticate::request_key(svc, &request)
        .map_err(|f| Failure::abort(f.code(), f.message()))?;
    crate::auth::verify_token_with_key(svc, token, &key).map(|_| ())
}

fn to_status(failure: &Failure) -> Status {
    Status::new(
        tonic::Code::from_i32(failure.code().as_i32()),
        failure.message().to_owned(),
    )
}

struct CallService {
    svc: Arc<Services>,
    caller: Caller,
    method: &'static Method,
    /// For Authenticate without a session: the token to check against the request's key.
    proof: Option<IdentityToken>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tonic::server::StreamingService<Bytes> for CallService {
    type Response = Bytes;
    type ResponseStream = ResponseStream;
    type Future = BoxFuture<Result<tonic::Response<ResponseStream>, Status>>;

    fn call(&mut self, request: tonic::Request<Streaming<Bytes>>) -> Self::Future {
        let (inbound_tx, inbound) = Inbound::channel();
        let (outbound, out_rx) = Outbound::channel();
        let (fail_tx, fail_rx) = oneshot::channel::<Failure>();
        let (done_tx, done_rx) = oneshot::channel();
        let svc = self.svc.clone();
        let caller = self.caller.clone();
        let method = self.method;
        let handler = tokio::spawn(async move {
            let call = svc.call(caller, method, inbound, outbound);
            // A broken request stream fails the call; the handler never mistakes it for the
            // client's normal end (the failure is sent before the requests stop).
            let result = tokio::select! {
                biased;
                Ok(failure) = fail_rx => Err(failure),
                result = call => result,
            };
            let _ = done_tx.send(result);
        });
        let mut requests = request.into_inner();
        let svc = self.svc.clone();
        let mut proof = self.proof.take();
        // Requests are pulled only as fast as the handler takes them: HTTP/2 flow control
        // pushes back on the client.
        let pump = tokio::spawn(async move {
            loop {
                match requests.message().await {
                    Ok(Some(message)) => {
                        if let Some(token) = proof.take() {
                            if let Err(f) = check_proof(&svc, &token, &message) {
                                let _ = fail_tx.send(f);
                                return;
                            }
                        }
                        if inbound_tx.send(message).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(status) => {
                        let _ = fail_tx.send(Failure::abort(
                            Code::InvalidArgument,
                            format!("request stream failed: {}", status.message()),
                        ));
                        // Keep the requests open until the handler has taken the failure.
                        let _ = inbound_tx.closed().await;
                        return;
                    }
                }
            }
        });
        let stream = ResponseStream {
            responses: out_rx,
            done: Some(done_rx),
            tasks: [pump.abort_handle(), handler.abort_handle()],
        };
        Box::pin(async move { Ok(tonic::Response::new(stream)) })
    }
}

/// The responses of one call, then its final status. Dropping it (the client cancelled or
/// went away) aborts the call's tasks.
struct ResponseStream {
    responses: crate::call::OutboundReceiver,
    done: Option<oneshot::Receiver<Result<(), Failure>>>,
    tasks: [tokio::task::AbortHandle; 2],
}

impl Stream for ResponseStream {
    type Item = Result<Bytes, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if let Poll::Ready(Some(bytes)) = self.responses.poll_recv(cx) {
            return Poll::Ready(Some(Ok(bytes)));
        }
        // No response ready: either more may come, or the handler has finished (its
        // Outbound dropped, so the channel is closed and drained).
        let Some(done) = self.done.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(done).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                // The handler has returned, so nothing more enters the channel; deliver what
                // is left before the status.
                if let Poll::Ready(Some(bytes)) = self.responses.poll_recv(cx) {
                    return Poll::Ready(Some(Ok(bytes)));
                }
                self.done = None;
                match result {
                    Ok(Ok(())) => Poll::Ready(None),
                    Ok(Err(f)) => Poll::Ready(Some(Err(to_status(&f)))),
                    Err(_) => Poll::Ready(Some(Err(Status::internal("the call's handler failed")))),
                }
            }
        }
    }
}

impl Drop for ResponseStream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A codec that passes message bytes through unchanged.
#[derive(Clone, Copy, Default)]
pub struct PassThrough;

impl Codec for PassThrough {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = PassThrough;
    type Decoder = PassThrough;

    fn encoder(&mut self) -> PassThrough {
        PassThrough
    }

    fn decoder(&mut self) -> PassThrough {
        PassThrough
    }
}

impl Encoder for PassThrough {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for PassThrough {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
