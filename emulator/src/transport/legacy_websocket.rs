//! The websocket gateway at `/api` of an RSA-era Volt ([`Era::Legacy`](crate::identity::Era),
//! `serve --legacy`): the older protocol of the Python client `volt_client_web` 0.1.x, JSON
//! text frames ([`tdx_volt::protocol::legacy`]).
//!
//! The call machinery (one task per socket, a task per call, the bounded outgoing channel,
//! limits, recently finished ids) is shared with the v1 gateway; this module reads the frames.
//!
//! A call opens with one frame `{"id", "token", "target_fingerprint", "json_payload"}`: the
//! token (RS256) names the caller by `sub` (a session) or, without one, by its header's `kid`
//! (the fingerprint of the client's key); it is verified with that session's key (audience
//! this Volt, time window) and carries the call's AES key and IV (`sk`, `iv`, RSA-OAEP to the
//! Volt key). The payload is the invoke, whose request is the call's first message: a unary
//! method is answered at once, without waiting for the client's end (the Python client sends
//! its end only after the Volt's). `target_fingerprint` is empty, or names this Volt alone.
//! Later frames `{"id", "json_payload"}` carry payloads, and `{"id", "client_end": true, ...}`
//! ends the client's side. The Volt answers `{"invoke_id", "json_payload"}` for each response
//! and the end of the call, all sealed under the call's key.
//!
//! Errors outside a call's encryption are `{"invoke_id", "error"}` (`invoke_id` only when the
//! frame named a call): a frame that is not a frame of this protocol, an unknown call id, a
//! token that does not verify or whose call key cannot be opened, a payload that cannot be
//! decrypted (that call fails). A binary message closes the socket (code 1003). Size limits
//! are those of the v1 gateway.

use std::sync::Arc;

use tdx_volt::protocol::body::Body;
use tdx_volt::protocol::frame::MAX_FRAME_LEN;
use tdx_volt::protocol::legacy::{ClientFrame, LegacyKey, ServerFrame};
use tdx_volt::protocol::token::IdentityToken;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::gateway::{self, CallSeal, Connection, Identity, Protocol, MAX_MESSAGE_LEN};
use crate::call::Caller;
use crate::services::auth::verify_legacy_token;
use crate::services::Services;

/// Accepts the websocket upgrade at [`API_PATH`](super::websocket::API_PATH) on an
/// established (TLS or plain) stream and serves the connection with the older protocol until
/// it closes.
pub async fn serve_stream<S>(svc: Arc<Services>, stream: S, limits: super::outgoing::OutgoingLimits)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    gateway::serve_stream::<Legacy, S>(svc, stream, limits).await
}

impl CallSeal for LegacyKey {
    fn frame(&self, call_id: u64, body: &Body) -> Result<Message, String> {
        let text = ServerFrame::Payload {
            invoke_id: call_id,
            json_payload: self.seal(body),
        }
        .to_text();
        if text.len() > MAX_FRAME_LEN {
            return Err(format!(
                "frame of {} bytes exceeds the limit of {MAX_FRAME_LEN}",
                text.len()
            ));
        }
        Ok(Message::Text(text.into()))
    }
}

/// The older protocol.
struct Legacy;

impl Protocol for Legacy {
    type Key = LegacyKey;

    fn error_frame(call_id: Option<u64>, message: &str) -> Option<Message> {
        let frame = ServerFrame::Error {
            invoke_id: call_id,
            error: message.to_owned(),
        };
        Some(Message::Text(frame.to_text().into()))
    }

    fn on_message(conn: &mut Connection<Legacy>, message: Message) -> Option<CloseFrame> {
        match message {
            Message::Text(text) => {
                on_text(conn, text);
                None
            }
            _ => Some(CloseFrame {
                code: CloseCode::Unsupported,
                reason: "volt-emulator --legacy speaks the older protocol (JSON text frames)"
                    .into(),
            }),
        }
    }

    /// The first frame's checks, and whether it also ended the client's side.
    type Opening = (Result<Opened, String>, bool);

    fn on_opened(conn: &mut Connection<Legacy>, call_id: u64, (opened, client_end): Self::Opening) {
        match opened {
            Ok(opened) => {
                let key = Arc::new(opened.key);
                let identity = Identity::Verified(opened.caller);
                conn.start(
                    call_id,
                    key,
                    identity,
                    &opened.method_name,
                    &opened.json_request,
                );
                if client_end {
                    conn.end_client(call_id);
                }
            }
            // Remembered as finished: the client's later frames for it are dropped quietly.
            Err(message) => conn.fail_call(call_id, &message),
        }
    }
}

