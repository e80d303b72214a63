//! Document sync against volt-emulator in-process on loopback (client and server share the
//! machine's cores), over each transport (native gRPC and the websocket gateway):
//!
//! - the time a fresh provider takes to sync a 10 MB document (from `sync()` to `synced()`);
//! - the edits per second sustained between two providers: A makes single-character edits,
//!   each its own transaction, and the clock stops when B has them all (with the default
//!   flush of 50 ms, which batches edits, and with no flush delay);
//! - the same one at a time (A makes the next edit once B has the last, with no flush delay):
//!   each edit then travels alone, A to the Volt to B.
//!
//! `cargo bench --bench sync [-- EDITS]` (EDITS: 100,000 by default; a tenth of them one at a
//! time)

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tdx_volt::client::SyncOptions;
use tdx_volt::yrs::{Doc, ReadTxn, Text, Transact};
use tdx_volt::{Transport, VoltClient};
use tdx_volt_emulator::Emulator;
use tokio::sync::Notify;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The size of the big document, in bytes of text.
const BIG: usize = 10 * 1024 * 1024;
/// The big document is written in transactions of this many bytes.
const BIG_TXN: usize = 1024 * 1024;

#[tokio::main]
async fn main() -> Result<()> {
    let edits: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("tdx-volt-bench-sync-{}", std::process::id()));
    let emulator = Emulator::builder(&dir).start().await?;
    for transport in [Transport::Grpc, Transport::Websocket] {
        let client = VoltClient::builder()
            .config_file(emulator.config_path())
            .transport(transport)
            .connect()
            .await?;
        let alias = format!("bench-{transport:?}").to_lowercase();
        client
            .save_resource(json!({"create": true, "resource": {
                "name": alias, "alias": [alias],
                "kind": ["volt:database", "volt:sqlite-database", "volt:sync-database"]}}))
            .await?;
        let database = format!("@{alias}");
        big_document(&client, &database, transport).await?;
        for (flush, name) in [
            (Duration::from_millis(50), "flush 50 ms"),
            (Duration::ZERO, "flush 0"),
        ] {
            let options = SyncOptions::new().flush(flush);
            edits_per_second(&client, &database, transport, edits, options, name).await?;
        }
        one_at_a_time(&client, &database, transport, (edits / 10).max(1)).await?;
    }
    emulator.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn text_len(doc: &Doc) -> usize {
    let txn = doc.transact();
    txn.get_text("content")
        .map(|t| t.len(&txn) as usize)
        .unwrap_or_default()
}

/// One provider writes 10 MB into `content` and stops; a fresh one syncs it.
async fn big_document(client: &VoltClient, database: &str, transport: Transport) -> Result<()> {
    let writer = Doc::new();
    let provider = client
        .sync(database, "big", writer.clone(), SyncOptions::new())
        .await?;
    provider.synced().await?;
    let content = writer.get_or_insert_text("content");
    let block = "lorem ipsum ".repeat(BIG_TXN / 12 + 1)[..BIG_TXN].to_owned();
    for _ in 0..BIG / BIG_TXN {
        let mut txn = writer.transact_mut();
        let len = content.len(&txn);
        content.insert(&mut txn, len, &block);
    }
    // Stopping sends what is pending and waits for the Volt to end the call.
    provider.stop().await;

    let reader = Doc::new();
    let start = Instant::now();
    let provider = client
        .sync(database, "big", reader.clone(), SyncOptions::new())
        .await?;
    provider.synced().await?;
    let took = start.elapsed();
    let got = text_len(&reader);
    if got != BIG {
        return Err(format!("the fresh provider has {got} bytes of text, not {BIG}").into());
    }
    println!(
        "{transport:?}: a fresh provider syncs a 10 MB document in {took:?} ({:.1} MB/s)",
        BIG as f64 / 1e6 / took.as_secs_f64()
    );
    provider.stop().await;
    Ok(())
}

/// A makes `edits` one-character edits, each its own transaction; the clock stops when B has
/// them all.
async fn edits_per_second(
    client: &VoltClient,
    database: &str,
    transport: Transport,
    edits: usize,
    options: SyncOptions,
    name: &str,
) -> Result<()> {
    let document = format!("edits-{}", name.replace(' ', "-"));
    let (a, b) = (Doc::new(), Doc::new());
    let changed = Arc::new(Notify::new());
    let on_change = Arc::clone(&changed);
    b.observe_update_v2("bench", move |_, _| on_change.notify_one())?;
    let pa = client
        .sync(database, &document, a.clone(), options.clone())
        .await?;
    let pb = client.sync(database, &document, b.clone(), options).await?;
    pa.synced().await?;
    pb.synced().await?;

    let content = a.get_or_insert_text("content");
    let start = Instant::now();
    for _ in 0..edits {
        {
            let mut txn = a.transact_mut();
            let len = content.len(&txn);
            content.insert(&mut txn, len, "x");
        }
        // Edits come as a stream over time, not all before the provider runs.
        tokio::task::yield_now().await;
    }
    let made = start.elapsed();
    let all = tokio::time::timeout(Duration::from_secs(600), async {
        while text_len(&b) < edits {
            changed.notified().await;
        }
    })
    .await;
    if all.is_err() {
        return Err(format!("B has {} of {edits} edits after 10 min", text_len(&b)).into());
    }
    let took = start.elapsed();
    println!(
        "{transport:?}, {name}: {edits} one-character edits from A to B in {took:?}: {:.0} edits/s \
         (A made them in {made:?})",
        edits as f64 / took.as_secs_f64()
    );
    pa.stop().await;
    pb.stop().await;
    Ok(())
}

/// A makes the next edit once B has the last: the round trip A, the Volt, B, per edit.
async fn one_at_a_time(
    client: &VoltClient,
    database: &str,
    transport: Transport,
    edits: usize,
) -> Result<()> {
    let options = SyncOptions::new().flush(Duration::ZERO);
    let (a, b) = (Doc::new(), Doc::new());
    let changed = Arc::new(Notify::new());
    let on_change = Arc::clone(&changed);
    b.observe_update_v2("bench", move |_, _| on_change.notify_one())?;
    let pa = client
        .sync(database, "one-at-a-time", a.clone(), options.clone())
        .await?;
    let pb = client
        .sync(database, "one-at-a-time", b.clone(), options)
        .await?;
    pa.synced().await?;
    pb.synced().await?;

    let content = a.get_or_insert_text("content");
    let start = Instant::now();
    for n in 1..=edits {
        {
            let mut txn = a.transact_mut();
            let len = content.len(&txn);
            content.insert(&mut txn, len, "x");
        }
        let arrived = tokio::time::timeout(Duration::from_secs(60), async {
            while text_len(&b) < n {
                changed.notified().await;
            }
        })
        .await;
        if arrived.is_err() {
            return Err(format!("B never got edit {n}").into());
        }
    }
    let took = start.elapsed();
    println!(
        "{transport:?}, one at a time: {edits} one-character edits, each sent once B has the \
         last, in {took:?}: {:.0} edits/s ({:?} per round trip)",
        edits as f64 / took.as_secs_f64(),
        took / edits as u32
    );
    pa.stop().await;
    pb.stop().await;
    Ok(())
}
