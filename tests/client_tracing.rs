//! Tracing: every call has one span (`tdx_volt::call`) with its method, transport, call id,
//! status and duration; every connection attempt one (`tdx_volt::connect`); and nothing the
//! client records holds a token or its key. A capturing layer, set as the test thread's
//! default subscriber, records what the client reports (each test runs on one thread, so it
//! sees its own client and emulator only).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};
use support::{connect, new_wire, within, TestVolt};
use tdx_volt::{ConnectionState, ReconnectPolicy, Transport, VoltClient};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

const GET_RESOURCE: &str = "/tdx.volt_api.volt.v1.VoltAPI/GetResource";
const EXECUTE: &str = "/tdx.volt_api.data.v1.SqliteDatabaseAPI/Execute";
const SUBSCRIBE_WIRE: &str = "/tdx.volt_api.volt.v1.WireAPI/SubscribeWire";

/// A span as recorded: its name, target, fields (as text) and whether it has closed.
#[derive(Debug, Clone)]
struct SpanRecord {
    name: String,
    target: String,
    fields: BTreeMap<String, String>,
    closed: bool,
}

impl SpanRecord {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct Captured {
    /// Open spans by id (the registry reuses the ids of closed spans).
    open: HashMap<u64, SpanRecord>,
    closed: Vec<SpanRecord>,
    /// Events: target, then fields.
    events: Vec<(String, BTreeMap<String, String>)>,
}

/// Records every span and event of the client crate (targets `tdx_volt::...`).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Captured>>);

impl Capture {
    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every span so far, open or closed.
    fn spans(&self) -> Vec<SpanRecord> {
        let captured = self.lock();
        let mut spans = captured.closed.clone();
        spans.extend(captured.open.values().cloned());
        spans
    }

    /// The call spans of `method`.
    fn calls(&self, method: &str) -> Vec<SpanRecord> {
        self.spans()
            .into_iter()
            .filter(|s| s.target == "tdx_volt::call" && s.field("method") == Some(method))
            .collect()
    }

    /// The connection attempts' spans.
    fn connects(&self) -> Vec<SpanRecord> {
        self.spans()
            .into_iter()
            .filter(|s| s.target == "tdx_volt::connect" && s.name == "volt.connect")
            .collect()
    }

    /// Everything recorded, as text.
    fn text(&self) -> String {
        let captured = self.lock();
        let spans = captured.closed.iter().chain(captured.open.values());
        let mut text = String::new();
        for span in spans {
            text.push_str(&format!(
                "{} {} {:?}\n",
                span.target, span.name, span.fields
            ));
        }
        for (target, fields) in &captured.events {
            text.push_str(&format!("{target} {fields:?}\n"));
        }
        text
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        metadata.target().starts_with("tdx_volt::")
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let metadata = attrs.metadata();
        let span = SpanRecord {
            name: metadata.name().to_owned(),
            target: metadata.target().to_owned(),
            fields,
            closed: false,
        };
        self.lock().open.insert(id.into_u64(), span);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(span) = self.lock().open.get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let target = event.metadata().target().to_owned();
        self.lock().events.push((target, fields));
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        let mut captured = self.lock();
        if let Some(mut span) = captured.open.remove(&id.into_u64()) {
            span.closed = true;
            captured.closed.push(span);
        }
    }
}

/// A capture, the test thread's default subscriber until the guard goes.
fn capture() -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let guard = tracing_subscriber::registry()
        .with(capture.clone())
        .set_default();
    (capture, guard)
}

/// The closed call spans of `method` over `transport`, in the order they closed.
fn closed_calls(capture: &Capture, method: &str, transport: &str) -> Vec<SpanRecord> {
    capture
        .calls(method)
        .into_iter()
        .filter(|s| s.closed && s.field("transport") == Some(transport))
        .collect()
}

/// The one call span of `method` over `transport`, closed.
fn one_call(capture: &Capture, method: &str, transport: &str) -> SpanRecord {
    let calls: Vec<_> = capture
        .calls(method)
        .into_iter()
        .filter(|s| s.field("transport") == Some(transport))
        .collect();
    assert_eq!(calls.len(), 1, "{method} over {transport}: {calls:#?}");
    let call = calls.into_iter().next().expect("one");
    assert_eq!(call.name, "volt.call");
    assert!(call.closed, "{call:?}");
    let elapsed: u64 = call
        .field("elapsed_us")
        .expect("a duration")
        .parse()
        .expect("microseconds");
    assert!(elapsed < 60_000_000, "{call:?}");
    call
}

