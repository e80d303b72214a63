//! Test support: an emulator in-process on 127.0.0.1:0 and a raw protocol-v1 websocket client
//! built on the protocol core, able to send well-formed and deliberately broken frames.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Map, Value};
use tdx_volt::protocol::body::Body;
use tdx_volt::protocol::config::ClientConfig;
use tdx_volt::protocol::exchange::{CallKey, ClientKeyExchange};
use tdx_volt::protocol::frame::{decode_server_frame, ClientHello, FrameType, ServerFrame};
use tdx_volt::protocol::token::{unix_now, Claims, IdentityToken};
use tdx_volt::PrivateKey;
use tdx_volt_emulator::Emulator;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How long a test waits for any one event before failing.
pub const WAIT: Duration = Duration::from_secs(20);

/// A fresh, empty data directory (removed by [`TestVolt`]'s drop).
pub fn temp_dir(tag: &str) -> PathBuf {
    let mut bytes = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::env::temp_dir().join(format!("volt-emu-{tag}-{suffix}"))
}

/// An emulator with its first client's configuration.
pub struct TestVolt {
    pub emulator: Option<Emulator>,
    pub config: ClientConfig,
    pub key: PrivateKey,
    pub dir: PathBuf,
}

impl TestVolt {
    pub async fn start(tag: &str) -> TestVolt {
        TestVolt::start_with(tag, |b| b).await
    }

    /// Starts an emulator with settings of the test's choosing.
    pub async fn start_with(
        tag: &str,
        settings: impl FnOnce(tdx_volt_emulator::EmulatorBuilder) -> tdx_volt_emulator::EmulatorBuilder,
    ) -> TestVolt {
        let dir = temp_dir(tag);
        let emulator = settings(Emulator::builder(&dir))
            .start()
            .await
            .expect("emulator starts");
        let config = ClientConfig::from_file(emulator.config_path()).expect("config loads");
        let key = config.private_key(None).expect("key loads");
        TestVolt {
            emulator: Some(emulator),
            config,
            key,
            dir,
        }
    }

    pub fn emulator(&self) -> &Emulator {
        self.emulator.as_ref().expect("running")
    }

    pub fn volt_id(&self) -> String {
        self.config.volt().id.clone()
    }

    pub fn session(&self) -> Option<String> {
        self.config.credential().session_id.clone()
    }

    /// Claims as the official client makes them, with `k` from `exchange`.
    pub fn claims(&self, exchange: &ClientKeyExchange) -> Claims {
        Claims::new(self.volt_id(), unix_now())
            .with_subject(self.session())
            .with_key(exchange.token_claim())
    }

    pub async fn connect(&self) -> RawSocket {
        RawSocket::connect(self.emulator().http_address(), self.emulator().ca_pem()).await
    }
}

