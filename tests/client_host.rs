//! Hosting a service and calling it: Alice hosts an echo service over her Connect session,
//! Bob calls it through the Volt (directly and through the relay), end-to-end encrypted with
//! Alice; a wrong host key fails the call before anything leaves.

mod support;

use futures_util::StreamExt as _;
use serde_json::{json, Value};
use support::{connect, within, TestVolt};
use tdx_volt::client::{HostOptions, InvocationBody, ServiceRef};
use tdx_volt::proto::volt::Status as Echo;
use tdx_volt::protocol::grpc::Encoded;
use tdx_volt::protocol::schema::MethodKind;
use tdx_volt::{PrivateKey, Transport, VoltClient};

const ECHO: &str = "/test.Echo/Echo";
const ECHO_STREAM: &str = "/test.Echo/EchoStream";

fn echo(code: i32, message: &str) -> Echo {
    Echo {
        code,
        message: message.to_owned(),
        description: String::new(),
    }
}

/// The echo service's proto file: its messages are wire-compatible with the Volt's `Status`.
const ECHO_PROTO: &str = r#"
syntax = "proto3";
package test;
message Status { int32 code = 1; string message = 2; string description = 3; }
service Echo {
  rpc Echo(Status) returns (Status);
  rpc EchoStream(stream Status) returns (stream Status);
}
"#;

/// Saves Alice's echo service, hosted by her own client.
async fn save_service(alice: &VoltClient) -> String {
    save_service_with(alice, json!([])).await
}

/// Saves Alice's echo service, carrying `proto_file`.
async fn save_service_with(alice: &VoltClient, proto_file: Value) -> String {
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
                "proto_file": proto_file,
            },
        }}))
        .await
        .expect("SaveResource");
    saved["resource"]["id"].as_str().expect("id").to_owned()
}

/// Calls EchoStream with three requests and checks the three answers, then the end.
async fn echo_three(caller: &VoltClient, service: &ServiceRef, text: &str) {
    let mut call = caller
        .call_service_as(service, ECHO_STREAM, MethodKind::BidiStreaming)
        .await
        .expect("EchoStream");
    for i in 0..3 {
        call.send(&echo(i, text)).await.expect("sent");
    }
    call.end().await.expect("ended");
    for i in 0..3 {
        let answer = within("an answer", call.next::<Echo>())
            .await
            .expect("open")
            .expect("an answer");
        assert_eq!(answer, echo(i, text));
    }
    assert!(within("the end", call.next_bytes()).await.is_none());
}

/// The service `service_id` as `client` finds it with DiscoverServices (with its proto files).
async fn find_service(client: &VoltClient, service_id: &str) -> Value {
    let found = client
        .discover_services(json!({"service_api": ["test.Echo"], "include_protobuf": true}))
        .await
        .expect("DiscoverServices");
    found["resource"]
        .as_array()
        .and_then(|s| s.iter().find(|r| r["id"] == json!(service_id)))
        .cloned()
        .unwrap_or_else(|| panic!("the service is listed: {found}"))
}

