//! The cap on bytes a websocket connection may have queued toward its client: a client that
//! reads nothing while its subscription streams is let go once the cap is reached, and the
//! publisher on another connection, and new connections, carry on. And while frames wait to
//! be written to a client, the client's own frames are still read.

mod support;

use std::time::Duration;

use base64::Engine as _;
use serde_json::json;
use support::{end, invoke, payload, payloads, Event, TestVolt, WAIT};
use tdx_volt::protocol::body::Body;
use tdx_volt::protocol::frame::ServerFrame;

const CHUNK: usize = 64 * 1024;
/// 12.5 MiB: more than loopback socket buffers hold, fewer chunks than a subscriber's queue
/// (so the wire's own slow-subscriber cut-off cannot be what ends the subscription).
const CHUNKS: usize = 200;

async fn subscribers_reach(volt: &TestVolt, wire: &str, count: usize, what: &str) {
    tokio::time::timeout(WAIT, async {
        while volt.emulator().wire_subscribers(wire) != count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not within {WAIT:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_is_let_go_and_others_carry_on() {
    let volt = TestVolt::start_with("ws-queue", |b| {
        b.max_queued_bytes(256 * 1024)
            .write_stall_timeout(Duration::from_millis(500))
    })
    .await;
    let mut publisher = volt.connect().await;
    let saved = publisher
        .unary(
            &volt,
            1,
            "/tdx.volt_api.volt.v1.WireAPI/SaveWire",
            &json!({"resource": {"name": "firehose"}, "create": true}),
        )
        .await;
    let (values, error) = payloads(&saved);
    assert_eq!(error, None);
    let wire = values[0]["resource"]["id"].as_str().unwrap().to_owned();

    // Subscribes, then reads nothing more.
    let mut idle = volt.connect().await;
    let key = idle.open_keyed(&volt, 1).await;
    idle.send(invoke(
        &key,
        1,
        "/tdx.volt_api.volt.v1.WireAPI/SubscribeWire",
        &json!({"wire_id": wire}),
    ))
    .await;
    subscribers_reach(&volt, &wire, 1, "the subscription").await;

    let pkey = publisher.open_keyed(&volt, 2).await;
    publisher
        .send(invoke(
            &pkey,
            2,
            "/tdx.volt_api.volt.v1.WireAPI/PublishWire",
            &json!({"wire_id": wire}),
        ))
        .await;
    let chunk = base64::engine::general_purpose::STANDARD.encode(vec![7u8; CHUNK]);
    for _ in 0..CHUNKS {
        publisher
            .send(payload(&pkey, 2, &json!({"chunk": chunk})))
            .await;
    }
    publisher.send(end(&pkey, 2)).await;
    let published = publisher.read_call(&pkey, 2).await;
    assert!(
        matches!(published.last(), Some(Body::End { error: None, .. })),
        "{published:?}"
    );

    // The idle client's socket is closed, which ends its subscription.
    subscribers_reach(&volt, &wire, 0, "the idle socket to be let go").await;
    let mut chunks = 0;
    loop {
        match idle.next().await {
            Event::Frame(ServerFrame::Sealed(s)) if s.call_id == 1 => {
                let body = key.open_body(&s).expect("body decrypts");
                assert!(
                    matches!(body, Body::Payload { .. }),
                    "the subscription ended by itself: {body:?}"
                );
                chunks += 1;
            }
            Event::Closed(_) => break,
            other => panic!("unexpected: {other:?}"),
        }
    }
    assert!(chunks < CHUNKS, "all {chunks} chunks arrived");

    // The publisher's socket and new ones serve on.
    let root = publisher
        .unary(
            &volt,
            3,
            "/tdx.volt_api.volt.v1.VoltAPI/GetResource",
            &json!({"resource_id": volt.volt_id()}),
        )
        .await;
    assert_eq!(payloads(&root).1, None);
    let mut fresh = volt.connect().await;
    let root = fresh
        .unary(
            &volt,
            1,
            "/tdx.volt_api.volt.v1.VoltAPI/GetResource",
            &json!({"resource_id": volt.volt_id()}),
        )
        .await;
    assert_eq!(payloads(&root).1, None);
}

/// The gateway reads a client while frames wait to be written to it: a client that is busy
/// sending is not made to wait for its own reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_is_read_while_frames_wait_to_be_written_to_it() {
    let volt = TestVolt::start("ws-read-while-writing").await;
    let mut publisher = volt.connect().await;
    let mut wires = Vec::new();
    for (call_id, name) in [(1, "flood"), (2, "later")] {
        let saved = publisher
            .unary(
                &volt,
                call_id,
                "/tdx.volt_api.volt.v1.WireAPI/SaveWire",
                &json!({"resource": {"name": name}, "create": true}),
            )
            .await;
        let (values, error) = payloads(&saved);
        assert_eq!(error, None);
        wires.push(values[0]["resource"]["id"].as_str().unwrap().to_owned());
    }

    // A client subscribes and keys a second call, then reads nothing.
    let mut busy = volt.connect().await;
    let key = busy.open_keyed(&volt, 1).await;
    let later = busy.open_keyed(&volt, 2).await;
    busy.send(invoke(
        &key,
        1,
        "/tdx.volt_api.volt.v1.WireAPI/SubscribeWire",
        &json!({"wire_id": wires[0]}),
    ))
    .await;
    subscribers_reach(&volt, &wires[0], 1, "the first subscription").await;

    // More than loopback buffers hold is published to it, so writes to it wait.
    let pkey = publisher.open_keyed(&volt, 3).await;
    publisher
        .send(invoke(
            &pkey,
            3,
            "/tdx.volt_api.volt.v1.WireAPI/PublishWire",
            &json!({"wire_id": wires[0]}),
        ))
        .await;
    let chunk = base64::engine::general_purpose::STANDARD.encode(vec![7u8; CHUNK]);
    for _ in 0..CHUNKS {
        publisher
            .send(payload(&pkey, 3, &json!({"chunk": chunk})))
            .await;
    }
    publisher.send(end(&pkey, 3)).await;
    let published = publisher.read_call(&pkey, 3).await;
    assert!(
        matches!(published.last(), Some(Body::End { error: None, .. })),
        "{published:?}"
    );

    // Its next call is read and runs all the same.
    busy.send(invoke(
        &later,
        2,
        "/tdx.volt_api.volt.v1.WireAPI/SubscribeWire",
        &json!({"wire_id": wires[1]}),
    ))
    .await;
    subscribers_reach(&volt, &wires[1], 1, "the call sent behind the backlog").await;
}
