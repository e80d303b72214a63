//! Calls through a relay: a configuration whose `volt.relay` points at volt-emulator's own relay
//! endpoint. Over gRPC every call is tunnelled through `VoltAPI/Invoke` (end-to-end encrypted
//! with the Volt); over the websocket gateway each call carries the relay route. Both must give
//! exactly what a direct connection gives, and a key exchange that does not verify must fail
//! the call before any of it leaves.

mod support;

use futures_util::StreamExt as _;
use serde_json::{json, Value};
use support::scenario::{fixture, record, scenario, upload_and_read_back};
use support::{connect, new_wire, publish, subscribed, within, TestVolt};
use tdx_volt::client::CallEvent;
use tdx_volt::{PrivateKey, Transport};
use tdx_volt_emulator::TunnelFault;

/// The test Volt's own configuration, going through its relay endpoint: the same client and
/// session, so that every answer can be compared with a direct connection's.
fn relayed(volt: &TestVolt) -> Value {
    let mut config = volt.config();
    let emulator = volt.emulator();
    config["volt"]["relay"] = json!({
        "address": emulator.address(),
        "http_address": emulator.http_address(),
        "ca_pem": emulator.ca_pem(),
    });
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_relay_every_answer_is_the_direct_one() {
    let volt = TestVolt::start("relay-same").await;
    let direct = volt.client_over(Transport::Grpc).await;
    let f = fixture(&direct).await;
    let tunnel = connect(relayed(&volt), Transport::Auto)
        .await
        .expect("relayed over gRPC");
    assert_eq!(
        tunnel.transport(),
        Transport::Grpc,
        "Auto tunnels over gRPC"
    );
    let gateway = connect(relayed(&volt), Transport::Websocket)
        .await
        .expect("relayed over the gateway");

    let tunnels_before = volt.emulator().connections().tunnels;
    let mut calls = 0;
    for (path, request) in scenario(direct.volt_id(), &f) {
        let expected = record(&direct, &path, request.clone()).await;
        assert_eq!(
            record(&tunnel, &path, request.clone()).await,
            expected,
            "tunnelled: {path} {request}"
        );
        assert_eq!(
            record(&gateway, &path, request.clone()).await,
            expected,
            "relayed gateway: {path} {request}"
        );
        calls += 1;
    }
    // Each call was a tunnel of its own (a request that does not fit the schema never
    // leaves, so it opens none).
    let tunnels = volt.emulator().connections().tunnels - tunnels_before;
    assert!(
        tunnels >= calls - 2 && tunnels <= calls,
        "{tunnels} tunnels for {calls} calls"
    );
    // One HTTP/2 connection carried them all.
    let query = json!({"database_id": f.database_id, "statement": "SELECT * FROM t ORDER BY id",
                       "page_size": 1});
    assert_eq!(
        tunnel.sql_execute_json(query.clone()).await.expect("rows"),
        direct.sql_execute_json(query).await.expect("rows")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shape_of_call_goes_through_the_tunnel() {
    let volt = TestVolt::start("relay-shapes").await;
    let direct = volt.client_over(Transport::Grpc).await;
    let tunnel = connect(relayed(&volt), Transport::Grpc)
        .await
        .expect("relayed over gRPC");

    // Server streaming and bidirectional: a wire subscribed through the tunnel hears what is
    // published directly, and the other way round.
    let wire_id = new_wire(&direct, "relayed").await;
    let mut through = subscribed(&tunnel, &wire_id).await;
    let big: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
    publish(&direct, &wire_id, &big).await;
    let chunk = within("chunk", through.next())
        .await
        .expect("open")
        .expect("chunk");
    assert!(chunk == big, "a chunk of {} bytes", chunk.len());
    let mut heard = subscribed(&direct, &wire_id).await;
    publish(&tunnel, &wire_id, b"through the tunnel").await;
    let chunk = within("chunk", heard.next())
        .await
        .expect("open")
        .expect("chunk");
    assert_eq!(chunk, b"through the tunnel");
    through.stop().await.expect("stop");

    // Client streaming: an upload whose requests were written before the key exchange
    // completed arrives whole, in order.
    upload_and_read_back(&tunnel, &direct).await;

    // The Volt's refusals are the same errors as on a direct call.
    let err = tunnel
        .unary(
            "/tdx.volt_api.volt.v1.VoltAPI/GetResource",
            json!({"resource_id": "no-such-resource"}),
        )
        .await
        .expect_err("not found");
    assert!(err.is_status() && !err.is_tunnel(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_exchange_signed_by_another_key_fails_before_anything_leaves() {
    let volt = TestVolt::start("relay-wrong-key").await;
    let mut config = relayed(&volt);
    // The client expects another Volt: the real one's signature must not do.
    let stranger = PrivateKey::from_ed25519_seed(&[3; 32]);
    config["volt"]["public_key"] = json!(stranger.public_key().to_spki_pem().expect("PEM"));
    let client = connect(config, Transport::Grpc)
        .await
        .expect("connects (TLS is the relay's)");
    let before = volt.emulator().connections();
    let err = client
        .get_resource(json!({"resource_id": client.volt_id()}))
        .await
        .expect_err("the key exchange does not verify");
    assert!(err.is_key_exchange(), "{err:?}");
    assert!(err.is_retry_safe(), "nothing was sent: {err:?}");
    let after = volt.emulator().connections();
    assert_eq!(after.tunnels, before.tunnels + 1, "the tunnel was opened");
    assert_eq!(
        after.tunnel_messages, before.tunnel_messages,
        "no request left the client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_key_exchange_signature_fails_before_anything_leaves() {
    let volt = TestVolt::start_with("relay-tampered", |b| {
        b.dangerous_tunnel_fault(TunnelFault::CorruptSignature)
    })
    .await;
    let client = connect(relayed(&volt), Transport::Grpc)
        .await
        .expect("connects");
    for shape in ["unary", "streaming"] {
        let before = volt.emulator().connections();
        let err = if shape == "unary" {
            client
                .get_resource(json!({"resource_id": client.volt_id()}))
                .await
                .expect_err("the signature does not verify")
        } else {
            let mut upload = client.upload_file(None).await.expect("opened");
            // Written before the key exchange: held back, then never sent.
            let _ = upload.send(json!({"start": {"resource_id": "x"}})).await;
            match within("the failure", upload.next()).await {
                Some(CallEvent::Failed(e)) => e,
                other => panic!("expected the call to fail, got {other:?}"),
            }
        };
        assert!(err.is_key_exchange(), "{shape}: {err:?}");
        let after = volt.emulator().connections();
        assert_eq!(after.tunnels, before.tunnels + 1, "{shape}");
        assert_eq!(
            after.tunnel_messages, before.tunnel_messages,
            "{shape}: no request left the client"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_cloud_relay_method_names_carry_the_volt_id() {
    let volt = TestVolt::start("relay-cloud").await;
    let direct = volt.client_over(Transport::Grpc).await;
    let plain = connect(relayed(&volt), Transport::Grpc)
        .await
        .expect("relayed");
    let mut config = relayed(&volt);
    config["volt"]["relay"]["cloud"] = json!(true);
    let cloud = connect(config, Transport::Grpc)
        .await
        .expect("through a cloud relay");
    let request = json!({"resource_id": direct.volt_id()});
    let expected = direct.get_resource(request.clone()).await.expect("direct");

    assert_eq!(
        plain.get_resource(request.clone()).await.expect("plain"),
        expected
    );
    assert_eq!(volt.emulator().connections().cloud_method_names, 0);
    // `/<volt id>/pkg.Service/Method`, which the Volt end of the tunnel reads as the method.
    assert_eq!(cloud.get_resource(request).await.expect("cloud"), expected);
    let listing = json!({});
    assert_eq!(
        cloud.get_resources(listing.clone()).await.expect("cloud"),
        direct.get_resources(listing).await.expect("direct")
    );
    assert_eq!(volt.emulator().connections().cloud_method_names, 2);
}
