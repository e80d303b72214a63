//! VoltClient against an RSA-era volt-emulator (`legacy(true)`, as `serve --legacy`), whose
//! gateway speaks the older JSON/RSA protocol: the same API, call shapes and errors as on
//! protocol v1, and RSA-era configurations with encrypted keys.

mod support;

use futures_util::StreamExt as _;
use serde_json::{json, Value};
use support::{connect, new_wire, publish, subscribed, within, TestVolt};
use tdx_volt::client::CallEvent;
use tdx_volt::{PrivateKey, Transport, VoltClient};

async fn legacy_volt(tag: &str) -> TestVolt {
    TestVolt::start_with(tag, |b| b.legacy(true)).await
}

async fn client(volt: &TestVolt) -> VoltClient {
    let client = connect(volt.config(), Transport::Auto)
        .await
        .expect("connects");
    assert_eq!(client.transport(), Transport::LegacyWebsocket);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rsa_configuration_speaks_the_older_protocol() {
    let volt = legacy_volt("legacy-unary").await;
    let config = volt.config();
    assert!(config["volt"]["fingerprint"].is_string(), "{config}");
    let client = client(&volt).await;
    let volt_id = client.volt_id().to_owned();
    let got = within(
        "GetResource",
        client.get_resource(json!({"resource_id": volt_id})),
    )
    .await
    .expect("GetResource");
    assert_eq!(got["resource"]["id"], json!(volt_id));

    // Asking for the gateway with an RSA key is asking for the older protocol; gRPC works
    // too (RS256 tokens) and answers the same.
    for (asked, spoken) in [
        (Transport::Websocket, Transport::LegacyWebsocket),
        (Transport::LegacyWebsocket, Transport::LegacyWebsocket),
        (Transport::Grpc, Transport::Grpc),
    ] {
        let other = connect(config.clone(), asked).await.expect("connects");
        assert_eq!(other.transport(), spoken);
        let again = other
            .get_resource(json!({"resource_id": volt_id}))
            .await
            .expect("GetResource");
        assert_eq!(again, got, "{asked:?}");
    }

    // Errors are the Volt's statuses, and fail only their call.
    let missing = client
        .get_resource(json!({"resource_id": "no-such-resource"}))
        .await
        .expect_err("an unknown resource is an error");
    let status = missing.status().expect("status kept");
    assert_eq!(status.code, 5, "NOT_FOUND: {status:?}");
    let unknown = client
        .unary("/tdx.volt_api.volt.v1.VoltAPI/NoSuchMethod", json!({}))
        .await
        .expect_err("an unknown method is an error");
    assert_eq!(unknown.status().map(|s| s.code), Some(12), "UNIMPLEMENTED");
    client
        .get_resource(json!({"resource_id": volt_id}))
        .await
        .expect("later calls work");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_streams_both_ways() {
    let volt = legacy_volt("legacy-sql").await;
    let client = client(&volt).await;
    let created = client
        .create_database(json!({"name": "legacy"}))
        .await
        .expect("CreateDatabase");
    let database_id = created["resource"]["id"].as_str().expect("id").to_owned();
    let mut statements =
        vec!["CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, price REAL)".to_owned()];
    for i in 1..=12 {
        statements.push(format!("INSERT INTO item VALUES ({i}, 'item {i}', {i}.25)"));
    }
    client
        .bulk_update(json!({"database_id": database_id, "statement": statements}))
        .await
        .expect("BulkUpdate");

    // The helper pulls every page (bidi: `next` after each page).
    let rows = within(
        "SqlExecuteJSON",
        client.sql_execute_json(json!({
            "database_id": database_id,
            "statement": "SELECT id, name, price FROM item ORDER BY id",
            "page_size": 5,
        })),
    )
    .await
    .expect("rows");
    assert_eq!(rows.len(), 12);
    assert_eq!(
        Value::Object(rows[11].clone()),
        json!({"id": 12, "name": "item 12", "price": 12.25})
    );

    // By hand: header, a page of rows, then the next page on request.
    let mut call = client
        .sql_execute(json!({"start": {
            "database_id": database_id,
            "statement": "SELECT id FROM item ORDER BY id",
            "page_size": 10,
        }}))
        .await
        .expect("Execute");
    let header = within("header", call.message()).await.expect("ok");
    assert!(header.expect("header")["header"].is_object());
    for _ in 0..10 {
        let row = within("row", call.message()).await.expect("ok");
        assert!(row.expect("row")["row"].is_object());
    }
    call.send(json!({"next": {}})).await.expect("next");
    let mut rest = 0;
    while let Some(event) = within("rest", call.next()).await {
        match event {
            CallEvent::Data(v) if v.get("row").is_some() => rest += 1,
            CallEvent::Data(_) => {}
            CallEvent::End => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(rest, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wires_publish_subscribe_and_a_dropped_call_is_let_go() {
    let volt = legacy_volt("legacy-wires").await;
    let client = client(&volt).await;
    let wire_id = new_wire(&client, "legacy").await;
    let mut chunks = subscribed(&client, &wire_id).await;

    // Client streaming: the first message names the wire, then chunks, then the end.
    let big: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
    let publisher = client
        .publish_wire_chunks(&wire_id)
        .await
        .expect("PublishWire");
    for chunk in [&b"first"[..], &big[..], "dernière".as_bytes()] {
        publisher.send(chunk).await.expect("chunk");
    }
    publisher.finish().await.expect("confirmed");
    for expected in [&b"first"[..], &big[..], "dernière".as_bytes()] {
        let chunk = within("chunk", chunks.next())
            .await
            .expect("open")
            .expect("chunk");
        assert!(
            chunk == expected,
            "{} vs {} bytes",
            chunk.len(),
            expected.len()
        );
    }
    chunks.stop().await.expect("stop");
    assert!(within("end of subscription", chunks.next()).await.is_none());

    // Dropping a subscription ends it on the wire: the Volt lets go of it.
    let second = subscribed(&client, &wire_id).await;
    assert_eq!(volt.emulator().wire_subscribers(&wire_id), 1);
    drop(second);
    support::subscriptions_gone(volt.emulator(), &wire_id).await;
    publish(&client, &wire_id, b"after").await;
}

/// The configuration shape of the Python client's README: an RSA key encrypted with PBES2,
/// PBKDF2-HMAC-SHA256 (2048 iterations) and DES-EDE3-CBC, as OpenSSL writes it
/// (`tests/fixtures/keys/rsa-des3.pem`, see make-keys.sh), the Volt's RSA key and
/// fingerprint, and its CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_rsa_key_like_the_python_readme_loads_with_its_passphrase() {
    let volt = legacy_volt("legacy-des3").await;
    let pem = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/keys/rsa-des3.pem"
    ))
    .expect("fixture");
    assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let key = PrivateKey::from_pem(&pem, Some("legacy-pass")).expect("decrypts");
    let config = volt
        .emulator()
        .issue_client_for_key("readme", &key.public_key(), &pem)
        .expect("issued");
    assert_eq!(config["credential"]["key"], json!(pem));

    let no_passphrase = connect(config.clone(), Transport::Auto).await.unwrap_err();
    assert!(no_passphrase.is_key(), "{no_passphrase:?}");
    let wrong = VoltClient::builder()
        .config(config.clone())
        .passphrase("not it")
        .connect()
        .await
        .unwrap_err();
    assert!(wrong.is_key(), "{wrong:?}");
    assert!(!format!("{wrong} {wrong:?}").contains("not it"));

    let client = VoltClient::builder()
        .config(config.clone())
        .passphrase("legacy-pass")
        .connect()
        .await
        .expect("connects with the passphrase");
    assert_eq!(client.transport(), Transport::LegacyWebsocket);
    client
        .get_resource(json!({"resource_id": client.volt_id()}))
        .await
        .expect("GetResource");

    // The passphrase may also travel in the configuration (`p`); without `fingerprint` it is
    // computed from the Volt key, and without `public_key` the key is the CA certificate's.
    let mut bare = config;
    bare["p"] = json!("legacy-pass");
    let volt_section = bare["volt"].as_object_mut().expect("volt");
    volt_section.remove("fingerprint");
    volt_section.remove("public_key");
    let client = connect(bare, Transport::Auto).await.expect("connects");
    client
        .get_resource(json!({"resource_id": client.volt_id()}))
        .await
        .expect("GetResource");
}