/// Serves every invocation `host` gives, as an echo: unary `Echo` answers its request;
/// `EchoStream` answers each request until the caller ends, then ends; a request with code
/// 99 fails the call.
fn serve_echo(mut host: tdx_volt::client::Host) -> tokio::task::JoinHandle<Vec<Value>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(mut call) = host.next().await {
            seen.push(json!({
                "method": call.method(),
                "aud": call.caller().aud,
                "sub": call.caller().sub,
                "service": call.service_id(),
            }));
            tokio::spawn(async move {
                let mut failed = None;
                while let Ok(Some(request)) = call.request::<Echo>().await {
                    if request.code == 99 {
                        failed = Some(echo(9, "asked to fail"));
                        break;
                    }
                    if call.respond(&request).await.is_err() {
                        return;
                    }
                    if call.method() == ECHO {
                        break;
                    }
                }
                let _ = call
                    .finish(match failed {
                        Some(status) => Err(tdx_volt::Status::new(status.code, status.message, "")),
                        None => Ok(()),
                    })
                    .await;
            });
            if seen.len() >= 1000 {
                break;
            }
        }
        seen
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosted_service_answers_callers_through_the_volt_and_its_relay() {
    let volt = TestVolt::start("host-echo").await;
    let alice = volt.client_over(Transport::Grpc).await;
    let bob_config = volt
        .emulator()
        .issue_client("bob", None)
        .expect("a second client");
    let bob = connect(bob_config.clone(), Transport::Grpc)
        .await
        .expect("Bob connects");
    let service_id = save_service(&alice).await;
    // Bob may find and invoke it.
    let me = bob
        .can_access_resource(json!({"resource_id": service_id}))
        .await
        .expect("CanAccessResource");
    let bob_did = me["identity_did"].as_str().expect("identity").to_owned();
    for access in ["volt:resource-read", "volt:resource-invoke"] {
        alice
            .save_access(
                json!({"access": {"resource_id": service_id, "identity_did": bob_did,
                                            "access": access}}),
            )
            .await
            .expect("SaveAccess");
    }

    let host = alice.host(HostOptions::new()).await.expect("hosting");
    let session = host.session().clone();
    let connection_id = host.session().connection_id().expect("connected");
    let served = serve_echo(host);

    // Bob finds it online, hosted on Alice's connection.
    let resource = find_service(&bob, &service_id).await;
    assert_eq!(
        resource["service_description"]["host_connection_id"],
        json!(connection_id),
        "{resource}"
    );
    let service = ServiceRef::from_resource(&resource).expect("a hosted service");

    // Unary, directly and through the relay.
    let mut relayed_config = bob_config.clone();
    relayed_config["volt"]["relay"] = json!({
        "address": volt.emulator().address(),
        "http_address": volt.emulator().http_address(),
        "ca_pem": volt.emulator().ca_pem(),
    });
    let bob_relayed = connect(relayed_config, Transport::Grpc)
        .await
        .expect("Bob through the relay");
    for (n, caller) in [&bob, &bob_relayed].into_iter().enumerate() {
        let answer: Echo = within(
            "echo",
            caller.call_service_unary(&service, ECHO, &echo(n as i32, "hello")),
        )
        .await
        .expect("Echo");
        assert_eq!(answer, echo(n as i32, "hello"));
    }

    // Bidirectional: three requests, three answers, then the end.
    echo_three(&bob, &service, "again").await;

    // The host's error is the caller's status error.
    let err = bob
        .call_service_unary::<Echo, Echo>(&service, ECHO, &echo(99, "fail"))
        .await
        .expect_err("the host fails it");
    assert!(err.is_status() && !err.is_tunnel(), "{err:?}");
    assert_eq!(err.status().map(|s| s.code), Some(9), "{err:?}");

    // A host key that is not the host's: nothing leaves, the call fails.
    let mut forged = resource.clone();
    let stranger = PrivateKey::from_ed25519_seed(&[5; 32]);
    forged["service_description"]["host_public_key"] =
        json!(stranger.public_key().to_spki_pem().expect("PEM"));
    let forged = ServiceRef::from_resource(&forged).expect("well formed");
    let err = bob
        .call_service_unary::<Echo, Echo>(&forged, ECHO, &echo(1, "secret"))
        .await
        .expect_err("the key exchange does not verify");
    assert!(err.is_key_exchange(), "{err:?}");

    // The host saw who called: tokens for Alice, in Bob's session.
    session.close().await;
    let seen = within("the host to stop", served).await.expect("host");
    let bob_session = bob_config["credential"]["session_id"].clone();
    assert!(seen.len() >= 4, "{seen:?}");
    for call in &seen {
        assert_eq!(call["sub"], bob_session, "{call}");
        assert_eq!(call["service"], json!(service_id), "{call}");
    }
}

/// A server shaped as tonic generates them (`tonic::server::Grpc` over a codec, a service per
/// method), answering the echo methods: what `Host::serve` takes.
#[derive(Clone)]
struct TonicEcho;

type Answer = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<http::Response<tonic::body::Body>, std::convert::Infallible>,
            > + Send,
    >,
>;

impl tower_service::Service<http::Request<InvocationBody>> for TonicEcho {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = Answer;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<InvocationBody>) -> Answer {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(Encoded);
            Ok(match request.uri().path() {
                ECHO => grpc.unary(Unary, request).await,
                ECHO_STREAM => grpc.streaming(Streaming, request).await,
                other => tonic::Status::unimplemented(other.to_owned()).into_http(),
            })
        })
    }
}

struct Unary;

impl tonic::server::UnaryService<bytes::Bytes> for Unary {
    type Response = bytes::Bytes;
    type Future = std::future::Ready<Result<tonic::Response<bytes::Bytes>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<bytes::Bytes>) -> Self::Future {
        let bytes = request.into_inner();
        let asked = <Echo as prost::Message>::decode(bytes.clone()).map(|e| e.code);
        std::future::ready(match asked {
            Ok(99) => Err(tonic::Status::failed_precondition("asked to fail")),
            _ => Ok(tonic::Response::new(bytes)),
        })
    }
}

struct Streaming;

