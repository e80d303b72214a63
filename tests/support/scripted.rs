//! A scripted gateway: speaks protocol v1 (plain websocket) with a key of its own, answers
//! each call by the method it invokes, and reports every frame it receives, so tests can check
//! what the client put on the wire and how it takes what a real Volt rarely sends.
//!
//! Methods (any package and service): `Echo` answers each message with itself and ends when
//! the client does; `SoftError` answers a status with code 0 and a message, then `{"ok":true}`,
//! then ends; `Garble` answers a malformed frame; `MetaError` a frame whose meta is an error;
//! `EndError` an end with an error and code 9; `Close` closes the socket; anything else is
//! never answered.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Map, Value};
use tdx_volt::protocol::body::Body;
use tdx_volt::protocol::exchange::{server_key_exchange, CallKey};
use tdx_volt::protocol::frame::{decode_client_frame, ClientFrame, FrameType, SealedFrame};
use tdx_volt::PrivateKey;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// What the gateway received: the call id and `hello`, `invoke <method> <json>`,
/// `payload <json>` or `end`.
pub type Seen = (u64, String);

pub struct Scripted {
    /// A client configuration for this gateway.
    pub config: Value,
    /// Every frame received, in order.
    pub seen: mpsc::UnboundedReceiver<Seen>,
}

impl Scripted {
    /// Waits until the gateway has received `what` on call `id`; returns what came before.
    pub async fn wait_for(&mut self, id: u64, what: &str) -> Vec<Seen> {
        wait_for(&mut self.seen, id, what).await
    }
}

/// Waits until a gateway reports `what` on call `id`; returns what it reported before.
pub async fn wait_for(seen: &mut mpsc::UnboundedReceiver<Seen>, id: u64, what: &str) -> Vec<Seen> {
    let mut before = Vec::new();
    super::within(&format!("{what} on call {id}"), async {
        loop {
            let next = seen.recv().await.expect("gateway running");
            if next.0 == id && next.1.starts_with(what) {
                return;
            }
            before.push(next);
        }
    })
    .await;
    before
}

/// A client configuration for a Volt whose gateway is at `http_address` and signs with `volt`.
pub fn config_for(http_address: &str, volt: &PrivateKey) -> Value {
    let client = PrivateKey::generate_ed25519();
    json!({
        "client_name": "scripted-test",
        "credential": {
            "client_id": "scripted-client",
            "key": client.to_pkcs8_pem().expect("pem").as_str(),
            "session_id": "scripted-session",
        },
        "volt": {
            "id": "did:volt:scripted",
            "http_address": http_address,
            "public_key": volt.public_key().to_spki_pem().expect("spki"),
        },
    })
}

/// Starts the scripted gateway on 127.0.0.1:0.
pub async fn start() -> Scripted {
    let volt = Arc::new(PrivateKey::generate_ed25519());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let key = volt.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let key = key.clone();
            let seen = seen_tx.clone();
            tokio::spawn(async move {
                if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                    serve(ws, &key, &seen).await;
                }
            });
        }
    });
    Scripted {
        config: config_for(&format!("http://{address}"), &volt),
        seen,
    }
}

/// A gateway that completes the websocket upgrade and then never reads again (so it never
/// answers a ping). Returns its `http://` address.
pub async fn deaf() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                held.push(ws);
            }
        }
    });
    format!("http://{address}")
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

struct CallState {
    key: CallKey,
    method: String,
}

async fn serve(mut ws: Ws, volt: &PrivateKey, seen: &mpsc::UnboundedSender<Seen>) {
    let mut calls: HashMap<u64, CallState> = HashMap::new();
    while let Some(Ok(message)) = ws.next().await {
        let Message::Binary(bytes) = message else {
            continue;
        };
        let Ok(frame) = decode_client_frame(&bytes) else {
            continue;
        };
        let mut replies = Vec::new();
        match frame {
            ClientFrame::Hello(hello) => {
                let _ = seen.send((hello.call_id, "hello".to_owned()));
                let claims: Value = serde_json::from_slice(&hello.claims).expect("claims");
                let k = claims["k"].as_str().expect("k claim");
                let (answer, key) = server_key_exchange(hello.call_id, k, volt).expect("exchange");
                replies.push(answer.encode().expect("encode"));
                calls.insert(
                    hello.call_id,
                    CallState {
                        key,
                        method: String::new(),
                    },
                );
            }
            ClientFrame::Sealed(sealed) => {
                let id = sealed.call_id;
                let Some(call) = calls.get_mut(&id) else {
                    continue;
                };
                let Ok(body) = call.key.open_body(&sealed) else {
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
                        match method.as_str() {
                            "Echo" => replies.push(payload(call, id, &json_request)),
                            "SoftError" => {
                                let soft = json!({"status": {"code": 0, "message": "soft"}});
                                replies.push(payload(call, id, &soft.to_string()));
                                replies.push(payload(call, id, r#"{"ok":true}"#));
                                replies.push(end(call, id, None));
                            }
                            "Garble" => {
                                let mut frame = vec![1u8, 3];
                                frame.extend_from_slice(&id.to_be_bytes());
                                frame.extend_from_slice(&[0xff, 0xff, 1]);
                                replies.push(frame);
                            }
                            "MetaError" => {
                                let mut meta = Map::new();
                                meta.insert("error".into(), json!("denied by test"));
                                let frame = SealedFrame {
                                    frame_type: FrameType::Payload,
                                    call_id: id,
                                    meta,
                                    iv: Vec::new(),
                                    ciphertext: Vec::new(),
                                };
                                replies.push(frame.encode().expect("encode"));
                            }
                            "EndError" => replies.push(end(call, id, Some("broken"))),
                            "Close" => {
                                let _ = ws
                                    .send(Message::Close(Some(CloseFrame {
                                        code: CloseCode::Error,
                                        reason: "bye".into(),
                                    })))
                                    .await;
                                return;
                            }
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
                        if call.method == "Echo" {
                            replies.push(end(call, id, None));
                        }
                    }
                    _ => {}
                }
            }
        }
        for reply in replies {
            if ws.send(Message::Binary(reply.into())).await.is_err() {
                return;
            }
        }
    }
}

fn payload(call: &CallState, id: u64, json: &str) -> Vec<u8> {
    let body = Body::Payload {
        json_payload: json.to_owned(),
    };
    sealed(call, id, &body)
}

fn end(call: &CallState, id: u64, error: Option<&str>) -> Vec<u8> {
    let body = Body::End {
        error: error.map(str::to_owned),
        error_code: if error.is_some() { 9 } else { 0 },
    };
    sealed(call, id, &body)
}

fn sealed(call: &CallState, id: u64, body: &Body) -> Vec<u8> {
    call.key
        .seal(FrameType::Payload, id, Map::new(), &body.to_json())
        .encode()
        .expect("encode")
}
