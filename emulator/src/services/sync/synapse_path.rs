//! WriteSynapsePath and WatchSynapsePath: a synced document edited and watched through its JSON
//! view (`json_view.rs`), without holding a Y.Doc.
//!
//! * **WriteSynapsePath** (unary): `database_id` (else `synapse_id`), `document_id`, `path`
//!   (`$.map.key`) and `json` (the value, as JSON text; empty removes it). Needs
//!   `volt:database-write`. The edit is one Yjs update, stored and sent to every SyncDocument
//!   stream of the document like a client's.
//! * **WatchSynapsePath** (bidi): the first request is `start {synapse_id, document_id,
//!   path[]}` (needs `volt:database-read`). The first response is `status {code: 0}` once the
//!   watch is in place. Then, for each watched path that has a value, an ADD with the value.
//!   After every change to the document, each watched path whose value changed gets events:
//!   when the old and new values are both objects, one per member added (ADD), changed
//!   (UPDATE) or removed (DELETE), with `event_path` naming the member; otherwise one ADD,
//!   UPDATE or DELETE for the path itself. `value` and `previous_value` are JSON text; `index`
//!   and `total` number the events sent for one change. `stop` or the client ending its side
//!   ends the call.

use std::sync::Arc;

use serde_json::Value;
use tdx_volt::proto::volt as pb;

use crate::call::{Caller, Failure, Inbound, Outbound};
use crate::services::{unary, Services};

use super::json_view::{self, Step};
use super::{authorize_write, database_named, open_document};

use pb::SynapsePathUpdateType as Kind;

/// The most paths one watch may name.
pub const MAX_WATCHED_PATHS: usize = 64;

/// Serves WriteSynapsePath.
pub async fn write(
    svc: &Arc<Services>,
    caller: &Caller,
    inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    unary(
        inbound,
        outbound,
        |r: pb::WriteSynapsePathRequest| async move {
            let database = database_named(&r.database_id, &r.synapse_id);
            let steps = json_view::parse(&r.path)?;
            let value = if r.json.trim().is_empty() {
                None
            } else {
                Some(
                    serde_json::from_str::<Value>(&r.json)
                        .map_err(|e| Failure::invalid(format!("json is not JSON: {e}")))?,
                )
            };
            authorize_write(svc, caller, database, &r.document_id)?;
            let document = open_document(svc, caller, database, &r.document_id).await?;
            document
                .edit(|txn| json_view::write(txn, &steps, value))
                .await?;
            Ok(pb::WriteSynapsePathResponse { status: None })
        },
    )
    .await
}

/// Serves WatchSynapsePath.
pub async fn watch(
    svc: &Arc<Services>,
    caller: &Caller,
    mut inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    use pb::watch_synapse_path_request::Payload;
    let start = match inbound.next::<pb::WatchSynapsePathRequest>().await? {
        None
        | Some(pb::WatchSynapsePathRequest {
            payload: Some(Payload::Stop(true)),
        }) => return Ok(()),
        Some(pb::WatchSynapsePathRequest {
            payload: Some(Payload::Start(start)),
        }) => start,
        Some(_) => {
            return Err(Failure::invalid(
                "WatchSynapsePath: the first request must carry start",
            ))
        }
    };
    if start.path.is_empty() || start.path.len() > MAX_WATCHED_PATHS {
        return Err(Failure::invalid(format!(
            "WatchSynapsePath: name 1 to {MAX_WATCHED_PATHS} paths"
        )));
    }
    let paths = start
        .path
        .iter()
        .map(|p| json_view::parse(p).map(|steps| (p.clone(), steps)))
        .collect::<Result<Vec<(String, Vec<Step>)>, Failure>>()?;
    let document = open_document(svc, caller, &start.synapse_id, &start.document_id).await?;
    let mut version = document.watch_version();
    version.mark_unchanged();
    let mut last = values(&document, &paths).await;
    send(
        outbound,
        pb::watch_synapse_path_response::Result::Status(pb::Status::default()),
    )
    .await?;
    let initial: Vec<pb::WatchSynapsePathUpdate> = paths
        .iter()
        .zip(&last)
        .filter_map(|((path, _), value)| {
            value
                .as_ref()
                .map(|v| event(path, path, Kind::Add, Some(v), None))
        })
        .collect();
    send_all(outbound, initial).await?;
    loop {
        tokio::select! {
            request = inbound.next::<pb::WatchSynapsePathRequest>() => match request? {
                None => return Ok(()),
                Some(r) if r.payload == Some(Payload::Stop(true)) => return Ok(()),
                Some(_) => {}
            },
            changed = version.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                version.mark_unchanged();
                let now = values(&document, &paths).await;
                let mut events = Vec::new();
                for (((path, _), before), after) in paths.iter().zip(&last).zip(&now) {
                    changes(path, before.as_ref(), after.as_ref(), &mut events);
                }
                last = now;
                send_all(outbound, events).await?;
            }
            () = outbound.closed() => return Err(Failure::cancelled()),
        }
    }
}

