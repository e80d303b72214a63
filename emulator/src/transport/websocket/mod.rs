//! The websocket gateway at `/api`, protocol v1 (binary frames; the Volt of
//! [`Era::Current`](crate::identity::Era)).
//!
//! The call machinery (one task per socket, a task per call, the bounded outgoing channel,
//! limits) is shared with the older protocol's gateway; this module reads v1 frames: the key
//! exchange that opens a call, then sealed invoke, payload and end frames. A call whose
//! key-exchange frame routes it to a client hosting a service (meta `d`/`s`) is relayed to
//! that host unopened ([`routed`]).
//!
//! Errors: a token or key-exchange failure, an undecryptable frame, an unknown call id or a
//! frame that does not decode (but has a call id) is answered with a meta-only frame
//! `{"error": "..."}` on that call, which the official client turns into an error on that call
//! alone. An empty message is ignored (the gateway drops it before this module sees it); any
//! other frame too short to carry a call id closes the socket (code 1002); a message above
//! [`HARD_MESSAGE_LIMIT`] is refused by the websocket layer, which closes the socket. A text
//! message closes the socket (code 1003).

mod routed;

use std::sync::Arc;

use serde_json::{Map, Value};
use tdx_volt::protocol::body::Body;
use tdx_volt::protocol::exchange::{server_key_exchange, CallKey};
use tdx_volt::protocol::frame::{
    decode_client_frame, peek_call_id, ClientFrame, ClientHello, FrameType, SealedFrame,
};
use tdx_volt::protocol::token::{Claims, IdentityToken};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::gateway::{self, CallSeal, Connection, Identity, Protocol, Upstream};
use crate::services::auth::verify_token;
use crate::services::Services;
use routed::Route;

pub use super::gateway::{API_PATH, HARD_MESSAGE_LIMIT, MAX_CALLS_PER_CONNECTION, MAX_MESSAGE_LEN};

/// Accepts the websocket upgrade at [`API_PATH`] on an established (TLS or plain) stream and
/// serves the connection until it closes.
pub async fn serve_stream<S>(svc: Arc<Services>, stream: S, limits: super::outgoing::OutgoingLimits)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    gateway::serve_stream::<V1, S>(svc, stream, limits).await
}

impl CallSeal for CallKey {
    fn frame(&self, call_id: u64, body: &Body) -> Result<Message, String> {
        self.seal(FrameType::Payload, call_id, Map::new(), &body.to_json())
            .encode()
            .map(|f| Message::Binary(f.into()))
            .map_err(|e| e.to_string())
    }
}

/// Protocol v1.
struct V1;

impl Protocol for V1 {
    type Key = CallKey;

    fn error_frame(call_id: Option<u64>, message: &str) -> Option<Message> {
        error_frame(call_id, message)
    }

    fn on_message(conn: &mut Connection<V1>, message: Message) -> Option<CloseFrame> {
        match message {
            Message::Binary(frame) => on_frame(conn, &frame),
            _ => Some(CloseFrame {
                code: CloseCode::Unsupported,
                reason: "volt-emulator speaks protocol v1 (binary frames)".into(),
            }),
        }
    }

    /// The key exchange's answer, the call key and who called; or why the call is refused.
    type Opening = Result<(Vec<u8>, CallKey, Identity), String>;

    fn on_opened(conn: &mut Connection<V1>, call_id: u64, opening: Self::Opening) {
        match opening {
            Ok((server_hello, key, identity)) => {
                conn.push(Message::Binary(server_hello.into()));
                conn.keyed(call_id, key, identity);
            }
            Err(message) => conn.send_error(Some(call_id), &message),
        }
    }
}

/// A meta-only `{"error": ...}` frame on a call. Every v1 error names its call; an error naming
/// none closes the socket instead (`None`).
pub(crate) fn error_frame(call_id: Option<u64>, message: &str) -> Option<Message> {
    let mut meta = Map::new();
    meta.insert("error".into(), Value::from(message));
    let frame = SealedFrame {
        frame_type: FrameType::Payload,
        call_id: call_id?,
        meta,
        iv: Vec::new(),
        ciphertext: Vec::new(),
    };
    frame
        .encode()
        .ok()
        .map(|bytes| Message::Binary(bytes.into()))
}

