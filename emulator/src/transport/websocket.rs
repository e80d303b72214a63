//! The websocket gateway at `/api`, protocol v1.
//!
//! One task owns each socket. Frames are read and answered in order by that task; each call
//! runs in its own task (handler + response forwarder) joined to the connection's `JoinSet`, so
//! closing the socket cancels every call. Responses reach the socket through one bounded
//! channel.
//!
//! Errors: a token or key-exchange failure, an undecryptable frame, an unknown call id or a
//! frame that does not decode (but has a call id) is answered with a meta-only frame
//! `{"error": "..."}` on that call, which the official client turns into an error on that call
//! alone. A frame too short to carry a call id closes the socket (code 1002); a message above
//! [`HARD_MESSAGE_LIMIT`] is refused by the websocket layer, which closes the socket.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use std::panic::AssertUnwindSafe;

use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use prost::Message as _;
use serde_json::{Map, Value};
use tdx_volt::protocol::body::Body;
use tdx_volt::protocol::exchange::{server_key_exchange, CallKey};
use tdx_volt::protocol::frame::{
    decode_client_frame, peek_call_id, ClientFrame, ClientHello, FrameType, SealedFrame,
};
use tdx_volt::protocol::schema::{self, Method};
use tdx_volt::protocol::token::IdentityToken;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use crate::auth::{verify_token, verify_token_with_key};
use crate::call::{Caller, Code, Failure, Inbound, InboundSender, Outbound};
use crate::services::Services;

/// The path of the gateway.
pub const API_PATH: &str = "/api";
/// The largest frame the gateway answers; a larger one gets an error on its call.
pub const MAX_MESSAGE_LEN: usize = 16 * 1024 * 1024;
/// The largest websocket message read at all; beyond it the socket is closed.
pub const HARD_MESSAGE_LIMIT: usize = MAX_MESSAGE_LEN + 64 * 1024;
/// Calls open at once on one socket; a call beyond it is refused with an error.
pub const MAX_CALLS_PER_CONNECTION: usize = 10_000;
const AUTHENTICATE: &str = "/tdx.volt_api.volt.v1.VoltAPI/Authenticate";
/// Frames queued for the socket writer.
const OUTGOING_CAPACITY: usize = 256;
/// Finished calls remembered so that a client's late frames for them (typically its end,
/// crossing the server's end on the wire) are dropped quietly instead of answered as unknown.
const RECENTLY_FINISHED: usize = 1024;

/// Accepts the websocket upgrade at [`API_PATH`] on an established (TLS or plain) stream and
/// serves the connection until it closes.
pub async fn serve_stream<S>(svc: Arc<Services>, stream: S)
where
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
    match tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(config)).await {
        Ok(ws) => Connection::new(svc).run(ws).await,
        Err(e) => debug!("websocket handshake failed: {e}"),
    }
}

enum CallState {
    /// Key exchange done; waiting for the invoke.
    Keyed {
        key: Arc<CallKey>,
        identity: Identity,
    },
    /// Invoked: the handler runs.
    Running {
        key: Arc<CallKey>,
        method: &'static Method,
        /// `None` once the client has ended its side.
        inbound: Option<InboundSender>,
        /// Tells this call's task apart from a later call reusing the id.
        serial: u64,
        task: AbortHandle,
    },
}

/// Who opened a call.
enum Identity {
    /// The token was verified against its session.
    Verified(Caller),
    /// The token names no session: only Authenticate may be invoked, and the token is checked
    /// then, against the key the request presents.
    Sessionless(Box<IdentityToken>),
}

struct Connection {
    svc: Arc<Services>,
    calls: HashMap<u64, CallState>,
    /// Call tasks; each returns its call id and serial.
    tasks: JoinSet<(u64, u64)>,
    next_serial: u64,
    /// Frames produced by the call tasks, written by the connection task.
    out_tx: mpsc::Sender<Message>,
    out_rx: mpsc::Receiver<Message>,
    /// Frames the connection task itself answers with, written after each client frame.
    pending: Vec<Message>,
    finished: VecDeque<u64>,
}

