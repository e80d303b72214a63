//! Clients hosting services: a host holds a Connect stream with `accept_invocation` and answers
//! the invocations the emulator routes to it, by hand, in proto3 JSON; a caller tunnels to it
//! over `VoltAPI/Invoke` with the SDK's sans-IO tunnel helpers. The emulator only relays: the
//! key exchange is end to end, signed by the host's own key.

#[path = "support/sdk.rs"]
mod sdk;
mod support;

use std::time::Duration;

use prost::Message as _;
use serde_json::{json, Value};
use support::{TestVolt, WAIT};
use tdx_volt::client::{Call, CallEvent, ServiceRef};
use tdx_volt::proto::volt::{
    connect_response, invoke_request, remote_request, remote_response, ConnectResponse,
    InvokeRequest, InvokeResponse, RemoteResponse,
};
use tdx_volt::protocol::body::Body;
use tdx_volt::protocol::exchange::ClientKeyExchange;
use tdx_volt::protocol::schema::MethodKind;
use tdx_volt::protocol::token::{unix_now, Claims, IdentityToken};
use tdx_volt::protocol::tunnel::{self, Downstream, TunnelKey, INVOKE_PATH};
use tdx_volt::{ClientConfig, PrivateKey, PublicKey, Transport, VoltClient};
use tdx_volt_emulator::proto_json::{from_json, to_json};

const CONNECT: &str = "/tdx.volt_api.volt.v1.VoltAPI/Connect";
const ECHO: &str = "/test.v1.Echo/Say";
const UNAVAILABLE: i32 = 14;

/// A client of the emulator: its SDK client, key, id and session.
struct Party {
    client: VoltClient,
    key: PrivateKey,
    id: String,
    session: String,
}

/// A key of our own for one that is not `Clone`.
fn copy(key: &PrivateKey) -> PrivateKey {
    PrivateKey::from_pem(&key.to_pkcs8_pem().expect("PEM"), None).expect("key")
}

async fn party(volt: &TestVolt, name: &str) -> Party {
    let json = volt.emulator().issue_client(name, None).expect("issued");
    let config = ClientConfig::from_value(json.clone()).expect("config");
    Party {
        key: config.private_key(None).expect("key"),
        id: config.credential().client_id.clone(),
        session: config.credential().session_id.clone().expect("session"),
        client: sdk::client(json, Transport::Grpc).await,
    }
}

/// The Volt's owner (who passes every access check), as a caller.
async fn owner(volt: &TestVolt) -> Party {
    Party {
        client: sdk::owner(volt, Transport::Grpc).await,
        key: copy(&volt.key),
        id: volt.config.credential().client_id.clone(),
        session: volt.session().expect("session"),
    }
}

/// A service resource `host` creates (so hosts: no `host_client_id`); returns its id.
async fn create_service(host: &Party) -> String {
    let saved = sdk::ok(
        &host.client,
        "SaveResource",
        json!({"resource": {
            "name": "echo",
            "kind": ["volt:service"],
            "service_description": {
                "host_type": "SERVICE_HOST_TYPE_RELAYED",
                "service_api": ["test.v1.Echo"],
                "proto_file": [{"file_path": "echo.proto", "protobuf": "syntax = \"proto3\";"}],
            },
        }}),
    )
    .await;
    sdk::id_of(&saved)
}

async fn next_event(call: &mut Call) -> CallEvent {
    match tokio::time::timeout(WAIT, futures_util::StreamExt::next(call)).await {
        Ok(Some(event)) => event,
        Ok(None) => CallEvent::End,
        Err(_) => panic!("{}: nothing within {WAIT:?}", call.path()),
    }
}

/// The host's side: its Connect stream and its key.
struct Host {
    call: Call,
    key: PrivateKey,
    connection_id: String,
}

impl Host {
    /// Opens the Connect stream with `accept_invocation` and `online_services`.
    async fn online(party: &Party) -> Host {
        let hello = json!({"hello": {"accept_invocation": true, "online_services": true}});
        let mut call = party
            .client
            .streaming(CONNECT, Some(hello))
            .await
            .expect("connect");
        let ack = match next_event(&mut call).await {
            CallEvent::Data(v) => v,
            other => panic!("no acknowledge: {other:?}"),
        };
        let connection_id = ack["acknowledge"]["connection_id"]
            .as_str()
            .expect("connection id")
            .to_owned();
        Host {
            call,
            key: copy(&party.key),
            connection_id,
        }
    }

