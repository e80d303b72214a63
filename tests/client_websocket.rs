//! VoltClient over the websocket gateway, against volt-emulator in-process over TLS.

mod support;

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{json, Value};
use support::{
    assert_foreign_ca_refused, concurrent_calls, connect, hold_the_only_slot, new_resources,
    new_wire, publish, subscribed, within, TestVolt,
};
use tdx_volt::client::CallEvent;
use tdx_volt::{ErrorKind, Transport, VoltClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_and_clones_share_one_connection() {
    let volt = TestVolt::start("unary").await;
    let client = volt.client().await;
    let volt_id = client.volt_id().to_owned();
    assert_eq!(volt_id, volt.emulator().volt_id());

    let got = within(
        "GetResource",
        client.get_resource(json!({"resource_id": volt_id})),
    )
    .await;
    let got = got.expect("GetResource");
    assert_eq!(got["resource"]["id"], json!(volt_id));

    // The generic path and a clone give the same answer.
    let clone = client.clone();
    let again = clone
        .unary(
            "/tdx.volt_api.volt.v1.VoltAPI/GetResource",
            json!({"resource_id": volt_id}),
        )
        .await
        .expect("unary by path");
    assert_eq!(again, got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_errors_and_unknown_methods_fail_only_their_call() {
    let volt = TestVolt::start("errors").await;
    let client = volt.client().await;

    let missing = client
        .get_resource(json!({"resource_id": "no-such-resource"}))
        .await
        .expect_err("an unknown resource is an error");
    assert!(missing.is_status(), "{missing:?}");
    let status = missing.status().expect("status kept");
    assert_eq!(status.code, 5, "NOT_FOUND: {status:?}");
    assert!(!status.message.is_empty());

    let unknown = client
        .unary("/tdx.volt_api.volt.v1.VoltAPI/NoSuchMethod", json!({}))
        .await
        .expect_err("an unknown method is an error");
    assert!(unknown.is_status(), "{unknown:?}");
    assert_eq!(unknown.status().map(|s| s.code), Some(12), "UNIMPLEMENTED");
    assert!(unknown.to_string().contains("NoSuchMethod"), "{unknown}");

    let bad_path = client.unary("GetResource", json!({})).await.unwrap_err();
    assert!(bad_path.is_schema(), "{bad_path:?}");

    // The connection is unharmed.
    let volt_id = client.volt_id().to_owned();
    client
        .get_resource(json!({"resource_id": volt_id}))
        .await
        .expect("later calls work");
}

async fn people_database(client: &VoltClient, rows: usize) -> String {
    let created = client
        .create_database(json!({"name": "people"}))
        .await
        .expect("CreateDatabase");
    let database_id = created["resource"]["id"].as_str().expect("id").to_owned();
    let mut statements = vec![
        "CREATE TABLE person (id INTEGER PRIMARY KEY, name TEXT, score REAL, note TEXT)".to_owned(),
    ];
    for i in 1..=rows {
        let note = if i % 2 == 0 {
            "NULL".to_owned()
        } else {
            format!("'odd {i}'")
        };
        statements.push(format!(
            "INSERT INTO person VALUES ({i}, 'person {i}', {i}.5, {note})"
        ));
    }
    let updated = client
        .bulk_update(json!({"database_id": database_id, "statement": statements}))
        .await
        .expect("BulkUpdate");
    assert!(updated
        .get("status")
        .is_none_or(|s| s["message"].as_str().unwrap_or("").is_empty()));
    database_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_execute_json_pulls_every_page() {
    let volt = TestVolt::start("sql").await;
    let client = volt.client().await;
    let database_id = people_database(&client, 25).await;

    for page_size in [0, 1, 10, 25, 100] {
        let rows = within(
            "SqlExecuteJSON",
            client.sql_execute_json(json!({
                "database_id": database_id,
                "statement": "SELECT id, name, score, note FROM person ORDER BY id",
                "page_size": page_size,
            })),
        )
        .await
        .expect("rows");
        assert_eq!(rows.len(), 25, "page_size {page_size}");
        for (i, row) in rows.iter().enumerate() {
            let n = i as i64 + 1;
            let note = if n % 2 == 0 {
                Value::Null
            } else {
                json!(format!("odd {n}"))
            };
            assert_eq!(
                Value::Object(row.clone()),
                json!({"id": n, "name": format!("person {n}"), "score": n as f64 + 0.5, "note": note}),
                "page_size {page_size}"
            );
        }
    }

    // Parameters, and the wrapped form of the request.
    let rows = client
        .sql_execute_json(json!({"start": {
            "database_id": database_id,
            "statement": "SELECT count(*) AS n FROM person WHERE id > :min",
            "parameter": {"min": {"integer": 20}},
        }}))
        .await
        .expect("count");
    assert_eq!(rows, vec![json!({"n": 5}).as_object().cloned().unwrap()]);

    let bad = client
        .sql_execute_json(json!({"database_id": database_id, "statement": "SELEC nonsense"}))
        .await
        .unwrap_err();
    assert!(bad.is_status(), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_execute_pages_by_hand() {
    let volt = TestVolt::start("sqlpages").await;
    let client = volt.client().await;
    let database_id = people_database(&client, 7).await;

    let mut call = client
        .sql_execute(json!({"start": {
            "database_id": database_id,
            "statement": "SELECT id FROM person ORDER BY id",
            "page_size": 3,
        }}))
        .await
        .expect("Execute");
    let header = within("header", call.message()).await.expect("header");
    assert!(header.expect("a message")["header"].is_object());
    let mut ids = Vec::new();
    while ids.len() < 7 {
        for _ in 0..3.min(7 - ids.len()) {
            let row = within("row", call.message())
                .await
                .expect("row")
                .expect("message");
            ids.push(row["row"]["column"][0]["integer"].clone());
        }
        if ids.len() < 7 {
            call.send(json!({"next": {}})).await.expect("next");
        }
    }
    assert_eq!(
        ids,
        (1..=7).map(|i| json!(i.to_string())).collect::<Vec<_>>()
    );
    assert_eq!(
        within("end", call.next())
            .await
            .map(|e| matches!(e, CallEvent::End)),
        Some(true)
    );
    assert!(call.next().await.is_none(), "the stream is over after End");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wires_subscribe_publish_and_stop() {
    let volt = TestVolt::start("wires").await;
    let client = volt.client().await;
    let wire_id = new_wire(&client, "sensor").await;
    let mut chunks = subscribed(&client, &wire_id).await;

    // PublishWire as a raw client-streaming call: the request names the wire, then chunks.
    let big: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
    let mut publish_call = client
        .publish_wire(json!({"wire_id": wire_id}))
        .await
        .expect("PublishWire");
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    for chunk in [&b"first"[..], &big[..], &b"last"[..]] {
        publish_call
            .send(json!({"chunk": b64(chunk)}))
            .await
            .expect("chunk");
    }
    publish_call.end().await.expect("end");
    let confirmed = within("publish confirmation", publish_call.message()).await;
    assert!(confirmed.expect("no error").is_some());
    assert!(matches!(publish_call.next().await, Some(CallEvent::End)));

    for expected in [&b"first"[..], &big[..], &b"last"[..]] {
        let chunk = within("chunk", chunks.next())
            .await
            .expect("open")
            .expect("chunk");
        assert_eq!(chunk, expected);
    }

    chunks.stop().await.expect("stop");
    assert!(within("end of subscription", chunks.next()).await.is_none());

    // A second subscriber, then dropped: the wire and client carry on.
    let second = subscribed(&client, &wire_id).await;
    drop(second);
    publish(&client, &wire_id, b"after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_file_streams_blocks() {
    let volt = TestVolt::start("upload").await;
    let client = volt.client().await;
    let saved = client
        .save_resource(json!({"resource": {"name": "notes.txt", "kind": ["file"]}, "create": true}))
        .await
        .expect("SaveResource");
    let file_id = saved["resource"]["id"].as_str().expect("id").to_owned();

    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut upload = client.upload_file(None).await.expect("UploadFile");
    upload
        .send(json!({"start": {"resource_id": file_id}}))
        .await
        .expect("start");
    let mut content = Vec::new();
    for i in 0..20u8 {
        let block = vec![b'a' + i; 1000];
        upload
            .send(json!({"block": b64(&block)}))
            .await
            .expect("block");
        content.extend_from_slice(&block);
    }
    upload.end().await.expect("end");
    let answer = within("upload answer", upload.message())
        .await
        .expect("no error")
        .expect("answer");
    assert_eq!(answer["ack"], json!(20));
    assert!(upload
        .send(json!({"block": ""}))
        .await
        .unwrap_err()
        .is_closed());

    let got = client
        .get_file_content(json!({"resource_id": file_id}))
        .await
        .expect("GetFileContent");
    let stored = got["content"].as_str().expect("content");
    assert_eq!(stored, b64(&content));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_calls_on_one_connection() {
    let volt = TestVolt::start("many").await;
    let client = volt.client().await;
    let ids = new_resources(&client, 20).await;
    concurrent_calls(&client, &ids, 1000).await;
    let connections = volt.emulator().connections();
    assert_eq!(connections.websocket, 1, "{connections:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volt_key_that_does_not_match_is_refused() {
    let volt = TestVolt::start("wrongkey").await;
    let other = TestVolt::start("otherkey").await;
    let mut config = volt.config();
    config["volt"]["public_key"] = other.config()["volt"]["public_key"].clone();
    let client = connect(config, Transport::Websocket)
        .await
        .expect("TLS is fine");
    let err = client
        .get_resource(json!({"resource_id": client.volt_id()}))
        .await
        .unwrap_err();
    assert!(err.is_key_exchange(), "{err:?}");
    let mut call = client
        .subscribe_wire(json!({"wire_id": "any"}))
        .await
        .expect("queued");
    match within("refusal", call.next()).await {
        Some(CallEvent::Failed(e)) => assert!(e.is_key_exchange(), "{e:?}"),
        other => panic!("expected a key exchange error, got {other:?}"),
    }
    assert!(call.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_certificate_from_another_ca_is_refused() {
    assert_foreign_ca_refused(Transport::Websocket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_volt_fails_every_live_call_and_the_next_call_reconnects() {
    let mut volt = TestVolt::start("stop").await;
    let client = volt.client().await;
    let wire_id = new_wire(&client, "w").await;
    let mut first = subscribed(&client, &wire_id).await;
    // A second live call, keyed (a send waits for the key exchange) and waiting for blocks.
    let saved = client
        .save_resource(json!({"resource": {"name": "f", "kind": ["file"]}, "create": true}))
        .await
        .expect("SaveResource");
    let mut second = client.upload_file(None).await.expect("UploadFile");
    second
        .send(json!({"start": {"resource_id": saved["resource"]["id"]}}))
        .await
        .expect("keyed and sent");
    let address = volt.emulator().http_address().to_owned();

    volt.stop().await;

    let failed = within("first subscription", first.next()).await;
    let err = failed.expect("an event").expect_err("an error");
    assert!(err.is_closed(), "{err:?}");
    assert!(first.next().await.is_none());
    match within("second call", second.next()).await {
        Some(CallEvent::Failed(e)) => assert!(e.is_closed(), "{e:?}"),
        other => panic!("expected an error, got {other:?}"),
    }
    // While it is down a call waits for the connection within its own timeout, then fails.
    let err = client
        .with_request_timeout(std::time::Duration::from_millis(500))
        .get_resource(json!({}))
        .await
        .unwrap_err();
    assert!(err.is_connect() || err.is_timeout(), "{err:?}");

    // The Volt comes back on the same port: the next call reconnects.
    let port: u16 = address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let emulator = tdx_volt_emulator::Emulator::builder(&volt.dir)
        .ws_listen(([127, 0, 0, 1], port).into())
        .start()
        .await
        .expect("restart on the same port");
    volt.emulator = Some(emulator);
    let again = client
        .get_resource(json!({"resource_id": client.volt_id()}))
        .await
        .expect("reconnected");
    assert_eq!(again["resource"]["id"], json!(client.volt_id()));
}

/// Settings past what the runtime can hold are kept within it (they once panicked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_call_buffer_is_clamped() {
    let volt = TestVolt::start("huge-buffer").await;
    for transport in [Transport::Websocket, Transport::Grpc] {
        let client = volt
            .client_with(transport, |b| b.call_buffer(usize::MAX))
            .await;
        let wire_id = new_wire(&client, "huge").await;
        let mut chunks = subscribed(&client, &wire_id).await;
        publish(&client, &wire_id, b"fits").await;
        let chunk = within("a chunk", chunks.next()).await.expect("a chunk");
        assert_eq!(chunk.expect("data"), b"fits");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_loses_only_its_own_call() {
    let volt = TestVolt::start("slow").await;
    let fast = volt.client().await;
    let slow = volt
        .client_with(Transport::Websocket, |b| b.call_buffer(4))
        .await;
    let wire_id = new_wire(&fast, "flood").await;
    let chunks = subscribed(&slow, &wire_id).await;

    // Publish without reading until the subscription has been ended for falling behind
    // (a send on it then fails), checking on the way that the connection still serves calls.
    let publisher = fast.publish_wire_chunks(&wire_id).await.expect("publish");
    let mut published = 0;
    loop {
        publisher.send(b"x").await.expect("chunk");
        published += 1;
        slow.get_resource(json!({"resource_id": slow.volt_id()}))
            .await
            .expect("the slow client's connection still works");
        if chunks.call().send(json!({})).await.is_err() {
            break;
        }
        assert!(published < 1000, "the subscription was never cut off");
    }
    publisher.finish().await.expect("publisher unaffected");

    let events: Vec<_> = within("the cut-off subscription", chunks.collect::<Vec<_>>()).await;
    let (last, delivered) = events.split_last().expect("events");
    assert!(delivered
        .iter()
        .all(|c| c.as_deref().ok() == Some(&b"x"[..])));
    assert!(delivered.len() <= 4, "{} chunks", delivered.len());
    let err = last.as_ref().expect_err("ends with an error");
    assert_eq!(err.kind(), ErrorKind::Limit, "{err:?}");
}

/// A websocket server that accepts connections and never answers a frame.
async fn silent_gateway() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await {
                held.push(tokio::spawn(async move {
                    // Read (answering pings, as any websocket does) but never reply.
                    while let Some(Ok(_)) = ws.next().await {}
                }));
            }
        }
    });
    (format!("http://{address}"), server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volt_that_never_answers_times_calls_out() {
    let volt = TestVolt::start("silent").await;
    let (http_address, server) = silent_gateway().await;
    let mut config = volt.config();
    config["volt"]["http_address"] = json!(http_address);
    let client = VoltClient::builder()
        .config(config)
        .transport(Transport::Websocket)
        .request_timeout(Duration::from_millis(300))
        .connect()
        .await
        .expect("connect");

    let err = client
        .get_resource(json!({"resource_id": client.volt_id()}))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");

    // A streaming call gives up on its key exchange, and a send on it waits no longer.
    let mut call = client.upload_file(None).await.expect("queued");
    let err = call.send(json!({"start": {}})).await.unwrap_err();
    assert!(err.is_timeout() || err.is_closed(), "{err:?}");
    match within("key exchange deadline", call.next()).await {
        Some(CallEvent::Failed(e)) => assert!(e.is_timeout(), "{e:?}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_slots_are_bounded_and_come_back_when_a_call_is_dropped() {
    let volt = TestVolt::start("slots").await;
    let client = volt
        .client_with(Transport::Websocket, |b| b.max_calls(1))
        .await;
    let wire_id = new_wire(&client, "quiet").await;

    // With one call slot, a second call waits for the first; dropping the first frees it.
    let held = hold_the_only_slot(&client, &wire_id).await;
    drop(held);
    client
        .get_resource(json!({"resource_id": client.volt_id()}))
        .await
        .expect("the slot came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_problems_are_typed_errors() {
    let err = VoltClient::builder().connect().await.unwrap_err();
    assert!(err.is_config(), "{err:?}");
    let err = VoltClient::from_file("/nonexistent/client.config.json")
        .await
        .unwrap_err();
    assert!(err.is_io() || err.is_config(), "{err:?}");

    let volt = TestVolt::start("config").await;
    let builder = VoltClient::builder()
        .config_file(volt.config_path())
        .transport(Transport::Websocket)
        .passphrase("secret-passphrase");
    assert!(!format!("{builder:?}").contains("secret-passphrase"));
}