impl Connection {
    fn new(svc: Arc<Services>) -> Connection {
        let (out_tx, out_rx) = mpsc::channel(OUTGOING_CAPACITY);
        Connection {
            svc,
            calls: HashMap::new(),
            tasks: JoinSet::new(),
            next_serial: 0,
            out_tx,
            out_rx,
            pending: Vec::new(),
            finished: VecDeque::with_capacity(RECENTLY_FINISHED),
        }
    }

    async fn run<S>(mut self, ws: WebSocketStream<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut sink, mut stream) = ws.split();
        loop {
            tokio::select! {
                incoming = stream.next() => {
                    let message = match incoming {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            debug!("websocket read failed: {e}");
                            break;
                        }
                        None => break,
                    };
                    match message {
                        Message::Binary(frame) => {
                            let close = self.on_frame(&frame);
                            let mut failed = false;
                            for reply in self.pending.drain(..) {
                                if sink.feed(reply).await.is_err() {
                                    failed = true;
                                    break;
                                }
                            }
                            if failed || sink.flush().await.is_err() {
                                break;
                            }
                            if let Some(close) = close {
                                let _ = sink.send(Message::Close(Some(close))).await;
                                break;
                            }
                        }
                        Message::Text(_) => {
                            let close = CloseFrame {
                                code: CloseCode::Unsupported,
                                reason: "volt-emulator speaks protocol v1 (binary frames)".into(),
                            };
                            let _ = sink.send(Message::Close(Some(close))).await;
                            break;
                        }
                        // tungstenite answers pings itself on the next read.
                        Message::Close(_) => break,
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
                Some(frame) = self.out_rx.recv() => {
                    if let Err(e) = sink.send(frame).await {
                        debug!("websocket write failed: {e}");
                        break;
                    }
                }
                Some(done) = self.tasks.join_next() => {
                    if let Ok((call_id, serial)) = done {
                        if matches!(self.calls.get(&call_id),
                            Some(CallState::Running { serial: s, .. }) if *s == serial)
                        {
                            self.calls.remove(&call_id);
                            self.remember_finished(call_id);
                        }
                    }
                }
            }
        }
        // Dropping the JoinSet aborts every call still running.
        self.tasks.abort_all();
    }

    /// Handles one client frame; returns a close frame when the socket must be closed.
    fn on_frame(&mut self, bytes: &[u8]) -> Option<CloseFrame> {
        let Some(call_id) = peek_call_id(bytes) else {
            return Some(CloseFrame {
                code: CloseCode::Protocol,
                reason: "frame too short to carry a call id".into(),
            });
        };
        if bytes.len() > MAX_MESSAGE_LEN {
            self.fail_call(
                call_id,
                &format!("frame of {} bytes exceeds {MAX_MESSAGE_LEN}", bytes.len()),
            );
            return None;
        }
        match decode_client_frame(bytes) {
            Ok(ClientFrame::Hello(hello)) => self.on_hello(hello),
            Ok(ClientFrame::Sealed(sealed)) => self.on_sealed(sealed),
            Err(e) => self.fail_call(call_id, &format!("bad frame: {e}")),
        }
        None
    }

