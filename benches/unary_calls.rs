//! Unary call latency and throughput over each transport (the websocket gateway and native
//! gRPC), against volt-emulator in-process on loopback (client and server share the machine's
//! cores).
//!
//! `cargo bench --bench unary_calls [-- CALLS]`

use std::time::Instant;

use serde_json::json;
use tdx_volt::{Transport, VoltClient};
use tdx_volt_emulator::Emulator;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let calls: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5000);
    let dir = std::env::temp_dir().join(format!("tdx-volt-bench-{}", std::process::id()));
    let emulator = Emulator::builder(&dir).start().await?;
    for transport in [Transport::Websocket, Transport::Grpc] {
        let client = VoltClient::builder()
            .config_file(emulator.config_path())
            .transport(transport)
            .connect()
            .await?;
        println!("== {transport:?}");
        run(&client, calls).await?;
    }
    emulator.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn run(client: &VoltClient, calls: usize) -> Result<(), Box<dyn std::error::Error>> {
    let request = json!({"resource_id": client.volt_id()});

    // Warm up the connection and the emulator.
    for _ in 0..200 {
        client.get_resource(request.clone()).await?;
    }

    let mut latencies = Vec::with_capacity(calls);
    let start = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        client.get_resource(request.clone()).await?;
        latencies.push(t.elapsed());
    }
    let sequential = start.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "sequential GetResource x{calls}: {:.0} calls/s; latency p50 {:?} p99 {:?} max {:?}",
        calls as f64 / sequential.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );

    for concurrency in [16usize, 256] {
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..concurrency {
            let client = client.clone();
            let request = request.clone();
            let share = calls / concurrency + usize::from(worker < calls % concurrency);
            tasks.spawn(async move {
                for _ in 0..share {
                    client.get_resource(request.clone()).await?;
                }
                Ok::<_, tdx_volt::Error>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let elapsed = start.elapsed();
        println!(
            "{concurrency} concurrent callers, GetResource x{calls}: {:.0} calls/s ({:?} per call)",
            calls as f64 / elapsed.as_secs_f64(),
            elapsed / calls as u32,
        );
    }

    Ok(())
}