    /// The next `invoke_request` the Volt sends down (pings and events are skipped).
    async fn invoked(&mut self) -> InvokeRequest {
        loop {
            let value = match next_event(&mut self.call).await {
                CallEvent::Data(v) => v,
                other => panic!("the host's stream: {other:?}"),
            };
            let response: ConnectResponse = from_json(&value).expect("ConnectResponse");
            if let Some(connect_response::Payload::InvokeRequest(r)) = response.payload {
                return r;
            }
        }
    }

    async fn answer(&self, response: InvokeResponse) {
        let answer = to_json(&response).expect("JSON");
        self.call
            .send(json!({"invoke_response": answer}))
            .await
            .expect("host sends");
    }

    /// Takes an opening and answers its key exchange, signed with the host's own key.
    async fn accept(&mut self) -> (u64, TunnelKey, InvokeRequest) {
        let opening = self.invoked().await;
        assert_ne!(opening.invoke_id, 0, "invoke ids are never 0");
        let token = IdentityToken::parse(&opening.token).expect("a forwarded token");
        let k = token.claims_unverified().expect("claims").k.expect("k");
        let (exchange, key) = tunnel::answer_key_exchange(&k, &self.key).expect("exchange");
        self.answer(InvokeResponse {
            invoke_id: opening.invoke_id,
            key_exchange: Some(exchange),
            ..InvokeResponse::default()
        })
        .await;
        (opening.invoke_id, key, opening)
    }

    /// Reads the next sealed message of invocation `id` and opens it.
    async fn read(&mut self, id: u64, key: &TunnelKey) -> Option<remote_response::Payload> {
        let request = self.invoked().await;
        assert_eq!(request.invoke_id, id);
        assert!(request.token.is_empty() && request.target_did.is_empty());
        key.open_upstream(&request)
            .expect("opens")
            .and_then(|m| m.payload)
    }

    /// Sends `bytes` back sealed, as a `method_payload`; with `end`, then `method_end` and
    /// `server_end`.
    async fn reply(&self, id: u64, key: &TunnelKey, bytes: &[u8], end: bool) {
        let mut payload = key.seal_downstream(&tunnel::downstream_payload(bytes.to_vec()));
        payload.invoke_id = id;
        self.answer(payload).await;
        if end {
            let mut last = key.seal_downstream(&tunnel::downstream_end(None));
            last.invoke_id = id;
            last.server_end = true;
            self.answer(last).await;
        }
    }
}

/// The request bytes a sealed `method_invoke` or `method_payload` carries.
fn request_bytes(payload: Option<remote_response::Payload>) -> Vec<u8> {
    use tdx_volt::proto::volt::{method_invoke, method_payload};
    match payload {
        Some(remote_response::Payload::MethodInvoke(invoke)) => {
            assert_eq!(invoke.method_name, ECHO);
            match invoke.invoke_request {
                Some(method_invoke::InvokeRequest::Request(bytes)) => bytes,
                other => panic!("{other:?}"),
            }
        }
        Some(remote_response::Payload::MethodPayload(p)) => match p.method_payload {
            Some(method_payload::MethodPayload::Payload(bytes)) => bytes,
            other => panic!("{other:?}"),
        },
        other => panic!("not a request: {other:?}"),
    }
}

/// The caller's side of one tunnel.
struct Tunnel {
    call: Call,
    exchange: Option<ClientKeyExchange>,
    key: Option<TunnelKey>,
}

impl Tunnel {
    /// Opens a tunnel to `service` of `host_id`, with a token for the host.
    async fn open(caller: &Party, host_id: &str, service: &str) -> Tunnel {
        let exchange = ClientKeyExchange::new();
        let claims = Claims::new(host_id, unix_now())
            .with_subject(Some(caller.session.clone()))
            .with_key(exchange.token_claim());
        let token = IdentityToken::sign(&caller.key, &claims)
            .expect("signed")
            .to_jwt();
        let opening =
            tunnel::opening_request(token, vec![host_id.to_owned()], Some(service.to_owned()));
        let call = caller
            .client
            .streaming(INVOKE_PATH, Some(to_json(&opening).expect("JSON")))
            .await
            .expect("invoke");
        Tunnel {
            call,
            exchange: Some(exchange),
            key: None,
        }
    }

