//! The workloads only tdx-volt's driver runs: memory per idle subscription, and a burst of
//! SaveResource calls (the emulator's share of the work).

use std::time::Duration;

use futures_util::future::try_join_all;
use serde_json::json;
use tdx_volt::VoltClient;

use super::usage::{Measured, Usage};
use super::BoxError;

/// `count` subscriptions to `wire` on one connection, left idle; `bytes` in the result is
/// the growth of the process's resident set while opening them (measured after they are
/// all open and a short settle), so `bytes / ops` is the RSS per idle subscription.
pub async fn idle(client: &VoltClient, wire: &str, count: usize) -> Result<Measured, BoxError> {
    // One first, so the connection's own buffers are not counted.
    let first = client.subscribe_wire_chunks(wire).await?;
    let before = resident_bytes()?;
    let usage = Usage::now();
    let mut open = Vec::with_capacity(count);
    for batch in (0..count).collect::<Vec<_>>().chunks(256) {
        let opened = try_join_all(batch.iter().map(|_| client.subscribe_wire_chunks(wire))).await?;
        open.extend(opened);
    }
    // Let the Volt's answers to the last ones arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = resident_bytes()?;
    let measured = usage.done(open.len() as u64, after.saturating_sub(before), 0);
    drop((first, open));
    Ok(measured)
}

/// `count` SaveResource calls (each creating a folder) at once; `seconds` is how long the
/// whole burst took.
pub async fn save_burst(client: &VoltClient, count: usize) -> Result<Measured, BoxError> {
    client
        .save_resource(json!({"resource": {"name": "warm-up"}, "create": true}))
        .await?;
    let usage = Usage::now();
    let calls = (0..count).map(|i| {
        let client = client.clone();
        let request = json!({"resource": {"name": format!("burst-{i}"), "kind": ["volt:folder"]},
                             "create": true});
        async move { client.save_resource(request).await }
    });
    let done = try_join_all(calls).await?;
    Ok(usage.done(done.len() as u64, 0, 0))
}

/// The process's resident set (VmRSS), in bytes.
fn resident_bytes() -> Result<u64, BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .ok_or("no VmRSS in /proc/self/status")?;
    Ok(kib * 1024)
}
