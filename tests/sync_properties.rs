//! Property: three providers editing one document at once (text inserts at random places,
//! map sets, array pushes), each behind a fault proxy that cuts its connections now and
//! then, always converge to the same content, and that content holds every edit.
//!
//! One emulator per test function, reused across cases; each case syncs a fresh document.
//! A provider whose connections are cut reconnects by itself (the client's reconnect policy,
//! with short delays) and reruns the handshake.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::json;
use support::{within, TestVolt};
use tdx_volt::client::{SyncOptions, SyncProvider};
use tdx_volt::yrs::types::ToJson;
use tdx_volt::yrs::{Any, Array, Doc, GetString, Map, ReadTxn, Text, Transact};
use tdx_volt::{ReconnectPolicy, Transport, VoltClient};
use tdx_volt_emulator::fault::{route_config_through, FaultProxy};
use tokio::sync::Notify;

const PROVIDERS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// Inserts `text` into `content` at a random index.
    Insert {
        who: usize,
        at: prop::sample::Index,
        text: String,
    },
    /// Sets `key` in `meta` (to a value naming the op).
    Set { who: usize, key: u8 },
    /// Pushes a value naming the op onto `items`.
    Push { who: usize },
    /// Cuts every connection of this provider's client: it must reconnect by itself.
    Cut { who: usize },
    /// Lets the others run for a moment, so edits interleave with what arrives (this shapes
    /// the schedule; nothing is awaited by it).
    Pause { millis: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let who = 0..PROVIDERS;
    prop_oneof![
        4 => (who.clone(), any::<prop::sample::Index>(), "[a-z]{1,6}")
            .prop_map(|(who, at, text)| Op::Insert { who, at, text }),
        2 => (who.clone(), 0u8..6).prop_map(|(who, key)| Op::Set { who, key }),
        2 => who.clone().prop_map(|who| Op::Push { who }),
        1 => who.prop_map(|who| Op::Cut { who }),
        1 => (1u64..15).prop_map(|millis| Op::Pause { millis }),
    ]
}

/// A sync database the way the vendor's helpers make one, by alias.
async fn sync_database(client: &VoltClient, alias: &str) {
    client
        .save_resource(json!({"create": true, "resource": {
            "name": alias, "alias": [alias],
            "kind": ["volt:database", "volt:sqlite-database", "volt:sync-database"]}}))
        .await
        .expect("SaveResource");
}

/// What every provider's document must end up holding.
#[derive(Default, Debug)]
struct Expected {
    /// Every character inserted, sorted.
    chars: Vec<char>,
    /// For each key, every value it was set to (the one kept is one of them).
    keys: BTreeMap<String, Vec<String>>,
    /// Every value pushed, sorted.
    items: Vec<String>,
}

/// The document's content, for comparing documents.
#[derive(Debug, PartialEq)]
struct View {
    content: String,
    meta: Any,
    items: Any,
}

fn view(doc: &Doc) -> View {
    let txn = doc.transact();
    View {
        content: txn
            .get_text("content")
            .map(|t| t.get_string(&txn))
            .unwrap_or_default(),
        meta: txn
            .get_map("meta")
            .map(|m| m.to_json(&txn))
            .unwrap_or_else(|| Any::Map(Default::default())),
        items: txn
            .get_array("items")
            .map(|a| a.to_json(&txn))
            .unwrap_or_else(|| Any::Array(Default::default())),
    }
}

fn strings(any: &Any) -> Vec<String> {
    match any {
        Any::Array(items) => items
            .iter()
            .map(|i| match i {
                Any::String(s) => s.to_string(),
                other => panic!("not a string: {other:?}"),
            })
            .collect(),
        other => panic!("not an array: {other:?}"),
    }
}

/// Whether `view` holds exactly the effect of every op.
fn holds_every_op(view: &View, expected: &Expected) -> bool {
    let mut chars: Vec<char> = view.content.chars().collect();
    chars.sort_unstable();
    let mut items = strings(&view.items);
    items.sort();
    let Any::Map(meta) = &view.meta else {
        return false;
    };
    chars == expected.chars
        && items == expected.items
        && meta.len() == expected.keys.len()
        && expected.keys.iter().all(|(key, values)| {
            matches!(meta.get(key.as_str()), Some(Any::String(v)) if values.iter().any(|x| x.as_str() == &**v))
        })
}

/// One client per provider, each through a fault proxy of its own.
struct Peer {
    proxy: FaultProxy,
    client: VoltClient,
}

