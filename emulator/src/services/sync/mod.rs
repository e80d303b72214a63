//! SyncAPI: collaborative (Yjs) documents kept in sync databases.
//!
//! A sync database is a database resource (kinds `volt:database`, `volt:sqlite-database` and
//! `volt:sync-database`, as SaveSyncDatabase or the vendor's helpers make it); `database_id`
//! (and `synapse_id`, which names the same thing here) may be its id or an `@alias`. Each
//! document in it is identified by `document_id` (a Y.Doc's guid for the official web
//! provider), held in memory as a yrs document while something uses it, and persisted as Yjs
//! v2 updates in a table of the database's SQLite file (`store.rs`), so it survives a restart.
//!
//! - **SyncDocument** (`session.rs`): the state-vector handshake and live updates, as the
//!   official providers speak it: state vectors in Yjs v1 encoding, updates in v2, chunks of
//!   at most 1 MiB; awareness fanned out and never stored. Reading needs
//!   `volt:database-read`, changing the document `volt:database-write`; a rule whose `extra`
//!   names documents (`volt:resource-sync-document-id|doc-1,...|report-*`) counts for those
//!   documents only.
//! - **WriteSynapsePath** / **WatchSynapsePath** (`synapse_path.rs`): edits and watches over the
//!   document's JSON view (`json_view.rs`).
//!
//! The rest of SyncAPI (synapses and their connections, blobs, versions, document states and
//! metadata) is not implemented; SaveSyncDatabase is served with the database methods.

mod document;
mod json_view;
mod session;
mod store;
mod synapse_path;

use std::collections::HashMap;
use std::sync::Arc;

use crate::call::{Caller, Failure, Inbound, Outbound};
use crate::services::access::names;
use crate::services::sqlite::databases::find_database;

use super::Services;

pub use document::Document;

/// The SyncAPI methods [`dispatch`] routes.
pub const METHODS: [&str; 3] = ["SyncDocument", "WriteSynapsePath", "WatchSynapsePath"];

/// The largest update (or awareness update) a client may send, in bytes, over all its chunks.
pub const MAX_UPDATE_BYTES: usize = 64 * 1024 * 1024;

/// The longest `document_id` accepted.
pub const MAX_DOCUMENT_ID: usize = 1024;

/// The documents in use, by (database resource id, document id).
#[derive(Default)]
pub struct SyncHub {
    documents: tokio::sync::Mutex<HashMap<(String, String), Arc<Document>>>,
}

/// Routes a SyncAPI method.
pub async fn dispatch(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    match name {
        "SyncDocument" => session::sync_document(svc, caller, inbound, outbound).await,
        "WriteSynapsePath" => synapse_path::write(svc, caller, inbound, outbound).await,
        "WatchSynapsePath" => synapse_path::watch(svc, caller, inbound, outbound).await,
        _ => Err(Failure::unimplemented(&format!(
            "/tdx.volt_api.volt.v1.SyncAPI/{name}"
        ))),
    }
}

/// The document `document_id` of the sync database `database_id` (an id or `@alias`), loaded
/// when it is not yet, once `caller` is found to have `volt:database-read` on the database.
pub async fn open_document(
    svc: &Services,
    caller: &Caller,
    database_id: &str,
    document_id: &str,
) -> Result<Arc<Document>, Failure> {
    if document_id.is_empty() || document_id.len() > MAX_DOCUMENT_ID {
        return Err(Failure::invalid(format!(
            "document_id must have 1 to {MAX_DOCUMENT_ID} bytes"
        )));
    }
    let (resource, path) = find_database(svc, database_id)?;
    svc.authorize_document(caller, &resource.id, names::DATABASE_READ, document_id)?;
    let key = (resource.id, document_id.to_owned());
    let mut documents = svc.sync().documents.lock().await;
    if let Some(document) = documents.get(&key) {
        return Ok(Arc::clone(document));
    }
    // Documents nobody uses any more (no stream, watch or call holds them) are let go: all
    // they hold is on disk, and they load again when next asked for.
    documents.retain(|_, document| Arc::strong_count(document) > 1);
    let id = document_id.to_owned();
    let document = tokio::task::spawn_blocking(move || Document::load_blocking(path, &id))
        .await
        .map_err(|e| Failure::internal("loading a synced document", e))??;
    let document = Arc::new(document);
    documents.insert(key, Arc::clone(&document));
    Ok(document)
}

/// Checks that `caller` may change the document `document_id` of the sync database
/// `database_id` (`volt:database-write`, for all its documents or this one).
pub fn authorize_write(
    svc: &Services,
    caller: &Caller,
    database_id: &str,
    document_id: &str,
) -> Result<(), Failure> {
    let (resource, _) = find_database(svc, database_id)?;
    svc.authorize_document(caller, &resource.id, names::DATABASE_WRITE, document_id)
}

/// The database a SyncAPI request names: `database_id`, else `synapse_id`.
pub fn database_named<'a>(database_id: &'a str, synapse_id: &'a str) -> &'a str {
    if database_id.is_empty() {
        synapse_id
    } else {
        database_id
    }
}

#[cfg(test)]
mod tests;
