//! What the two websocket gateways (protocol v1 and the older JSON text protocol) share: the
//! upgrade at [`API_PATH`], and the calls of one socket.
//!
//! One task owns each socket ([`Connection`]). Client messages are read and answered in order
//! by that task; each call runs in its own task (handler + response forwarder) joined to the
//! connection's `JoinSet`, so closing the socket cancels every call. Responses reach the socket
//! through one queue capped in bytes (`outgoing.rs`). A call's opening may run away from the
//! socket's task while its messages wait (`opening.rs`). Finished call ids are remembered for
//! a while, so that a client's late frames for them (typically its end, crossing the server's
//! end on the wire) are dropped quietly instead of answered as unknown.
//!
//! Two things differ between the protocols, and each is a trait here:
//! - [`Protocol`]: how a client message is read (it decides which call it concerns, checks the
//!   token, opens the body) and how an error outside any call's encryption is framed;
//! - [`CallSeal`], implemented by a call's key: how the call's bodies are framed for the
//!   socket (binary frames under a v1 `CallKey`, JSON text under a `LegacyKey`).

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use tdx_volt::protocol::body::Body;
use tdx_volt::protocol::schema::{self, Method};
use tdx_volt::protocol::token::IdentityToken;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use crate::call::{Caller, Code, Failure, Inbound, InboundSender, Outbound};
use crate::services::auth::verify_sessionless_proof;
use crate::services::Services;

use super::outgoing::{NotQueued, Outgoing, OutgoingLimits, Progress, Queued};

mod backlog;
mod bodies;
mod opening;
mod outbox;

use bodies::{clip, end_body, request_bytes, response_frame, too_large};
use outbox::Outbox;

/// The path of the gateway.
pub const API_PATH: &str = "/api";
/// The largest frame the gateway answers; a larger one gets an error on its call.
pub const MAX_MESSAGE_LEN: usize = tdx_volt::protocol::frame::MAX_FRAME_LEN;
/// The largest websocket message read at all; beyond it the socket is closed.
pub const HARD_MESSAGE_LIMIT: usize = MAX_MESSAGE_LEN + 32 * 1024 * 1024;
/// Calls open at once on one socket; a call beyond it is refused with an error.
pub const MAX_CALLS_PER_CONNECTION: usize = 10_000;
use tdx_volt::protocol::grpc::AUTHENTICATE_PATH as AUTHENTICATE;
/// Finished calls remembered so that a client's late frames for them are dropped quietly.
const RECENTLY_FINISHED: usize = 1024;
/// Error texts sent to clients are cut to this many bytes (at a character boundary), so that
/// an error echoing a huge input still fits its frame.
const MAX_ERROR_TEXT: usize = 1024;

/// How one call's bodies are framed for the socket: implemented by the call's key.
pub(crate) trait CallSeal: Send + Sync + 'static {
    /// The message carrying `body` for call `call_id`, or why it cannot be sent (it does not
    /// fit in a frame).
    fn frame(&self, call_id: u64, body: &Body) -> Result<Message, String>;
}

/// A websocket protocol spoken at [`API_PATH`].
pub(crate) trait Protocol: Sized + Send + 'static {
    /// A call's key, which seals its bodies.
    type Key: CallSeal;

    /// The frame telling the client about an error that is not inside a call's encryption
    /// (bad token, unknown call, undecryptable frame...), naming the call when known; `None`
    /// when the protocol has no way to say it.
    fn error_frame(call_id: Option<u64>, message: &str) -> Option<Message>;

    /// Handles one text or binary message from the client. Answers go through
    /// [`Connection::push`] and the other methods of the connection; a returned close frame
    /// closes the socket once they are written.
    fn on_message(conn: &mut Connection<Self>, message: Message) -> Option<CloseFrame>;

    /// What opening a call works out (the token's check and the call key: the costly part of
    /// a call), for [`Protocol::on_opened`]; [`Connection::open_call`] may work it out away
    /// from the socket's task.
    type Opening: Send + 'static;

    /// Completes a call's opening on the socket's task: answers, and records the call keyed or
    /// started, or fails it.
    fn on_opened(conn: &mut Connection<Self>, call_id: u64, opening: Self::Opening);
}

