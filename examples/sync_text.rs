//! Joins a document of a sync database and prints its text field `content` each time it
//! changes, as one JSON line `{"content": "..."}`, until Ctrl-C.
//!
//! ```text
//! cargo run --example sync_text -- CONFIG_PATH DATABASE_ID DOCUMENT_ID
//! ```
//!
//! `DATABASE_ID` is the sync database's id or `@alias`. Edits from any other provider (the
//! official web client's Yjs provider, say) show up as they are made; the provider reconnects
//! on its own when the connection is lost, and catches up both ways.

use std::process::ExitCode;
use std::sync::Arc;

use serde_json::json;
use tdx_volt::client::SyncOptions;
use tdx_volt::yrs::{Doc, GetString, Transact};
use tdx_volt::VoltClient;
use tokio::sync::Notify;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [config, database, document] = args.as_slice() else {
        eprintln!("usage: sync_text CONFIG_PATH DATABASE_ID DOCUMENT_ID");
        return ExitCode::from(2);
    };
    match run(config, database, document).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sync_text: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: &str, database: &str, document: &str) -> tdx_volt::Result<()> {
    let client = VoltClient::builder().config_file(config).connect().await?;
    let doc = Doc::new();
    let content = doc.get_or_insert_text("content");
    let changed = Arc::new(Notify::new());
    let on_change = Arc::clone(&changed);
    doc.observe_update_v2("sync_text", move |_, _| on_change.notify_one())
        .map_err(|e| tdx_volt::Error::new(tdx_volt::ErrorKind::Config, e.to_string()))?;

    let provider = client
        .sync(database, document, doc.clone(), SyncOptions::new())
        .await?;
    provider.synced().await?;
    let mut shown = None;
    loop {
        let now = content.get_string(&doc.transact());
        if shown.as_ref() != Some(&now) {
            println!("{}", json!({ "content": now }));
            shown = Some(now);
        }
        tokio::select! {
            () = changed.notified() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    provider.stop().await;
    Ok(())
}
