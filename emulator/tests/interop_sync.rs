//! Document sync with the official Yjs provider: `interop/sync-web-provider.mjs` runs
//! @tdxvolt/volt-client-web SyncProviders on one document through `volt-emulator serve`
//! (concurrent edits, awareness and its removal, an offline edit merged on reconnecting, 3 MiB
//! of text in chunks, a late read-only provider); then a yrs client of ours joins the same document and must hold the
//! content the official providers converged to.
//!
//! Needs `node` and the pinned packages (yjs among them) in `interop/node_modules`
//! (`npm ci --prefix interop`); without them this test fails rather than skips.

#[path = "support/process.rs"]
mod process;
mod support;
#[path = "support/sync_client.rs"]
mod sync_client;

use std::ffi::OsStr;

use process::{run_script, workspace_root, EmulatorProcess, Script, SCRIPT_TIMEOUT};
use serde_json::Value;
use sync_client::{text, Party, SyncClient};
use tdx_volt::protocol::config::ClientConfig;
use yrs::{Array, Doc, Map, Transact};

const NPM_HINT: &str = "run `npm ci --prefix interop` from the workspace root (CI does this first)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_web_providers_converge_and_ours_reads_the_same_document() {
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
    let script = root.join("interop").join("sync-web-provider.mjs");
    let config = emulator.ready.config.clone();
    let ca_pem = emulator.ca_pem_path();
    let run = {
        let (script, config, ca_pem, root) =
            (script.clone(), config.clone(), ca_pem.clone(), root.clone());
        tokio::task::spawn_blocking(move || {
            run_script(&Script {
                name: "sync-web-provider.mjs",
                program: OsStr::new("node"),
                args: vec![script.as_os_str(), config.as_os_str()],
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

    let client = ClientConfig::from_file(&config).expect("config");
    let ca = std::fs::read_to_string(&ca_pem).expect("CA");
    let party = Party::connect(&emulator.ready.address, &ca, &client).await;
    let alias = format!("@{}", content["alias"].as_str().expect("alias"));
    let guid = content["guid"].as_str().expect("guid");
    let ours = SyncClient::join(&party, &alias, guid, Doc::new()).await;
    assert_eq!(
        text(&ours.doc, "content"),
        content["content"].as_str().expect("text")
    );
    let map = ours.doc.get_or_insert_map("map");
    let list = ours.doc.get_or_insert_array("list");
    let txn = ours.doc.transact();
    assert_eq!(
        map.get(&txn, "b").map(|v| v.to_string(&txn)),
        Some("two".into())
    );
    assert_eq!(
        map.get(&txn, "a").map(|v| v.to_string(&txn)),
        Some("1".into())
    );
    let items: Vec<String> = list.iter(&txn).map(|v| v.to_string(&txn)).collect();
    let expected: Vec<String> = content["list"]
        .as_array()
        .expect("list")
        .iter()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .collect();
    assert_eq!(items, expected);
    drop(txn);
    drop(ours);
    emulator.terminate();
}