/// Nothing recorded holds an identity token (a JWT: base64url JSON, `eyJ...`) or a piece of
/// the client's private key.
fn assert_no_secrets(capture: &Capture, config: &Value) {
    let text = capture.text();
    assert!(!text.is_empty());
    assert!(!text.contains("eyJ"), "a token was recorded:\n{text}");
    let key = config["credential"]["key"].as_str().expect("key PEM");
    let body: String = key
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    assert!(body.len() >= 32, "a key body: {key:?}");
    for piece in body
        .as_bytes()
        .chunks(16)
        .map(|c| String::from_utf8_lossy(c))
    {
        if piece.len() == 16 {
            assert!(
                !text.contains(&*piece),
                "key material was recorded:\n{text}"
            );
        }
    }
    assert!(!text.contains("PRIVATE KEY"), "{text}");
}

fn address_of(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, rest)| rest)
}

async fn unary_and_failing_calls(transport: Transport, label: &str) {
    let (capture, _guard) = capture();
    let volt = TestVolt::start("trace-unary").await;
    let client = volt.client_over(transport).await;
    assert_eq!(client.transport(), transport);

    // The first connection: one attempt, connected, to the Volt's host:port.
    let connects = capture.connects();
    assert_eq!(connects.len(), 1, "{connects:#?}");
    let connected = &connects[0];
    assert_eq!(connected.field("transport"), Some(label));
    assert_eq!(connected.field("outcome"), Some("connected"));
    assert_eq!(connected.field("attempt"), Some("1"));
    assert_eq!(connected.field("reconnect"), Some("false"));
    assert!(connected.field("elapsed_us").is_some(), "{connected:?}");
    let address = match transport {
        Transport::Grpc => volt.emulator().address().to_owned(),
        _ => address_of(volt.emulator().http_address()).to_owned(),
    };
    assert_eq!(connected.field("address"), Some(&*address));
    assert!(connected.closed);

    let volt_id = client.volt_id().to_owned();
    within(
        "GetResource",
        client.get_resource(json!({"resource_id": volt_id})),
    )
    .await
    .expect("GetResource");
    let call = one_call(&capture, GET_RESOURCE, label);
    assert_eq!(call.field("status"), Some("ok"), "{call:?}");
    assert_eq!(call.field("code"), None, "{call:?}");
    match transport {
        // The gateway numbers its calls; gRPC has no id of its own.
        Transport::Websocket => {
            let id: u64 = call
                .field("call_id")
                .expect("an id")
                .parse()
                .expect("a number");
            assert!(id >= 1, "{call:?}");
        }
        _ => assert_eq!(call.field("call_id"), None, "{call:?}"),
    }

    // A call the Volt fails records its status code.
    let error = within(
        "a missing resource",
        client.get_resource(json!({"resource_id": "no-such-resource"})),
    )
    .await
    .expect_err("an unknown resource is an error");
    assert_eq!(error.status().map(|s| s.code), Some(5), "{error:?}");
    let calls = closed_calls(&capture, GET_RESOURCE, label);
    assert_eq!(calls.len(), 2, "{calls:#?}");
    let failed = &calls[1];
    assert_eq!(failed.field("code"), Some("5"), "{failed:?}");
    assert_eq!(failed.field("status"), Some("NOT_FOUND"), "{failed:?}");
    assert!(failed.field("elapsed_us").is_some(), "{failed:?}");

    // A call that never reaches the transport has a span too, with its error's kind.
    let refused = client
        .unary("NotAPath", json!({}))
        .await
        .expect_err("refused");
    assert!(refused.is_schema());
    let call = one_call(&capture, "NotAPath", label);
    assert_eq!(call.field("status"), Some("schema"), "{call:?}");

    assert_no_secrets(&capture, &volt.config());
}

#[tokio::test]
async fn unary_calls_over_grpc_have_one_span_each() {
    unary_and_failing_calls(Transport::Grpc, "grpc").await;
}

#[tokio::test]
async fn unary_calls_over_the_websocket_gateway_have_one_span_each() {
    unary_and_failing_calls(Transport::Websocket, "websocket").await;
}

