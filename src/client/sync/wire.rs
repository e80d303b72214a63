//! `SyncAPI/SyncDocument` messages in the proto3 JSON the client's calls carry: requests built
//! (updates cut into chunks of at most [`CHUNK`]), responses read (chunks put back together,
//! within [`MAX_UPDATE`]).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::{Error, ErrorKind, Result};

/// The method.
pub(super) const SYNC_DOCUMENT: &str = "/tdx.volt_api.volt.v1.SyncAPI/SyncDocument";
/// The largest chunk of an update in one message (what the official provider sends).
pub(super) const CHUNK: usize = 1024 * 1024;
/// The largest update (all its chunks) taken from the Volt.
pub(super) const MAX_UPDATE: usize = 128 * 1024 * 1024;

pub(super) const SYNCING: &str = "SYNC_STATE_SYNCING";
pub(super) const DONE: &str = "SYNC_STATE_DONE";
pub(super) const UPDATE: &str = "SYNC_STATE_UPDATE";
pub(super) const AWARENESS: &str = "SYNC_STATE_AWARENESS";

/// The opening request: the document, our state vector (v1), and the read-only wishes.
pub(super) fn start(
    database_id: &str,
    document_id: &str,
    state_vector: &[u8],
    read_only: bool,
    read_only_fallback: bool,
) -> Value {
    json!({
        "sync_start": {
            "database_id": database_id,
            "document_id": document_id,
            "state_vector": B64.encode(state_vector),
            "read_only": read_only,
            "read_only_fallback": read_only_fallback,
        },
        "sync_state": SYNCING,
    })
}

/// An update in `state`, as the messages that carry it: chunks of at most [`CHUNK`] bytes,
/// the last one `complete`; always at least one (an empty update is one empty chunk).
pub(super) fn chunks<'a>(
    state: &'static str,
    update: &'a [u8],
) -> impl Iterator<Item = Value> + 'a {
    let count = update.len().div_ceil(CHUNK).max(1);
    (0..count).map(move |i| {
        let end = update.len().min((i + 1) * CHUNK);
        let chunk = &update[(i * CHUNK).min(end)..end];
        json!({
            "sync_state": state,
            "update": {"chunk": B64.encode(chunk), "complete": i + 1 == count},
        })
    })
}

/// One response, read.
#[derive(Debug, Default)]
pub(super) struct Response {
    pub state: String,
    /// The server's state vector (v1), on the handshake's last SYNCING message.
    pub state_vector: Option<Vec<u8>>,
    pub chunk: Option<Vec<u8>>,
    pub complete: bool,
    pub read_only: bool,
}

/// Reads one response; a `status` with a message is the Volt refusing.
pub(super) fn response(message: &Value) -> Result<Response> {
    if let Some(status) = message.get("status").filter(|s| s.is_object()) {
        let text = status["message"].as_str().unwrap_or_default();
        if !text.is_empty() {
            let code = status["code"].as_i64().unwrap_or(2) as i32;
            return Err(Error::from_status(crate::Status::new(code, text, "")));
        }
    }
    let bytes = |v: &Value| -> Result<Vec<u8>> {
        B64.decode(v.as_str().unwrap_or_default()).map_err(|e| {
            Error::new(
                ErrorKind::Protocol,
                "SyncDocument: bytes that are not base64",
            )
            .with_source(e)
        })
    };
    let update = message.get("update").filter(|u| u.is_object());
    Ok(Response {
        state: message["sync_state"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        state_vector: message
            .get("state_vector")
            .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
            .map(bytes)
            .transpose()?,
        chunk: update.map(|u| bytes(&u["chunk"])).transpose()?,
        complete: update.is_some_and(|u| u["complete"].as_bool().unwrap_or(false)),
        read_only: message["is_read_only"].as_bool().unwrap_or(false),
    })
}

/// Chunks put back together.
#[derive(Default)]
pub(super) struct Assembly {
    bytes: Vec<u8>,
}

impl Assembly {
    /// Adds a chunk; the whole update once `complete`.
    pub(super) fn add(&mut self, chunk: &[u8], complete: bool) -> Result<Option<Vec<u8>>> {
        if self.bytes.len() + chunk.len() > MAX_UPDATE {
            return Err(Error::new(
                ErrorKind::Limit,
                format!("SyncDocument: an update over {MAX_UPDATE} bytes"),
            ));
        }
        self.bytes.extend_from_slice(chunk);
        Ok(complete.then(|| std::mem::take(&mut self.bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_go_in_chunks_with_the_last_complete() {
        let empty: Vec<Value> = chunks(UPDATE, &[]).collect();
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0]["update"], json!({"chunk": "", "complete": true}));
        let big = vec![7u8; CHUNK * 2 + 1];
        let sent: Vec<Value> = chunks(DONE, &big).collect();
        assert_eq!(sent.len(), 3);
        let mut assembly = Assembly::default();
        let mut whole = None;
        for message in &sent {
            let read = response(message).expect("reads");
            assert_eq!(read.state, DONE);
            whole = assembly
                .add(&read.chunk.expect("a chunk"), read.complete)
                .expect("fits");
        }
        assert_eq!(whole.expect("complete"), big);
    }

    #[test]
    fn a_status_is_the_volts_refusal_and_bad_bytes_are_errors() {
        let refused = response(&json!({"status": {"code": 7, "message": "no"}}));
        assert_eq!(
            refused.expect_err("refused").status().map(|s| s.code),
            Some(7)
        );
        assert!(response(&json!({"update": {"chunk": "%%%"}})).is_err());
        let ok = response(&json!({"status": {"code": 0, "message": ""},
                                  "sync_state": "SYNC_STATE_DONE"}))
        .expect("no refusal");
        assert_eq!(ok.state, DONE);
    }
}
