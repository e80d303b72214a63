//! Times concurrent SaveResource calls through the SDK's client (gRPC) against an in-process
//! emulator on free ports, and prints the calls a second and the total time.
//!
//! ```sh
//! cargo bench -p tdx-volt-emulator --bench save_resource            # 1,000 calls
//! SAVE_RESOURCE_CALLS=5000 cargo bench -p tdx-volt-emulator --bench save_resource
//! ```
//!
//! Each run creates that many resources in the owner's home folder, all at once, then updates
//! each of them once, all at once. The emulator's directory is a fresh one under the system's
//! temporary directory, removed at the end.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tdx_volt::{Transport, VoltClient};
use tdx_volt_emulator::Emulator;

const DEFAULT_CALLS: usize = 1000;

fn main() {
    // `cargo bench` passes `--bench`; a filter or other flags mean nothing here.
    let calls = std::env::var("SAVE_RESOURCE_CALLS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_CALLS);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(calls));
}

async fn run(calls: usize) {
    let dir = std::env::temp_dir().join(format!("volt-bench-save-resource-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let emulator = Emulator::builder(&dir)
        .start()
        .await
        .expect("emulator starts");
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(emulator.config_path()).expect("client config"),
    )
    .expect("config JSON");
    let client = VoltClient::builder()
        .config(config)
        .transport(Transport::Grpc)
        .request_timeout(Duration::from_secs(600))
        .connect()
        .await
        .expect("client connects");
    // One call first, so connecting and authenticating are not timed.
    save(
        &client,
        json!({"resource": {"name": "warm-up"}, "create": true}),
    )
    .await;

    let started = Instant::now();
    let created = burst(&client, calls, |i| {
        json!({"resource": {"name": format!("bench-{i}"), "kind": ["volt:folder"]}, "create": true})
    })
    .await;
    report("SaveResource (create)", calls, started.elapsed());

    let ids: Vec<String> = created
        .iter()
        .map(|r| r["resource"]["id"].as_str().expect("an id").to_owned())
        .collect();
    let started = Instant::now();
    burst(
        &client,
        calls,
        |i| json!({"resource": {"id": ids[i], "description": format!("updated {i}")}}),
    )
    .await;
    report("SaveResource (update)", calls, started.elapsed());

    emulator.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `calls` SaveResource calls at once, the `i`th with `request(i)`; their responses in order.
async fn burst(client: &VoltClient, calls: usize, request: impl Fn(usize) -> Value) -> Vec<Value> {
    let tasks: Vec<_> = (0..calls)
        .map(|i| {
            let client = client.clone();
            let request = request(i);
            tokio::spawn(async move { save(&client, request).await })
        })
        .collect();
    let mut out = Vec::with_capacity(calls);
    for task in tasks {
        out.push(task.await.expect("the call's task"));
    }
    out
}

async fn save(client: &VoltClient, request: Value) -> Value {
    client
        .save_resource(request)
        .await
        .expect("SaveResource succeeds")
}

fn report(what: &str, calls: usize, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    println!(
        "{what}: {calls} concurrent calls in {secs:.3} s, {:.0} calls/s",
        calls as f64 / secs
    );
}