async fn streaming_calls(transport: Transport, label: &str) {
    let (capture, _guard) = capture();
    let volt = TestVolt::start("trace-stream").await;
    let client = volt.client_over(transport).await;
    let created = client
        .create_database(json!({"name": "traced"}))
        .await
        .expect("CreateDatabase");
    let database_id = created["resource"]["id"].as_str().expect("id").to_owned();

    // A call read to its end: its span says ok before the call goes, and closes with it.
    let request = json!({"start": {"database_id": database_id, "statement": "SELECT 1 AS one"}});
    let mut call = within("Execute", client.streaming(EXECUTE, Some(request)))
        .await
        .expect("Execute");
    call.end().await.expect("end");
    let mut messages = 0;
    while within("rows", call.message())
        .await
        .expect("rows")
        .is_some()
    {
        messages += 1;
    }
    assert!(messages > 0);
    let open = capture.calls(EXECUTE);
    assert_eq!(open.len(), 1, "{open:#?}");
    assert_eq!(open[0].field("status"), Some("ok"), "{open:?}");
    assert!(open[0].field("elapsed_us").is_some(), "{open:?}");
    assert!(!open[0].closed, "the call is still held");
    drop(call);
    let ended = one_call(&capture, EXECUTE, label);
    assert_eq!(ended.field("status"), Some("ok"));

    // A call dropped while live is cancelled.
    let wire_id = new_wire(&client, "traced").await;
    let subscription = within(
        "SubscribeWire",
        client.streaming(SUBSCRIBE_WIRE, Some(json!({"wire_id": wire_id}))),
    )
    .await
    .expect("SubscribeWire");
    assert!(!capture.calls(SUBSCRIBE_WIRE)[0].closed);
    drop(subscription);
    let cancelled = one_call(&capture, SUBSCRIBE_WIRE, label);
    assert_eq!(
        cancelled.field("status"),
        Some("cancelled"),
        "{cancelled:?}"
    );

    assert_no_secrets(&capture, &volt.config());
}

#[tokio::test]
async fn streaming_calls_over_grpc_close_their_span_when_they_end() {
    streaming_calls(Transport::Grpc, "grpc").await;
}

#[tokio::test]
async fn streaming_calls_over_the_websocket_gateway_close_their_span_when_they_end() {
    streaming_calls(Transport::Websocket, "websocket").await;
}

#[tokio::test]
async fn a_failed_connection_attempt_has_a_span() {
    let (capture, _guard) = capture();
    let volt = TestVolt::start("trace-connect").await;

    // Nothing listens there: the attempt fails, with its error, and no credential.
    let mut config = volt.config();
    config["volt"]["address"] = json!("127.0.0.1:1");
    let refused = connect(config, Transport::Grpc)
        .await
        .expect_err("nothing listens");
    let failed: Vec<_> = capture
        .connects()
        .into_iter()
        .filter(|s| s.field("address") == Some("127.0.0.1:1"))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0].field("outcome"), Some("failed"), "{failed:?}");
    assert_eq!(failed[0].field("transport"), Some("grpc"));
    assert!(failed[0].field("error").is_some(), "{refused}: {failed:?}");

    assert_no_secrets(&capture, &volt.config());
}

/// A unary call over `client` has one span, labelled `label`, with status ok.
async fn traced_get_resource(capture: &Capture, client: &VoltClient, label: &str) -> SpanRecord {
    let volt_id = client.volt_id().to_owned();
    within(
        "GetResource",
        client.get_resource(json!({"resource_id": volt_id})),
    )
    .await
    .expect("GetResource");
    let call = one_call(capture, GET_RESOURCE, label);
    assert_eq!(call.field("status"), Some("ok"), "{call:?}");
    call
}

#[tokio::test]
async fn calls_through_a_relay_tunnel_are_labelled_tunnel() {
    let (capture, _guard) = capture();
    let volt = TestVolt::start("trace-tunnel").await;
    let mut config = volt.config();
    let emulator = volt.emulator();
    config["volt"]["relay"] = json!({
        "address": emulator.address(),
        "http_address": emulator.http_address(),
        "ca_pem": emulator.ca_pem(),
    });
    let client = connect(config.clone(), Transport::Grpc)
        .await
        .expect("relayed over gRPC");
    traced_get_resource(&capture, &client, "tunnel").await;
    assert_no_secrets(&capture, &config);
}

