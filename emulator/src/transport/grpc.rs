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
use std::task::ready;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tdx_volt::protocol::schema::{self, Method};
use tdx_volt::protocol::token::IdentityToken;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tonic::{Status, Streaming};
use tracing::debug;

use crate::call::{Caller, Code, Failure, Inbound, InboundSender, Outbound};
use crate::services::auth::{
    check_not_revoked, verify_sessionless_proof, verify_token, verify_tunnel_metadata,
};
use crate::services::Services;

pub use tdx_volt::protocol::grpc::TOKEN_METADATA;
/// The largest message decoded or encoded.
pub use tdx_volt::protocol::limits::MAX_MESSAGE_LEN;
/// Streams one connection may have open at once (hyper's default is 200).
pub const MAX_CONCURRENT_STREAMS: u32 = 10_000;

use tdx_volt::protocol::grpc::AUTHENTICATE_PATH as AUTHENTICATE;

/// Serves HTTP/2 gRPC on an established (TLS or plain) stream until it closes.
/// `peer_certificate` is the DER of the client certificate TLS verified, if one was presented.
pub async fn serve_stream<S>(svc: Arc<Services>, stream: S, peer_certificate: Option<Vec<u8>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // hyper would wait for the preface as long as the client likes.
    let stream = match super::preface::read(stream, svc.handshake_timeout()).await {
        Ok(stream) => stream,
        Err(why) => return debug!("gRPC connection dropped: {why}"),
    };
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
    // A client whose certificate's session was revoked authenticates afresh with its token.
    let peer = peer.filter(|p| path != AUTHENTICATE || !svc.clients().is_revoked(&p.session_id));
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
        match identify(&svc, peer, request.headers(), &path) {
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
    path: &str,
) -> Result<Caller, Failure> {
    if let Some(caller) = peer {
        // Looked up as the connection opened: the session may have been revoked since.
        check_not_revoked(svc, &caller.session_id)?;
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
    if path == tdx_volt::protocol::tunnel::INVOKE_PATH {
        // A tunnel to a hosted service: the token may be for the host (its opening's token
        // is what counts).
        return verify_tunnel_metadata(svc, &token).map(|(caller, _)| caller);
    }
    verify_token(svc, &token).map(|(caller, _)| caller)
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
        let (finished_tx, finished_rx) = oneshot::channel();
        let pump = RequestPump {
            requests: request.into_inner(),
            inbound: Some(inbound_tx),
            svc: self.svc.clone(),
            proof: self.proof.take(),
            failure: Some(fail_tx),
        };
        let pump = tokio::spawn(pump.run(finished_rx));
        let stream = ResponseStream {
            responses: out_rx,
            outcome: Outcome::Running(done_rx),
            finished: Some(finished_tx),
            tasks: [handler.abort_handle(), pump.abort_handle()],
        };
        Box::pin(async move { Ok(tonic::Response::new(stream)) })
    }
}

/// How long a call whose response is complete waits for the client to end its side (the
/// official clients half-close right after their request) before its request stream is
/// dropped, which resets the HTTP/2 stream.
pub const HALF_CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Feeds one call's requests to its handler, pulling them only as fast as the handler takes
/// them (HTTP/2 flow control pushes back on the client).
///
/// It holds the request stream until the client ends it, also after the handler has stopped
/// reading (a unary method answers after its first request) and after the response is
/// complete: dropping a stream the client has not ended resets it, and hyper closes a
/// connection after 1,024 such resets, so a client making unary calls without half-closing
/// first (the official JS gRPC client) would lose its connection every thousand calls. Once
/// the response is complete it waits [`HALF_CLOSE_WAIT`] at most.
struct RequestPump {
    requests: Streaming<Bytes>,
    /// `None` once the handler has stopped taking requests.
    inbound: Option<InboundSender>,
    svc: Arc<Services>,
    /// For Authenticate without a session: checked against the first request.
    proof: Option<IdentityToken>,
    /// How a broken request stream reaches the handler.
    failure: Option<oneshot::Sender<Failure>>,
}

impl RequestPump {
    /// `finished` resolves with `Ok` when the response is complete, with `Err` when the call
    /// was dropped unfinished (cancelled).
    async fn run(mut self, mut finished: oneshot::Receiver<()>) {
        let mut deadline = None;
        loop {
            let next = tokio::select! {
                biased;
                done = &mut finished, if deadline.is_none() => {
                    if done.is_err() {
                        return;
                    }
                    deadline = Some(tokio::time::Instant::now() + HALF_CLOSE_WAIT);
                    continue;
                }
                () = sleep_until(deadline) => {
                    debug!("the client did not end a finished call's requests");
                    return;
                }
                next = self.requests.message() => next,
            };
            match next {
                Ok(Some(message)) => self.deliver(message).await,
                Ok(None) => return,
                Err(status) => {
                    if let Some(failure) = self.failure.take() {
                        let _ = failure.send(Failure::abort(
                            Code::InvalidArgument,
                            format!("request stream failed: {}", status.message()),
                        ));
                    }
                    // Keep the requests open until the handler has taken the failure (so it
                    // never mistakes it for the client's normal end): it then drops them,
                    // or its response ends.
                    if let (Some(inbound), None) = (self.inbound.take(), deadline) {
                        tokio::select! {
                            () = inbound.closed() => {}
                            _ = &mut finished => {}
                        }
                    }
                    return;
                }
            }
        }
    }

    async fn deliver(&mut self, message: Bytes) {
        let Some(inbound) = &self.inbound else {
            // The handler has what it needs; later requests are read only to let the client
            // end its side.
            return;
        };
        if let Some(token) = self.proof.take() {
            if let Err(f) = verify_sessionless_proof(&self.svc, &token, &message) {
                if let Some(failure) = self.failure.take() {
                    let _ = failure.send(f);
                }
                self.inbound = None;
                return;
            }
        }
        if inbound.send(message).await.is_err() {
            self.inbound = None;
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Where a call's handler is.
enum Outcome {
    /// Running; its result arrives here.
    Running(oneshot::Receiver<Result<(), Failure>>),
    /// It has returned; the final status (if it failed) is delivered after what is queued.
    Settled(Option<Status>),
    /// Everything is delivered.
    Delivered,
}

/// The responses of one call, then its final status. Dropping it unfinished (the client
/// cancelled or went away) aborts the handler and the request pump; once the response is
/// complete, the pump is left to wait for the client's half-close.
struct ResponseStream {
    responses: crate::call::OutboundReceiver,
    outcome: Outcome,
    /// Told when the response is complete.
    finished: Option<oneshot::Sender<()>>,
    /// The handler and the request pump.
    tasks: [tokio::task::AbortHandle; 2],
}

impl Stream for ResponseStream {
    type Item = Result<Bytes, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        // Responses first: whatever the handler queued goes out before its status.
        if let Poll::Ready(Some(bytes)) = self.responses.poll_recv(cx) {
            return Poll::Ready(Some(Ok(bytes)));
        }
        if let Outcome::Running(done) = &mut self.outcome {
            let status = match ready!(Pin::new(done).poll(cx)) {
                Ok(Ok(())) => None,
                Ok(Err(f)) => Some(to_status(&f)),
                Err(_) => Some(Status::internal("the call's handler failed")),
            };
            self.outcome = Outcome::Settled(status);
        }
        // The handler has returned, so nothing more enters the channel: what is left goes out
        // before the status. (`try_recv`, unlike `poll_recv`, never answers "not now" because
        // the task's cooperative budget is spent, which would cut the responses short.)
        if matches!(self.outcome, Outcome::Settled(_)) {
            if let Ok(bytes) = self.responses.try_recv() {
                return Poll::Ready(Some(Ok(bytes)));
            }
        }
        match std::mem::replace(&mut self.outcome, Outcome::Delivered) {
            Outcome::Settled(status) => {
                if let Some(finished) = self.finished.take() {
                    let _ = finished.send(());
                }
                Poll::Ready(status.map(Err))
            }
            _ => Poll::Ready(None),
        }
    }
}

impl Drop for ResponseStream {
    fn drop(&mut self) {
        let [handler, pump] = &self.tasks;
        handler.abort();
        if self.finished.is_some() {
            pump.abort();
        }
    }
}

/// The pass-through codec of the protocol core: message bytes cross tonic unchanged.
pub use tdx_volt::protocol::grpc::Encoded as PassThrough;

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls as a busy peer would: again and again, without waiting to be woken, so that
    /// polls overlap the handler's last steps on the other thread.
    fn spin(stream: &mut ResponseStream) -> Option<Result<Bytes, Status>> {
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        loop {
            if let std::task::Poll::Ready(item) = Pin::new(&mut *stream).poll_next(&mut cx) {
                return item;
            }
            std::hint::spin_loop();
        }
    }

    /// The handler answers and returns while the stream is being polled on another thread:
    /// every response is delivered, then the end, whatever the interleaving (the handler's
    /// result was once polled again after it had been taken, which panicked).
    ///
    /// The stream is polled on this thread, outside the runtime (whose cooperative budget
    /// would hold a spinning poll back).
    #[test]
    fn responses_racing_the_handlers_end_are_delivered_then_the_end() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for round in 0..5_000u32 {
            let (outbound, out_rx) = Outbound::channel();
            let (done_tx, done_rx) = oneshot::channel();
            let (finished_tx, mut finished_rx) = oneshot::channel();
            let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
            let failed = round % 2 == 1;
            let handler = std::thread::spawn(move || {
                go_rx.recv().unwrap();
                outbound
                    .blocking_send(&tdx_volt::proto::volt::ConnectPing {})
                    .unwrap();
                drop(outbound);
                let _ = done_tx.send(if failed {
                    Err(Failure::abort(Code::Internal, "failed"))
                } else {
                    Ok(())
                });
            });
            let mut stream = ResponseStream {
                responses: out_rx,
                outcome: Outcome::Running(done_rx),
                finished: Some(finished_tx),
                tasks: [
                    runtime.spawn(async {}).abort_handle(),
                    runtime.spawn(async {}).abort_handle(),
                ],
            };
            go_tx.send(()).unwrap();
            let first = spin(&mut stream).expect("a response").expect("data");
            assert!(first.is_empty(), "the empty ping");
            let end = spin(&mut stream);
            if failed {
                assert_eq!(end.expect("a status").unwrap_err().message(), "failed");
            } else {
                assert!(end.is_none());
            }
            assert!(spin(&mut stream).is_none());
            assert!(finished_rx.try_recv().is_ok(), "the pump is told");
            handler.join().unwrap();
        }
    }
}
