//! Test support: a volt-emulator in-process on 127.0.0.1:0, and clients for it.

#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tdx_volt::client::WireChunks;
use tdx_volt::{Transport, VoltClient, VoltClientBuilder};
use tdx_volt_emulator::{Emulator, EmulatorBuilder};

/// How long a test waits for any one thing before failing.
pub const WAIT: Duration = Duration::from_secs(30);

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing after {WAIT:?}"))
}

/// A fresh, empty directory name under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let mut bytes = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::env::temp_dir().join(format!("tdx-volt-{tag}-{suffix}"))
}

/// An emulator with the configuration it wrote for its first client.
pub struct TestVolt {
    pub emulator: Option<Emulator>,
    pub dir: PathBuf,
}

impl TestVolt {
    pub async fn start(tag: &str) -> TestVolt {
        TestVolt::start_with(tag, |b| b).await
    }

    /// Starts an emulator with settings of the test's choosing.
    pub async fn start_with(
        tag: &str,
        settings: impl FnOnce(EmulatorBuilder) -> EmulatorBuilder,
    ) -> TestVolt {
        let dir = temp_dir(tag);
        let emulator = settings(Emulator::builder(&dir))
            .start()
            .await
            .expect("emulator starts");
        TestVolt {
            emulator: Some(emulator),
            dir,
        }
    }

    pub fn emulator(&self) -> &Emulator {
        self.emulator.as_ref().expect("running")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("client.config.json")
    }

    /// The client configuration as JSON.
    pub fn config(&self) -> Value {
        let text = std::fs::read_to_string(self.config_path()).expect("config file");
        serde_json::from_str(&text).expect("config JSON")
    }

    /// A client over the websocket gateway.
    pub async fn client(&self) -> VoltClient {
        self.client_over(Transport::Websocket).await
    }

    /// A client over `transport`.
    pub async fn client_over(&self, transport: Transport) -> VoltClient {
        self.client_with(transport, |b| b).await
    }

    /// A client over `transport`, with settings of the test's choosing.
    pub async fn client_with(
        &self,
        transport: Transport,
        settings: impl FnOnce(VoltClientBuilder) -> VoltClientBuilder,
    ) -> VoltClient {
        settings(
            VoltClient::builder()
                .config_file(self.config_path())
                .transport(transport),
        )
        .connect()
        .await
        .expect("client connects")
    }

    /// The listening addresses: the websocket gateway's, then gRPC's.
    pub fn addresses(&self) -> (std::net::SocketAddr, std::net::SocketAddr) {
        let emulator = self.emulator();
        let gateway = emulator
            .http_address()
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .parse()
            .expect("gateway address");
        let grpc = emulator.address().parse().expect("gRPC address");
        (gateway, grpc)
    }

    /// Starts the emulator again on `addresses` (as [`TestVolt::addresses`] gave them), with
    /// the same data.
    pub async fn start_on(&mut self, addresses: (std::net::SocketAddr, std::net::SocketAddr)) {
        assert!(self.emulator.is_none(), "stop it first");
        let emulator = Emulator::builder(&self.dir)
            .ws_listen(addresses.0)
            .grpc_listen(addresses.1)
            .start()
            .await
            .expect("emulator starts again on the same ports");
        self.emulator = Some(emulator);
    }

    /// Stops the emulator (every connection is dropped), keeping its directory.
    pub async fn stop(&mut self) {
        if let Some(emulator) = self.emulator.take() {
            emulator.shutdown().await;
        }
    }
}