    /// What the Volt sends next: a message, or a status (a non-empty message), or the end.
    async fn next(&mut self) -> Result<Option<Downstream>, (i32, String)> {
        match next_event(&mut self.call).await {
            CallEvent::Data(value) => {
                let response: InvokeResponse = from_json(&value).expect("InvokeResponse");
                Ok(Some(tunnel::classify(response)))
            }
            CallEvent::Error(e) => {
                let status = e.status().expect("a status");
                Err((status.code, status.message.clone()))
            }
            CallEvent::End => Ok(None),
            other => panic!("the tunnel failed: {other:?}"),
        }
    }

    /// Reads the key exchange and checks it against the host's public key.
    async fn keyed(&mut self, host_key: &PublicKey) {
        let answer = match self.next().await {
            Ok(Some(Downstream::KeyExchange(answer))) => answer,
            other => panic!("no key exchange: {other:?}"),
        };
        let exchange = self.exchange.take().expect("once");
        self.key =
            Some(tunnel::complete_key_exchange(exchange, &answer, host_key).expect("verifies"));
    }

    fn key(&self) -> &TunnelKey {
        self.key.as_ref().expect("keyed")
    }

    async fn send(&self, message: &RemoteResponse) {
        let sealed = self.key().seal_upstream(message);
        self.call
            .send(to_json(&sealed).expect("JSON"))
            .await
            .expect("caller sends");
    }

    /// The next sealed message, opened.
    async fn read(&mut self) -> remote_request::Payload {
        match self.next().await {
            Ok(Some(Downstream::Sealed { iv, payload })) => self
                .key()
                .open_downstream(&iv, &payload)
                .expect("opens")
                .payload
                .expect("a payload"),
            other => panic!("not a sealed message: {other:?}"),
        }
    }

    /// A sealed `method_payload`'s bytes.
    async fn read_payload(&mut self) -> Vec<u8> {
        use tdx_volt::proto::volt::method_payload;
        match self.read().await {
            remote_request::Payload::MethodPayload(p) => match p.method_payload {
                Some(method_payload::MethodPayload::Payload(bytes)) => bytes,
                other => panic!("{other:?}"),
            },
            other => panic!("not a payload: {other:?}"),
        }
    }

    /// A sealed `method_end` without error, then the stream's end.
    async fn read_end(&mut self) {
        match self.read().await {
            remote_request::Payload::MethodEnd(end) => {
                assert!(end.ended && end.error.is_empty(), "{end:?}")
            }
            other => panic!("not an end: {other:?}"),
        }
        assert!(matches!(self.next().await, Ok(None)), "the stream ends");
    }

    /// A status, then the stream's end.
    async fn refused(&mut self) -> (i32, String) {
        let status = match self.next().await {
            Err(status) => status,
            other => panic!("no status: {other:?}"),
        };
        assert!(matches!(self.next().await, Ok(None)), "the stream ends");
        status
    }
}

#[tokio::test]
async fn a_unary_call_reaches_its_host_and_the_echo_comes_back() {
    let volt = TestVolt::start("host-unary").await;
    let host = party(&volt, "host").await;
    let service = create_service(&host).await;
    let mut online = Host::online(&host).await;
    let caller = owner(&volt).await;

    // What callers see: the host's key and connection, filled in by the Volt.
    let found = sdk::ok(&caller.client, "DiscoverServices", json!({})).await;
    let description = &found["resource"][0]["service_description"];
    let key =
        PublicKey::from_pem(description["host_public_key"].as_str().expect("key")).expect("PEM");
    assert_eq!(key, host.key.public_key());

    let mut tunnel = Tunnel::open(&caller, &host.id, &service).await;
    let (id, host_key, opening) = online.accept().await;
    assert_eq!(opening.target_did, vec![host.id.clone()]);
    assert_eq!(opening.target_service_id, service);
    assert!(opening.iv.is_empty() && opening.request_payload.is_none());
    tunnel.keyed(&key).await;

    tunnel
        .send(&tunnel::method_invoke(
            ECHO.into(),
            MethodKind::Unary,
            b"hello".to_vec(),
        ))
        .await;
    let request = request_bytes(online.read(id, &host_key).await);
    assert_eq!(request, b"hello");
    online.reply(id, &host_key, &request, true).await;
    assert_eq!(tunnel.read_payload().await, b"hello");
    tunnel.read_end().await;

    let counts = volt.emulator().connections();
    assert_eq!(counts.routed_invocations, 1);
    assert_eq!(counts.tunnel_messages, 1);
}

