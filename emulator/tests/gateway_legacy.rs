//! The websocket gateway of an RSA-era Volt (`serve --legacy`) against a raw client of the
//! older JSON text protocol, built on the protocol core: calls made the way the Python client
//! `volt_client_web` 0.1.x makes them (unary, streaming both ways, client-streaming ended with
//! `client_end`), then every kind of bad input, each answered with an error while the socket
//! keeps serving good calls. Also: gRPC accepts the RS256 tokens of such a Volt's sessions.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::uri::PathAndQuery;
use prost::Message as _;
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use support::{payloads, tls_connector, TestVolt, WAIT};
use tdx_volt::proto::volt as pb;
use tdx_volt::protocol::body::Body;
use tdx_volt::protocol::config::ClientConfig;
use tdx_volt::protocol::keys::KeyAlgorithm;
use tdx_volt::protocol::legacy::{ClientFrame, LegacyKey, ServerFrame};
use tdx_volt::protocol::token::{unix_now, Claims, IdentityToken};
use tdx_volt::{PrivateKey, PublicKey};
use tdx_volt_emulator::transport::websocket::{HARD_MESSAGE_LIMIT, MAX_MESSAGE_LEN};
use tdx_volt_emulator::Era;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const GET_RESOURCE: &str = "/tdx.volt_api.volt.v1.VoltAPI/GetResource";
const SAVE_WIRE: &str = "/tdx.volt_api.volt.v1.WireAPI/SaveWire";
const PUBLISH_WIRE: &str = "/tdx.volt_api.volt.v1.WireAPI/PublishWire";
const SUBSCRIBE_WIRE: &str = "/tdx.volt_api.volt.v1.WireAPI/SubscribeWire";
const CREATE_DATABASE: &str = "/tdx.volt_api.data.v1.SqliteServerAPI/CreateDatabase";
const EXECUTE: &str = "/tdx.volt_api.data.v1.SqliteDatabaseAPI/Execute";

/// An RSA-era emulator in-process, with its first client's configuration.
struct LegacyVolt(TestVolt);

impl std::ops::Deref for LegacyVolt {
    type Target = TestVolt;

    fn deref(&self) -> &TestVolt {
        &self.0
    }
}

impl LegacyVolt {
    async fn start(tag: &str) -> LegacyVolt {
        let volt = TestVolt::start_with(tag, |b| b.legacy(true)).await;
        assert_eq!(volt.emulator().era(), Era::Legacy);
        LegacyVolt(volt)
    }

    fn volt_key(&self) -> PublicKey {
        self.config.volt_public_key().expect("volt key")
    }

    /// Claims as the Python client makes them: audience and window, no `sub`.
    fn claims(&self) -> Claims {
        Claims::new(self.volt_id(), unix_now())
    }

    async fn connect(&self) -> Socket {
        let host_port = self
            .emulator()
            .http_address()
            .trim_start_matches("https://")
            .to_owned();
        let tcp = TcpStream::connect(&host_port).await.expect("tcp connect");
        let stream = tls_connector(self.emulator().ca_pem())
            .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp)
            .await
            .expect("TLS with the Volt CA");
        let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
        config.max_message_size = Some(64 << 20);
        config.max_frame_size = Some(64 << 20);
        let url = format!("wss://{host_port}/api");
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .expect("websocket handshake");
        Socket { ws }
    }
}