impl Drop for TestVolt {
    fn drop(&mut self) {
        drop(self.emulator.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Connects with the configuration `config` over `transport`.
pub async fn connect(config: Value, transport: Transport) -> tdx_volt::Result<VoltClient> {
    VoltClient::builder()
        .config(config)
        .transport(transport)
        .connect()
        .await
}

/// A Volt certificate from another CA is a TLS error over `transport`, and a configuration
/// without a CA a configuration error (never a connection that trusts anything).
pub async fn assert_foreign_ca_refused(transport: Transport) {
    let volt = TestVolt::start("ca").await;
    let other = TestVolt::start("otherca").await;
    let mut config = volt.config();
    config["volt"]["ca_pem"] = other.config()["volt"]["ca_pem"].clone();
    let err = connect(config, transport).await.unwrap_err();
    assert!(err.is_tls(), "{err:?}");

    let mut config = volt.config();
    config["volt"]
        .as_object_mut()
        .expect("volt")
        .remove("ca_pem");
    let err = connect(config, transport).await.unwrap_err();
    assert!(err.is_config(), "{err:?}");
}

/// Makes `count` resources and returns their ids.
pub async fn new_resources(client: &VoltClient, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..count {
        let saved = client
            .save_resource(
                json!({"resource": {"name": format!("resource {i}"), "kind": ["note"]},
                       "create": true}),
            )
            .await
            .expect("SaveResource");
        ids.push(saved["resource"]["id"].as_str().expect("id").to_owned());
    }
    ids
}

/// Makes `calls` calls at once on clones of `client`: half read one of the resources `ids`,
/// half ask for one that does not exist; every answer must be the one for its own request.
pub async fn concurrent_calls(client: &VoltClient, ids: &[String], calls: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..calls {
        let client = client.clone();
        let id = ids[i % ids.len()].clone();
        tasks.spawn(async move {
            if i % 2 == 0 {
                let got = client
                    .get_resource(json!({"resource_id": id}))
                    .await
                    .expect("GetResource");
                assert_eq!(got["resource"]["id"], json!(id), "call {i}");
            } else {
                let missing = format!("missing-{i}");
                let err = client
                    .get_resource(json!({"resource_id": missing}))
                    .await
                    .expect_err("unknown resource");
                let status = err.status().expect("status");
                assert!(status.message.ends_with(&missing), "call {i}: {status:?}");
            }
            i
        });
    }
    let mut done = std::collections::HashSet::new();
    while let Some(finished) = within("the calls", tasks.join_next()).await {
        done.insert(finished.expect("call task"));
    }
    assert_eq!(done.len(), calls);
}

/// Takes the only call slot of `client` (built with `max_calls(1)`) with a subscription to
/// `wire_id`, checks that another call then times out waiting for a slot, and returns the
/// subscription: dropping it must give the slot back.
pub async fn hold_the_only_slot(client: &VoltClient, wire_id: &str) -> tdx_volt::Call {
    let held = client
        .subscribe_wire(json!({"wire_id": wire_id}))
        .await
        .expect("first call");
    let quick = client.with_request_timeout(Duration::from_millis(200));
    let err = quick
        .get_resource(json!({"resource_id": client.volt_id()}))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    held
}

/// Waits until the Volt has `count` live subscriptions to `wire_id`.
pub async fn subscriptions_live(emulator: &Emulator, wire_id: &str, count: usize) {
    within("the subscriptions to be live", async {
        while emulator.wire_subscribers(wire_id) < count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Waits until the Volt has let go of every subscription to `wire_id` (it says nothing when
/// it does).
pub async fn subscriptions_gone(emulator: &Emulator, wire_id: &str) {
    within("the subscription to go", async {
        while emulator.wire_subscribers(wire_id) != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Makes a wire and returns its id.
pub async fn new_wire(client: &VoltClient, name: &str) -> String {
    let saved = client
        .save_wire(json!({"resource": {"name": name}, "create": true}))
        .await
        .expect("SaveWire");
    saved["resource"]["id"]
        .as_str()
        .expect("wire id")
        .to_owned()
}

/// Publishes one chunk in a call of its own.
pub async fn publish(client: &VoltClient, wire_id: &str, chunk: &[u8]) {
    let publisher = client.publish_wire_chunks(wire_id).await.expect("publish");
    publisher.send(chunk).await.expect("chunk sent");
    publisher.finish().await.expect("publish confirmed");
}

/// Subscribes and returns once the subscription is known to be registered: a chunk is only
/// delivered to subscribers registered before it was published, and registration cannot be
/// observed, so probe chunks are published until one arrives; then a marker is published and
/// everything up to it is skipped, so the next chunk read is the caller's.
pub async fn subscribed(client: &VoltClient, wire_id: &str) -> WireChunks {
    let mut chunks = client
        .subscribe_wire_chunks(wire_id)
        .await
        .expect("subscribe");
    within("a probe chunk", async {
        loop {
            publish(client, wire_id, b"probe").await;
            if let Ok(next) = tokio::time::timeout(Duration::from_millis(50), chunks.next()).await {
                assert_eq!(next.expect("subscription open").expect("chunk"), b"probe");
                return;
            }
        }
    })
    .await;
    publish(client, wire_id, b"marker").await;
    within("the marker chunk", async {
        loop {
            let chunk = chunks
                .next()
                .await
                .expect("subscription open")
                .expect("chunk");
            if chunk == b"marker" {
                return;
            }
        }
    })
    .await;
    chunks
}

pub mod scenario;
pub mod scripted;
pub mod scripted_legacy;

/// The caller's home folder: the parent of what it creates by default (`tag` names the probe
/// it creates to find it).
pub async fn home_of(client: &VoltClient, tag: &str) -> String {
    let made = client
        .save_resource(json!({"resource": {"name": format!("probe-{tag}")}, "create": true}))
        .await
        .expect("SaveResource");
    let ancestors = client
        .get_resource_ancestors(json!({"resource_id": made["resource"]["id"]}))
        .await
        .expect("GetResourceAncestors");
    ancestors["ancestor"][0]["id"]
        .as_str()
        .expect("a home folder")
        .to_owned()
}