/// Handles one client frame; returns a close frame when the socket must be closed.
fn on_frame(conn: &mut Connection<V1>, bytes: &[u8]) -> Option<CloseFrame> {
    let Some(call_id) = peek_call_id(bytes) else {
        return Some(CloseFrame {
            code: CloseCode::Protocol,
            reason: "frame too short to carry a call id".into(),
        });
    };
    if bytes.len() > MAX_MESSAGE_LEN {
        conn.fail_call(
            call_id,
            &format!("frame of {} bytes exceeds {MAX_MESSAGE_LEN}", bytes.len()),
        );
        return None;
    }
    match decode_client_frame(bytes) {
        Ok(ClientFrame::Hello(hello)) => on_hello(conn, hello),
        Ok(ClientFrame::Sealed(sealed)) => on_sealed(conn, sealed),
        Err(e) => conn.fail_call(call_id, &format!("bad frame: {e}")),
    }
    None
}

fn on_hello(conn: &mut Connection<V1>, hello: ClientHello) {
    let call_id = hello.call_id;
    if !conn.admit(call_id) {
        return;
    }
    let refuse = |conn: &mut Connection<V1>, message: &str| conn.send_error(Some(call_id), message);
    let token = IdentityToken::from_wire_parts(&hello.claims, &hello.signature);
    let unverified = match token.claims_unverified() {
        Ok(claims) => claims,
        Err(e) => return refuse(conn, &format!("bad identity token: {e}")),
    };
    match routed::route(conn.svc(), &hello.meta, &token) {
        Route::Here => {}
        Route::Refused(message) => return refuse(conn, &message),
        Route::Host(invocation, opening) => {
            let svc = conn.svc().clone();
            return conn.start_routed(call_id, move |frames, outgoing| {
                routed::relay(svc, invocation, opening, call_id, frames, outgoing)
            });
        }
    }
    // On the socket's task: a v1 opening (about 0.15 ms) costs less than the hops to and from
    // another thread would add to a lone call, and the gateway is CPU-bound by then with many
    // calls in flight (measured with `peers`; the older protocol's RSA openings do move).
    let opening = key_exchange(conn.svc(), call_id, token, unverified);
    V1::on_opened(conn, call_id, opening);
}

/// The token's check and the Volt's side of the key exchange ([`V1::on_opened`] goes on).
fn key_exchange(
    svc: &Services,
    call_id: u64,
    token: IdentityToken,
    unverified: Claims,
) -> Result<(Vec<u8>, CallKey, Identity), String> {
    let (identity, claims) = if unverified.sub.as_deref().is_none_or(str::is_empty) {
        // Checked at invoke, against the key an Authenticate request presents.
        (Identity::Sessionless(Box::new(token)), unverified)
    } else {
        let (caller, claims) = verify_token(svc, &token).map_err(|f| f.message().to_owned())?;
        (Identity::Verified(caller), claims)
    };
    let k = claims
        .k
        .as_deref()
        .ok_or("the identity token carries no key (k)")?;
    let failed = |e: &dyn std::fmt::Display| format!("key exchange failed: {e}");
    let (server_hello, key) =
        server_key_exchange(call_id, k, svc.identity().signing_key()).map_err(|e| failed(&e))?;
    let frame = server_hello.encode().map_err(|e| failed(&e))?;
    Ok((frame, key, identity))
}

fn on_sealed(conn: &mut Connection<V1>, sealed: SealedFrame) {
    let call_id = sealed.call_id;
    if conn.is_routed(call_id) {
        let client_end = sealed.meta.get("client_end").and_then(Value::as_bool) == Some(true);
        let frame = Upstream {
            iv: sealed.iv,
            ciphertext: sealed.ciphertext,
            client_end,
        };
        conn.forward_routed(call_id, frame);
        return;
    }
    let Some(key) = conn.key_of(call_id) else {
        return;
    };
    match key.open_body(&sealed) {
        Ok(body) => conn.on_body(call_id, body),
        Err(_) => conn.fail_call(call_id, "frame could not be decrypted"),
    }
}
