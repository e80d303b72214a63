//! A scripted RSA-era gateway: speaks the older protocol (JSON text frames over a plain
//! websocket) with an RSA key of its own, checks every call's token, answers each call by the
//! method it invokes, and reports every frame it receives.
//!
//! Methods (any package and service): `Echo` answers each message with itself and ends when
//! the client does; `Garble` answers a payload that does not decrypt; `Stray` sends a payload
//! for a call id never opened, then `{"ok":true}` and the end; `NotJson` sends a text frame
//! that is not JSON, then `{"ok":true}` and the end; `ErrorNamed` answers `{"invoke_id",
//! "error"}`; `ErrorUnnamed` answers `{"error"}` naming no call; `EndError` ends with an error
//! and code 9; anything else is never answered.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tdx_volt::protocol::body::Body;
use tdx_volt::protocol::legacy::{ClientFrame, LegacyKey, ServerFrame};
use tdx_volt::protocol::token::{unix_now, IdentityToken, Validation};
use tdx_volt::{PrivateKey, PublicKey};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What the gateway received on a call: `invoke <method> <json>` (with `token <kid> hops
/// <list>` reported just before it), `payload <json>`, `end`, or `frame for an unknown call`.
pub use super::scripted::Seen;

pub struct ScriptedLegacy {
    /// A client configuration for this gateway (RSA client key).
    pub config: Value,
    /// Every frame received, in order.
    pub seen: mpsc::UnboundedReceiver<Seen>,
    /// The gateway's (the Volt's) key.
    pub volt: Arc<PrivateKey>,
}

impl ScriptedLegacy {
    /// Waits until the gateway has received `what` on call `id`; returns what came before.
    pub async fn wait_for(&mut self, id: u64, what: &str) -> Vec<Seen> {
        super::scripted::wait_for(&mut self.seen, id, what).await
    }
}

const VOLT_ID: &str = "did:volt:scripted-legacy";

/// Starts the scripted gateway on 127.0.0.1:0.
pub async fn start() -> ScriptedLegacy {
    let volt = Arc::new(PrivateKey::generate_rsa(2048).expect("volt key"));
    let client = PrivateKey::generate_rsa(2048).expect("client key");
    let client_public = client.public_key();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let key = volt.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let key = key.clone();
            let seen = seen_tx.clone();
            let client = client_public.clone();
            tokio::spawn(async move {
                if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                    serve(ws, &key, &client, &seen).await;
                }
            });
        }
    });
    let config = json!({
        "client_name": "scripted-legacy-test",
        "credential": {
            "client_id": "scripted-client",
            "key": client.to_pkcs8_pem().expect("pem").as_str(),
        },
        "volt": {
            "id": VOLT_ID,
            "http_address": format!("http://{address}"),
            "public_key": volt.public_key().to_spki_pem().expect("spki"),
        },
    });
    ScriptedLegacy { config, seen, volt }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

struct CallState {
    key: LegacyKey,
    method: String,
}

async fn serve(
    mut ws: Ws,
    volt: &PrivateKey,
    client: &PublicKey,
    seen: &mpsc::UnboundedSender<Seen>,
) {
    let mut calls: HashMap<u64, CallState> = HashMap::new();
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(frame) = ClientFrame::parse(&text) else {
            continue;
        };
        let id = frame.id;
        let mut replies: Vec<String> = Vec::new();
        if let Some(token) = &frame.token {
            // A call's first frame: its token names the client and carries the call key.
            let token = IdentityToken::parse(token).expect("token parses");
            let header: Value = serde_json::from_str(token.header()).expect("header");
            let claims = token
                .verify(client, &Validation::new(VOLT_ID, unix_now()))
                .expect("token verifies");
            let key = LegacyKey::from_claims(&claims, volt).expect("call key opens");
            let hops = serde_json::to_string(&frame.target_fingerprint).expect("hops");
            let _ = seen.send((id, format!("token {} hops {hops}", header["kid"])));
            calls.insert(
                id,
                CallState {
                    key,
                    method: String::new(),
                },
            );
        }
        let Some(call) = calls.get_mut(&id) else {
            let _ = seen.send((id, "frame for an unknown call".to_owned()));
            continue;
        };
        let Ok(body) = call.key.open(&frame.json_payload) else {
            continue;
        };
        match body {
            Body::Invoke {
                method_name,
                json_request,
                ..
            } => {
                let _ = seen.send((id, format!("invoke {method_name} {json_request}")));
                let method = method_name.rsplit('/').next().unwrap_or("").to_owned();
                call.method = method.clone();
                let ok = r#"{"ok":true}"#;
                match method.as_str() {
                    "Echo" => replies.push(payload(call, id, &json_request)),
                    "Garble" => replies.push(
                        ServerFrame::Payload {
                            invoke_id: id,
                            json_payload: LegacyKey::generate().seal(&Body::end()),
                        }
                        .to_text(),
                    ),
                    "Stray" => {
                        replies.push(payload(call, id + 1000, ok));
                        replies.push(payload(call, id, ok));
                        replies.push(end(call, id, None));
                    }
                    "NotJson" => {
                        replies.push("this is not JSON".to_owned());
                        replies.push(payload(call, id, ok));
                        replies.push(end(call, id, None));
                    }
                    "ErrorNamed" => replies.push(
                        ServerFrame::Error {
                            invoke_id: Some(id),
                            error: "denied by test".into(),
                        }
                        .to_text(),
                    ),
                    "ErrorUnnamed" => replies.push(
                        ServerFrame::Error {
                            invoke_id: None,
                            error: "refused without a name".into(),
                        }
                        .to_text(),
                    ),
                    "EndError" => replies.push(end(call, id, Some("broken"))),
                    _ => {}
                }
            }
            Body::Payload { json_payload } => {
                let _ = seen.send((id, format!("payload {json_payload}")));
                if call.method == "Echo" {
                    replies.push(payload(call, id, &json_payload));
                }
            }
            Body::End { .. } => {
                let _ = seen.send((id, "end".to_owned()));
                if frame.client_end && call.method == "Echo" {
                    replies.push(end(call, id, None));
                }
            }
            _ => {}
        }
        for reply in replies {
            if ws.send(Message::Text(reply.into())).await.is_err() {
                return;
            }
        }
    }
}

fn payload(call: &CallState, id: u64, json: &str) -> String {
    let body = Body::Payload {
        json_payload: json.to_owned(),
    };
    ServerFrame::Payload {
        invoke_id: id,
        json_payload: call.key.seal(&body),
    }
    .to_text()
}

fn end(call: &CallState, id: u64, error: Option<&str>) -> String {
    let body = Body::End {
        error: error.map(str::to_owned),
        error_code: if error.is_some() { 9 } else { 0 },
    };
    ServerFrame::Payload {
        invoke_id: id,
        json_payload: call.key.seal(&body),
    }
    .to_text()
}