impl Drop for TestVolt {
    fn drop(&mut self) {
        drop(self.emulator.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the socket delivered next.
#[derive(Debug)]
pub enum Event {
    Frame(ServerFrame),
    Closed(Option<CloseFrame>),
}

pub struct RawSocket {
    ws: WebSocketStream<TlsStream<TcpStream>>,
}

pub fn tls_connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM"))
        .expect("CA");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

impl RawSocket {
    pub async fn connect(http_address: &str, ca_pem: &str) -> RawSocket {
        let host_port = http_address.trim_start_matches("https://");
        let tcp = TcpStream::connect(host_port).await.expect("tcp connect");
        let tls = tls_connector(ca_pem)
            .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp)
            .await
            .expect("tls");
        let url = format!("wss://{host_port}/api");
        let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
        config.max_message_size = Some(64 << 20);
        config.max_frame_size = Some(64 << 20);
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, tls, Some(config))
            .await
            .expect("websocket handshake");
        RawSocket { ws }
    }

    pub async fn send(&mut self, frame: Vec<u8>) {
        self.ws
            .send(Message::Binary(frame.into()))
            .await
            .expect("send");
    }

    /// Sends, tolerating a socket the server has already closed.
    pub async fn try_send(&mut self, frame: Vec<u8>) -> bool {
        self.ws.send(Message::Binary(frame.into())).await.is_ok()
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// The next frame or close, failing the test after [`WAIT`].
    pub async fn next(&mut self) -> Event {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("the emulator answered in time");
            match message {
                Some(Ok(Message::Binary(bytes))) => {
                    return Event::Frame(decode_server_frame(&bytes).expect("server frame decodes"))
                }
                Some(Ok(Message::Close(close))) => return Event::Closed(close),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Event::Closed(None),
            }
        }
    }

    /// The next frame, which must be a meta error for `call_id`; returns its text.
    pub async fn expect_meta_error(&mut self, call_id: u64) -> String {
        match self.next().await {
            Event::Frame(ServerFrame::Sealed(s)) if s.call_id == call_id => {
                s.meta_error().expect("a meta error")
            }
            other => panic!("expected a meta error on call {call_id}, got {other:?}"),
        }
    }

    /// Sends a hello signed by `key` with `claims` and completes the key exchange.
    pub async fn open(
        &mut self,
        call_id: u64,
        key: &PrivateKey,
        claims: &Claims,
        exchange: ClientKeyExchange,
        volt: &tdx_volt::PublicKey,
    ) -> Result<CallKey, String> {
        self.send(hello(call_id, key, claims)).await;
        match self.next().await {
            Event::Frame(ServerFrame::Hello(h)) if h.call_id == call_id => {
                exchange.complete(&h, volt).map_err(|e| e.to_string())
            }
            Event::Frame(ServerFrame::Sealed(s)) if s.call_id == call_id => Err(s
                .meta_error()
                .unwrap_or_else(|| "sealed frame before hello".into())),
            other => panic!("unexpected answer to hello: {other:?}"),
        }
    }

    /// Opens a call as `volt`'s own client, with claims as the official client makes them.
    pub async fn open_keyed(&mut self, volt: &TestVolt, call_id: u64) -> CallKey {
        let exchange = ClientKeyExchange::new();
        let claims = volt.claims(&exchange);
        let volt_key = volt.config.volt_public_key().expect("volt key");
        self.open(call_id, &volt.key, &claims, exchange, &volt_key)
            .await
            .expect("key exchange")
    }

    /// A whole unary call: key exchange, invoke, end; returns the bodies up to the end.
    pub async fn unary(
        &mut self,
        volt: &TestVolt,
        call_id: u64,
        method: &str,
        request: &Value,
    ) -> Vec<Body> {
        let key = self.open_keyed(volt, call_id).await;
        self.send(invoke(&key, call_id, method, request)).await;
        self.send(end(&key, call_id)).await;
        self.read_call(&key, call_id).await
    }

    /// Reads bodies of `call_id` until its end.
    pub async fn read_call(&mut self, key: &CallKey, call_id: u64) -> Vec<Body> {
        let mut bodies = Vec::new();
        loop {
            match self.next().await {
                Event::Frame(ServerFrame::Sealed(s)) if s.call_id == call_id => {
                    if let Some(error) = s.meta_error() {
                        panic!("meta error on call {call_id}: {error}");
                    }
                    let body = key.open_body(&s).expect("body decrypts");
                    let done = matches!(body, Body::End { .. });
                    bodies.push(body);
                    if done {
                        return bodies;
                    }
                }
                Event::Frame(_) => continue,
                Event::Closed(c) => panic!("socket closed during call {call_id}: {c:?}"),
            }
        }
    }
}

pub fn hello(call_id: u64, key: &PrivateKey, claims: &Claims) -> Vec<u8> {
    let token = IdentityToken::sign(key, claims).expect("token signs");
    ClientHello {
        call_id,
        meta: Map::new(),
        signature: token.signature().to_vec(),
        claims: token.claims_json().to_vec(),
    }
    .encode()
    .expect("hello encodes")
}

pub fn invoke(key: &CallKey, call_id: u64, method: &str, request: &Value) -> Vec<u8> {
    let body = Body::Invoke {
        method_name: method.to_owned(),
        service_id: None,
        json_request: request.to_string(),
    };
    key.seal(FrameType::Invoke, call_id, Map::new(), &body.to_json())
        .encode()
        .expect("invoke encodes")
}

pub fn payload(key: &CallKey, call_id: u64, request: &Value) -> Vec<u8> {
    let body = Body::Payload {
        json_payload: request.to_string(),
    };
    key.seal(FrameType::Payload, call_id, Map::new(), &body.to_json())
        .encode()
        .expect("payload encodes")
}

pub fn end(key: &CallKey, call_id: u64) -> Vec<u8> {
    let mut meta = Map::new();
    meta.insert("client_end".into(), Value::Bool(true));
    key.seal(FrameType::Payload, call_id, meta, &Body::end().to_json())
        .encode()
        .expect("end encodes")
}

/// The JSON payloads of a call's bodies, and its end error if any.
pub fn payloads(bodies: &[Body]) -> (Vec<Value>, Option<String>) {
    let mut values = Vec::new();
    let mut error = None;
    for body in bodies {
        match body {
            Body::Payload { json_payload } => {
                values.push(serde_json::from_str(json_payload).expect("payload is JSON"))
            }
            Body::End { error: e, .. } => error = e.clone(),
            other => panic!("unexpected body {other:?}"),
        }
    }
    (values, error)
}
