//! Document sync with `VoltClient::sync` against volt-emulator: providers over gRPC and the
//! websocket gateway converge, keep converging across an emulator restart (offline edits on
//! both sides merge), never drop a local edit under a burst, and send what is pending when
//! stopped.

mod support;

use std::sync::Arc;

use serde_json::json;
use support::{within, TestVolt};
use tdx_volt::client::{SyncOptions, SyncProvider, SyncStatus};
use tdx_volt::yrs::{Array, Doc, GetString, Map, ReadTxn, Text, Transact};
use tdx_volt::{Transport, VoltClient};
use tokio::sync::Notify;

/// A sync database the way the vendor's helpers make one, by alias.
async fn sync_database(client: &VoltClient, alias: &str) {
    client
        .save_resource(json!({"create": true, "resource": {
            "name": alias, "alias": [alias],
            "kind": ["volt:database", "volt:sqlite-database", "volt:sync-database"]}}))
        .await
        .expect("SaveResource");
}

fn options() -> SyncOptions {
    SyncOptions::new().flush(std::time::Duration::from_millis(5))
}

/// Notified on every change of `doc` (local or synced in).
fn changes(doc: &Doc) -> Arc<Notify> {
    let notify = Arc::new(Notify::new());
    let on_change = Arc::clone(&notify);
    doc.observe_update_v2("test-changes", move |_, _| on_change.notify_one())
        .expect("observed");
    notify
}

/// Waits (on `changed`) until `check` holds for `doc`.
async fn until(what: &str, doc: &Doc, changed: &Notify, check: impl Fn(&Doc) -> bool) {
    within(what, async {
        while !check(doc) {
            changed.notified().await;
        }
    })
    .await;
}

fn text(doc: &Doc) -> String {
    let txn = doc.transact();
    txn.get_text("content")
        .map(|t| t.get_string(&txn))
        .unwrap_or_default()
}

fn append(doc: &Doc, what: &str) {
    let text = doc.get_or_insert_text("content");
    let mut txn = doc.transact_mut();
    let len = text.len(&txn);
    text.insert(&mut txn, len, what);
}