impl tonic::server::StreamingService<bytes::Bytes> for Streaming {
    type Response = bytes::Bytes;
    type ResponseStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, tonic::Status>> + Send>,
    >;
    type Future = std::future::Ready<Result<tonic::Response<Self::ResponseStream>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<tonic::Streaming<bytes::Bytes>>) -> Self::Future {
        let stream: Self::ResponseStream = Box::pin(request.into_inner());
        std::future::ready(Ok(tonic::Response::new(stream)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tonic_shaped_server_hosts_the_service() {
    let volt = TestVolt::start("host-tonic").await;
    let alice = volt.client_over(Transport::Grpc).await;
    let service_id = save_service(&alice).await;
    let host = alice.host(HostOptions::new()).await.expect("hosting");
    let session = host.session().clone();
    let serving = tokio::spawn(host.serve(TonicEcho));
    // Alice calls her own service (the owner may), through the Volt to her host.
    let resource = find_service(&alice, &service_id).await;
    let service = ServiceRef::from_resource(&resource).expect("a hosted service");

    let answer: Echo = alice
        .call_service_unary(&service, ECHO, &echo(7, "tonic"))
        .await
        .expect("Echo");
    assert_eq!(answer, echo(7, "tonic"));
    let err = alice
        .call_service_unary::<Echo, Echo>(&service, ECHO, &echo(99, "fail"))
        .await
        .expect_err("the server fails it");
    let status = err.status().expect("a status");
    assert_eq!((status.code, status.message.as_str()), (9, "asked to fail"));

    echo_three(&alice, &service, "streamed").await;

    let err = alice
        .call_service_unary::<Echo, Echo>(&service, "/test.Echo/Nothing", &echo(1, "x"))
        .await
        .expect_err("no such method");
    assert_eq!(err.status().map(|s| s.code), Some(12), "{err:?}");

    session.close().await;
    within("serve to return", serving).await.expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_on_the_gateway_speak_json_to_the_host() {
    let volt = TestVolt::start("host-json").await;
    let alice = volt.client_over(Transport::Grpc).await;
    let proto_file = json!([{"file_path": "echo.proto", "protobuf": ECHO_PROTO}]);
    let service_id = save_service_with(&alice, proto_file).await;
    let protos = tdx_volt::client::ServiceProtos::compile([("echo.proto", ECHO_PROTO)])
        .expect("the proto compiles");
    let host = alice
        .host(HostOptions::new().protos(protos))
        .await
        .expect("hosting");
    let session = host.session().clone();
    let served = serve_echo(host);

    let mut relayed = volt.config();
    relayed["volt"]["relay"] = json!({
        "address": volt.emulator().address(),
        "http_address": volt.emulator().http_address(),
        "ca_pem": volt.emulator().ca_pem(),
    });
    let gateway = volt.client_over(Transport::Websocket).await;
    let gateway_relayed = connect(relayed, Transport::Websocket)
        .await
        .expect("through the relay's gateway");
    let grpc = volt.client_over(Transport::Grpc).await;
    let service = ServiceRef::from_resource(&find_service(&gateway, &service_id).await)
        .expect("a hosted service");
    assert_eq!(
        service.method(ECHO_STREAM).map(|m| m.kind()),
        Some(MethodKind::BidiStreaming),
        "the shape comes from the service's proto file"
    );

    for caller in [&gateway, &gateway_relayed, &grpc] {
        let transport = caller.transport();
        // JSON, whatever the transport carries.
        let answer = within(
            "Echo in JSON",
            caller.call_service_json(&service, ECHO, json!({"code": 4, "message": "json"})),
        )
        .await
        .unwrap_or_else(|e| panic!("{transport:?}: {e:?}"));
        assert_eq!(answer, json!({"code": 4, "message": "json"}));
        // prost types, whatever the transport carries.
        let typed: Echo = within(
            "Echo typed",
            caller.call_service_unary(&service, ECHO, &echo(5, "typed")),
        )
        .await
        .unwrap_or_else(|e| panic!("{transport:?}: {e:?}"));
        assert_eq!(typed, echo(5, "typed"));
        // Bidirectional, its shape from the proto file.
        let mut call = caller
            .call_service(&service, ECHO_STREAM)
            .await
            .expect("EchoStream");
        for i in 0..3 {
            call.send_json(json!({"code": i, "message": "stream"}))
                .await
                .expect("sent");
        }
        call.end().await.expect("ended");
        for i in 0..3 {
            let answer = within("an answer", call.next_json())
                .await
                .expect("open")
                .unwrap_or_else(|e| panic!("{transport:?}: {e:?}"));
            // proto3 JSON leaves out a field at its default (code 0).
            assert_eq!(answer["code"].as_i64().unwrap_or(0), i, "{transport:?}");
            assert_eq!(answer["message"], json!("stream"), "{transport:?}");
        }
        assert!(within("the end", call.next_json()).await.is_none());
        // The host's failure is the caller's status, code and message.
        let err = caller
            .call_service_json(&service, ECHO, json!({"code": 99}))
            .await
            .expect_err("the host fails it");
        assert!(
            err.is_status() && !err.is_tunnel(),
            "{transport:?}: {err:?}"
        );
        assert_eq!(err.status().map(|s| s.code), Some(9), "{err:?}");
        assert!(err.to_string().contains("asked to fail"), "{err}");
        // A request that does not fit the method never leaves.
        let err = caller
            .call_service_json(&service, ECHO, json!({"nope": 1}))
            .await
            .expect_err("refused");
        assert_eq!(err.kind(), tdx_volt::ErrorKind::Schema, "{err:?}");
    }

    // A host key that is not the host's fails a gateway call before anything leaves.
    let mut forged = find_service(&gateway, &service_id).await;
    let stranger = PrivateKey::from_ed25519_seed(&[6; 32]);
    forged["service_description"]["host_public_key"] =
        json!(stranger.public_key().to_spki_pem().expect("PEM"));
    let forged = ServiceRef::from_resource(&forged).expect("well formed");
    let err = gateway
        .call_service_json(&forged, ECHO, json!({"message": "secret"}))
        .await
        .expect_err("the key exchange does not verify");
    assert!(err.is_key_exchange(), "{err:?}");

    session.close().await;
    let seen = within("the host to stop", served).await.expect("host");
    // Three transports, four calls each that reached the host.
    assert_eq!(seen.len(), 12, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_the_proto_files_refuses_json_callers() {
    let volt = TestVolt::start("host-no-json").await;
    let alice = volt.client_over(Transport::Grpc).await;
    let proto_file = json!([{"file_path": "echo.proto", "protobuf": ECHO_PROTO}]);
    let service_id = save_service_with(&alice, proto_file).await;
    let host = alice.host(HostOptions::new()).await.expect("hosting");
    let _served = serve_echo(host);
    let gateway = volt.client_over(Transport::Websocket).await;
    let service = ServiceRef::from_resource(&find_service(&gateway, &service_id).await)
        .expect("a hosted service");
    let err = gateway
        .call_service_json(&service, ECHO, json!({"message": "hi"}))
        .await
        .expect_err("no schema for JSON");
    assert_eq!(err.status().map(|s| s.code), Some(12), "{err:?}");
    // Protobuf callers are served all the same.
    let grpc = volt.client_over(Transport::Grpc).await;
    let answer: Echo = grpc
        .call_service_unary(&service, ECHO, &echo(1, "hi"))
        .await
        .expect("Echo");
    assert_eq!(answer, echo(1, "hi"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_can_ask_the_volt_about_each_caller() {
    let volt = TestVolt::start("host-check").await;
    let alice = volt.client_over(Transport::Grpc).await;
    let service_id = save_service(&alice).await;
    let bob_config = volt.emulator().issue_client("bob", None).expect("Bob");
    let bob = connect(bob_config, Transport::Grpc).await.expect("Bob");
    let me = bob
        .can_access_resource(json!({"resource_id": service_id}))
        .await
        .expect("CanAccessResource");
    let bob_did = me["identity_did"].as_str().expect("identity").to_owned();
    for access in ["volt:resource-read", "volt:resource-invoke"] {
        alice
            .save_access(json!({"access": {"resource_id": service_id,
                                           "identity_did": bob_did, "access": access}}))
            .await
            .expect("SaveAccess");
    }
    // The host wants its callers to be able to write the service: Bob may only invoke it.
    let host = alice
        .host(HostOptions::new().check_callers("volt:resource-write"))
        .await
        .expect("hosting");
    let session = host.session().clone();
    let served = serve_echo(host);
    let service = ServiceRef::from_resource(&find_service(&bob, &service_id).await)
        .expect("a hosted service");

    let err = within(
        "Bob's call",
        bob.call_service_unary::<Echo, Echo>(&service, ECHO, &echo(1, "hi")),
    )
    .await
    .expect_err("refused by the host's check");
    assert_eq!(err.status().map(|s| s.code), Some(7), "{err:?}");
    // The owner may do anything: the Volt permits, the host serves.
    let answer: Echo = within(
        "the owner's call",
        alice.call_service_unary(&service, ECHO, &echo(2, "owner")),
    )
    .await
    .expect("served");
    assert_eq!(answer, echo(2, "owner"));
    // Only the owner's call reached the application.
    session.close().await;
    let seen = within("the host to stop", served).await.expect("host");
    assert_eq!(seen.len(), 1, "{seen:?}");
}
