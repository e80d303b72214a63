//! Test support: a volt-emulator in-process on 127.0.0.1:0, and clients for it.

#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tdx_volt::client::WireChunks;
use tdx_volt::{Transport, VoltClient};
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
        VoltClient::builder()
            .config_file(self.config_path())
            .transport(transport)
            .connect()
            .await
            .expect("client connects")
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

pub mod scripted;
