//! The websocket gateway against a raw protocol-v1 client: a good call, then every kind of bad
//! input, each answered on its own call (or by closing that socket) while other calls and other
//! sockets carry on.

mod support;

use serde_json::json;
use support::{end, hello, invoke, payload, payloads, Event, RawSocket, TestVolt};
use tdx_volt::protocol::body::Body;
use tdx_volt::protocol::exchange::ClientKeyExchange;
use tdx_volt::protocol::frame::{FrameType, SealedFrame};
use tdx_volt::protocol::token::{unix_now, Claims};
use tdx_volt::PrivateKey;
use tdx_volt_emulator::transport::websocket::{HARD_MESSAGE_LIMIT, MAX_MESSAGE_LEN};

const GET_RESOURCE: &str = "/tdx.volt_api.volt.v1.VoltAPI/GetResource";

async fn get_root(volt: &TestVolt, socket: &mut RawSocket, call_id: u64) {
    let bodies = socket
        .unary(
            volt,
            call_id,
            GET_RESOURCE,
            &json!({"resource_id": volt.volt_id()}),
        )
        .await;
    let (values, error) = payloads(&bodies);
    assert_eq!(error, None);
    assert_eq!(values.len(), 1, "{values:?}");
    assert_eq!(values[0]["resource"]["id"], json!(volt.volt_id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_call_round_trip() {
    let volt = TestVolt::start("ws-unary").await;
    let mut socket = volt.connect().await;
    get_root(&volt, &mut socket, 1).await;
    get_root(&volt, &mut socket, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_errors_and_unknown_methods_end_only_their_call() {
    let volt = TestVolt::start("ws-status").await;
    let mut socket = volt.connect().await;
    let bodies = socket
        .unary(
            &volt,
            1,
            GET_RESOURCE,
            &json!({"resource_id": "no-such-thing"}),
        )
        .await;
    let (values, error) = payloads(&bodies);
    assert_eq!(error, None);
    assert_eq!(values[0]["status"]["code"], json!(5));
    assert!(values[0]["status"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("no-such-thing")));

    let bodies = socket
        .unary(
            &volt,
            2,
            "/tdx.volt_api.volt.v1.SyncAPI/NoSuchMethod",
            &json!({}),
        )
        .await;
    let (_, error) = payloads(&bodies);
    assert!(error.is_some_and(|e| e.contains("not implemented")));

    let bodies = socket
        .unary(
            &volt,
            3,
            "/tdx.volt_api.volt.v1.VoltAPI/SendEmail",
            &json!({}),
        )
        .await;
    let (_, error) = payloads(&bodies);
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("SendEmail") && e.contains("not implemented")),
        "{error:?}"
    );

    // A request that does not fit the method's input type.
    let bodies = socket
        .unary(&volt, 4, GET_RESOURCE, &json!({"no_such_field": 1}))
        .await;
    let (_, error) = payloads(&bodies);
    assert!(error.is_some_and(|e| e.contains("no_such_field")));

    get_root(&volt, &mut socket, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_failures_are_refused_on_their_call() {
    let volt = TestVolt::start("ws-token").await;
    let mut socket = volt.connect().await;
    let volt_key = volt.config.volt_public_key().unwrap();

    // Signed by a key that is not the session's.
    let exchange = ClientKeyExchange::new();
    let claims = volt.claims(&exchange);
    let stranger = PrivateKey::generate_ed25519();
    let err = socket
        .open(1, &stranger, &claims, exchange, &volt_key)
        .await
        .unwrap_err();
    assert!(err.contains("signature"), "{err}");

    // Expired.
    let exchange = ClientKeyExchange::new();
    let mut claims = volt.claims(&exchange);
    claims.iat = unix_now() - 7200;
    claims.exp = unix_now() - 3600;
    let err = socket
        .open(2, &volt.key, &claims, exchange, &volt_key)
        .await
        .unwrap_err();
    assert!(err.contains("expired"), "{err}");

    // For another Volt.
    let exchange = ClientKeyExchange::new();
    let mut claims = volt.claims(&exchange);
    claims.aud = "did:volt:someone-else".into();
    let err = socket
        .open(3, &volt.key, &claims, exchange, &volt_key)
        .await
        .unwrap_err();
    assert!(err.contains("aud"), "{err}");

    // No session: keyed, but only Authenticate may be invoked.
    let exchange = ClientKeyExchange::new();
    let claims = Claims::new(volt.volt_id(), unix_now()).with_key(exchange.token_claim());
    let key = socket
        .open(4, &volt.key, &claims, exchange, &volt_key)
        .await
        .unwrap();
    let request = json!({"resource_id": volt.volt_id()});
    socket.send(invoke(&key, 4, GET_RESOURCE, &request)).await;
    let (values, error) = payloads(&socket.read_call(&key, 4).await);
    assert!(values.is_empty());
    assert!(error.is_some_and(|e| e.contains("only Authenticate")));

    // Unknown session, no key.
    let exchange = ClientKeyExchange::new();
    let claims = volt.claims(&exchange).with_subject(Some("nobody".into()));
    let err = socket
        .open(5, &volt.key, &claims, exchange, &volt_key)
        .await
        .unwrap_err();
    assert!(err.contains("unknown session"), "{err}");
    let claims = Claims::new(volt.volt_id(), unix_now()).with_subject(volt.session());
    socket.send(hello(6, &volt.key, &claims)).await;
    assert!(socket.expect_meta_error(6).await.contains("(k)"));

    // The socket still serves good calls.
    get_root(&volt, &mut socket, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_fail_their_call_or_close_the_socket() {
    let volt = TestVolt::start("ws-frames").await;
    let mut socket = volt.connect().await;

    // Wrong version, with a call id: an error on that call.
    let mut frame = hello(1, &volt.key, &volt.claims(&ClientKeyExchange::new()));
    frame[0] = 9;
    socket.send(frame).await;
    assert!(socket.expect_meta_error(1).await.contains("version"));

    // Truncated hello: lengths overrun the frame.
    let frame = hello(2, &volt.key, &volt.claims(&ClientKeyExchange::new()));
    socket.send(frame[..frame.len() - 10].to_vec()).await;
    socket.expect_meta_error(2).await;

    // A payload for a call that was never opened.
    let key = socket.open_keyed(&volt, 3).await;
    socket.send(payload(&key, 99, &json!({}))).await;
    assert!(socket.expect_meta_error(99).await.contains("unknown call"));

    // Garbage inside a correctly keyed frame: not JSON, then not a body.
    let garbage = key.seal(FrameType::Invoke, 3, Default::default(), b"{{{not json");
    socket.send(garbage.encode().unwrap()).await;
    assert!(socket.expect_meta_error(3).await.contains("decrypted"));
    let key = socket.open_keyed(&volt, 4).await;
    let bad_cipher = SealedFrame {
        frame_type: FrameType::Invoke,
        call_id: 4,
        meta: Default::default(),
        iv: vec![0; 16],
        ciphertext: vec![7; 32],
    };
    socket.send(bad_cipher.encode().unwrap()).await;
    assert!(socket.expect_meta_error(4).await.contains("decrypted"));
    drop(key);

    // A frame above the gateway's limit but within the socket's: an error on its call.
    let mut big = hello(5, &volt.key, &volt.claims(&ClientKeyExchange::new()));
    big.resize(MAX_MESSAGE_LEN + 1, 0);
    socket.send(big).await;
    assert!(socket.expect_meta_error(5).await.contains("exceeds"));

    // Invoked before the key exchange finished (no call) and payload before invoke.
    let key = socket.open_keyed(&volt, 6).await;
    socket.send(payload(&key, 6, &json!({}))).await;
    assert!(socket.expect_meta_error(6).await.contains("before invoke"));

    // Everything above left the socket serving.
    get_root(&volt, &mut socket, 7).await;

    // Too short to name a call: the socket is closed, with a protocol error.
    socket.send(vec![1, 2, 3]).await;
    match socket.next().await {
        Event::Closed(Some(close)) => assert_eq!(u16::from(close.code), 1002),
        other => panic!("expected a close, got {other:?}"),
    }

    // Above the socket's own limit: closed too.
    let mut socket = volt.connect().await;
    if socket.try_send(vec![1u8; HARD_MESSAGE_LIMIT + 1024]).await {
        assert!(matches!(socket.next().await, Event::Closed(_)));
    }

    // A text frame is not protocol v1: closed as unsupported.
    let mut socket = volt.connect().await;
    socket.send_text("{\"id\":1}").await;
    assert!(matches!(socket.next().await, Event::Closed(_)));

    // And the emulator still serves new sockets.
    let mut socket = volt.connect().await;
    get_root(&volt, &mut socket, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_id_in_use_is_refused_and_ids_can_be_reused_after_the_end() {
    let volt = TestVolt::start("ws-ids").await;
    let volt_key = volt.config.volt_public_key().unwrap();
    let mut socket = volt.connect().await;
    let exchange = ClientKeyExchange::new();
    let claims = volt.claims(&exchange);
    let _key = socket
        .open(1, &volt.key, &claims, exchange, &volt_key)
        .await
        .unwrap();
    socket
        .send(hello(1, &volt.key, &volt.claims(&ClientKeyExchange::new())))
        .await;
    assert!(socket.expect_meta_error(1).await.contains("in use"));
    // The id is free again (the failed call was forgotten) and a finished call frees its id.
    get_root(&volt, &mut socket, 1).await;
    get_root(&volt, &mut socket, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_before_invoke_and_extra_unary_payloads_are_harmless() {
    let volt = TestVolt::start("ws-ends").await;
    let mut socket = volt.connect().await;
    let key = socket.open_keyed(&volt, 1).await;
    socket.send(end(&key, 1)).await;

    let key = socket.open_keyed(&volt, 2).await;
    let request = json!({"resource_id": volt.volt_id()});
    socket.send(invoke(&key, 2, GET_RESOURCE, &request)).await;
    socket.send(payload(&key, 2, &request)).await;
    socket.send(payload(&key, 2, &request)).await;
    socket.send(end(&key, 2)).await;
    let bodies = socket.read_call(&key, 2).await;
    assert_eq!(bodies.len(), 2, "one response then the end: {bodies:?}");
    assert!(matches!(bodies[1], Body::End { error: None, .. }));
    get_root(&volt, &mut socket, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_stream_acknowledges_answers_pings_and_says_goodbye() {
    let volt = TestVolt::start("ws-connect").await;
    let mut socket = volt.connect().await;
    let hello = json!({"hello": {"ping_interval": 10_000, "subscribe_resource_events": true}});
    let (key, ack) = open_connect(&volt, &mut socket, &hello).await;
    assert!(ack["acknowledge"]["connection_id"].is_string(), "{ack}");
    // Milliseconds, as the official clients read them: the ping timeout is three of the
    // client's intervals, and the time is now in ms.
    assert_eq!(ack["acknowledge"]["ping_interval"], json!(30_000), "{ack}");
    let now_ms = u64::try_from(unix_now()).unwrap() * 1000;
    let stamp = &ack["acknowledge"]["timestamp"];
    let stamp: u64 = stamp
        .as_u64()
        .or_else(|| stamp.as_str().and_then(|t| t.parse().ok()))
        .expect("a timestamp");
    assert!(stamp.abs_diff(now_ms) < 60_000, "{stamp} vs {now_ms}");
    socket.send(payload(&key, 1, &json!({"ping": {}}))).await;
    assert!(next_payload(&mut socket, &key).await.get("ping").is_some());
    socket.send(payload(&key, 1, &json!({"goodbye": {}}))).await;
    assert_eq!(
        next_payload(&mut socket, &key).await["goodbye"]["ended"],
        json!(true)
    );
    let rest = socket.read_call(&key, 1).await;
    assert!(matches!(rest.as_slice(), [Body::End { error: None, .. }]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_stream_subscribed_to_resource_events_hears_a_save() {
    let volt = TestVolt::start("ws-connect-events").await;
    let mut listener = volt.connect().await;
    let hello = json!({"hello": {"ping_interval": 10_000, "subscribe_resource_events": true,
        "resource_event_list": ["CONNECT_RESOURCE_EVENT_CREATE"]}});
    let (key, _ack) = open_connect(&volt, &mut listener, &hello).await;

    let mut writer = volt.connect().await;
    let bodies = writer
        .unary(
            &volt,
            1,
            "/tdx.volt_api.volt.v1.VoltAPI/SaveResource",
            &json!({"resource": {"name": "heard"}, "create": true}),
        )
        .await;
    let (values, error) = payloads(&bodies);
    assert_eq!(error, None);
    let id = &values[0]["resource"]["id"];
    // Only CREATE was asked for: the CREATE_CHILD for the home folder is not sent.
    let event = next_payload(&mut listener, &key).await;
    let heard = &event["evt"]["connect_resource"];
    assert_eq!(
        heard["event"],
        json!("CONNECT_RESOURCE_EVENT_CREATE"),
        "{event}"
    );
    assert_eq!(&heard["resource"]["id"], id, "{event}");
    listener.send(payload(&key, 1, &json!({"ping": {}}))).await;
    assert!(next_payload(&mut listener, &key)
        .await
        .get("ping")
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_ends_its_connect_stream_and_is_refused_new_calls() {
    let volt = TestVolt::start("ws-revoke").await;
    let mut socket = volt.connect().await;
    let (key, _ack) = open_connect(&volt, &mut socket, &json!({"hello": {}})).await;
    let session = volt.session().expect("a session");
    assert!(volt.emulator().revoke_session(&session).unwrap());
    assert!(!volt.emulator().revoke_session("no-such-session").unwrap());

    // The live stream ends at once, with the ending the official clients look for.
    let rest = socket.read_call(&key, 1).await;
    match rest.as_slice() {
        [Body::End { error: Some(e), .. }] => {
            assert!(e.ends_with("session invalid"), "{e}")
        }
        other => panic!("expected the stream's end with an error, got {other:?}"),
    }
    // A new call's token names the revoked session.
    let exchange = ClientKeyExchange::new();
    let claims = volt.claims(&exchange);
    let volt_key = volt.config.volt_public_key().unwrap();
    let err = socket
        .open(2, &volt.key, &claims, exchange, &volt_key)
        .await
        .unwrap_err();
    assert!(err.ends_with("session invalid"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_client_silent_for_three_of_its_ping_intervals_is_let_go() {
    let volt = TestVolt::start("ws-connect-idle").await;
    let mut socket = volt.connect().await;
    let (key, ack) = open_connect(
        &volt,
        &mut socket,
        &json!({"hello": {"ping_interval": 100}}),
    )
    .await;
    // A short interval still gets the 30 s floor for answering pings.
    assert_eq!(ack["acknowledge"]["ping_interval"], json!(30_000), "{ack}");
    // No pings: after the 3 s floor (not the 90 s of a fixed timeout) the stream ends.
    let rest = socket.read_call(&key, 1).await;
    assert!(
        matches!(rest.as_slice(), [Body::End { error: None, .. }]),
        "{rest:?}"
    );
    get_root(&volt, &mut socket, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_message_is_ignored_and_the_socket_serves_on() {
    let volt = TestVolt::start("ws-empty").await;
    let mut socket = volt.connect().await;
    // The vendor's Rust crate sends an empty binary message as each call starts.
    socket.send(Vec::new()).await;
    let key = socket.open_keyed(&volt, 1).await;
    socket.send(Vec::new()).await;
    let request = json!({"resource_id": volt.volt_id()});
    socket.send(invoke(&key, 1, GET_RESOURCE, &request)).await;
    socket.send(Vec::new()).await;
    socket.send(end(&key, 1)).await;
    let bodies = socket.read_call(&key, 1).await;
    let (values, error) = payloads(&bodies);
    assert_eq!(error, None);
    assert_eq!(values[0]["resource"]["id"], json!(volt.volt_id()));
    socket.send_text("").await;
    get_root(&volt, &mut socket, 2).await;
}

/// Opens Connect as call 1 with `hello`; returns the call's key and the acknowledge.
async fn open_connect(
    volt: &TestVolt,
    socket: &mut RawSocket,
    hello: &serde_json::Value,
) -> (tdx_volt::protocol::exchange::CallKey, serde_json::Value) {
    let key = socket.open_keyed(volt, 1).await;
    socket
        .send(invoke(
            &key,
            1,
            "/tdx.volt_api.volt.v1.VoltAPI/Connect",
            hello,
        ))
        .await;
    let ack = next_payload(socket, &key).await;
    (key, ack)
}

async fn next_payload(
    socket: &mut RawSocket,
    key: &tdx_volt::protocol::exchange::CallKey,
) -> serde_json::Value {
    match socket.next().await {
        Event::Frame(tdx_volt::protocol::frame::ServerFrame::Sealed(s)) => {
            match key.open_body(&s).unwrap() {
                Body::Payload { json_payload } => serde_json::from_str(&json_payload).unwrap(),
                other => panic!("expected a payload, got {other:?}"),
            }
        }
        other => panic!("expected a frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticate_without_a_session_needs_a_token_signed_by_the_presented_key() {
    let volt = TestVolt::start("ws-auth").await;
    let volt_key = volt.config.volt_public_key().unwrap();
    let mut socket = volt.connect().await;
    let newcomer = PrivateKey::generate_ed25519();
    let request = json!({
        "client_name": "newcomer",
        "public_key": newcomer.public_key().to_spki_pem().unwrap(),
    });
    let authenticate = "/tdx.volt_api.volt.v1.VoltAPI/Authenticate";

    // Signed by the presented key: granted.
    let exchange = ClientKeyExchange::new();
    let claims = Claims::new(volt.volt_id(), unix_now()).with_key(exchange.token_claim());
    let key = socket
        .open(1, &newcomer, &claims, exchange, &volt_key)
        .await
        .unwrap();
    socket.send(invoke(&key, 1, authenticate, &request)).await;
    socket.send(end(&key, 1)).await;
    let (values, error) = payloads(&socket.read_call(&key, 1).await);
    assert_eq!(error, None);
    assert_eq!(values[0]["decision"], json!("POLICY_DECISION_PERMIT"));
    let session = values[0]["session_id"].as_str().unwrap().to_owned();

    // The new session works for ordinary calls.
    let exchange = ClientKeyExchange::new();
    let claims = Claims::new(volt.volt_id(), unix_now())
        .with_subject(Some(session))
        .with_key(exchange.token_claim());
    let key = socket
        .open(2, &newcomer, &claims, exchange, &volt_key)
        .await
        .unwrap();
    socket
        .send(invoke(
            &key,
            2,
            GET_RESOURCE,
            &json!({"resource_id": volt.volt_id()}),
        ))
        .await;
    let (values, error) = payloads(&socket.read_call(&key, 2).await);
    assert_eq!(error, None);
    assert_eq!(values[0]["resource"]["id"], json!(volt.volt_id()));

    // Signed by another key than the one presented: refused.
    let exchange = ClientKeyExchange::new();
    let claims = Claims::new(volt.volt_id(), unix_now()).with_key(exchange.token_claim());
    let key = socket
        .open(3, &volt.key, &claims, exchange, &volt_key)
        .await
        .unwrap();
    socket.send(invoke(&key, 3, authenticate, &request)).await;
    let (values, error) = payloads(&socket.read_call(&key, 3).await);
    assert!(values.is_empty());
    assert!(error.is_some_and(|e| e.contains("signature")));
}