#[tokio::test]
async fn calls_in_the_older_protocol_are_labelled_legacy() {
    let (capture, _guard) = capture();
    let volt = TestVolt::start_with("trace-legacy", |b| b.legacy(true)).await;
    let config = volt.config();
    let client = connect(config.clone(), Transport::Auto)
        .await
        .expect("connects");
    assert_eq!(client.transport(), Transport::LegacyWebsocket);
    let connects = capture.connects();
    assert_eq!(connects.len(), 1, "{connects:#?}");
    assert_eq!(connects[0].field("transport"), Some("legacy"));
    let call = traced_get_resource(&capture, &client, "legacy").await;
    assert!(call.field("call_id").is_some(), "{call:?}");
    assert_no_secrets(&capture, &config);
}

/// The Volt goes and comes back: the loss is an event, the attempts while it is down fail in
/// spans of their own (with the backoff as events), and the one that succeeds is a reconnect.
async fn reconnects(transport: Transport, label: &str) {
    let (capture, _guard) = capture();
    let mut volt = TestVolt::start("trace-reconnect").await;
    let policy = ReconnectPolicy::default()
        .with_initial_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_millis(200));
    let client = volt.client_with(transport, |b| b.reconnect(policy)).await;
    let root = json!({"resource_id": client.volt_id()});
    client
        .get_resource(root.clone())
        .await
        .expect("a first call");

    let addresses = volt.addresses();
    volt.stop().await;
    // Calls while it is down fail (the first may meet the closing connection); one waits for
    // the connection, whose attempts fail.
    let short = client.with_request_timeout(Duration::from_millis(700));
    let mut state = client.connection_state();
    for _ in 0..3 {
        let _ = short
            .get_resource(root.clone())
            .await
            .expect_err("nobody there");
        if matches!(*state.borrow(), ConnectionState::BackingOff { .. }) {
            break;
        }
    }
    within(
        "backing off",
        state.wait_for(|s| matches!(s, ConnectionState::BackingOff { .. })),
    )
    .await
    .expect("state");
    volt.start_on(addresses).await;
    within("a call once the Volt is back", client.get_resource(root))
        .await
        .expect("the client reconnects");

    let connects = capture.connects();
    let reconnects: Vec<_> = connects
        .iter()
        .filter(|s| s.field("reconnect") == Some("true"))
        .collect();
    assert!(
        reconnects
            .iter()
            .all(|s| s.field("transport") == Some(label)),
        "{connects:#?}"
    );
    let failed = reconnects
        .iter()
        .find(|s| s.field("outcome") == Some("failed"))
        .unwrap_or_else(|| panic!("a failed attempt: {connects:#?}"));
    assert!(failed.field("error").is_some(), "{failed:?}");
    let last = reconnects.last().expect("attempts");
    assert_eq!(last.field("outcome"), Some("connected"), "{connects:#?}");
    let attempt: u32 = last
        .field("attempt")
        .expect("a number")
        .parse()
        .expect("u32");
    assert!(attempt >= 2, "after a failure: {last:?}");

    let events = capture.lock().events.clone();
    let said = |message: &str| {
        events.iter().any(|(target, fields)| {
            target == "tdx_volt::connect"
                && fields.get("message").map(String::as_str) == Some(message)
        })
    };
    assert!(said("volt connection lost"), "{}", capture.text());
    assert!(said("volt connection: backing off"), "{}", capture.text());
    let delays = events
        .iter()
        .filter_map(|(_, fields)| fields.get("delay_ms"))
        .count();
    assert!(delays >= 1, "{}", capture.text());

    assert_no_secrets(&capture, &volt.config());
}

#[tokio::test]
async fn websocket_reconnection_attempts_have_spans() {
    reconnects(Transport::Websocket, "websocket").await;
}

#[tokio::test]
async fn grpc_reconnection_attempts_have_spans() {
    reconnects(Transport::Grpc, "grpc").await;
}

const ECHO: &str = "/test.Echo/Echo";
const ECHO_STREAM: &str = "/test.Echo/EchoStream";

