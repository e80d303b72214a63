//! VoltClient against a scripted protocol-v1 gateway: what the client puts on the wire, and
//! how it takes answers a real Volt rarely sends (malformed frames, meta errors, close frames,
//! silence).

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::json;
use support::scripted::{self, Scripted};
use support::within;
use tdx_volt::client::CallEvent;
use tdx_volt::VoltClient;

const ECHO: &str = "/test.Fake/Echo";

async fn client_for(gateway: &Scripted) -> VoltClient {
    VoltClient::builder()
        .config(gateway.config.clone())
        .connect()
        .await
        .expect("connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_message_with_code_zero_is_an_error_and_the_call_goes_on() {
    let gateway = scripted::start().await;
    let client = client_for(&gateway).await;

    let err = client
        .unary("/test.Fake/SoftError", json!({}))
        .await
        .unwrap_err();
    assert!(err.is_status(), "{err:?}");
    let status = err.status().expect("status");
    assert_eq!((status.code, status.message.as_str()), (0, "soft"));

    let call = client
        .streaming("/test.Fake/SoftError", Some(json!({})))
        .await
        .expect("call");
    let events: Vec<CallEvent> = within("events", call.collect()).await;
    assert!(
        matches!(&events[..], [CallEvent::Error(e), CallEvent::Data(ok), CallEvent::End]
        if e.is_status() && ok == &json!({"ok": true})),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_answers_fail_only_their_own_call() {
    let gateway = scripted::start().await;
    let client = client_for(&gateway).await;
    let mut echo = client
        .streaming(ECHO, Some(json!({"n": 0})))
        .await
        .expect("echo");
    assert_eq!(
        within("echo", echo.message()).await.expect("ok"),
        Some(json!({"n": 0}))
    );

    let garbled = client
        .unary("/test.Fake/Garble", json!({}))
        .await
        .unwrap_err();
    assert!(garbled.is_protocol(), "{garbled:?}");

    let refused = client
        .unary("/test.Fake/MetaError", json!({}))
        .await
        .unwrap_err();
    assert!(refused.is_status(), "{refused:?}");
    assert_eq!(
        refused.status().map(|s| s.message.as_str()),
        Some("denied by test")
    );

    let failed = client
        .unary("/test.Fake/EndError", json!({}))
        .await
        .unwrap_err();
    let status = failed.status().expect("status");
    assert_eq!((status.code, status.message.as_str()), (9, "broken"));

    // The call that was open all along still works, and so do new ones.
    echo.send(json!({"n": 1})).await.expect("send");
    assert_eq!(
        within("echo", echo.message()).await.expect("ok"),
        Some(json!({"n": 1}))
    );
    echo.end().await.expect("end");
    assert_eq!(within("end", echo.message()).await.expect("ok"), None);
    assert_eq!(
        client.unary(ECHO, json!({"n": 2})).await.expect("echo"),
        json!({"n": 2})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_goes_on_the_wire() {
    let mut gateway = scripted::start().await;
    let client = client_for(&gateway).await;

    // Unary: hello, invoke with the request, client end.
    client.unary(ECHO, json!({"a": 1})).await.expect("unary");
    gateway.wait_for(1, "hello").await;
    gateway
        .wait_for(1, r#"invoke /test.Fake/Echo {"a":1}"#)
        .await;
    gateway.wait_for(1, "end").await;

    // end() before any message: an empty request, then the end; the echo comes back.
    let mut ended = client.streaming(ECHO, None).await.expect("call 2");
    ended.end().await.expect("end");
    gateway.wait_for(2, "invoke /test.Fake/Echo {}").await;
    gateway.wait_for(2, "end").await;
    assert_eq!(
        within("echo", ended.message()).await.expect("ok"),
        Some(json!({}))
    );
    assert_eq!(within("end", ended.message()).await.expect("ok"), None);

    // Dropping a keyed call that was never invoked ends it without invoking it.
    let unused = client.streaming(ECHO, None).await.expect("call 3");
    client
        .unary(ECHO, json!({}))
        .await
        .expect("call 4: call 3 is keyed once this returns");
    drop(unused);
    let before = gateway.wait_for(3, "end").await;
    assert!(
        !before
            .iter()
            .any(|(id, what)| *id == 3 && what.starts_with("invoke")),
        "{before:?}"
    );

    // Dropping an invoked call ends it on the wire.
    let mut live = client
        .streaming(ECHO, Some(json!({"live": true})))
        .await
        .expect("call 5");
    assert!(within("echo", live.message()).await.expect("ok").is_some());
    drop(live);
    gateway.wait_for(5, "end").await;
}

#[tokio::test]
async fn calls_dropped_at_once_are_never_invoked() {
    // On one thread, the drop notice often overtakes the call's own Open in the connection
    // task; either way the call must not run.
    let mut gateway = scripted::start().await;
    let client = client_for(&gateway).await;
    for _ in 0..200 {
        drop(
            client
                .streaming(ECHO, Some(json!({"dropped": true})))
                .await
                .expect("open"),
        );
    }
    client
        .unary(ECHO, json!({"sync": true}))
        .await
        .expect("sync call");
    let seen = gateway.wait_for(201, "invoke").await;
    let mut by_call: HashMap<u64, Vec<String>> = HashMap::new();
    for (id, what) in seen {
        by_call.entry(id).or_default().push(what);
    }
    for (id, frames) in &by_call {
        if *id == 201 {
            continue;
        }
        assert!(
            !frames.iter().any(|f| f.starts_with("invoke")),
            "call {id}: {frames:?}"
        );
        // A call that got as far as its key exchange is ended once keyed.
        assert_eq!(
            frames.first().map(String::as_str),
            Some("hello"),
            "call {id}"
        );
    }
    // Every call that said hello has been ended by the time the sync call is invoked.
    let hellos: HashSet<u64> = by_call.keys().copied().filter(|id| *id != 201).collect();
    for id in &hellos {
        assert!(
            by_call[id].iter().any(|f| f == "end"),
            "call {id} never ended: {:?}",
            by_call[id]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_frame_fails_live_calls_and_the_next_call_reconnects() {
    let gateway = scripted::start().await;
    let client = client_for(&gateway).await;
    let mut live = client.streaming(ECHO, Some(json!({}))).await.expect("live");
    assert!(within("echo", live.message()).await.expect("ok").is_some());

    let err = client
        .unary("/test.Fake/Close", json!({}))
        .await
        .unwrap_err();
    assert!(err.is_closed(), "{err:?}");
    let err = within("live call", live.message()).await.unwrap_err();
    assert!(err.is_closed() && err.to_string().contains("bye"), "{err}");

    assert_eq!(
        client
            .unary(ECHO, json!({"again": 1}))
            .await
            .expect("reconnected"),
        json!({"again": 1})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_answering_pings_is_declared_dead() {
    let address = scripted::deaf().await;
    let volt = tdx_volt::PrivateKey::generate_ed25519();
    let client = VoltClient::builder()
        .config(scripted::config_for(&address, &volt))
        .keepalive(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(60))
        .connect()
        .await
        .expect("connects");
    let mut call = client.streaming(ECHO, None).await.expect("queued");
    match within("keepalive verdict", call.next()).await {
        Some(CallEvent::Failed(e)) => {
            assert!(e.is_timeout() && e.to_string().contains("pong"), "{e}")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused_before_sending() {
    let mut gateway = scripted::start().await;
    let client = VoltClient::builder()
        .config(gateway.config.clone())
        .max_message_len(1000)
        .connect()
        .await
        .expect("connects");
    // 608 bytes of JSON, but each quote is escaped twice on its way into the frame (once in
    // the message, once in the body that carries it as a string): over 1000 bytes.
    let text = "\"".repeat(300);
    assert!(json!({ "t": text }).to_string().len() < 1000);
    let err = client.unary(ECHO, json!({ "t": text })).await.unwrap_err();
    assert!(err.is_limit(), "{err:?}");
    let call = client.streaming(ECHO, None).await.expect("call 1");
    let err = call.send(json!({ "t": text })).await.unwrap_err();
    assert!(err.is_limit(), "{err:?}");
    // The call is unharmed by the refusal.
    call.send(json!({"t": "short"})).await.expect("fits");
    gateway
        .wait_for(1, r#"invoke /test.Fake/Echo {"t":"short"}"#)
        .await;
}