/// Accepts the websocket upgrade at [`API_PATH`] on an established (TLS or plain) stream and
/// serves the connection with protocol `P` until it closes.
pub(crate) async fn serve_stream<P, S>(svc: Arc<Services>, stream: S, limits: OutgoingLimits)
where
    P: Protocol,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(HARD_MESSAGE_LIMIT);
    config.max_frame_size = Some(HARD_MESSAGE_LIMIT);
    #[allow(clippy::result_large_err)]
    let check_path = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        if request.uri().path() == API_PATH {
            Ok(response)
        } else {
            let mut refusal = ErrorResponse::new(Some(format!(
                "volt-emulator: the websocket gateway is at {API_PATH}"
            )));
            *refusal.status_mut() = http::StatusCode::NOT_FOUND;
            Err(refusal)
        }
    };
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(config));
    match tokio::time::timeout(svc.handshake_timeout(), upgrade).await {
        Ok(Ok(ws)) => Connection::<P>::new(svc, limits).run(ws).await,
        Ok(Err(e)) => debug!("websocket handshake failed: {e}"),
        Err(_) => debug!("no websocket upgrade within the handshake timeout"),
    }
}

enum CallState<K> {
    /// Admitted; its opening runs away from the socket's task. The client's later messages
    /// for it wait here, to be read once it has opened.
    Opening { serial: u64, held: Vec<Message> },
    /// Keyed (protocol v1's key exchange done); waiting for the invoke.
    Keyed { key: Arc<K>, identity: Identity },
    /// Invoked: the handler runs.
    Running {
        key: Arc<K>,
        method: &'static Method,
        /// `None` once the client has ended its side.
        inbound: Option<InboundSender>,
        /// Tells this call's task apart from a later call reusing the id.
        serial: u64,
        task: AbortHandle,
    },
    /// Routed to a client hosting a service (protocol v1, meta `d`/`s`): its sealed frames go
    /// to the host unopened; the emulator holds no key for it.
    Routed {
        upstream: mpsc::Sender<Upstream>,
        serial: u64,
        task: AbortHandle,
    },
}

impl<K> CallState<K> {
    fn key(&self) -> Option<&Arc<K>> {
        match self {
            CallState::Keyed { key, .. } | CallState::Running { key, .. } => Some(key),
            CallState::Opening { .. } | CallState::Routed { .. } => None,
        }
    }

    fn task(&self) -> Option<(&AbortHandle, u64)> {
        match self {
            CallState::Running { task, serial, .. } | CallState::Routed { task, serial, .. } => {
                Some((task, *serial))
            }
            CallState::Opening { .. } | CallState::Keyed { .. } => None,
        }
    }
}

/// A sealed frame of a routed call, passed on to the service's host as it came.
pub(crate) struct Upstream {
    pub iv: Vec<u8>,
    pub ciphertext: Vec<u8>,
    /// The frame's meta said `client_end`: the caller has finished sending.
    pub client_end: bool,
}

/// Frames of one routed call waiting for its host; a caller further ahead fails its call.
const ROUTED_UPSTREAM_BUFFER: usize = 64;

/// Who opened a call.
pub(crate) enum Identity {
    /// The token was verified against its session.
    Verified(Caller),
    /// The token names no session: only Authenticate may be invoked, and the token is checked
    /// then, against the key the request presents.
    Sessionless(Box<IdentityToken>),
}