/// Waits until the Volt counts `count` subscribers on `wire` (it says nothing when one comes
/// or goes); `what` names the wait in a failure.
async fn subscribers_reach(volt: &LegacyVolt, wire: &str, count: usize, what: &str) {
    tokio::time::timeout(WAIT, async {
        while volt.emulator().wire_subscribers(wire) != count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not within {WAIT:?}"));
}

/// What the socket delivered next.
#[derive(Debug)]
enum Event {
    Frame(ServerFrame),
    Closed(Option<CloseFrame>),
}

/// A signed token carrying a fresh call key for `volt_key`, and that key.
fn token(signer: &PrivateKey, mut claims: Claims, volt_key: &PublicKey) -> (String, LegacyKey) {
    let key = LegacyKey::generate();
    key.add_to_claims(&mut claims, volt_key).expect("sk, iv");
    let jwt = IdentityToken::sign(signer, &claims)
        .expect("signs")
        .to_jwt();
    (jwt, key)
}

fn invoke_body(method: &str, request: &Value) -> Body {
    Body::Invoke {
        method_name: method.to_owned(),
        service_id: None,
        json_request: request.to_string(),
    }
}

fn first_frame(call_id: u64, jwt: &str, hops: Vec<String>, json_payload: String) -> String {
    ClientFrame {
        id: call_id,
        token: Some(jwt.to_owned()),
        target_fingerprint: Some(hops),
        client_end: false,
        json_payload,
    }
    .to_text()
}

fn later_frame(key: &LegacyKey, call_id: u64, body: &Body, client_end: bool) -> String {
    ClientFrame {
        id: call_id,
        token: None,
        target_fingerprint: None,
        client_end,
        json_payload: key.seal(body),
    }
    .to_text()
}

fn payload(request: &Value) -> Body {
    Body::Payload {
        json_payload: request.to_string(),
    }
}

struct Socket {
    ws: WebSocketStream<TlsStream<TcpStream>>,
}

impl Socket {
    async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// Sends, tolerating a socket the server has already closed.
    async fn try_send(&mut self, message: Message) -> bool {
        self.ws.send(message).await.is_ok()
    }

    /// The next frame or close, failing the test after [`WAIT`].
    async fn next(&mut self) -> Event {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("the emulator answered in time");
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Event::Frame(
                        ServerFrame::parse(text.as_str()).expect("a frame of the older protocol"),
                    )
                }
                Some(Ok(Message::Binary(_))) => panic!("a binary frame from a legacy Volt"),
                Some(Ok(Message::Close(close))) => return Event::Closed(close),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Event::Closed(None),
            }
        }
    }

    /// The next frame, which must be an error naming `call_id` (or no call); returns its text.
    async fn expect_error(&mut self, call_id: Option<u64>) -> String {
        match self.next().await {
            Event::Frame(ServerFrame::Error { invoke_id, error }) if invoke_id == call_id => error,
            other => panic!("expected an error for {call_id:?}, got {other:?}"),
        }
    }

    /// Opens a call with a first frame signed by `signer` with `claims` (plus a fresh call key
    /// for this Volt), routed through `hops`, carrying `invoke`; returns the call key.
    async fn invoke_as(
        &mut self,
        volt: &LegacyVolt,
        call_id: u64,
        signer: &PrivateKey,
        claims: Claims,
        hops: Vec<String>,
        invoke: &Body,
    ) -> LegacyKey {
        let (jwt, key) = token(signer, claims, &volt.volt_key());
        let sealed = key.seal(invoke);
        self.send_text(&first_frame(call_id, &jwt, hops, sealed))
            .await;
        key
    }

    /// Opens a call as the Python client does: a token without `sub`, no hops.
    async fn invoke(
        &mut self,
        volt: &LegacyVolt,
        call_id: u64,
        method: &str,
        request: &Value,
    ) -> LegacyKey {
        let invoke = invoke_body(method, request);
        self.invoke_as(volt, call_id, &volt.key, volt.claims(), Vec::new(), &invoke)
            .await
    }

    async fn send_body(&mut self, key: &LegacyKey, call_id: u64, body: &Body, client_end: bool) {
        self.send_text(&later_frame(key, call_id, body, client_end))
            .await;
    }

    /// Reads the bodies of the listed calls until `done` says enough. Any other frame (an
    /// error, or a frame for another call) fails the test.
    async fn read_until(
        &mut self,
        keys: &[(u64, &LegacyKey)],
        mut done: impl FnMut(&HashMap<u64, Vec<Body>>) -> bool,
    ) -> HashMap<u64, Vec<Body>> {
        let mut got: HashMap<u64, Vec<Body>> = HashMap::new();
        while !done(&got) {
            match self.next().await {
                Event::Frame(ServerFrame::Payload {
                    invoke_id,
                    json_payload,
                }) => {
                    let (_, key) = keys
                        .iter()
                        .find(|(id, _)| *id == invoke_id)
                        .unwrap_or_else(|| panic!("a frame for call {invoke_id}"));
                    let body = key.open(&json_payload).expect("body decrypts");
                    got.entry(invoke_id).or_default().push(body);
                }
                other => panic!("expected a payload, got {other:?}"),
            }
        }
        got
    }

    /// Reads call `call_id` up to its end; nothing else may arrive meanwhile.
    async fn read_call(&mut self, key: &LegacyKey, call_id: u64) -> Vec<Body> {
        let mut got = self
            .read_until(&[(call_id, key)], |got| ended(got, call_id))
            .await;
        got.remove(&call_id).unwrap_or_default()
    }

    /// A unary call as the Python client makes it: the invoke only; the Volt answers and ends
    /// the call, and the client's end follows (late, to be dropped quietly).
    async fn unary(
        &mut self,
        volt: &LegacyVolt,
        call_id: u64,
        method: &str,
        request: &Value,
    ) -> (Vec<Value>, Option<String>) {
        let key = self.invoke(volt, call_id, method, request).await;
        let bodies = self.read_call(&key, call_id).await;
        self.send_body(&key, call_id, &Body::end(), true).await;
        payloads(&bodies)
    }

    /// Makes a wire (call `save_id`) and subscribes to it (call `subscribe_id`, left open);
    /// returns the wire's id and the subscription's key once the Volt counts it.
    async fn subscribe_new_wire(
        &mut self,
        volt: &LegacyVolt,
        save_id: u64,
        subscribe_id: u64,
    ) -> (String, LegacyKey) {
        let (values, error) = self
            .unary(
                volt,
                save_id,
                SAVE_WIRE,
                &json!({"resource": {"name": "w"}, "create": true}),
            )
            .await;
        assert_eq!(error, None);
        let wire_id = values[0]["resource"]["id"].as_str().unwrap().to_owned();
        let key = self
            .invoke(
                volt,
                subscribe_id,
                SUBSCRIBE_WIRE,
                &json!({"wire_id": wire_id}),
            )
            .await;
        subscribers_reach(volt, &wire_id, 1, "the subscription is made").await;
        (wire_id, key)
    }

    /// A GetResource of the Volt root, which must succeed.
    async fn get_root(&mut self, volt: &LegacyVolt, call_id: u64) {
        let (values, error) = self
            .unary(
                volt,
                call_id,
                GET_RESOURCE,
                &json!({"resource_id": volt.volt_id()}),
            )
            .await;
        assert_eq!(error, None);
        assert_eq!(values.len(), 1, "{values:?}");
        assert_eq!(values[0]["resource"]["id"], json!(volt.volt_id()));
    }
}