async fn synced_again(provider: &SyncProvider) {
    let mut status = provider.status();
    within(
        "synced again",
        status.wait_for(|s| *s == SyncStatus::Synced),
    )
    .await
    .expect("a status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_on_both_transports_converge_across_a_restart() {
    let mut volt = TestVolt::start("sync-providers").await;
    let a = volt.client_over(Transport::Grpc).await;
    let b = volt.client_over(Transport::Websocket).await;
    sync_database(&a, "notes").await;

    let (doc_a, doc_b) = (Doc::new(), Doc::new());
    let (changed_a, changed_b) = (changes(&doc_a), changes(&doc_b));
    // An edit made before syncing goes in the handshake.
    append(&doc_a, "hello");
    let pa = a
        .sync("@notes", "doc", doc_a.clone(), options())
        .await
        .expect("A");
    let pb = b
        .sync("@notes", "doc", doc_b.clone(), options())
        .await
        .expect("B");
    within("A synced", pa.synced()).await.expect("A syncs");
    within("B synced", pb.synced()).await.expect("B syncs");
    until("B has A's text", &doc_b, &changed_b, |d| text(d) == "hello").await;

    // Maps and arrays both ways.
    {
        let meta = doc_b.get_or_insert_map("meta");
        let items = doc_b.get_or_insert_array("items");
        let mut txn = doc_b.transact_mut();
        meta.insert(&mut txn, "title", "draft");
        items.push_back(&mut txn, 1);
        items.push_back(&mut txn, 2);
    }
    until("A has B's map and array", &doc_a, &changed_a, |d| {
        let txn = d.transact();
        txn.get_map("meta").is_some_and(|m| m.len(&txn) == 1)
            && txn.get_array("items").is_some_and(|a| a.len(&txn) == 2)
    })
    .await;

    // The Volt goes away; both edit meanwhile; it comes back with its data.
    let addresses = volt.addresses();
    volt.stop().await;
    let mut status = pa.status();
    within(
        "A notices",
        status.wait_for(|s| matches!(s, SyncStatus::Disconnected { .. })),
    )
    .await
    .expect("a status");
    append(&doc_a, " from A offline");
    append(&doc_b, " from B offline");
    volt.start_on(addresses).await;
    synced_again(&pa).await;
    synced_again(&pb).await;
    let both = |d: &Doc| {
        let t = text(d);
        t.contains("from A offline") && t.contains("from B offline")
    };
    until("A has both offline edits", &doc_a, &changed_a, both).await;
    until("B has both offline edits", &doc_b, &changed_b, both).await;
    assert_eq!(text(&doc_a), text(&doc_b));

    // A third provider, on a fresh document, gets all of it from the Volt.
    let doc_c = Doc::new();
    let pc = a
        .sync("@notes", "doc", doc_c.clone(), options())
        .await
        .expect("C");
    within("C synced", pc.synced()).await.expect("C syncs");
    assert_eq!(text(&doc_c), text(&doc_a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_edits_is_never_dropped_and_stop_sends_what_is_pending() {
    let volt = TestVolt::start("sync-burst").await;
    let client = volt.client_over(Transport::Grpc).await;
    sync_database(&client, "burst").await;
    let (doc_a, doc_b) = (Doc::new(), Doc::new());
    let changed_b = changes(&doc_b);
    let pa = client
        .sync("@burst", "doc", doc_a.clone(), options())
        .await
        .expect("A");
    let pb = client
        .sync("@burst", "doc", doc_b.clone(), options())
        .await
        .expect("B");
    within("A synced", pa.synced()).await.expect("A syncs");
    within("B synced", pb.synced()).await.expect("B syncs");
    // 2,000 transactions as fast as they come: each one its own update event.
    for _ in 0..2000 {
        append(&doc_a, "x");
    }
    until("B has all 2,000", &doc_b, &changed_b, |d| {
        text(d).len() == 2000
    })
    .await;

    // An edit right before stop still goes.
    append(&doc_a, "!");
    within("stopped", pa.stop()).await;
    assert_eq!(text(&doc_a).len(), 2001, "the document stays as it is");
    until("B has the last edit", &doc_b, &changed_b, |d| {
        text(d).len() == 2001
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_does_not_exist_fails_the_provider() {
    let volt = TestVolt::start("sync-missing").await;
    let client = volt.client_over(Transport::Grpc).await;
    let provider = client
        .sync("no-such-database", "doc", Doc::new(), options())
        .await
        .expect("started");
    let err = within("refused", provider.synced())
        .await
        .expect_err("no such database");
    assert!(
        matches!(&*provider.status().borrow(), SyncStatus::Failed { .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awareness_reaches_the_others_and_goes_when_its_client_does() {
    let volt = TestVolt::start("sync-awareness").await;
    let a = volt.client_over(Transport::Grpc).await;
    let b = volt.client_over(Transport::Websocket).await;
    sync_database(&a, "presence").await;
    let pa = a
        .sync("@presence", "doc", Doc::new(), options())
        .await
        .expect("A");
    let pb = b
        .sync("@presence", "doc", Doc::new(), options())
        .await
        .expect("B");
    within("A synced", pa.synced()).await.expect("A syncs");
    within("B synced", pb.synced()).await.expect("B syncs");
    let a_id = pa.doc().client_id().get();

    pa.set_awareness(&json!({"user": "a", "cursor": 3}));
    let mut seen = pb.awareness_changes();
    let has_a = |p: &SyncProvider| {
        p.awareness()
            .iter()
            .any(|(id, state)| *id == a_id && state["user"] == json!("a"))
    };
    within("B sees A", async {
        while !has_a(&pb) {
            seen.changed().await.expect("B's provider lives");
        }
    })
    .await;
    // A leaves: B hears that its presence is gone.
    within("A stops", pa.stop()).await;
    within("B forgets A", async {
        while has_a(&pb) {
            seen.changed().await.expect("B's provider lives");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_written_and_watched_without_holding_the_document() {
    use futures_util::StreamExt as _;
    use tdx_volt::client::PathChangeKind;

    let volt = TestVolt::start("sync-paths").await;
    let client = volt.client_over(Transport::Grpc).await;
    sync_database(&client, "paths").await;
    let doc = Doc::new();
    let changed = changes(&doc);
    let provider = client
        .sync("@paths", "doc", doc.clone(), options())
        .await
        .expect("a provider");
    within("synced", provider.synced()).await.expect("synced");
    let mut watch = client
        .watch_path("@paths", "doc", &["$.meta"])
        .await
        .expect("watching");

    client
        .write_path("@paths", "doc", "$.meta.title", &json!("draft"))
        .await
        .expect("written");
    // The provider's document has it, and the watch says so.
    until("the provider sees the write", &doc, &changed, |d| {
        let txn = d.transact();
        txn.get_map("meta")
            .and_then(|m| m.get(&txn, "title"))
            .is_some_and(|v| v.to_string(&txn) == "draft")
    })
    .await;
    let added = within("the watch", watch.next())
        .await
        .expect("open")
        .expect("a change");
    // `$.meta` appeared, holding the title.
    assert_eq!(added.kind, PathChangeKind::Add, "{added:?}");
    assert_eq!(added.event_path, "$.meta", "{added:?}");
    assert_eq!(added.value, Some(json!({"title": "draft"})), "{added:?}");
    // A refusal is the Volt's status.
    let err = client
        .write_path("no-such-database", "doc", "$.meta.title", &json!(1))
        .await
        .expect_err("refused");
    assert!(err.status().is_some(), "{err:?}");
}

/// A provider that keeps receiving updates more often than its flush interval still sends its
/// own edits within that interval (the Volt's updates never put the flush off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_edits_go_out_while_updates_keep_coming_in() {
    let volt = TestVolt::start("sync-steady-flow").await;
    let client = volt.client_over(Transport::Grpc).await;
    sync_database(&client, "flow").await;
    let (doc_a, doc_b) = (Doc::new(), Doc::new());
    let changed_b = changes(&doc_b);
    let pa = client
        .sync("@flow", "doc", doc_a.clone(), options())
        .await
        .expect("A");
    // B batches its edits over 300 ms; A's arrive every few.
    let pb = client
        .sync(
            "@flow",
            "doc",
            doc_b.clone(),
            SyncOptions::new().flush(std::time::Duration::from_millis(300)),
        )
        .await
        .expect("B");
    within("A synced", pa.synced()).await.expect("A syncs");
    within("B synced", pb.synced()).await.expect("B syncs");

    let items = doc_b.get_or_insert_array("items");
    items.push_back(&mut doc_b.transact_mut(), "from B");
    let b_edit_arrived = |d: &Doc| {
        let txn = d.transact();
        txn.get_array("items").is_some_and(|a| a.len(&txn) == 1)
    };
    // A edits one character at a time, each once B has the last, until B's edit reaches A.
    within("B's edit reaches A while A keeps editing", async {
        let mut sent = 0;
        while !b_edit_arrived(&doc_a) {
            append(&doc_a, "a");
            sent += 1;
            while text(&doc_b).len() < sent {
                changed_b.notified().await;
            }
        }
    })
    .await;
}