/// The calls of one socket, and the socket's outgoing frames.
pub(crate) struct Connection<P: Protocol> {
    svc: Arc<Services>,
    calls: HashMap<u64, CallState<P::Key>>,
    /// Call tasks; each returns its call id and serial.
    tasks: JoinSet<(u64, u64)>,
    /// Calls opening on the blocking pool: call id, serial, and the opening (`None` if it
    /// panicked).
    openings: JoinSet<(u64, u64, Option<P::Opening>)>,
    /// The size of the messages held for calls still opening.
    held_bytes: usize,
    /// Calls still opening that hold as many messages as one may.
    calls_held_full: usize,
    /// A message waiting for room in its call's queue, with the socket unread meanwhile.
    backlog: Option<backlog::Backlog>,
    next_serial: u64,
    /// Frames produced by the call tasks, written by the connection task.
    outgoing: Outgoing,
    out_rx: mpsc::Receiver<Queued>,
    progress: Arc<Progress>,
    /// Frames the connection task itself answers with, written after each client message.
    pending: Vec<Message>,
    finished: VecDeque<u64>,
}

impl<P: Protocol> Connection<P> {
    fn new(svc: Arc<Services>, limits: OutgoingLimits) -> Connection<P> {
        let (outgoing, out_rx, progress) = Outgoing::new(limits);
        Connection {
            svc,
            calls: HashMap::new(),
            tasks: JoinSet::new(),
            openings: JoinSet::new(),
            held_bytes: 0,
            calls_held_full: 0,
            backlog: None,
            next_serial: 0,
            outgoing,
            out_rx,
            progress,
            pending: Vec::new(),
            finished: VecDeque::with_capacity(RECENTLY_FINISHED),
        }
    }

    async fn run<S>(mut self, ws: WebSocketStream<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut sink, mut stream) = ws.split();
        let progress = Arc::clone(&self.progress);
        let mut outbox = Outbox::default();
        // Set when the protocol closes the socket: what is in the outbox goes first.
        let mut closing: Option<CloseFrame> = None;
        loop {
            let open = closing.is_none();
            tokio::select! {
                // A call found the client reading nothing: let it go (logged there).
                () = progress.stalled() => break,
                written = outbox.flush(&mut sink, &progress), if !outbox.is_done() => {
                    if let Err(e) = written {
                        debug!("websocket write failed: {e}");
                        break;
                    }
                }
                // While too much waits for calls still opening, the client is not read.
                // Reading goes on while frames are being written, within the outbox's bounds.
                incoming = stream.next(),
                    if open && outbox.has_room_for_replies() && !self.reading_paused() => {
                    let message = match incoming {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            debug!("websocket read failed: {e}");
                            break;
                        }
                        None => break,
                    };
                    match message {
                        // An empty message names no call (some clients send one when a call
                        // starts): there is nothing to answer, and no reason to drop the
                        // socket with every other call on it.
                        Message::Binary(ref b) if b.is_empty() => {
                            debug!("ignoring an empty binary message");
                        }
                        Message::Text(ref t) if t.is_empty() => {
                            debug!("ignoring an empty text message");
                        }
                        Message::Binary(_) | Message::Text(_) => {
                            closing = P::on_message(&mut self, message);
                            outbox.push_replies(self.pending.drain(..));
                        }
                        // tungstenite answers pings itself on the next read.
                        Message::Close(_) => break,
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
                Some((call_id, delivered)) = backlog::settle(&mut self.backlog),
                    if self.backlog.is_some() => {
                    self.backlog_settled(call_id, delivered);
                    outbox.push_replies(self.pending.drain(..));
                }
                Some(queued) = self.out_rx.recv(), if open && outbox.has_room_for_calls() => {
                    outbox.push_call(queued);
                }
                Some(done) = self.openings.join_next(), if open && outbox.has_room_for_replies() => {
                    let Ok((call_id, serial, opening)) = done else {
                        // Only a runtime shutting down cancels an opening.
                        continue;
                    };
                    for message in self.opened(call_id, serial, opening) {
                        if closing.is_none() {
                            closing = P::on_message(&mut self, message);
                        }
                    }
                    outbox.push_replies(self.pending.drain(..));
                }
                Some(done) = self.tasks.join_next() => {
                    if let Ok((call_id, serial)) = done {
                        if self.calls.get(&call_id).and_then(CallState::task)
                            .is_some_and(|(_, s)| s == serial)
                        {
                            self.calls.remove(&call_id);
                            self.remember_finished(call_id);
                        }
                    }
                }
            }
            if let (Some(close), true) = (&closing, outbox.is_done()) {
                let close = Message::Close(Some(close.clone()));
                tokio::select! {
                    _ = sink.send(close) => {}
                    () = progress.stalled() => {}
                }
                break;
            }
        }
        // Dropping the JoinSet aborts every call still running.
        self.tasks.abort_all();
    }