/// The echo service's proto file (messages wire-compatible with the Volt's `Status`).
const ECHO_PROTO: &str = r#"
syntax = "proto3";
package test;
message Status { int32 code = 1; string message = 2; string description = 3; }
service Echo {
  rpc Echo(Status) returns (Status);
  rpc EchoStream(stream Status) returns (stream Status);
}
"#;

/// Serves `host`'s invocations as an echo until the caller ends; a request with code 99
/// fails the call with code 9.
fn serve_echo(mut host: tdx_volt::client::Host) {
    use futures_util::StreamExt as _;
    use tdx_volt::proto::volt::Status as Echo;
    tokio::spawn(async move {
        while let Some(mut call) = host.next().await {
            tokio::spawn(async move {
                let mut outcome = Ok(());
                while let Ok(Some(request)) = call.request::<Echo>().await {
                    if request.code == 99 {
                        outcome = Err(tdx_volt::Status::new(9, "asked to fail", ""));
                        break;
                    }
                    if call.respond(&request).await.is_err() {
                        return;
                    }
                    if call.method() == ECHO {
                        break;
                    }
                }
                let _ = call.finish(outcome).await;
            });
        }
    });
}

#[tokio::test]
async fn calls_to_hosted_services_have_spans() {
    use tdx_volt::client::{HostOptions, ServiceProtos, ServiceRef};

    let (capture, _guard) = capture();
    let volt = TestVolt::start("trace-host").await;
    let alice = volt.client_over(Transport::Grpc).await;
    let config = alice.config();
    let key = config.private_key(None).expect("key");
    let saved = alice
        .save_resource(json!({"create": true, "resource": {
            "name": "echo",
            "kind": ["volt:service"],
            "service_description": {
                "host_type": "SERVICE_HOST_TYPE_RELAYED",
                "host_client_id": config.credential().client_id,
                "host_public_key": key.public_key().to_spki_pem().expect("PEM"),
                "service_api": ["test.Echo"],
                "proto_file": [{"file_path": "echo.proto", "protobuf": ECHO_PROTO}],
            },
        }}))
        .await
        .expect("SaveResource");
    let protos = ServiceProtos::compile([("echo.proto", ECHO_PROTO)]).expect("compiles");
    let host = alice
        .host(HostOptions::new().protos(protos))
        .await
        .expect("hosting");
    serve_echo(host);
    let resource = alice
        .get_resource(json!({"resource_id": saved["resource"]["id"]}))
        .await
        .expect("the service");
    let service = ServiceRef::from_resource(&resource["resource"]).expect("a service");

    let grpc = volt.client_over(Transport::Grpc).await;
    let gateway = volt.client_over(Transport::Websocket).await;
    for (caller, label) in [(&grpc, "tunnel"), (&gateway, "websocket")] {
        let answer = within(
            "Echo",
            caller.call_service_json(&service, ECHO, json!({"code": 4, "message": "hi"})),
        )
        .await
        .unwrap_or_else(|e| panic!("{label}: {e:?}"));
        assert_eq!(answer["code"], json!(4));
        let failed = within(
            "Echo, failed by the host",
            caller.call_service_json(&service, ECHO, json!({"code": 99})),
        )
        .await
        .expect_err("the host fails it");
        assert_eq!(failed.status().map(|s| s.code), Some(9), "{failed:?}");
        let calls = closed_calls(&capture, ECHO, label);
        assert_eq!(calls.len(), 2, "{label}: {calls:#?}");
        assert_eq!(calls[0].field("status"), Some("ok"), "{calls:#?}");
        assert_eq!(calls[1].field("status"), Some("FAILED_PRECONDITION"));
        assert_eq!(calls[1].field("code"), Some("9"), "{calls:#?}");

        // A streaming call read to its end.
        let mut call = caller
            .call_service(&service, ECHO_STREAM)
            .await
            .expect("EchoStream");
        call.send_json(json!({"code": 1, "message": "a"}))
            .await
            .expect("sent");
        call.end().await.expect("ended");
        within("an answer", call.next_json())
            .await
            .expect("open")
            .expect("an answer");
        assert!(within("the end", call.next_json()).await.is_none());
        drop(call);
        let stream = one_call(&capture, ECHO_STREAM, label);
        assert_eq!(stream.field("status"), Some("ok"), "{stream:?}");
    }
    assert_no_secrets(&capture, &volt.config());
}