fn ended(got: &HashMap<u64, Vec<Body>>, call_id: u64) -> bool {
    got.get(&call_id)
        .and_then(|bodies| bodies.last())
        .is_some_and(|b| matches!(b, Body::End { .. }))
}

/// A successful response as the Python client reads it: no `status.message` key at all (it
/// treats the key's presence, even empty, as an error).
fn python_success(value: &Value) -> bool {
    value
        .get("status")
        .is_none_or(|status| status.get("message").is_none())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_are_answered_before_the_clients_end() {
    let volt = LegacyVolt::start("unary").await;
    let mut socket = volt.connect().await;
    // Named by kid (no sub), as the Python client does; its late end is dropped quietly: the
    // next call's frames are the only ones to arrive.
    socket.get_root(&volt, 1).await;
    socket.get_root(&volt, 2).await;

    // Named by sub, routed through this Volt's fingerprint (a relay-style first hop).
    let claims = volt
        .claims()
        .with_subject(volt.config.credential().session_id.clone());
    let fingerprint = volt.config.volt_fingerprint().unwrap();
    assert_eq!(fingerprint, volt.volt_key().fingerprint().unwrap());
    let request = json!({"resource_id": volt.volt_id()});
    let get = invoke_body(GET_RESOURCE, &request);
    let key = socket
        .invoke_as(&volt, 3, &volt.key, claims, vec![fingerprint], &get)
        .await;
    let (values, error) = payloads(&socket.read_call(&key, 3).await);
    assert_eq!(error, None);
    assert_eq!(values[0]["resource"]["id"], json!(volt.volt_id()));
    assert!(python_success(&values[0]), "{}", values[0]);

    // Another client of this Volt, found by its own key's fingerprint.
    let alice = volt.emulator().issue_client("alice", None).unwrap();
    let alice = ClientConfig::from_value(alice).unwrap();
    let alice_key = alice.private_key(None).unwrap();
    assert!(alice_key.public_key().algorithm() == KeyAlgorithm::Rsa);
    assert_eq!(alice.volt().fingerprint, volt.config.volt().fingerprint);
    // With a passphrase the RSA key is written encrypted.
    let carol = volt.emulator().issue_client("carol", Some("pw")).unwrap();
    let carol = ClientConfig::from_value(carol).unwrap();
    assert!(carol
        .credential()
        .key_pem()
        .contains("ENCRYPTED PRIVATE KEY"));
    let carol_key = carol.private_key(Some("pw")).unwrap();
    assert!(carol_key.public_key().algorithm() == KeyAlgorithm::Rsa);
    let save = invoke_body(
        SAVE_WIRE,
        &json!({"resource": {"name": "w"}, "create": true}),
    );
    let key = socket
        .invoke_as(&volt, 4, &alice_key, volt.claims(), Vec::new(), &save)
        .await;
    let (values, error) = payloads(&socket.read_call(&key, 4).await);
    assert_eq!(error, None);
    assert!(values[0]["resource"]["id"].is_string(), "{}", values[0]);
    assert!(python_success(&values[0]), "{}", values[0]);

    // An application error is a status with a message; the call still ends normally.
    let (values, error) = socket
        .unary(
            &volt,
            5,
            GET_RESOURCE,
            &json!({"resource_id": "no-such-thing"}),
        )
        .await;
    assert_eq!(error, None);
    assert!(values[0]["status"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("no-such-thing")));

    // An unknown method: the call ends with method_end.error.
    let (values, error) = socket
        .unary(
            &volt,
            6,
            "/tdx.volt_api.volt.v1.SyncAPI/NoSuchMethod",
            &json!({}),
        )
        .await;
    assert!(values.is_empty());
    assert!(error.is_some_and(|e| e.contains("not implemented")));

    // A request that does not fit the method's input type.
    let (_, error) = socket
        .unary(&volt, 7, GET_RESOURCE, &json!({"no_such_field": 1}))
        .await;
    assert!(error.is_some_and(|e| e.contains("no_such_field")));

    // Ids of finished calls may be used again.
    socket.get_root(&volt, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_streams_rows_and_pages_on_the_clients_next() {
    let volt = LegacyVolt::start("execute").await;
    let mut socket = volt.connect().await;
    let (values, error) = socket
        .unary(&volt, 1, CREATE_DATABASE, &json!({"name": "d"}))
        .await;
    assert_eq!(error, None);
    let database_id = values[0]["resource"]["id"].as_str().unwrap().to_owned();

    // Not a transaction: the call ends as soon as the result is sent, as SqlExecuteJSON expects.
    let statement = "CREATE TABLE t(x INTEGER, y TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b')";
    let start = json!({"start": {"database_id": database_id, "statement": statement}});
    let key = socket.invoke(&volt, 2, EXECUTE, &start).await;
    let (values, error) = payloads(&socket.read_call(&key, 2).await);
    assert_eq!(error, None);
    assert_eq!(values, vec![json!({"affected_rows": 2})]);

    // Paged: one row, then the next only after the client's `next`.
    let start = json!({"start": {
        "database_id": database_id,
        "statement": "SELECT x, y FROM t ORDER BY x",
        "page_size": 1,
    }});
    let key = socket.invoke(&volt, 3, EXECUTE, &start).await;
    let first = socket
        .read_until(&[(3, &key)], |got| {
            got.get(&3).is_some_and(|b| b.len() == 2)
        })
        .await;
    let (values, _) = payloads(&first[&3]);
    assert_eq!(values[0]["header"]["column"][0]["name"], json!("x"));
    assert_eq!(values[1]["row"]["column"][0]["integer"], json!("1"));
    socket
        .send_body(&key, 3, &payload(&json!({"next": {}})), false)
        .await;
    let (values, error) = payloads(&socket.read_call(&key, 3).await);
    assert_eq!(error, None);
    assert_eq!(values.len(), 1, "{values:?}");
    assert_eq!(values[0]["row"]["column"][1]["text"], json!("b"));
    socket.send_body(&key, 3, &Body::end(), true).await;

    socket.get_root(&volt, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_ends_with_client_end_and_subscribers_get_every_chunk() {
    let volt = LegacyVolt::start("wires").await;
    let mut socket = volt.connect().await;
    let (values, error) = socket
        .unary(
            &volt,
            1,
            SAVE_WIRE,
            &json!({"resource": {"name": "w"}, "create": true}),
        )
        .await;
    assert_eq!(error, None);
    let wire_id = values[0]["resource"]["id"].as_str().unwrap().to_owned();

    let subscriber = socket
        .invoke(&volt, 2, SUBSCRIBE_WIRE, &json!({"wire_id": wire_id}))
        .await;
    // Wait until the subscription exists (the Volt says nothing when it does).
    subscribers_reach(&volt, &wire_id, 1, "the subscription is made").await;

    // Client-streaming: the first chunk in the invoke, a second one, then client_end.
    let first = json!({"wire_id": wire_id, "chunk": STANDARD.encode("one")});
    let publisher = socket.invoke(&volt, 3, PUBLISH_WIRE, &first).await;
    let second = payload(&json!({"chunk": STANDARD.encode("two")}));
    socket.send_body(&publisher, 3, &second, false).await;
    socket.send_body(&publisher, 3, &Body::end(), true).await;
    let chunks = |got: &HashMap<u64, Vec<Body>>| got.get(&2).map_or(0, Vec::len);
    let got = socket
        .read_until(&[(2, &subscriber), (3, &publisher)], |got| {
            ended(got, 3) && chunks(got) == 2
        })
        .await;
    let (values, error) = payloads(&got[&3]);
    assert_eq!(error, None);
    assert_eq!(values.len(), 1, "{values:?}");
    assert!(python_success(&values[0]), "{}", values[0]);
    let (values, _) = payloads(&got[&2]);
    assert_eq!(
        values,
        vec![
            json!({"chunk": STANDARD.encode("one")}),
            json!({"chunk": STANDARD.encode("two")})
        ]
    );

    // The subscriber stops; its call ends without error.
    socket
        .send_body(&subscriber, 2, &payload(&json!({"stop": true})), false)
        .await;
    let (values, error) = payloads(&socket.read_call(&subscriber, 2).await);
    assert_eq!(error, None);
    assert!(values.is_empty(), "{values:?}");
    socket.send_body(&subscriber, 2, &Body::end(), true).await;
    socket.get_root(&volt, 4).await;
}

/// A call opens away from the socket's task (its token and call key take RSA work) while
/// another call is open, so the frames a client sends right behind its first one arrive while
/// it is still opening: they are held and read once it has opened, in order. More of them than
/// an opening call may hold (128) are not refused: the socket is not read meanwhile. (The
/// subscriber, read only once everything is sent, is sent fewer chunks in all than its queue
/// holds, 256: one further behind is cut off, as a slow subscriber is.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_sent_behind_the_first_are_read_in_order_once_the_call_opens() {
    let volt = LegacyVolt::start("held").await;
    let mut socket = volt.connect().await;
    let (wire_id, subscriber) = socket.subscribe_new_wire(&volt, 1, 2).await;

    // Each publisher's first frame, its chunks and its end go out back to back, without
    // waiting for anything; two publishers interleave.
    let chunk = |p: u64, i: usize| STANDARD.encode(format!("{p}-{i}"));
    // Publisher 3 sends more than an opening call may hold; 3 and 4 together fewer than the
    // subscriber's queue holds.
    let chunks = |p: u64| if p == 3 { 150 } else { 100 };
    let first = |p| json!({"wire_id": wire_id, "chunk": chunk(p, 0)});
    let one = socket.invoke(&volt, 3, PUBLISH_WIRE, &first(3)).await;
    let two = socket.invoke(&volt, 4, PUBLISH_WIRE, &first(4)).await;
    for i in 1..chunks(3) {
        for (key, p) in [(&one, 3), (&two, 4)] {
            if i < chunks(p) {
                let body = payload(&json!({"chunk": chunk(p, i)}));
                socket.send_body(key, p, &body, false).await;
            }
        }
    }
    socket.send_body(&one, 3, &Body::end(), true).await;
    socket.send_body(&two, 4, &Body::end(), true).await;

    let keys = [(2, &subscriber), (3, &one), (4, &two)];
    let got = socket
        .read_until(&keys, |got| {
            ended(got, 3)
                && ended(got, 4)
                && got.get(&2).map_or(0, Vec::len) == chunks(3) + chunks(4)
        })
        .await;
    for p in [3, 4] {
        let (values, error) = payloads(&got[&p]);
        assert_eq!(error, None, "publisher {p}");
        assert!(python_success(&values[0]), "{}", values[0]);
    }
    let (values, error) = payloads(&got[&2]);
    assert_eq!(error, None);
    for p in [3, 4] {
        let mine: Vec<_> = values
            .iter()
            .filter_map(|v| v["chunk"].as_str())
            .filter(|c| {
                STANDARD
                    .decode(c)
                    .unwrap()
                    .starts_with(format!("{p}-").as_bytes())
            })
            .collect();
        let wanted: Vec<_> = (0..chunks(p)).map(|i| chunk(p, i)).collect();
        assert_eq!(mine, wanted, "publisher {p}'s chunks, in order");
    }
}

/// A call whose opening fails is remembered as finished: the frames its client sent behind
/// the first one are dropped quietly, and the socket carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_behind_a_refused_first_frame_are_dropped_quietly() {
    let volt = LegacyVolt::start("held-refused").await;
    let mut socket = volt.connect().await;
    // A call left open, so that the next one opens away from the socket's task.
    socket.subscribe_new_wire(&volt, 1, 2).await;

    let stranger = PrivateKey::generate_rsa(2048).unwrap();
    let get = invoke_body(GET_RESOURCE, &json!({"resource_id": volt.volt_id()}));
    let key = socket
        .invoke_as(&volt, 3, &stranger, volt.claims(), Vec::new(), &get)
        .await;
    for _ in 0..3 {
        socket.send_body(&key, 3, &payload(&json!({})), false).await;
    }
    socket.send_body(&key, 3, &Body::end(), true).await;
    assert!(socket.expect_error(Some(3)).await.contains("kid"));
    // The next frame is the next call's: nothing was said about call 3's later frames.
    socket.get_root(&volt, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_errors_and_the_socket_carries_on() {
    let volt = LegacyVolt::start("frames").await;
    let mut socket = volt.connect().await;

    // Not JSON, and JSON without an id: errors naming no call.
    socket.send_text("{{{ not json").await;
    assert!(socket.expect_error(None).await.contains("JSON"));
    socket.get_root(&volt, 1).await;
    socket.send_text(r#"{"json_payload": "AAAA"}"#).await;
    assert!(socket.expect_error(None).await.contains("id"));
    socket.get_root(&volt, 1).await;

    // A frame for a call that was never opened.
    let stray = LegacyKey::generate();
    socket.send_body(&stray, 99, &Body::end(), true).await;
    assert!(socket.expect_error(Some(99)).await.contains("unknown call"));
    socket.get_root(&volt, 2).await;

    // A first frame whose payload does not decrypt under the key its token carries.
    let (jwt, _key) = token(&volt.key, volt.claims(), &volt.volt_key());
    let wrong = stray.seal(&invoke_body(GET_RESOURCE, &json!({})));
    socket
        .send_text(&first_frame(3, &jwt, Vec::new(), wrong))
        .await;
    assert!(socket.expect_error(Some(3)).await.contains("decrypted"));
    // ... and one whose body is not an invoke.
    let (jwt, key) = token(&volt.key, volt.claims(), &volt.volt_key());
    let not_invoke = key.seal(&payload(&json!({})));
    socket
        .send_text(&first_frame(4, &jwt, Vec::new(), not_invoke))
        .await;
    assert!(socket.expect_error(Some(4)).await.contains("method_invoke"));
    socket.get_root(&volt, 5).await;

    // A payload that does not decrypt fails its open call: the handler stops (the
    // subscription goes) and later frames for it are dropped quietly.
    let (values, error) = socket
        .unary(
            &volt,
            6,
            SAVE_WIRE,
            &json!({"resource": {"name": "w"}, "create": true}),
        )
        .await;
    assert_eq!(error, None);
    let wire = values[0]["resource"]["id"].as_str().unwrap().to_owned();
    let key = socket
        .invoke(&volt, 7, SUBSCRIBE_WIRE, &json!({"wire_id": wire}))
        .await;
    subscribers_reach(&volt, &wire, 1, "the subscription is made").await;
    socket
        .send_text(r#"{"id": 7, "json_payload": "bm90IGEgY2lwaGVydGV4dA=="}"#)
        .await;
    assert!(socket.expect_error(Some(7)).await.contains("decrypted"));
    subscribers_reach(&volt, &wire, 0, "the failed call's handler stopped").await;
    socket.send_body(&key, 7, &Body::end(), true).await;
    socket.get_root(&volt, 8).await;

    // A second token frame for an open call: refused on that id (the call is failed, as the
    // client has lost track of it), and the id is free again.
    let subscriber = socket
        .invoke(&volt, 9, SUBSCRIBE_WIRE, &json!({"wire_id": wire}))
        .await;
    socket
        .invoke(
            &volt,
            9,
            GET_RESOURCE,
            &json!({"resource_id": volt.volt_id()}),
        )
        .await;
    assert!(socket.expect_error(Some(9)).await.contains("in use"));
    drop(subscriber);
    socket.get_root(&volt, 9).await;

    // An invoke body inside a running call: that call fails and its handler stops (it is
    // not left running without an entry), and the socket carries on.
    let subscriber = socket
        .invoke(&volt, 14, SUBSCRIBE_WIRE, &json!({"wire_id": wire}))
        .await;
    subscribers_reach(&volt, &wire, 1, "the subscription is made").await;
    let again = invoke_body(GET_RESOURCE, &json!({"resource_id": volt.volt_id()}));
    socket.send_body(&subscriber, 14, &again, false).await;
    assert!(socket.expect_error(Some(14)).await.contains("twice"));
    subscribers_reach(&volt, &wire, 0, "the twice-invoked call's handler stopped").await;
    socket.get_root(&volt, 15).await;

    // Malformed fields name their call.
    socket
        .send_text(r#"{"id": 10, "token": 5, "json_payload": "AAAA"}"#)
        .await;
    assert!(socket.expect_error(Some(10)).await.contains("token"));
    socket.send_text(r#"{"id": 11}"#).await;
    assert!(socket.expect_error(Some(11)).await.contains("json_payload"));

    // A frame above the gateway's limit, within the socket's: an error on its call.
    let big = format!(
        r#"{{"id": 12, "json_payload": "{}"}}"#,
        "A".repeat(MAX_MESSAGE_LEN)
    );
    socket.send_text(&big).await;
    assert!(socket.expect_error(Some(12)).await.contains("exceeds"));

    socket.get_root(&volt, 13).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_is_refused_by_sub_and_by_kid() {
    let volt = LegacyVolt::start("revoked").await;
    let mut socket = volt.connect().await;
    let request = json!({"resource_id": volt.volt_id()});
    let get = invoke_body(GET_RESOURCE, &request);
    socket.get_root(&volt, 10).await;

    // A revoked session (named by sub, or found by the key's kid).
    let session = volt.session().expect("a session");
    assert!(volt.emulator().revoke_session(&session).unwrap());
    let claims = volt.claims().with_subject(Some(session));
    socket
        .invoke_as(&volt, 11, &volt.key, claims, Vec::new(), &get)
        .await;
    let refused = socket.expect_error(Some(11)).await;
    assert!(refused.ends_with("session invalid"), "{refused}");
    socket
        .invoke_as(&volt, 12, &volt.key, volt.claims(), Vec::new(), &get)
        .await;
    let refused = socket.expect_error(Some(12)).await;
    assert!(refused.ends_with("session invalid"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_routes_are_refused_on_their_call() {
    let volt = LegacyVolt::start("tokens").await;
    let mut socket = volt.connect().await;
    let request = json!({"resource_id": volt.volt_id()});
    let session = volt.config.credential().session_id.clone();
    let stranger = PrivateKey::generate_rsa(2048).unwrap();
    let get = invoke_body(GET_RESOURCE, &request);

    // Naming this client's session, signed by another key: the signature does not verify.
    let claims = volt.claims().with_subject(session.clone());
    socket
        .invoke_as(&volt, 1, &stranger, claims, Vec::new(), &get)
        .await;
    assert!(socket.expect_error(Some(1)).await.contains("signature"));
    socket.get_root(&volt, 2).await;

    // A key this Volt never issued, named by kid only.
    socket
        .invoke_as(&volt, 3, &stranger, volt.claims(), Vec::new(), &get)
        .await;
    assert!(socket.expect_error(Some(3)).await.contains("kid"));
    socket.get_root(&volt, 4).await;

    // A session that does not exist.
    let claims = volt.claims().with_subject(Some("nobody".into()));
    socket
        .invoke_as(&volt, 5, &volt.key, claims, Vec::new(), &get)
        .await;
    assert!(socket
        .expect_error(Some(5))
        .await
        .contains("unknown session"));

    // For another Volt.
    let mut claims = volt.claims();
    claims.aud = "did:volt:someone-else".into();
    socket
        .invoke_as(&volt, 6, &volt.key, claims, Vec::new(), &get)
        .await;
    assert!(socket.expect_error(Some(6)).await.contains("aud"));

    // Expired.
    let mut claims = volt.claims();
    claims.iat = unix_now() - 7200;
    claims.exp = unix_now() - 3600;
    socket
        .invoke_as(&volt, 7, &volt.key, claims, Vec::new(), &get)
        .await;
    assert!(socket.expect_error(Some(7)).await.contains("expired"));
    socket.get_root(&volt, 8).await;

    // A call key sealed to another RSA key, and none at all.
    let other_volt = PrivateKey::generate_rsa(2048).unwrap().public_key();
    let (jwt, key) = token(&volt.key, volt.claims(), &other_volt);
    let sealed = key.seal(&invoke_body(GET_RESOURCE, &request));
    socket
        .send_text(&first_frame(9, &jwt, Vec::new(), sealed))
        .await;
    assert!(socket.expect_error(Some(9)).await.contains("(sk, iv)"));
    let jwt = IdentityToken::sign(&volt.key, &volt.claims())
        .unwrap()
        .to_jwt();
    let sealed = key.seal(&invoke_body(GET_RESOURCE, &request));
    socket
        .send_text(&first_frame(10, &jwt, Vec::new(), sealed))
        .await;
    assert!(socket.expect_error(Some(10)).await.contains("(sk, iv)"));
    socket.get_root(&volt, 11).await;

    // Not a JWT.
    socket
        .send_text(&first_frame(12, "not.a-jwt", Vec::new(), "AAAA".into()))
        .await;
    assert!(socket.expect_error(Some(12)).await.contains("token"));

    // Routed to another Volt, or on past this one: the emulator relays nowhere.
    let here = volt.config.volt_fingerprint().unwrap();
    let elsewhere = other_volt.fingerprint().unwrap();
    socket
        .invoke_as(
            &volt,
            13,
            &volt.key,
            volt.claims(),
            vec![elsewhere.clone()],
            &get,
        )
        .await;
    assert!(socket
        .expect_error(Some(13))
        .await
        .contains("not this Volt"));
    socket
        .invoke_as(
            &volt,
            14,
            &volt.key,
            volt.claims(),
            vec![here, elsewhere],
            &get,
        )
        .await;
    assert!(socket.expect_error(Some(14)).await.contains("further hops"));

    socket.get_root(&volt, 15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_oversized_messages_close_the_socket() {
    let volt = LegacyVolt::start("close").await;

    // A binary message is protocol v1, not this protocol: closed as unsupported.
    let mut socket = volt.connect().await;
    assert!(
        socket
            .try_send(Message::Binary(vec![1, 2, 0, 0].into()))
            .await
    );
    match socket.next().await {
        Event::Closed(Some(close)) => {
            assert_eq!(u16::from(close.code), 1003);
            assert!(close.reason.contains("text"), "{}", close.reason);
        }
        other => panic!("expected a close, got {other:?}"),
    }

    // Above the socket's own limit: closed by the websocket layer.
    let mut socket = volt.connect().await;
    let huge = "A".repeat(HARD_MESSAGE_LIMIT + 1024);
    if socket.try_send(Message::Text(huge.into())).await {
        assert!(matches!(socket.next().await, Event::Closed(_)));
    }

    // The emulator still serves new sockets.
    let mut socket = volt.connect().await;
    socket.get_root(&volt, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_accepts_rs256_tokens_naming_a_session() {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};
    let volt = LegacyVolt::start("grpc").await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(volt.emulator().ca_pem()))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{}", volt.emulator().address()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("gRPC over TLS with the RSA CA");
    let call = |jwt: String| {
        let channel = channel.clone();
        let root = volt.volt_id();
        async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.expect("ready");
            let request = pb::GetResourceRequest {
                resource_id: root,
                ..Default::default()
            };
            let mut request = tonic::Request::new(Bytes::from(request.encode_to_vec()));
            request
                .metadata_mut()
                .insert("volt-token", jwt.parse().expect("ascii"));
            grpc.unary(
                request,
                PathAndQuery::from_static(GET_RESOURCE),
                tdx_volt_emulator::transport::grpc::PassThrough,
            )
            .await
            .map(|r| pb::GetResourceResponse::decode(r.into_inner()).expect("decodes"))
        }
    };
    let claims = volt
        .claims()
        .with_subject(volt.config.credential().session_id.clone());
    let jwt = IdentityToken::sign(&volt.key, &claims).unwrap();
    assert!(jwt.header().contains("RS256"));
    let response = call(jwt.to_jwt()).await.expect("RS256 token accepted");
    assert_eq!(response.resource.unwrap().id, volt.volt_id());

    // Signed by another RSA key: refused.
    let stranger = PrivateKey::generate_rsa(2048).unwrap();
    let jwt = IdentityToken::sign(&stranger, &claims).unwrap().to_jwt();
    let status = call(jwt).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}
