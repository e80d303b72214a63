//! Document sync with the official Yjs provider: our provider (`VoltClient::sync`) edits a
//! document of `volt-emulator serve`, then `interop/sync-web-provider.mjs` runs two
//! @tdxvolt/volt-client-web SyncProviders on the same document while ours stays on it
//! (concurrent edits by all three, awareness and its removal, an offline edit merged on
//! reconnecting, 3 MiB of text in chunks, a late read-only provider). Ours must end with the
//! content the official providers converged to, and a fresh yrs client must read it too.
//!
//! Needs `node` and the pinned packages (yjs among them) in `interop/node_modules`
//! (`npm ci --prefix interop`); without them this test fails rather than skips.

#[path = "support/process.rs"]
mod process;
mod support;
#[path = "support/sync_client.rs"]
mod sync_client;

use std::ffi::OsStr;

use std::sync::Arc;

use process::{run_script, workspace_root, EmulatorProcess, Script, SCRIPT_TIMEOUT};
use serde_json::{json, Value};
use sync_client::{text, Party, SyncClient};
use tdx_volt::client::SyncOptions;
use tdx_volt::protocol::config::ClientConfig;
use tdx_volt::VoltClient;
use yrs::{Array, Doc, Map, ReadTxn, Text, Transact};

const NPM_HINT: &str = "run `npm ci --prefix interop` from the workspace root (CI does this first)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_web_providers_and_ours_converge_on_one_document() {
    let root = workspace_root();
    for package in ["@tdxvolt/volt-client-web", "yjs", "y-protocols", "ws"] {
        let manifest = root
            .join("interop/node_modules")
            .join(package)
            .join("package.json");
        assert!(
            manifest.is_file(),
            "{} is missing: {NPM_HINT}",
            manifest.display()
        );
    }
    let emulator = EmulatorProcess::start("sync-web", &[]);
    let config = emulator.ready.config.clone();
    let ca_pem = emulator.ca_pem_path();

    // Our provider first: a sync database, the document, our edits.
    let client = VoltClient::builder()
        .config_file(&config)
        .connect()
        .await
        .expect("our client");
    let alias = format!("interop-ours-{}", std::process::id());
    let guid = format!("doc-ours-{}", std::process::id());
    client
        .save_sync_database(
            json!({"resource": {"name": "interop sync", "alias": [alias]},
                                    "create": true}),
        )
        .await
        .expect("SaveSyncDatabase");
    let doc = Doc::new();
    let changed = Arc::new(tokio::sync::Notify::new());
    let on_change = Arc::clone(&changed);
    doc.observe_update_v2("test", move |_, _| on_change.notify_one())
        .expect("observed");
    let provider = client
        .sync(&format!("@{alias}"), &guid, doc.clone(), SyncOptions::new())
        .await
        .expect("our provider");
    tokio::time::timeout(support::WAIT, provider.synced())
        .await
        .expect("ours synced in time")
        .expect("synced");
    {
        let content = doc.get_or_insert_text("content");
        let map = doc.get_or_insert_map("map");
        let list = doc.get_or_insert_array("list");
        let mut txn = doc.transact_mut();
        content.insert(&mut txn, 0, "from R. ");
        map.insert(&mut txn, "r", "rust");
        list.push_back(&mut txn, "r");
    }

    let script = root.join("interop").join("sync-web-provider.mjs");
    let run = {
        let (script, config, ca_pem, root) =
            (script.clone(), config.clone(), ca_pem.clone(), root.clone());
        let (alias, guid) = (alias.clone(), guid.clone());
        tokio::task::spawn_blocking(move || {
            run_script(&Script {
                name: "sync-web-provider.mjs",
                program: OsStr::new("node"),
                args: vec![
                    script.as_os_str(),
                    config.as_os_str(),
                    OsStr::new(&alias),
                    OsStr::new(&guid),
                ],
                env: vec![("NODE_EXTRA_CA_CERTS", ca_pem.as_os_str())],
                cwd: &root,
                hint: NPM_HINT,
                timeout: SCRIPT_TIMEOUT,
            })
        })
        .await
        .expect("the script's thread")
    };
    run.assert_finished(&emulator);
    println!("{}", run.stdout);
    let content: Value = run
        .stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|v| v["step"] == "content")
        .expect("the script reports the content");
    let expected_text = content["content"].as_str().expect("text").to_owned();
    assert!(expected_text.contains("from R. "), "{expected_text}");
    assert_eq!(content["map"]["r"], json!("rust"), "{content}");

    // Ours holds what the official providers converged to (3 MiB of `big` included).
    let big = content["bigLength"].as_u64().expect("bigLength");
    let converged = tokio::time::timeout(support::WAIT, async {
        loop {
            // One transaction at a time: a second one while holding the first can wait
            // forever behind the provider's write.
            let now = text(&doc, "content");
            let big_now = {
                let txn = doc.transact();
                txn.get_text("big").map_or(0, |t| t.len(&txn))
            };
            let done = now == expected_text && u64::from(big_now) == big;
            if done {
                break;
            }
            changed.notified().await;
        }
    })
    .await;
    assert!(
        converged.is_ok(),
        "ours did not converge: {:?}",
        text(&doc, "content").len()
    );
    assert_holds(&doc, &content);

    // And a fresh client of ours reads the same.
    let client_config = ClientConfig::from_file(&config).expect("config");
    let ca = std::fs::read_to_string(&ca_pem).expect("CA");
    let party = Party::connect(&emulator.ready.address, &ca, &client_config).await;
    let fresh = SyncClient::join(&party, &format!("@{alias}"), &guid, Doc::new()).await;
    assert_eq!(text(&fresh.doc, "content"), expected_text);
    assert_holds(&fresh.doc, &content);
    drop(fresh);
    provider.stop().await;
    emulator.terminate();
}

/// `doc`'s map and list are the ones the script reported.
fn assert_holds(doc: &Doc, content: &Value) {
    let map = doc.get_or_insert_map("map");
    let list = doc.get_or_insert_array("list");
    let txn = doc.transact();
    for (key, value) in [("b", "two"), ("a", "1"), ("r", "rust")] {
        assert_eq!(
            map.get(&txn, key).map(|v| v.to_string(&txn)),
            Some(value.into()),
            "map key {key}"
        );
    }
    let items: Vec<String> = list.iter(&txn).map(|v| v.to_string(&txn)).collect();
    let expected: Vec<String> = content["list"]
        .as_array()
        .expect("list")
        .iter()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .collect();
    assert_eq!(items, expected);
}