async fn peers(volt: &TestVolt) -> Vec<Peer> {
    let (gateway, grpc) = volt.addresses();
    let policy = ReconnectPolicy::default()
        .with_initial_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(100));
    let mut peers = Vec::new();
    // Both transports: gRPC, the websocket gateway, gRPC.
    for (n, transport) in [Transport::Grpc, Transport::Websocket, Transport::Grpc]
        .into_iter()
        .enumerate()
    {
        let grpc_side = transport == Transport::Grpc;
        let proxy = FaultProxy::start(if grpc_side { grpc } else { gateway })
            .await
            .expect("proxy");
        let routed = if grpc_side {
            route_config_through(&volt.config(), Some(proxy.addr()), None)
        } else {
            route_config_through(&volt.config(), None, Some(proxy.addr()))
        }
        .expect("routed");
        let client = VoltClient::builder()
            .config(routed)
            .transport(transport)
            .reconnect(policy.clone())
            .connect()
            .await
            .unwrap_or_else(|e| panic!("client {n}: {e}"));
        peers.push(Peer { proxy, client });
    }
    peers
}

/// Runs one case: three providers on a fresh document, the ops, then waits for all three
/// documents to converge on content that holds every op.
async fn case(peers: &[Peer], document: &str, ops: &[Op]) {
    let docs: Vec<Doc> = (0..PROVIDERS).map(|_| Doc::new()).collect();
    // Notified on every change of any of the documents.
    let changed = Arc::new(Notify::new());
    for doc in &docs {
        let on_change = Arc::clone(&changed);
        doc.observe_update_v2("property-changes", move |_, _| on_change.notify_one())
            .expect("observed");
    }
    let options = SyncOptions::new().flush(Duration::from_millis(5));
    let mut providers: Vec<SyncProvider> = Vec::new();
    for (peer, doc) in peers.iter().zip(&docs) {
        let provider = peer
            .client
            .sync("@props", document, doc.clone(), options.clone())
            .await
            .expect("sync");
        providers.push(provider);
    }
    for (n, provider) in providers.iter().enumerate() {
        within(&format!("provider {n} synced"), provider.synced())
            .await
            .unwrap_or_else(|e| panic!("provider {n}: {e}"));
    }

    let mut expected = Expected::default();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Insert { who, at, text } => {
                let doc = &docs[*who];
                let content = doc.get_or_insert_text("content");
                let mut txn = doc.transact_mut();
                let len = content.len(&txn) as usize;
                content.insert(&mut txn, at.index(len + 1) as u32, text);
                expected.chars.extend(text.chars());
            }
            Op::Set { who, key } => {
                let doc = &docs[*who];
                let meta = doc.get_or_insert_map("meta");
                let (key, value) = (format!("k{key}"), format!("{who}:{i}"));
                meta.insert(&mut doc.transact_mut(), key.clone(), value.clone());
                expected.keys.entry(key).or_default().push(value);
            }
            Op::Push { who } => {
                let doc = &docs[*who];
                let items = doc.get_or_insert_array("items");
                let value = format!("{who}:{i}");
                items.push_back(&mut doc.transact_mut(), value.clone());
                expected.items.push(value);
            }
            Op::Cut { who } => peers[*who].proxy.cut_all(),
            Op::Pause { millis } => tokio::time::sleep(Duration::from_millis(*millis)).await,
        }
    }
    expected.chars.sort_unstable();
    expected.items.sort();

    let converged = |docs: &[Doc]| {
        let first = view(&docs[0]);
        holds_every_op(&first, &expected) && docs[1..].iter().all(|d| view(d) == first)
    };
    let waited = tokio::time::timeout(support::WAIT, async {
        while !converged(&docs) {
            changed.notified().await;
        }
    })
    .await;
    if waited.is_err() {
        let views: Vec<View> = docs.iter().map(view).collect();
        let states: Vec<String> = docs
            .iter()
            .map(|d| {
                let txn = d.transact();
                format!(
                    "client {} sv {:?} missing {}",
                    d.client_id(),
                    txn.state_vector(),
                    txn.has_missing_updates()
                )
            })
            .collect();
        let statuses: Vec<_> = providers
            .iter()
            .map(|p| p.status().borrow().clone())
            .collect();
        panic!(
            "no convergence after {:?}\nexpected {expected:?}\nviews {views:?}\nstatuses {statuses:?}\nstates {states:#?}\nops {ops:?}",
            support::WAIT
        );
    }
    for provider in providers {
        within("stopped", provider.stop()).await;
    }
}

#[test]
fn three_providers_with_random_disconnects_converge() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (volt, peers) = runtime.block_on(async {
        let volt = TestVolt::start("sync-properties").await;
        sync_database(&volt.client_over(Transport::Grpc).await, "props").await;
        let peers = peers(&volt).await;
        (volt, peers)
    });
    let cases = Mutex::new(0u32);
    let mut runner = TestRunner::new(Config {
        // PROPTEST_CASES runs more (a soak); the default keeps the test quick.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(6),
        // A failing case takes up to the wait to fail: shrink a little, not for long.
        max_shrink_iters: 16,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&prop::collection::vec(op(), 1..40), |ops| {
        let n = {
            let mut cases = cases.lock().expect("counter");
            *cases += 1;
            *cases
        };
        runtime.block_on(case(&peers, &format!("doc-{n}"), &ops));
        Ok::<(), TestCaseError>(())
    });
    runtime.block_on(async move {
        drop(peers);
        let mut volt = volt;
        volt.stop().await;
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