    fn on_hello(&mut self, hello: ClientHello) {
        let call_id = hello.call_id;
        if self.calls.contains_key(&call_id) {
            return self.fail_call(call_id, "call id is already in use");
        }
        // A new call under a finished call's id: its frames are no longer stale.
        self.finished.retain(|id| *id != call_id);
        if self.calls.len() >= MAX_CALLS_PER_CONNECTION {
            return self.send_error(
                call_id,
                &format!("too many open calls on this socket (limit {MAX_CALLS_PER_CONNECTION})"),
            );
        }
        let token = IdentityToken::from_wire_parts(&hello.claims, &hello.signature);
        let unverified = match token.claims_unverified() {
            Ok(claims) => claims,
            Err(e) => return self.send_error(call_id, &format!("bad identity token: {e}")),
        };
        let (identity, claims) = if unverified.sub.as_deref().is_none_or(str::is_empty) {
            // Checked at invoke, against the key an Authenticate request presents.
            (Identity::Sessionless(Box::new(token)), unverified)
        } else {
            match verify_token(&self.svc, &token) {
                Ok((caller, claims)) => (Identity::Verified(caller), claims),
                Err(f) => return self.send_error(call_id, f.message()),
            }
        };
        let Some(k) = claims.k.as_deref() else {
            return self.send_error(call_id, "the identity token carries no key (k)");
        };
        let (server_hello, key) =
            match server_key_exchange(call_id, k, self.svc.identity().signing_key()) {
                Ok(ok) => ok,
                Err(e) => return self.send_error(call_id, &format!("key exchange failed: {e}")),
            };
        let frame = match server_hello.encode() {
            Ok(f) => f,
            Err(e) => return self.send_error(call_id, &format!("key exchange failed: {e}")),
        };
        self.pending.push(Message::Binary(frame.into()));
        self.calls.insert(
            call_id,
            CallState::Keyed {
                key: Arc::new(key),
                identity,
            },
        );
    }

    fn on_sealed(&mut self, sealed: SealedFrame) {
        let call_id = sealed.call_id;
        let Some(state) = self.calls.get(&call_id) else {
            if !self.finished.contains(&call_id) {
                self.send_error(call_id, "unknown call id");
            }
            return;
        };
        let key = match state {
            CallState::Keyed { key, .. } | CallState::Running { key, .. } => key.clone(),
        };
        let body = match key.open_body(&sealed) {
            Ok(body) => body,
            Err(_) => return self.fail_call(call_id, "frame could not be decrypted"),
        };
        match body {
            Body::Invoke {
                method_name,
                json_request,
                ..
            } => self.on_invoke(call_id, &method_name, &json_request),
            Body::Payload { json_payload } => self.on_payload(call_id, &json_payload),
            Body::End { .. } => {
                if let Some(CallState::Running { inbound, .. }) = self.calls.get_mut(&call_id) {
                    // The client has finished sending; the handler sees the end of requests.
                    inbound.take();
                } else {
                    // Ended before it was invoked: nothing runs, forget it.
                    self.calls.remove(&call_id);
                }
            }
            _ => self.fail_call(call_id, "unsupported body"),
        }
    }

    fn on_invoke(&mut self, call_id: u64, method_name: &str, json_request: &str) {
        let Some(CallState::Keyed { key, identity }) = self.calls.remove(&call_id) else {
            return self.fail_call(call_id, "call was invoked twice");
        };
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
        let out_tx = self.out_tx.clone();
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
            // A response that cannot be framed (too large) fails the call: dropping the
            // receiver stops the handler at its next send.
            let forward = async {
                while let Some(bytes) = out_rx.recv().await {
                    match response_frame(method, &call_key, call_id, &bytes) {
                        Ok(frame) => {
                            if out_tx.send(frame).await.is_err() {
                                return None;
                            }
                        }
                        Err(f) => return Some(f),
                    }
                }
                None
            };
            let (result, unsendable) = tokio::join!(handler, forward);
            let end = match unsendable.map_or(result, Err) {
                Ok(()) => Body::end(),
                Err(f) => Body::End {
                    error: Some(clip(f.message()).to_owned()),
                    error_code: f.code().as_i32(),
                },
            };
            let sealed = call_key.seal(FrameType::Payload, call_id, Map::new(), &end.to_json());
            if let Ok(frame) = sealed.encode() {
                let _ = out_tx.send(Message::Binary(frame.into())).await;
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
        let request = tdx_volt::proto::volt::AuthenticateRequest::decode(bytes)
            .map_err(|e| Failure::abort(Code::InvalidArgument, format!("bad request: {e}")))?;
        let key = crate::authenticate::request_key(&self.svc, &request)
            .map_err(|f| Failure::abort(f.code(), f.message()))?;
        verify_token_with_key(&self.svc, token, &key)?;
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
            Err(mpsc::error::TrySendError::Full(_)) => self.fail_call(
                call_id,
                "too many requests waiting for this call (the handler is not keeping up)",
            ),
        }
    }