async fn values(document: &super::Document, paths: &[(String, Vec<Step>)]) -> Vec<Option<Value>> {
    document
        .read(|txn| {
            paths
                .iter()
                .map(|(_, steps)| json_view::value_at(txn, steps))
                .collect()
        })
        .await
}

/// The events for one watched path whose value went from `before` to `after`.
fn changes(
    path: &str,
    before: Option<&Value>,
    after: Option<&Value>,
    out: &mut Vec<pb::WatchSynapsePathUpdate>,
) {
    match (before, after) {
        (Some(Value::Object(old)), Some(Value::Object(new))) => {
            for (key, value) in new {
                let member = format!("{path}.{key}");
                match old.get(key) {
                    None => out.push(event(path, &member, Kind::Add, Some(value), None)),
                    Some(was) if was != value => {
                        out.push(event(path, &member, Kind::Update, Some(value), Some(was)))
                    }
                    Some(_) => {}
                }
            }
            for (key, was) in old {
                if !new.contains_key(key) {
                    let member = format!("{path}.{key}");
                    out.push(event(path, &member, Kind::Delete, None, Some(was)));
                }
            }
        }
        (None, Some(value)) => out.push(event(path, path, Kind::Add, Some(value), None)),
        (Some(was), None) => out.push(event(path, path, Kind::Delete, None, Some(was))),
        (Some(was), Some(value)) if was != value => {
            out.push(event(path, path, Kind::Update, Some(value), Some(was)))
        }
        _ => {}
    }
}

fn event(
    watch_path: &str,
    event_path: &str,
    kind: Kind,
    value: Option<&Value>,
    previous: Option<&Value>,
) -> pb::WatchSynapsePathUpdate {
    pb::WatchSynapsePathUpdate {
        watch_path: watch_path.to_owned(),
        event_path: event_path.to_owned(),
        update_type: kind as i32,
        value: value.map(Value::to_string).unwrap_or_default(),
        previous_value: previous.map(Value::to_string).unwrap_or_default(),
        index: 0,
        total: 0,
    }
}

/// Sends the events of one change, numbered.
async fn send_all(
    outbound: &Outbound,
    mut events: Vec<pb::WatchSynapsePathUpdate>,
) -> Result<(), Failure> {
    let total = u32::try_from(events.len()).unwrap_or(u32::MAX);
    for (i, mut e) in events.drain(..).enumerate() {
        e.index = u32::try_from(i).unwrap_or(u32::MAX);
        e.total = total;
        send(outbound, pb::watch_synapse_path_response::Result::Update(e)).await?;
    }
    Ok(())
}

async fn send(
    outbound: &Outbound,
    result: pb::watch_synapse_path_response::Result,
) -> Result<(), Failure> {
    outbound
        .send(&pb::WatchSynapsePathResponse {
            result: Some(result),
        })
        .await
}
