//! VoltClient against a scripted RSA-era gateway (the older JSON/RSA protocol): what the client
//! puts on the wire, and how it takes answers a real Volt rarely sends (payloads that do not
//! decrypt, frames for unknown calls, text that is not JSON, errors naming no call).

mod support;

use futures_util::StreamExt as _;
use serde_json::json;
use support::scripted_legacy::{self, ScriptedLegacy};
use support::within;
use tdx_volt::client::CallEvent;
use tdx_volt::{ErrorKind, PrivateKey, Transport, VoltClient};

const ECHO: &str = "/test.Fake/Echo";

async fn client_for(gateway: &ScriptedLegacy) -> VoltClient {
    VoltClient::builder()
        .config(gateway.config.clone())
        .connect()
        .await
        .expect("connects")
}

/// An Echo call, answered once, so that the Volt has spoken on it.
async fn answered_echo(client: &VoltClient) -> tdx_volt::Call {
    let mut echo = client
        .streaming(ECHO, Some(json!({"n": 0})))
        .await
        .expect("echo");
    assert_eq!(
        within("echo", echo.message()).await.expect("ok"),
        Some(json!({"n": 0}))
    );
    echo
}

/// The Echo call still works: one more round trip, then a clean end.
async fn still_works(mut echo: tdx_volt::Call) {
    echo.send(json!({"n": 1})).await.expect("send");
    assert_eq!(
        within("echo", echo.message()).await.expect("ok"),
        Some(json!({"n": 1}))
    );
    echo.end().await.expect("end");
    assert_eq!(within("end", echo.message()).await.expect("ok"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rsa_key_chooses_the_older_protocol_and_calls_follow_it() {
    let mut gateway = scripted_legacy::start().await;
    let client = client_for(&gateway).await;
    assert_eq!(client.transport(), Transport::LegacyWebsocket);
    let client_key = PrivateKey::from_pem(
        gateway.config["credential"]["key"].as_str().expect("key"),
        None,
    )
    .expect("client key");
    let kid = client_key.public_key().fingerprint().expect("fingerprint");

    // A unary call: token (kid = the client key's fingerprint, no hops), invoke, end.
    let answer = client.unary(ECHO, json!({"hello": "wörld"})).await;
    assert_eq!(answer.expect("echo"), json!({"hello": "wörld"}));
    gateway
        .wait_for(1, &format!("token \"{kid}\" hops []"))
        .await;
    gateway
        .wait_for(1, r#"invoke /test.Fake/Echo {"hello":"wörld"}"#)
        .await;
    gateway.wait_for(1, "end").await;

    // Streaming: the invoke carries the token; later messages and the end do not, and go
    // under the same call key.
    let call = client
        .streaming(ECHO, Some(json!({"n": 0})))
        .await
        .expect("call");
    gateway.wait_for(2, "token").await;
    gateway.wait_for(2, "invoke").await;
    call.send(json!({"n": 1})).await.expect("send");
    gateway.wait_for(2, r#"payload {"n":1}"#).await;
    call.end().await.expect("end");
    gateway.wait_for(2, "end").await;
    let events: Vec<CallEvent> = within("events", call.collect()).await;
    assert!(
        matches!(&events[..], [CallEvent::Data(a), CallEvent::Data(b), CallEvent::End]
        if a == &json!({"n": 0}) && b == &json!({"n": 1})),
        "{events:?}"
    );

    // A streaming call opened without a request sends nothing until its first message,
    // which is its invoke (with the token); sending after the end is refused.
    let call = client.streaming(ECHO, None).await.expect("call");
    call.send(json!({"late": true})).await.expect("send");
    let before = gateway
        .wait_for(3, r#"invoke /test.Fake/Echo {"late":true}"#)
        .await;
    assert!(
        before
            .iter()
            .any(|(id, s)| *id == 3 && s.starts_with("token")),
        "{before:?}"
    );
    call.end().await.expect("end");
    let err = call.send(json!({})).await.unwrap_err();
    assert!(err.is_closed(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_that_never_sent_anything_sends_nothing() {
    let mut gateway = scripted_legacy::start().await;
    let client = client_for(&gateway).await;
    let silent = client.streaming(ECHO, None).await.expect("call");
    drop(silent);
    // The next call's frames are the first the gateway sees: call 1 never reached the wire.
    client.unary(ECHO, json!({"after": 1})).await.expect("echo");
    let before = gateway.wait_for(2, "invoke").await;
    assert!(before.iter().all(|(id, _)| *id == 2), "{before:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_does_not_decrypt_fails_only_its_call() {
    let gateway = scripted_legacy::start().await;
    let client = client_for(&gateway).await;
    let echo = answered_echo(&client).await;
    let err = client
        .unary("/test.Fake/Garble", json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err:?}");
    still_works(echo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_for_unknown_calls_and_text_that_is_not_json_are_dropped() {
    let gateway = scripted_legacy::start().await;
    let client = client_for(&gateway).await;
    let echo = answered_echo(&client).await;
    for method in ["/test.Fake/Stray", "/test.Fake/NotJson"] {
        let answer = client.unary(method, json!({})).await.expect(method);
        assert_eq!(answer, json!({"ok": true}), "{method}");
    }
    still_works(echo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volt_errors_are_statuses_with_their_message() {
    let gateway = scripted_legacy::start().await;
    let client = client_for(&gateway).await;
    let echo = answered_echo(&client).await;

    let named = client
        .unary("/test.Fake/ErrorNamed", json!({}))
        .await
        .unwrap_err();
    assert!(named.is_status(), "{named:?}");
    assert_eq!(
        named.status().map(|s| s.message.as_str()),
        Some("denied by test")
    );

    // An error naming no call fails the calls sent and still waiting for their first answer;
    // calls the Volt has already answered, and calls not sent yet, go on.
    let mut waiting = client
        .streaming("/test.Fake/Silent", Some(json!({})))
        .await
        .expect("silent");
    let mut unsent = client.streaming(ECHO, None).await.expect("unsent");
    let unnamed = client
        .unary("/test.Fake/ErrorUnnamed", json!({}))
        .await
        .unwrap_err();
    assert_eq!(
        unnamed.status().map(|s| s.message.as_str()),
        Some("refused without a name")
    );
    let also = within("the waiting call", waiting.message())
        .await
        .unwrap_err();
    assert_eq!(
        also.status().map(|s| s.message.as_str()),
        Some("refused without a name")
    );
    unsent.send(json!({"n": 5})).await.expect("send");
    assert_eq!(
        within("echo", unsent.message()).await.expect("ok"),
        Some(json!({"n": 5}))
    );

    let ended = client
        .unary("/test.Fake/EndError", json!({}))
        .await
        .unwrap_err();
    let status = ended.status().expect("status");
    assert_eq!((status.code, status.message.as_str()), (9, "broken"));
    still_works(echo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_older_protocol_needs_rsa_keys_on_both_sides() {
    let gateway = scripted_legacy::start().await;
    // An Ed25519 credential cannot sign the RS256 tokens the older protocol uses.
    let mut config = gateway.config.clone();
    config["credential"]["key"] = json!(PrivateKey::generate_ed25519()
        .to_pkcs8_pem()
        .expect("pem")
        .as_str());
    let err = support::connect(config, Transport::LegacyWebsocket)
        .await
        .unwrap_err();
    assert!(err.is_config(), "{err:?}");
    // Nor can an Ed25519 Volt key receive the call key.
    let mut config = gateway.config.clone();
    config["volt"]["public_key"] = json!(PrivateKey::generate_ed25519()
        .public_key()
        .to_spki_pem()
        .expect("spki"));
    let err = support::connect(config, Transport::LegacyWebsocket)
        .await
        .unwrap_err();
    assert!(err.is_config(), "{err:?}");
}
