//! Editing and watching a synced document by JSON path, without holding it:
//! `SyncAPI/WriteSynapsePath` and `WatchSynapsePath`, with the JSON values as values (the wire
//! carries them as JSON text) and the changes as a typed [`Stream`].
//!
//! Paths name a value of the document's JSON view: `$.root.key[0]`, the first step a root
//! type of the document (a map, an array or a text).

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use serde_json::{json, Value};

use super::{Call, CallEvent, VoltClient};
use crate::{Error, ErrorKind, Result, Status};

/// What happened at a watched path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathChangeKind {
    /// A value appeared (also: each watched path that has a value, when the watch starts).
    Add,
    /// A value changed.
    Update,
    /// A value went.
    Delete,
}

/// One change at or under a watched path.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PathChange {
    /// The watched path the change is under.
    pub watch_path: String,
    /// Where the change is.
    pub event_path: String,
    /// What happened.
    pub kind: PathChangeKind,
    /// The value now (`None` for a deletion).
    pub value: Option<Value>,
    /// The value before (`None` for an addition).
    pub previous: Option<Value>,
}

/// The changes at some paths of a document, as they happen. Made by
/// [`VoltClient::watch_path`]; dropping it ends the watch.
#[must_use = "dropping a watch ends it"]
pub struct PathWatch {
    call: Call,
}

impl std::fmt::Debug for PathWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PathWatch").finish_non_exhaustive()
    }
}

impl Stream for PathWatch {
    type Item = Result<PathChange>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let event = match Pin::new(&mut self.call).poll_next(cx) {
                Poll::Ready(Some(event)) => event,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            match event {
                CallEvent::Data(response) => match change(&response) {
                    Ok(Some(change)) => return Poll::Ready(Some(Ok(change))),
                    Ok(None) => continue,
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
                CallEvent::Error(e) | CallEvent::Failed(e) => return Poll::Ready(Some(Err(e))),
                CallEvent::End => return Poll::Ready(None),
            }
        }
    }
}

/// Reads one response: a change, nothing (a status without a message), or the Volt's refusal.
fn change(response: &Value) -> Result<Option<PathChange>> {
    refusal(response)?;
    let Some(update) = response.get("update").filter(|u| u.is_object()) else {
        return Ok(None);
    };
    let text = |field: &str| update[field].as_str().unwrap_or_default().to_owned();
    let value = |field: &str| {
        let raw = text(field);
        // The wire carries JSON text; one that is not JSON is kept as a string.
        (!raw.is_empty()).then(|| serde_json::from_str(&raw).unwrap_or(Value::String(raw)))
    };
    let kind = match update["update_type"].as_str().unwrap_or_default() {
        "SYNAPSE_PATH_UPDATE_TYPE_ADD" => PathChangeKind::Add,
        "SYNAPSE_PATH_UPDATE_TYPE_DELETE" => PathChangeKind::Delete,
        "SYNAPSE_PATH_UPDATE_TYPE_UPDATE" => PathChangeKind::Update,
        other => {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("WatchSynapsePath: an update of unknown type {other:?}"),
            ))
        }
    };
    Ok(Some(PathChange {
        watch_path: text("watch_path"),
        event_path: text("event_path"),
        kind,
        value: value("value"),
        previous: value("previous_value"),
    }))
}

/// A response's `status` with a message, as the Volt's error.
fn refusal(response: &Value) -> Result<()> {
    let status = &response["status"];
    match status["message"].as_str() {
        Some(message) if !message.is_empty() => Err(Error::from_status(Status::new(
            status["code"].as_i64().unwrap_or(2) as i32,
            message,
            status["description"].as_str().unwrap_or_default(),
        ))),
        _ => Ok(()),
    }
}

impl VoltClient {
    /// Writes `value` at `path` (`$.root.key[0]`) of the document `document_id` of the sync
    /// database `database_id` (its id or `@alias`), without holding the document; `null`
    /// removes what is there. Other clients syncing the document see the change.
    pub async fn write_path(
        &self,
        database_id: &str,
        document_id: &str,
        path: &str,
        value: &Value,
    ) -> Result<()> {
        let json = if value.is_null() {
            String::new()
        } else {
            value.to_string()
        };
        let response = self
            .write_synapse_path(json!({
                "database_id": database_id,
                "document_id": document_id,
                "path": path,
                "json": json,
            }))
            .await?;
        refusal(&response)
    }

    /// Watches `paths` of a document: an [`Add`](PathChangeKind::Add) for each that has a
    /// value now, then every change at or under them, until the watch is dropped.
    pub async fn watch_path(
        &self,
        database_id: &str,
        document_id: &str,
        paths: &[&str],
    ) -> Result<PathWatch> {
        let call = self
            .watch_synapse_path(json!({"start": {
                "synapse_id": database_id,
                "document_id": document_id,
                "path": paths,
            }}))
            .await?;
        Ok(PathWatch { call })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_read_as_changes() {
        let added = change(&json!({"update": {
            "watch_path": "$.meta", "event_path": "$.meta.title",
            "update_type": "SYNAPSE_PATH_UPDATE_TYPE_ADD", "value": "\"draft\""}}))
        .expect("reads")
        .expect("a change");
        assert_eq!(added.kind, PathChangeKind::Add);
        assert_eq!(added.value, Some(json!("draft")));
        assert_eq!(added.previous, None);
        assert!(change(&json!({"status": {"code": 0, "message": ""}}))
            .expect("no refusal")
            .is_none());
        let refused = change(&json!({"status": {"code": 7, "message": "no"}}));
        assert_eq!(
            refused.expect_err("refused").status().map(|s| s.code),
            Some(7)
        );
        assert!(change(&json!({"update": {"update_type": "SOMETHING"}})).is_err());
    }
}