    /// Ends a call that never started with an error end frame (encrypted: the key exists).
    fn end_with_error(&mut self, call_id: u64, key: &CallKey, failure: &Failure) {
        self.remember_finished(call_id);
        let body = Body::End {
            error: Some(clip(failure.message()).to_owned()),
            error_code: failure.code().as_i32(),
        };
        let sealed = key.seal(FrameType::Payload, call_id, Map::new(), &body.to_json());
        if let Ok(frame) = sealed.encode() {
            self.pending.push(Message::Binary(frame.into()));
        }
    }

    fn remember_finished(&mut self, call_id: u64) {
        if self.finished.len() == RECENTLY_FINISHED {
            self.finished.pop_front();
        }
        self.finished.push_back(call_id);
    }

    /// Fails a call: its handler (if any) stops, and the client gets a meta error.
    fn fail_call(&mut self, call_id: u64, message: &str) {
        if let Some(CallState::Running { task, .. }) = self.calls.remove(&call_id) {
            task.abort();
        }
        self.remember_finished(call_id);
        self.send_error(call_id, message);
    }

    /// Sends a meta-only error frame for a call.
    fn send_error(&mut self, call_id: u64, message: &str) {
        debug!(call_id, "call error: {message}");
        let mut meta = Map::new();
        meta.insert("error".into(), Value::from(clip(message)));
        let frame = SealedFrame {
            frame_type: FrameType::Payload,
            call_id,
            meta,
            iv: Vec::new(),
            ciphertext: Vec::new(),
        };
        if let Ok(bytes) = frame.encode() {
            self.pending.push(Message::Binary(bytes.into()));
        }
    }
}

/// Error texts sent in frame meta are cut to [`MAX_ERROR_TEXT`] bytes (at a character
/// boundary), so that an error echoing a huge input still fits its frame.
const MAX_ERROR_TEXT: usize = 1024;

fn clip(message: &str) -> &str {
    if message.len() <= MAX_ERROR_TEXT {
        return message;
    }
    let mut end = MAX_ERROR_TEXT;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

fn request_bytes(method: &Method, json: &str) -> Result<Bytes, Failure> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| Failure::abort(Code::InvalidArgument, format!("request is not JSON: {e}")))?;
    schema::json_to_protobuf(method.input(), &value)
        .map(Bytes::from)
        .map_err(|e| Failure::abort(Code::InvalidArgument, format!("bad request: {e}")))
}

fn response_frame(
    method: &Method,
    key: &CallKey,
    call_id: u64,
    bytes: &[u8],
) -> Result<Message, Failure> {
    let json = schema::protobuf_to_json(method.output(), bytes)
        .map_err(|e| Failure::abort(Code::Internal, format!("response: {e}")))?;
    let body = Body::Payload {
        json_payload: json.to_string(),
    };
    let sealed = key.seal(FrameType::Payload, call_id, Map::new(), &body.to_json());
    sealed
        .encode()
        .map(|f| Message::Binary(f.into()))
        .map_err(|e| {
            Failure::abort(
                Code::ResourceExhausted,
                format!("the response does not fit in a websocket frame: {e}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn clip_cuts_long_texts_at_a_character_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(1000); // 2000 bytes
        let cut = clip(&long);
        assert!(cut.len() <= super::MAX_ERROR_TEXT && cut.len() >= super::MAX_ERROR_TEXT - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