#[tokio::test]
async fn a_streaming_exchange_ends_with_client_end_at_the_host() {
    let volt = TestVolt::start("host-stream").await;
    let host = party(&volt, "host").await;
    let service = create_service(&host).await;
    let mut online = Host::online(&host).await;
    let caller = owner(&volt).await;
    let mut tunnel = Tunnel::open(&caller, &host.id, &service).await;
    let (id, host_key, _) = online.accept().await;
    tunnel.keyed(&host.key.public_key()).await;

    tunnel
        .send(&tunnel::method_invoke(
            ECHO.into(),
            MethodKind::BidiStreaming,
            b"0".to_vec(),
        ))
        .await;
    let first = request_bytes(online.read(id, &host_key).await);
    online.reply(id, &host_key, &first, false).await;
    assert_eq!(tunnel.read_payload().await, b"0");
    for n in 1..5u8 {
        let text = vec![b'0' + n];
        tunnel.send(&tunnel::upstream_payload(text.clone())).await;
        let got = request_bytes(online.read(id, &host_key).await);
        assert_eq!(got, text);
        online.reply(id, &host_key, &got, false).await;
        assert_eq!(tunnel.read_payload().await, text);
    }
    // The caller's half-close reaches the host as a client_end of its own, with no payload.
    tunnel.call.end().await.expect("half-close");
    let end = online.invoked().await;
    assert_eq!(end.invoke_id, id);
    assert!(end.client_end && end.request_payload.is_none(), "{end:?}");
    online.reply(id, &host_key, b"bye", true).await;
    assert_eq!(tunnel.read_payload().await, b"bye");
    tunnel.read_end().await;
}

#[tokio::test]
async fn a_host_that_goes_fails_the_call_with_unavailable() {
    let volt = TestVolt::start("host-gone").await;
    let host = party(&volt, "host").await;
    let service = create_service(&host).await;
    let mut online = Host::online(&host).await;
    let caller = owner(&volt).await;
    let mut tunnel = Tunnel::open(&caller, &host.id, &service).await;
    online.accept().await;
    tunnel.keyed(&host.key.public_key()).await;
    drop(online);
    let (code, message) = tunnel.refused().await;
    assert_eq!(code, UNAVAILABLE, "{message}");
    assert_eq!(message, "the service's host went away");
}

#[tokio::test]
async fn a_caller_that_goes_is_reported_to_the_host() {
    let volt = TestVolt::start("host-caller-gone").await;
    let host = party(&volt, "host").await;
    let service = create_service(&host).await;
    let mut online = Host::online(&host).await;
    let caller = owner(&volt).await;
    let mut tunnel = Tunnel::open(&caller, &host.id, &service).await;
    let (id, _, _) = online.accept().await;
    tunnel.keyed(&host.key.public_key()).await;
    drop(tunnel);
    let end = online.invoked().await;
    assert_eq!((end.invoke_id, end.client_end), (id, true));
}

#[tokio::test]
async fn with_no_host_online_the_call_is_unavailable_at_once() {
    let volt = TestVolt::start("host-offline").await;
    let host = party(&volt, "host").await;
    let service = create_service(&host).await;
    let caller = owner(&volt).await;
    let mut tunnel = Tunnel::open(&caller, &host.id, &service).await;
    let (code, message) = tunnel.refused().await;
    assert_eq!(code, UNAVAILABLE, "{message}");
    assert!(message.ends_with("is not online"), "{message}");
    assert_eq!(volt.emulator().connections().routed_invocations, 0);
}