    /// The services calls run against.
    pub(crate) fn svc(&self) -> &Arc<Services> {
        &self.svc
    }

    /// Queues a frame, written once the current client message is handled.
    pub(crate) fn push(&mut self, message: Message) {
        self.pending.push(message);
    }

    /// Whether a call is open under this id.
    pub(crate) fn is_open(&self, call_id: u64) -> bool {
        self.calls.contains_key(&call_id)
    }

    /// Admits a new call under `call_id`, or answers why not: the id is in use (that call
    /// fails: the client has lost track of it) or the socket has too many open calls.
    pub(crate) fn admit(&mut self, call_id: u64) -> bool {
        if self.calls.contains_key(&call_id) {
            self.fail_call(call_id, "call id is already in use");
            return false;
        }
        // A new call under a finished call's id: its frames are no longer stale.
        self.finished.retain(|id| *id != call_id);
        if self.calls.len() >= MAX_CALLS_PER_CONNECTION {
            self.send_error(
                Some(call_id),
                &format!("too many open calls on this socket (limit {MAX_CALLS_PER_CONNECTION})"),
            );
            return false;
        }
        true
    }

    /// Records an admitted call whose key is agreed, waiting for its invoke.
    pub(crate) fn keyed(&mut self, call_id: u64, key: P::Key, identity: Identity) {
        self.calls.insert(
            call_id,
            CallState::Keyed {
                key: Arc::new(key),
                identity,
            },
        );
    }

    /// The key of an open call. For any other id `None`, after answering "unknown call id"
    /// unless the call finished recently (a late frame, dropped quietly).
    pub(crate) fn key_of(&mut self, call_id: u64) -> Option<Arc<P::Key>> {
        match self.calls.get(&call_id) {
            Some(state) => state.key().cloned(),
            None => {
                if !self.finished.contains(&call_id) {
                    self.send_error(Some(call_id), "unknown call id");
                }
                None
            }
        }
    }

    /// Acts on a decrypted body for an open call.
    pub(crate) fn on_body(&mut self, call_id: u64, body: Body) {
        match body {
            Body::Invoke {
                method_name,
                json_request,
                ..
            } => self.invoke_keyed(call_id, &method_name, &json_request),
            Body::Payload { json_payload } => self.on_payload(call_id, &json_payload),
            Body::End { .. } => self.end_client(call_id),
            _ => self.fail_call(call_id, "unsupported body"),
        }
    }

    /// The client has finished sending: the handler sees the end of its requests. A call
    /// ended before it was invoked never runs and is forgotten.
    pub(crate) fn end_client(&mut self, call_id: u64) {
        match self.calls.get_mut(&call_id) {
            Some(CallState::Running { inbound, .. }) => {
                inbound.take();
            }
            Some(CallState::Keyed { .. }) => {
                self.calls.remove(&call_id);
            }
            Some(CallState::Opening { .. } | CallState::Routed { .. }) | None => {}
        }
    }