fn on_text(conn: &mut Connection<Legacy>, text: Utf8Bytes) {
    let parsed = ClientFrame::parse(&text);
    if text.len() > MAX_MESSAGE_LEN {
        let call_id = match &parsed {
            Ok(frame) => Some(frame.id),
            Err(e) => e.call_id(),
        };
        let message = format!("frame of {} bytes exceeds {MAX_MESSAGE_LEN}", text.len());
        return fail(conn, call_id, &message);
    }
    let frame = match parsed {
        Ok(frame) => frame,
        Err(e) => return fail(conn, e.call_id(), &format!("bad frame: {e}")),
    };
    if frame.token.is_some() {
        on_first(conn, frame);
    } else if conn.is_opening(frame.id) {
        conn.hold(frame.id, Message::Text(text));
    } else {
        on_later(conn, &frame);
    }
}

/// Fails the named call, or answers an error naming none.
fn fail(conn: &mut Connection<Legacy>, call_id: Option<u64>, message: &str) {
    match call_id {
        Some(id) => conn.fail_call(id, message),
        None => conn.send_error(None, message),
    }
}

/// A call's first frame: token, route and invoke, checked away from the socket's task
/// ([`Legacy::on_opened`] goes on).
fn on_first(conn: &mut Connection<Legacy>, frame: ClientFrame) {
    let call_id = frame.id;
    if !conn.admit(call_id) {
        return;
    }
    let svc = conn.svc().clone();
    conn.open_call(call_id, move || (open_call(&svc, &frame), frame.client_end));
}

/// What a good first frame establishes.
pub(crate) struct Opened {
    key: LegacyKey,
    caller: Caller,
    method_name: String,
    json_request: String,
}

/// Checks a call's first frame: the route, the token, the call key it carries, and the invoke
/// body under that key.
fn open_call(svc: &Services, frame: &ClientFrame) -> Result<Opened, String> {
    check_route(svc, frame.target_fingerprint.as_deref().unwrap_or_default())?;
    let jwt = frame.token.as_deref().unwrap_or_default();
    let token = IdentityToken::parse(jwt).map_err(|e| format!("bad identity token: {e}"))?;
    let (caller, claims) = verify_legacy_token(svc, &token).map_err(|f| f.message().to_owned())?;
    let key =
        LegacyKey::from_claims(&claims, svc.identity().signing_key()).map_err(|e| e.to_string())?;
    match key.open(&frame.json_payload) {
        Ok(Body::Invoke {
            method_name,
            json_request,
            ..
        }) => Ok(Opened {
            key,
            caller,
            method_name,
            json_request,
        }),
        Ok(_) => Err("the first frame of a call must carry method_invoke".to_owned()),
        Err(_) => Err("frame could not be decrypted".to_owned()),
    }
}

/// `target_fingerprint`: empty (a direct call), or this Volt alone. The emulator relays to no
/// other host.
fn check_route(svc: &Services, hops: &[String]) -> Result<(), String> {
    let Some(first) = hops.first() else {
        return Ok(());
    };
    let own = svc
        .identity()
        .fingerprint()
        .map_err(|e| format!("the Volt's fingerprint: {e}"))?;
    if *first != own {
        return Err(format!(
            "target_fingerprint names {first}, not this Volt ({own}); volt-emulator relays \
             to no other Volt"
        ));
    }
    if hops.len() > 1 {
        return Err(
            "target_fingerprint names further hops; volt-emulator relays to no other host"
                .to_owned(),
        );
    }
    Ok(())
}

/// A later frame of an open call: a payload, or the client's end.
fn on_later(conn: &mut Connection<Legacy>, frame: &ClientFrame) {
    let call_id = frame.id;
    let Some(key) = conn.key_of(call_id) else {
        return;
    };
    match key.open(&frame.json_payload) {
        Ok(body) => {
            let ended = matches!(body, Body::End { .. });
            conn.on_body(call_id, body);
            if frame.client_end && !ended && conn.is_open(call_id) {
                conn.end_client(call_id);
            }
        }
        Err(_) => conn.fail_call(call_id, "frame could not be decrypted"),
    }
}