#[tokio::test]
async fn callers_without_access_unknown_services_and_wrong_audiences_are_refused() {
    let volt = TestVolt::start("host-refused").await;
    let host = party(&volt, "host").await;
    let service = create_service(&host).await;
    let mut online = Host::online(&host).await;
    let stranger = party(&volt, "stranger").await;

    let mut tunnel = Tunnel::open(&stranger, &host.id, &service).await;
    let (code, message) = tunnel.refused().await;
    assert_eq!(code, 7, "PERMISSION_DENIED: {message}");
    assert!(message.contains("volt:resource-invoke"), "{message}");

    let mut tunnel = Tunnel::open(&stranger, &host.id, "no-such-service").await;
    assert_eq!(tunnel.refused().await.0, 5, "NOT_FOUND");

    // A service routed to a client that does not host it.
    let mut tunnel = Tunnel::open(&stranger, &stranger.id, &service).await;
    assert_eq!(tunnel.refused().await.0, 5, "NOT_FOUND");

    // A token for the Volt, not for the host.
    let exchange = ClientKeyExchange::new();
    let claims = Claims::new(volt.volt_id(), unix_now())
        .with_subject(Some(stranger.session.clone()))
        .with_key(exchange.token_claim());
    let token = IdentityToken::sign(&stranger.key, &claims).expect("signed");
    let opening = tunnel::opening_request(token.to_jwt(), vec![host.id.clone()], None);
    let mut tunnel = Tunnel {
        call: stranger
            .client
            .streaming(INVOKE_PATH, Some(to_json(&opening).expect("JSON")))
            .await
            .expect("invoke"),
        exchange: None,
        key: None,
    };
    assert_eq!(tunnel.refused().await.0, 16, "UNAUTHENTICATED");

    // Once the host grants it, the same caller gets through to the host.
    sdk::ok(
        &host.client,
        "SaveAccess",
        json!({"access": {
            "resource_id": service,
            "identity_did": stranger.id,
            "access": "volt:resource-invoke",
            "decision": "POLICY_DECISION_PERMIT",
        }}),
    )
    .await;
    assert_eq!(volt.emulator().connections().routed_invocations, 0);
    let mut granted = Tunnel::open(&stranger, &host.id, &service).await;
    online.accept().await;
    granted.keyed(&host.key.public_key()).await;
    assert_eq!(volt.emulator().connections().routed_invocations, 1);
}

#[tokio::test]
async fn the_wait_for_the_host_key_exchange_is_bounded() {
    let volt = TestVolt::start_with("host-kx-wait", |b| {
        b.host_key_exchange_wait(Duration::from_millis(300))
    })
    .await;
    let host = party(&volt, "host").await;
    let service = create_service(&host).await;
    let mut online = Host::online(&host).await;
    let caller = owner(&volt).await;
    let mut tunnel = Tunnel::open(&caller, &host.id, &service).await;
    let opening = online.invoked().await;
    // The host never answers.
    let (code, message) = tunnel.refused().await;
    assert_eq!(code, 4, "DEADLINE_EXCEEDED: {message}");
    let end = online.invoked().await;
    assert_eq!((end.invoke_id, end.client_end), (opening.invoke_id, true));
}