    /// Starts an admitted call routed to a service's host: `relay` runs it, reading the
    /// caller's frames from its queue and writing the host's answers to the socket.
    pub(crate) fn start_routed<F, Fut>(&mut self, call_id: u64, relay: F)
    where
        F: FnOnce(mpsc::Receiver<Upstream>, Outgoing) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (upstream, frames) = mpsc::channel(ROUTED_UPSTREAM_BUFFER);
        let serial = self.next_serial;
        self.next_serial += 1;
        let run = relay(frames, self.outgoing.clone());
        let task = self.tasks.spawn(async move {
            run.await;
            (call_id, serial)
        });
        self.calls.insert(
            call_id,
            CallState::Routed {
                upstream,
                serial,
                task,
            },
        );
    }

    /// Whether the call under this id is routed to a service's host.
    pub(crate) fn is_routed(&self, call_id: u64) -> bool {
        matches!(self.calls.get(&call_id), Some(CallState::Routed { .. }))
    }

    /// Passes a frame of a routed call on to its host (nothing for any other call).
    pub(crate) fn forward_routed(&mut self, call_id: u64, frame: Upstream) {
        let Some(CallState::Routed { upstream, .. }) = self.calls.get(&call_id) else {
            return;
        };
        match upstream.try_send(frame) {
            Ok(()) => {}
            // The relay has ended; the connection task forgets the call when it joins.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.fail_call(
                call_id,
                "too many frames waiting for the service's host (it is not keeping up)",
            ),
        }
    }

    fn invoke_keyed(&mut self, call_id: u64, method_name: &str, json_request: &str) {
        // A call already running keeps its entry until fail_call, which stops its handler.
        if !matches!(self.calls.get(&call_id), Some(CallState::Keyed { .. })) {
            return self.fail_call(call_id, "call was invoked twice");
        }
        let Some(CallState::Keyed { key, identity }) = self.calls.remove(&call_id) else {
            return;
        };
        self.start(call_id, key, identity, method_name, json_request);
    }

    /// Starts an admitted call: `json_request` is its first request. A call that cannot start
    /// (unknown method, bad request, refused identity) ends at once with an error end body
    /// under its key.
    pub(crate) fn start(
        &mut self,
        call_id: u64,
        key: Arc<P::Key>,
        identity: Identity,
        method_name: &str,
        json_request: &str,
    ) {
        let method = match schema::methods().lookup(method_name) {
            Ok(m) => m,
            Err(_) => {
                return self.end_with_error(call_id, &key, &Failure::unimplemented(method_name))
            }
        };
        let (inbound_tx, inbound) = Inbound::channel();
        // The invoke's request is the call's first message; an empty request ("{}" or "")
        // from a streaming call that sends its messages later carries nothing.
        let first = json_request.trim();
        if !(first.is_empty() || (first == "{}" && method.kind().client_streams())) {
            match request_bytes(method, first) {
                Ok(bytes) => {
                    // A fresh channel always has room for one message.
                    let _ = inbound_tx.try_send(bytes);
                }
                Err(f) => return self.end_with_error(call_id, &key, &f),
            }
        }
        let caller = match identity {
            Identity::Verified(caller) => caller,
            Identity::Sessionless(token) => match self.sessionless(method, first, &token) {
                Ok(caller) => caller,
                Err(f) => return self.end_with_error(call_id, &key, &f),
            },
        };
        let (outbound, mut out_rx) = Outbound::channel();
        let svc = self.svc.clone();
        let outgoing = self.outgoing.clone();
        let call_key = key.clone();
        let serial = self.next_serial;
        self.next_serial += 1;
        let task = self.tasks.spawn(async move {
            // A handler that panics fails its call instead of leaving it without an end.
            let handler = async {
                AssertUnwindSafe(svc.call(caller, method, inbound, outbound))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| {
                        Err(Failure::abort(Code::Internal, "the call's handler failed"))
                    })
            };
            // A response that cannot be framed or queued (too large) fails the call: dropping
            // the receiver stops the handler at its next send.
            let forward = async {
                while let Some(bytes) = out_rx.recv().await {
                    let turn = outgoing.turn().await;
                    let frame = match response_frame(method, &*call_key, call_id, &bytes) {
                        Ok(frame) => frame,
                        Err(f) => return Some(f),
                    };
                    match outgoing.send(turn, frame).await {
                        Ok(()) => {}
                        Err(NotQueued::TooLarge(size)) => return Some(too_large(size)),
                        Err(NotQueued::Closing) => return None,
                    }
                }
                None
            };
            let (result, unsendable) = tokio::join!(handler, forward);
            let turn = outgoing.turn().await;
            if let Ok(frame) = call_key.frame(call_id, &end_body(unsendable.map_or(result, Err))) {
                let _ = outgoing.send(turn, frame).await;
            }
            (call_id, serial)
        });
        self.calls.insert(
            call_id,
            CallState::Running {
                key,
                method,
                inbound: Some(inbound_tx),
                serial,
                task,
            },
        );
    }

    /// Admits a call whose token names no session: it must be Authenticate, and the token must
    /// be signed by the key the request presents (with this Volt as audience, in its window).
    fn sessionless(
        &self,
        method: &Method,
        request_json: &str,
        token: &IdentityToken,
    ) -> Result<Caller, Failure> {
        if method.path() != AUTHENTICATE {
            return Err(Failure::abort(
                Code::Unauthenticated,
                "the identity token names no session (sub); only Authenticate may be called without one",
            ));
        }
        let bytes = request_bytes(method, request_json)?;
        verify_sessionless_proof(&self.svc, token, &bytes)?;
        Ok(Caller {
            client_id: String::new(),
            session_id: String::new(),
        })
    }

    fn on_payload(&mut self, call_id: u64, json_payload: &str) {
        let Some(CallState::Running {
            method, inbound, ..
        }) = self.calls.get_mut(&call_id)
        else {
            return self.fail_call(call_id, "payload before invoke");
        };
        let Some(tx) = inbound else {
            return self.fail_call(call_id, "payload after the client ended the call");
        };
        let bytes = match request_bytes(method, json_payload) {
            Ok(b) => b,
            Err(f) => return self.fail_call(call_id, f.message()),
        };
        match tx.try_send(bytes) {
            Ok(()) => {}
            // The handler has taken all it wants (a unary method reads one request).
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            // Read no further until the handler makes room (`backlog.rs`); a second full
            // queue meanwhile (a call opened away from the socket's task, its held messages
            // replayed) fails its call.
            Err(mpsc::error::TrySendError::Full(bytes)) => {
                let queue = tx.clone();
                if !self.hold_back(call_id, queue, bytes) {
                    self.fail_call(call_id, backlog::NOT_KEEPING_UP);
                }
            }
        }
    }

    /// Ends a call that never started with an error end body (sealed: the key exists).
    fn end_with_error(&mut self, call_id: u64, key: &P::Key, failure: &Failure) {
        self.remember_finished(call_id);
        if let Ok(frame) = key.frame(call_id, &end_body(Err(failure.clone()))) {
            self.pending.push(frame);
        }
    }

    fn remember_finished(&mut self, call_id: u64) {
        if self.finished.len() == RECENTLY_FINISHED {
            self.finished.pop_front();
        }
        self.finished.push_back(call_id);
    }

    /// Fails a call: its handler (if any) stops, and the client gets an error frame.
    pub(crate) fn fail_call(&mut self, call_id: u64, message: &str) {
        match self.calls.remove(&call_id) {
            Some(CallState::Opening { held, .. }) => self.release(&held),
            Some(state) => {
                if let Some((task, _)) = state.task() {
                    task.abort();
                }
            }
            None => {}
        }
        self.remember_finished(call_id);
        self.send_error(Some(call_id), message);
    }

    /// Sends an error frame, for a call or (`None`) for the socket.
    pub(crate) fn send_error(&mut self, call_id: Option<u64>, message: &str) {
        debug!(call_id, "call error: {message}");
        if let Some(frame) = P::error_frame(call_id, clip(message)) {
            self.pending.push(frame);
        }
    }
}
