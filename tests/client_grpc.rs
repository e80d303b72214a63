//! VoltClient over native gRPC, against volt-emulator in-process over TLS: the same answers as
//! over the websocket gateway, Authenticate then mutual TLS, refused certificates and tokens,
//! and many calls on one HTTP/2 connection.

mod support;

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{json, Value};
use support::{
    assert_foreign_ca_refused, concurrent_calls, connect, hold_the_only_slot, new_resources,
    new_wire, publish, subscribed, within, TestVolt,
};
use tdx_volt::client::{Authentication, CallEvent};
use tdx_volt::proto::volt as pb;
use tdx_volt::{Transport, VoltClient};
use tdx_volt_emulator::AuthenticatePolicy;

use support::scenario::{b64, fixture, record, scenario, upload_and_read_back, FILE_API, VOLT_API};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_websocket_give_the_same_answers() {
    let volt = TestVolt::start("same").await;
    let ws = volt.client_over(Transport::Websocket).await;
    let grpc = volt.client_over(Transport::Grpc).await;
    assert_eq!(ws.transport(), Transport::Websocket);
    assert_eq!(grpc.transport(), Transport::Grpc);
    let f = fixture(&ws).await;

    for (path, request) in scenario(ws.volt_id(), &f) {
        let over_ws = record(&ws, &path, request.clone()).await;
        let over_grpc = record(&grpc, &path, request.clone()).await;
        assert_eq!(over_grpc, over_ws, "{path} {request}");
    }

    // The convenience calls agree too, and read the values exactly.
    let query = json!({"database_id": f.database_id, "statement": "SELECT * FROM t ORDER BY id",
                       "page_size": 1});
    let rows = grpc.sql_execute_json(query.clone()).await.expect("rows");
    assert_eq!(rows, ws.sql_execute_json(query).await.expect("rows"));
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["big"], json!(9007199254740993i64));
    assert_eq!(rows[1]["big"], json!(i64::MIN));
    assert_eq!(rows[0]["text"], json!("héllo \"quoted\"\n"));
    assert_eq!(rows[0]["data"], json!(b64(&[0, 255, 16])));
    assert_eq!(rows[2]["untyped"], json!("x"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_cross_transports() {
    let volt = TestVolt::start("cross").await;
    let ws = volt.client_over(Transport::Websocket).await;
    let grpc = volt.client_over(Transport::Grpc).await;
    let wire_id = new_wire(&grpc, "cross").await;

    // Published over one transport, received over the other, both ways.
    let mut over_grpc = subscribed(&grpc, &wire_id).await;
    let mut over_ws = subscribed(&ws, &wire_id).await;
    // The second subscription's probes reached the first one too: skip them.
    within("the second marker", async {
        while within("chunk", over_grpc.next())
            .await
            .expect("open")
            .expect("chunk")
            != b"marker"
        {}
    })
    .await;
    let big: Vec<u8> = (0..200 * 1024).map(|i| (i % 253) as u8).collect();
    publish(&ws, &wire_id, &big).await;
    publish(&grpc, &wire_id, b"from grpc").await;
    for chunks in [&mut over_grpc, &mut over_ws] {
        for expected in [&big[..], b"from grpc"] {
            let chunk = within("chunk", chunks.next()).await.expect("open");
            let chunk = chunk.expect("chunk");
            assert!(
                chunk == expected,
                "a chunk of {} bytes, not {}",
                chunk.len(),
                expected.len()
            );
        }
    }
    over_grpc.stop().await.expect("stop");
    assert!(within("end", over_grpc.next()).await.is_none());

    // A client-streaming upload over gRPC reads back the same over the websocket gateway.
    upload_and_read_back(&grpc, &ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_pages_by_hand_over_grpc() {
    let volt = TestVolt::start("grpcpages").await;
    let client = volt.client_over(Transport::Grpc).await;
    let f = fixture(&client).await;
    let mut call = client
        .sql_execute(json!({"start": {"database_id": f.database_id,
                                       "statement": "SELECT id FROM t ORDER BY id",
                                       "page_size": 2}}))
        .await
        .expect("Execute");
    let header = within("header", call.message()).await.expect("header");
    assert!(header.expect("message")["header"].is_object());
    let mut ids = Vec::new();
    for _ in 0..2 {
        let row = within("row", call.message()).await.expect("row");
        ids.push(row.expect("message")["row"]["column"][0]["integer"].clone());
    }
    call.send(json!({"next": {}})).await.expect("next");
    let row = within("row", call.message()).await.expect("row");
    ids.push(row.expect("message")["row"]["column"][0]["integer"].clone());
    assert_eq!(ids, vec![json!("1"), json!("2"), json!("3")]);
    assert!(matches!(
        within("end", call.next()).await,
        Some(CallEvent::End)
    ));
    assert!(call.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_calls() {
    let volt = TestVolt::start("typed").await;
    let client = volt.client_over(Transport::Grpc).await;
    let request = pb::GetResourceRequest {
        resource_id: client.volt_id().to_owned(),
        ..Default::default()
    };
    let path = format!("{VOLT_API}/GetResource");
    let typed: pb::GetResourceResponse = client
        .unary_typed(&path, &request)
        .await
        .expect("typed GetResource");
    let resource = typed.resource.expect("resource");
    assert_eq!(resource.id, client.volt_id());
    let json = client
        .get_resource(json!({"resource_id": client.volt_id()}))
        .await
        .expect("GetResource");
    assert_eq!(json["resource"]["name"], json!(resource.name));

    // The message types must be the method's.
    let err = client
        .unary_typed::<pb::GetResourceRequest, pb::SaveResourceResponse>(&path, &request)
        .await
        .unwrap_err();
    assert!(err.is_schema(), "{err:?}");

    // A server-streaming call, typed.
    let f = fixture(&client).await;
    let download = pb::DownloadFileRequest {
        resource_id: f.file_id,
        ..Default::default()
    };
    let mut call = client
        .streaming_typed::<_, pb::DownloadFileResponse>(
            &format!("{FILE_API}/DownloadFile"),
            Some(&download),
        )
        .await
        .expect("DownloadFile");
    let mut content = Vec::new();
    while let Some(block) = within("block", call.next()).await {
        if let Some(pb::download_file_response::Payload::Block(bytes)) =
            block.expect("block").payload
        {
            content.extend_from_slice(&bytes);
        }
    }
    let expected: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    assert!(content == expected, "{} bytes downloaded", content.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_calls_on_one_connection() {
    let volt = TestVolt::start("grpcmany").await;
    let client = volt.client_over(Transport::Grpc).await;
    let ids = new_resources(&client, 10).await;
    concurrent_calls(&client, &ids, 1000).await;
    let connections = volt.emulator().connections();
    assert_eq!(connections.grpc, 1, "{connections:?}");
    assert_eq!(connections.websocket, 0, "{connections:?}");
}

/// The emulator's configuration without a session (as a Volt issues one before the client is
/// accepted), written to its own file with a field this crate does not know.
fn sessionless_config(volt: &TestVolt, name: &str) -> std::path::PathBuf {
    let mut config = volt.config();
    let credential = config["credential"].as_object_mut().expect("credential");
    credential.remove("session_id");
    credential.remove("cert");
    config["an_unknown_field"] = json!({"kept": [1, 2, 3]});
    let path = volt.dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(&config).expect("json")).expect("write");
    path
}

/// A gRPC client with [`sessionless_config`].
async fn sessionless_client(volt: &TestVolt, name: &str) -> (VoltClient, std::path::PathBuf) {
    let path = sessionless_config(volt, name);
    let client = VoltClient::builder()
        .config_file(&path)
        .transport(Transport::Grpc)
        .connect()
        .await
        .expect("connects without a session");
    (client, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticate_then_calls_over_mutual_tls() {
    let volt = TestVolt::start("auth").await;
    let (client, path) = sessionless_client(&volt, "new-client.json").await;

    // Without a session the Volt only takes Authenticate.
    let err = client
        .get_resource(json!({"resource_id": client.volt_id()}))
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.code), Some(16), "{err:?}");

    let granted = within(
        "Authenticate",
        client.authenticate(Authentication::session_only().client_name("auth test")),
    )
    .await
    .expect("PERMIT");
    assert!(granted.has_certificate());
    assert!(granted.identity_did().is_none());
    assert_eq!(
        granted.response()["decision"],
        json!("POLICY_DECISION_PERMIT")
    );

    // Every clone now calls in the new session, over mutual TLS.
    let clone = client.clone();
    let got = clone
        .get_resource(json!({"resource_id": client.volt_id()}))
        .await
        .expect("calls work after Authenticate");
    assert_eq!(got["resource"]["id"], json!(client.volt_id()));
    let connections = volt.emulator().connections();
    assert_eq!(connections.grpc_client_certificate, 1, "{connections:?}");
    assert_eq!(
        client.config().credential().session_id.as_deref(),
        Some(granted.session_id())
    );

    // The grant is saved into the file: owner-only, other fields as they were.
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    assert_eq!(
        saved["credential"]["session_id"],
        json!(granted.session_id())
    );
    assert!(saved["credential"]["cert"]
        .as_str()
        .is_some_and(|c| c.contains("BEGIN CERTIFICATE")));
    assert_eq!(saved["credential"]["ca"], json!(volt.emulator().ca_pem()));
    assert_eq!(saved["an_unknown_field"], json!({"kept": [1, 2, 3]}));
    assert_eq!(
        saved["credential"]["key"],
        volt.config()["credential"]["key"]
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The saved file connects over mutual TLS by itself. The certificate alone names the
    // caller: tokens for another audience are not even looked at.
    let mut config = saved.clone();
    config["volt"]["id"] = json!("did:volt:someone-else");
    let by_certificate = connect(config.clone(), Transport::Grpc)
        .await
        .expect("connects");
    by_certificate
        .get_resource(json!({"resource_id": volt.emulator().volt_id()}))
        .await
        .expect("the certificate identifies the client");
    // Without the certificate the same tokens are refused: the certificate did the work.
    config["credential"]
        .as_object_mut()
        .expect("credential")
        .remove("cert");
    let by_token = connect(config, Transport::Grpc).await.expect("connects");
    let err = by_token
        .get_resource(json!({"resource_id": volt.emulator().volt_id()}))
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.code), Some(16), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_authentication() {
    let volt = TestVolt::start("authkinds").await;

    // A DID made by the Volt, then the same DID presented again.
    let (client, path) = sessionless_client(&volt, "volt-did.json").await;
    let granted = client
        .authenticate(Authentication::volt_did())
        .await
        .expect("PERMIT");
    let first = granted.identity_did().expect("a DID").to_owned();
    // Asked again, the Volt makes another DID, which replaces the first everywhere.
    let granted = client
        .authenticate(Authentication::volt_did())
        .await
        .expect("PERMIT");
    let did = granted.identity_did().expect("a DID").to_owned();
    assert!(did.starts_with("did:volt:"), "{did}");
    assert_ne!(did, first);
    assert_eq!(granted.response()["identity_did"], json!(did));
    assert_eq!(
        client.config().credential().identity_did.as_deref(),
        Some(did.as_str())
    );
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    assert_eq!(saved["credential"]["identity_did"], json!(did));
    let again = client
        .authenticate(Authentication::did(&did))
        .await
        .expect("a known DID");
    assert_eq!(again.identity_did(), Some(did.as_str()));
    assert_ne!(again.session_id(), granted.session_id());
    // The default asks for the DID the credential now holds.
    let third = client
        .authenticate(Authentication::new())
        .await
        .expect("default");
    assert_eq!(third.identity_did(), Some(did.as_str()));
    client
        .get_resource(json!({"resource_id": client.volt_id()}))
        .await
        .expect("works");

    // A session-only grant names no DID and keeps the credential's.
    let session = client
        .authenticate(Authentication::session_only())
        .await
        .expect("PERMIT");
    assert!(session.identity_did().is_none());
    assert_eq!(
        client.config().credential().identity_did.as_deref(),
        Some(did.as_str())
    );

    // A DID of the client's own making, over the websocket gateway this time.
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(sessionless_config(&volt, "own.json")).expect("read"),
    )
    .expect("json");
    let client = connect(config, Transport::Websocket)
        .await
        .expect("connects");
    let granted = client
        .authenticate(Authentication::own_did().exchange_token("t").challenge("c"))
        .await
        .expect("PERMIT");
    let own = granted.identity_did().expect("own DID");
    assert!(own.starts_with("did:volt:"), "{own}");
    assert_eq!(
        client.config().credential().identity_did.as_deref(),
        Some(own)
    );
    client
        .get_resource(json!({"resource_id": client.volt_id()}))
        .await
        .expect("works over the websocket gateway too");

    // An unknown DID is the Volt's error, and nothing changes.
    let err = client
        .authenticate(Authentication::did("did:volt:unknown"))
        .await
        .unwrap_err();
    assert!(err.is_status(), "{err:?}");
    assert_eq!(
        client.config().credential().identity_did.as_deref(),
        Some(own)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_authentications_leave_one_consistent_grant() {
    let volt = TestVolt::start("authrace").await;
    let (client, path) = sessionless_client(&volt, "race.json").await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let client = client.clone();
        tasks.spawn(async move { client.authenticate(Authentication::session_only()).await });
    }
    while let Some(done) = within("authentications", tasks.join_next()).await {
        done.expect("task").expect("PERMIT");
    }
    // The session in memory, in the file, and the one the Volt sees on calls are the same.
    let in_memory = client
        .config()
        .credential()
        .session_id
        .clone()
        .expect("session");
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    assert_eq!(saved["credential"]["session_id"], json!(in_memory));
    let seen = client
        .can_access_resource(json!({"resource_id": client.volt_id(), "access": "read"}))
        .await
        .expect("CanAccessResource");
    assert_eq!(seen["session_id"], json!(in_memory));

    // A certificate for another key is refused before connecting.
    let mut config = saved.clone();
    config["credential"]["key"] =
        volt.emulator().issue_client("other", None).expect("issue")["credential"]["key"].clone();
    let err = connect(config, Transport::Grpc).await.unwrap_err();
    assert!(err.is_config(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_decisions_are_polled_within_the_wait_and_deny_is_an_error() {
    let quick = || {
        Authentication::session_only()
            .poll_interval(Duration::from_millis(10))
            .max_wait(Duration::from_secs(20))
    };

    // Two PENDING answers, then PERMIT.
    let volt = TestVolt::start_with("pending", |b| {
        b.authenticate_policy(AuthenticatePolicy::PendingThenPermit(2))
    })
    .await;
    let (client, _) = sessionless_client(&volt, "pending.json").await;
    let granted = within("Authenticate", client.authenticate(quick()))
        .await
        .expect("granted after polling");
    assert!(!granted.session_id().is_empty());
    client
        .get_resource(json!({"resource_id": client.volt_id()}))
        .await
        .expect("works");

    // Never decided: the wait runs out, and nothing is saved.
    let volt = TestVolt::start_with("undecided", |b| {
        b.authenticate_policy(AuthenticatePolicy::PendingThenPermit(u32::MAX))
    })
    .await;
    let (client, path) = sessionless_client(&volt, "pending.json").await;
    let before = std::fs::read_to_string(&path).expect("read");
    let err = within(
        "Authenticate",
        client.authenticate(quick().max_wait(Duration::from_millis(100))),
    )
    .await
    .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(client.config().credential().session_id.is_none());
    assert_eq!(std::fs::read_to_string(&path).expect("read"), before);

    // An interval past every wait is the same timeout, at once (it once overflowed).
    let err = within(
        "Authenticate",
        client.authenticate(quick().poll_interval(Duration::MAX)),
    )
    .await
    .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");

    // DENY.
    let volt =
        TestVolt::start_with("deny", |b| b.authenticate_policy(AuthenticatePolicy::Deny)).await;
    let (client, path) = sessionless_client(&volt, "pending.json").await;
    let before = std::fs::read_to_string(&path).expect("read");
    let err = client.authenticate(quick()).await.unwrap_err();
    assert!(err.is_denied(), "{err:?}");
    assert!(client.config().credential().session_id.is_none());
    assert_eq!(std::fs::read_to_string(&path).expect("read"), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    assert_foreign_ca_refused(Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_for_another_audience_or_expired_are_refused() {
    let volt = TestVolt::start("grpcaud").await;
    let mut config = volt.config();
    config["volt"]["id"] = json!("did:volt:another-volt");
    let client = connect(config, Transport::Grpc).await.expect("connects");
    for _ in 0..2 {
        // Refused each time, on a connection that stays up.
        let err = client
            .get_resource(json!({"resource_id": volt.emulator().volt_id()}))
            .await
            .unwrap_err();
        let status = err.status().expect("status");
        assert_eq!(status.code, 16, "{err:?}");
        assert!(status.message.contains("audience"), "{status:?}");
    }

    // A Volt whose clock is two hours ahead sees every token as expired.
    let ahead = TestVolt::start_with("grpcexpired", |b| b.clock_offset(2 * 3600)).await;
    let client = ahead.client_over(Transport::Grpc).await;
    let err = client
        .get_resource(json!({"resource_id": client.volt_id()}))
        .await
        .unwrap_err();
    let status = err.status().expect("status");
    assert_eq!(status.code, 16, "{err:?}");
    assert!(status.message.contains("expired"), "{status:?}");
    let mut call = client
        .subscribe_wire(json!({"wire_id": "any"}))
        .await
        .expect("opens");
    match within("refusal", call.next()).await {
        Some(CallEvent::Failed(e)) => assert_eq!(e.status().map(|s| s.code), Some(16), "{e:?}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(call.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_volt_fails_live_calls_and_the_next_call_reconnects() {
    let mut volt = TestVolt::start("grpcstop").await;
    let client = volt.client_over(Transport::Grpc).await;
    let wire_id = new_wire(&client, "w").await;
    let mut live = subscribed(&client, &wire_id).await;
    let address = volt.emulator().address().to_owned();

    volt.stop().await;
    let failed = within("the subscription", live.next()).await;
    let err = failed.expect("an event").expect_err("an error");
    assert!(err.is_closed(), "{err:?}");
    assert!(live.next().await.is_none());
    // While it is down a call waits for the connection within its own timeout (the
    // reconnect policy's backoff between attempts), then fails.
    let err = client
        .with_request_timeout(std::time::Duration::from_millis(500))
        .get_resource(json!({"resource_id": client.volt_id()}))
        .await
        .unwrap_err();
    assert!(
        err.is_connect() || err.is_closed() || err.is_timeout(),
        "{err:?}"
    );

    let emulator = tdx_volt_emulator::Emulator::builder(&volt.dir)
        .grpc_listen(address.parse().expect("address"))
        .start()
        .await
        .expect("restart on the same port");
    volt.emulator = Some(emulator);
    let again = within(
        "reconnect",
        client.get_resource(json!({"resource_id": client.volt_id()})),
    )
    .await
    .expect("reconnected");
    assert_eq!(again["resource"]["id"], json!(client.volt_id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_call_frees_its_slot_and_bounds_hold() {
    let volt = TestVolt::start("grpcslots").await;
    let client = volt
        .client_with(Transport::Grpc, |b| b.max_calls(1).max_message_len(1024))
        .await;
    let wire_id = new_wire(&client, "quiet").await;
    // With one call slot, a second call waits for the first; dropping the first frees it.
    let held = hold_the_only_slot(&client, &wire_id).await;
    assert_eq!(volt.emulator().wire_subscribers(&wire_id), 1);
    drop(held);
    client
        .get_resource(json!({"resource_id": client.volt_id()}))
        .await
        .expect("the slot came back");
    // The dropped call was reset on the wire: the Volt let go of the subscription.
    support::subscriptions_gone(volt.emulator(), &wire_id).await;

    // Over the size limit: refused before sending, and the connection carries on.
    let err = client
        .set_file_content(json!({"resource_id": "x", "content": b64(&[7u8; 2048])}))
        .await
        .unwrap_err();
    assert!(err.is_limit(), "{err:?}");
    // A method the API does not have cannot be encoded for gRPC.
    let err = client
        .unary(&format!("{VOLT_API}/NoSuchMethod"), json!({}))
        .await
        .unwrap_err();
    assert!(err.is_schema(), "{err:?}");
    // A request that does not fit the method's message.
    let err = client
        .get_resource(json!({"no_such_field": 1}))
        .await
        .unwrap_err();
    assert!(err.is_schema(), "{err:?}");
    client
        .get_resource(json!({"resource_id": client.volt_id()}))
        .await
        .expect("still fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_picks_grpc_when_there_is_an_address() {
    let volt = TestVolt::start("auto").await;
    let client = VoltClient::from_file(volt.config_path())
        .await
        .expect("connects");
    assert_eq!(client.transport(), Transport::Grpc);

    // A gRPC endpoint that cannot be reached gives way to the gateway.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let mut config = volt.config();
    config["volt"]["address"] = json!(closed.to_string());
    let client = VoltClient::builder()
        .config(config.clone())
        .connect()
        .await
        .expect("connects");
    assert_eq!(client.transport(), Transport::Websocket);
    let err = connect(config, Transport::Grpc).await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");

    let mut config = volt.config();
    config["volt"]
        .as_object_mut()
        .expect("volt")
        .remove("address");
    let client = VoltClient::builder()
        .config(config.clone())
        .connect()
        .await
        .expect("connects");
    assert_eq!(client.transport(), Transport::Websocket);
    let err = connect(config, Transport::Grpc).await.unwrap_err();
    assert!(err.is_config(), "{err:?}");
}