#[tokio::test]
async fn discovered_services_are_online_while_their_host_is_connected() {
    let volt = TestVolt::start("host-discover").await;
    let host = party(&volt, "host").await;
    let service = create_service(&host).await;
    let caller = owner(&volt).await;
    let discover = |request: Value| sdk::ok(&caller.client, "DiscoverServices", request);
    let listed = |found: &Value| found["resource"].as_array().map_or(0, Vec::len);

    assert_eq!(listed(&discover(json!({})).await), 0, "offline");
    let offline = discover(json!({"include_offline": true})).await;
    assert_eq!(offline["resource"][0]["id"], json!(service));
    assert_eq!(
        offline["resource"][0]["online_status"],
        json!("ONLINE_STATUS_OFFLINE")
    );

    let online = Host::online(&host).await;
    let found = discover(json!({"service_api": ["test.*"]})).await;
    let resource = &found["resource"][0];
    assert_eq!(resource["id"], json!(service), "{found}");
    assert_eq!(resource["online_status"], json!("ONLINE_STATUS_ONLINE"));
    let description = &resource["service_description"];
    assert_eq!(
        description["host_connection_id"],
        json!(online.connection_id)
    );
    assert!(description.get("proto_file").is_none(), "{description}");
    let with_proto =
        discover(json!({"service_api": ["test.v1.Echo"], "include_protobuf": true})).await;
    assert_eq!(
        with_proto["resource"][0]["service_description"]["proto_file"][0]["file_path"],
        json!("echo.proto")
    );
    assert_eq!(
        listed(&discover(json!({"service_api": ["other.Api"]})).await),
        0
    );

    // A client that may not read it does not find it.
    let stranger = party(&volt, "stranger").await;
    let theirs = sdk::ok(&stranger.client, "DiscoverServices", json!({})).await;
    assert_eq!(listed(&theirs), 0, "{theirs}");

    // SetServiceStatus: only its host (or owners) may, and online needs a live host stream.
    sdk::refused(
        &stranger.client,
        "SetServiceStatus",
        json!({"service": {"id": service, "online_status": "ONLINE_STATUS_OFFLINE"}}),
        7,
    )
    .await;
    let off = sdk::ok(
        &host.client,
        "SetServiceStatus",
        json!({"service": {"id": service, "online_status": "ONLINE_STATUS_OFFLINE"}}),
    )
    .await;
    assert_eq!(
        off["resource"]["online_status"],
        json!("ONLINE_STATUS_OFFLINE")
    );
    assert_eq!(listed(&discover(json!({})).await), 0);
    let on = sdk::ok(
        &host.client,
        "SetServiceStatus",
        json!({"service": {"id": service, "online_status": "ONLINE_STATUS_ONLINE"}}),
    )
    .await;
    assert_eq!(
        on["resource"]["service_description"]["host_connection_id"],
        json!(online.connection_id)
    );
    assert_eq!(listed(&discover(json!({})).await), 1);

    // The host says goodbye: once its stream has ended, the service is offline.
    let Host { mut call, .. } = online;
    call.send(json!({"goodbye": {}})).await.expect("goodbye");
    loop {
        match next_event(&mut call).await {
            CallEvent::End => break,
            CallEvent::Data(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(listed(&discover(json!({})).await), 0);
    let after = discover(json!({"include_offline": true})).await;
    let description = &after["resource"][0]["service_description"];
    assert!(description.get("host_connection_id").is_none(), "{after}");
    sdk::refused(
        &host.client,
        "SetServiceStatus",
        json!({"service": {"id": service, "online_status": "ONLINE_STATUS_ONLINE"}}),
        9,
    )
    .await;
}

#[test]
fn sealed_messages_round_trip_through_json() {
    // The test's own plumbing: an InvokeRequest's bytes survive proto3 JSON (base64).
    let request = InvokeRequest {
        invoke_id: 7,
        iv: vec![1, 2, 3],
        request_payload: Some(
            tdx_volt::proto::volt::invoke_request::RequestPayload::Payload(vec![0, 255]),
        ),
        ..InvokeRequest::default()
    };
    let back: InvokeRequest = from_json(&to_json(&request).expect("JSON")).expect("back");
    assert_eq!(back.encode_to_vec(), request.encode_to_vec());
}

// ---- callers on the websocket gateway -----------------------------------------------------

impl Host {
    /// Reads the next message of invocation `id` from a caller on the gateway: its sealed
    /// JSON body, opened.
    async fn read_json(&mut self, id: u64, key: &TunnelKey) -> Body {
        let request = self.invoked().await;
        assert_eq!(request.invoke_id, id);
        match request.request_payload {
            Some(invoke_request::RequestPayload::JsonPayload(sealed)) => {
                key.open_json_upstream(&request.iv, &sealed).expect("opens")
            }
            other => panic!("not a JSON payload: {other:?}"),
        }
    }

    /// Sends `body` back to a caller on the gateway, sealed; `end` sets `server_end`.
    async fn reply_json(&self, id: u64, key: &TunnelKey, body: &Body, end: bool) {
        let mut sealed = key.seal_json_downstream(body);
        sealed.invoke_id = id;
        sealed.server_end = end;
        self.answer(sealed).await;
    }
}

/// The service as the owner's gateway client finds it, naming its host (the resource leaves
/// `host_client_id` to the Volt: its creator hosts it).
async fn gateway_service(caller: &VoltClient, host: &Party) -> ServiceRef {
    let found = sdk::ok(caller, "DiscoverServices", json!({})).await;
    let mut resource = found["resource"][0].clone();
    resource["service_description"]["host_client_id"] = json!(host.id);
    ServiceRef::from_resource(&resource).expect("a hosted service")
}

/// A service hosted online, and a bidirectional call to it from the owner on the gateway.
struct GatewayCall {
    host: Party,
    service: String,
    online: Host,
    caller: VoltClient,
    service_ref: ServiceRef,
    call: tdx_volt::client::ServiceCall,
}

async fn gateway_call(volt: &TestVolt) -> GatewayCall {
    let host = party(volt, "host").await;
    let service = create_service(&host).await;
    let online = Host::online(&host).await;
    let caller = sdk::owner(volt, Transport::Websocket).await;
    let service_ref = gateway_service(&caller, &host).await;
    let call = caller
        .call_service_as(&service_ref, ECHO, MethodKind::BidiStreaming)
        .await
        .expect("opened");
    GatewayCall {
        host,
        service,
        online,
        caller,
        service_ref,
        call,
    }
}

#[tokio::test]
async fn a_gateway_call_reaches_its_host_in_json_and_comes_back() {
    let volt = TestVolt::start("host-gateway").await;
    // The caller's client lives as long as its call.
    let GatewayCall {
        host,
        service,
        mut online,
        caller: _caller,
        mut call,
        ..
    } = gateway_call(&volt).await;

    // The key exchange is the host's, the token (a whole JWT again) is for the host.
    let (sent, (id, key, opening)) =
        tokio::join!(call.send_json(json!({"text": "hi"})), online.accept());
    sent.expect("sent once keyed");
    assert_eq!(opening.target_did, vec![host.id.clone()]);
    assert_eq!(opening.target_service_id, service);
    let token = IdentityToken::parse(&opening.token).expect("a JWT");
    let claims = token.claims_unverified().expect("claims");
    assert_eq!(claims.aud, host.id);
    let expected = Body::Invoke {
        method_name: ECHO.into(),
        service_id: Some(service.clone()),
        json_request: r#"{"text":"hi"}"#.into(),
    };
    assert_eq!(online.read_json(id, &key).await, expected);

    let echo = Body::Payload {
        json_payload: r#"{"text":"hi"}"#.into(),
    };
    online.reply_json(id, &key, &echo, false).await;
    let answer = tokio::time::timeout(WAIT, call.next_json())
        .await
        .expect("in time");
    assert_eq!(
        answer.expect("open").expect("an answer"),
        json!({"text": "hi"})
    );

    // The caller's end: its sealed end body, then a client_end of its own.
    call.end().await.expect("ended");
    assert_eq!(online.read_json(id, &key).await, Body::end());
    let end = online.invoked().await;
    assert!(end.client_end && end.request_payload.is_none(), "{end:?}");
    online.reply_json(id, &key, &Body::end(), true).await;
    let last = tokio::time::timeout(WAIT, call.next_json())
        .await
        .expect("in time");
    assert!(last.is_none(), "{last:?}");
    assert_eq!(volt.emulator().connections().routed_invocations, 1);
}

#[tokio::test]
async fn a_gateway_call_fails_when_its_host_goes_or_is_offline() {
    let volt = TestVolt::start("host-gateway-gone").await;
    let GatewayCall {
        mut online,
        caller,
        service_ref,
        mut call,
        ..
    } = gateway_call(&volt).await;
    let (sent, _) = tokio::join!(call.send_json(json!({})), online.accept());
    sent.expect("sent");
    drop(online);
    let failed = tokio::time::timeout(WAIT, call.next_json())
        .await
        .expect("in time");
    let e = failed.expect("an event").expect_err("failed");
    assert!(
        e.to_string().contains("the service's host went away"),
        "{e}"
    );

    // With its host gone the call is refused at once.
    let e = caller
        .call_service_json(&service_ref, ECHO, json!({}))
        .await
        .expect_err("refused");
    assert!(e.to_string().contains("is not online"), "{e}");
}
