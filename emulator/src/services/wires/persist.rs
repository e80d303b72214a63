//! Persistent wires: a wire that is also a SQLite database stores every chunk published to it
//! as a row of a table in that database, so its history can be read back with
//! `SqliteDatabaseAPI/Execute` on the wire's id.
//!
//! * A wire persists when its resource has the attribute [`PERSIST_ATTRIBUTE`]
//!   (`volt:wire-persist`) whose first value is boolean true or the string `"true"` (any
//!   case). Its table is the string in [`TABLE_ATTRIBUTE`] (`volt:wire-persist-table`), or
//!   [`DEFAULT_TABLE`] when that is missing or empty. The name must be a plain identifier
//!   (see [`check_table`]); anything else is refused with `INVALID_ARGUMENT`, so it can go into
//!   SQL text.
//! * The resource must also have a database kind (`volt:database`, as
//!   `["volt:wire","volt:database","volt:sqlite-database"]`): a wire set to persist without
//!   one is refused with `FAILED_PRECONDITION` when publishing starts, rather than storing
//!   rows nobody can query.
//! * `SaveWire` with `persist` sets both attributes (the table from `persist_table`) and adds
//!   the database kinds. `persist: false` changes nothing (proto3 cannot tell it from unset).
//! * The settings are read when a publish call names its wire; the table (layout in
//!   `sqlite/wire_history.rs`) is created then, so a bad setting fails the call at its first
//!   message. A request with `do_not_persist` is delivered but not stored.
//! * Delivery to subscribers is not delayed by storage: each publish call has a writer task
//!   that takes the chunks in order and stores what has queued up in one transaction, on a
//!   blocking thread. At most [`MAX_UNWRITTEN_BYTES`] of chunks wait for it; beyond that the
//!   publisher waits. The call's closing status is sent only once every row it queued is
//!   committed; a row that cannot be stored fails the call with SQLite's message (subscribers
//!   may have received that chunk already).

use std::sync::Arc;

use tdx_volt::proto::volt::attribute_value::Value;
use tdx_volt::proto::volt::{AttributeDataType, AttributeValue, Resource, ResourceAttribute};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::call::{Code, Failure};
use crate::services::resources::{kind, now_millis};
use crate::services::sqlite::wire_history::{HistoryRow, HistoryTable};
use crate::services::Services;

/// The attribute that makes a wire persistent.
pub const PERSIST_ATTRIBUTE: &str = "volt:wire-persist";
/// The attribute naming the table the chunks go to.
pub const TABLE_ATTRIBUTE: &str = "volt:wire-persist-table";
/// The table used when the wire names none.
pub const DEFAULT_TABLE: &str = "wire_data";
/// The longest table name accepted.
pub const MAX_TABLE_NAME: usize = 64;
/// Bytes of chunks a publish call may have waiting to be stored before the publisher waits.
pub const MAX_UNWRITTEN_BYTES: usize = 32 * 1024 * 1024;
/// Rows waiting to be stored per publish call (empty chunks are not stored), and the most
/// one transaction takes.
const MAX_UNWRITTEN_ROWS: usize = 1024;

/// Refuses a table name that is not a plain SQL identifier: 1 to [`MAX_TABLE_NAME`] ASCII
/// letters, digits and `_`, not starting with a digit, and not SQLite's reserved `sqlite_`.
pub fn check_table(name: &str) -> Result<(), Failure> {
    let plain = !name.is_empty()
        && name.len() <= MAX_TABLE_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
        && !name.to_ascii_lowercase().starts_with("sqlite_");
    if plain {
        Ok(())
    } else {
        Err(Failure::invalid(format!(
            "wire history table {name:?} is not a plain table name (1 to {MAX_TABLE_NAME} \
             ASCII letters, digits and _, not starting with a digit or sqlite_)"
        )))
    }
}

fn attribute<'a>(resource: &'a Resource, id: &str) -> Option<&'a AttributeValue> {
    resource
        .attribute
        .iter()
        .find(|a| a.attribute_id == id)
        .and_then(|a| a.value.first())
}

/// The table a wire stores its chunks in, or `None` when it does not persist.
pub fn table_of(resource: &Resource) -> Result<Option<String>, Failure> {
    let on = match attribute(resource, PERSIST_ATTRIBUTE).and_then(|v| v.value.as_ref()) {
        Some(Value::Boolean(on)) => *on,
        Some(Value::String(s)) => s.trim().eq_ignore_ascii_case("true"),
        _ => false,
    };
    if !on {
        return Ok(None);
    }
    if !kind::has(&resource.kind, kind::Role::Database) {
        return Err(Failure::reply(
            Code::FailedPrecondition,
            format!(
                "wire {} is set to persist ({PERSIST_ATTRIBUTE}) but is not a database: \
                 give it the kinds {} and {}",
                resource.id,
                kind::DATABASE,
                kind::SQLITE_DATABASE
            ),
        ));
    }
    let table = match attribute(resource, TABLE_ATTRIBUTE).and_then(|v| v.value.as_ref()) {
        None => DEFAULT_TABLE.to_owned(),
        Some(Value::String(s)) if s.is_empty() => DEFAULT_TABLE.to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(Failure::invalid(format!(
                "{TABLE_ATTRIBUTE} must be a string"
            )))
        }
    };
    check_table(&table)?;
    Ok(Some(table))
}

/// What `SaveWire {persist: true, persist_table}` does to the resource it saves: `kinds` are
/// the kinds it has already (empty for a new one).
pub fn enable(resource: &mut Resource, kinds: &[String], table: &str) -> Result<(), Failure> {
    let table = if table.is_empty() {
        DEFAULT_TABLE
    } else {
        table
    };
    check_table(table)?;
    if resource.kind.is_empty() {
        resource.kind = kinds.to_vec();
    }
    for k in [kind::WIRE, kind::DATABASE, kind::SQLITE_DATABASE] {
        if !resource.kind.iter().any(|x| x == k) {
            resource.kind.push(k.to_owned());
        }
    }
    set_attribute(
        resource,
        PERSIST_ATTRIBUTE,
        AttributeDataType::Boolean,
        Value::Boolean(true),
    );
    set_attribute(
        resource,
        TABLE_ATTRIBUTE,
        AttributeDataType::String,
        Value::String(table.to_owned()),
    );
    Ok(())
}

fn set_attribute(resource: &mut Resource, id: &str, data_type: AttributeDataType, value: Value) {
    resource.attribute.retain(|a| a.attribute_id != id);
    resource.attribute.push(ResourceAttribute {
        attribute_id: id.to_owned(),
        resource_id: resource.id.clone(),
        data_type: data_type as i32,
        value: vec![AttributeValue { value: Some(value) }],
        ..ResourceAttribute::default()
    });
}

type Queued = (HistoryRow, OwnedSemaphorePermit);

/// Stores one publish call's chunks, in order, off the async runtime.
pub struct HistoryWriter {
    rows: mpsc::Sender<Queued>,
    room: Arc<Semaphore>,
    task: JoinHandle<Result<(), Failure>>,
}

impl HistoryWriter {
    /// Creates the wire's table when missing and starts the writer.
    pub async fn start(
        svc: &Arc<Services>,
        wire_id: &str,
        table: &str,
    ) -> Result<HistoryWriter, Failure> {
        let history = HistoryTable::open(svc, wire_id, table).await?;
        let (rows, queue) = mpsc::channel(MAX_UNWRITTEN_ROWS);
        Ok(HistoryWriter {
            rows,
            room: Arc::new(Semaphore::new(MAX_UNWRITTEN_BYTES)),
            task: tokio::spawn(write_rows(history, queue)),
        })
    }

    /// Queues a chunk for storing; waits while too much is queued already.
    pub async fn write(&mut self, publisher: &str, chunk: Vec<u8>) -> Result<(), Failure> {
        // Chunks are at most 16 MiB, well within both the semaphore's u32 and its total.
        let size = u32::try_from(chunk.len().clamp(1, MAX_UNWRITTEN_BYTES)).unwrap_or(u32::MAX);
        let row = HistoryRow {
            received_at: i64::try_from(now_millis()).unwrap_or(i64::MAX),
            publisher: publisher.to_owned(),
            chunk,
        };
        let queued = match Arc::clone(&self.room).acquire_many_owned(size).await {
            Ok(permit) => self.rows.send((row, permit)).await.is_ok(),
            Err(_) => false,
        };
        if queued {
            Ok(())
        } else {
            // The writer stopped: it failed, and says why.
            Err(self.stopped().await)
        }
    }

    /// Waits until every queued chunk is stored.
    pub async fn finish(self) -> Result<(), Failure> {
        drop(self.rows);
        self.task
            .await
            .map_err(|e| Failure::internal("wire history writer", e))?
    }

    async fn stopped(&mut self) -> Failure {
        match (&mut self.task).await {
            Ok(Err(failure)) => failure,
            Ok(Ok(())) => Failure::internal("wire history writer", "stopped early"),
            Err(e) => Failure::internal("wire history writer", e),
        }
    }
}

async fn write_rows(
    mut history: HistoryTable,
    mut queue: mpsc::Receiver<Queued>,
) -> Result<(), Failure> {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, MAX_UNWRITTEN_ROWS).await > 0 {
        let (rows, permits): (Vec<HistoryRow>, Vec<OwnedSemaphorePermit>) =
            std::mem::take(&mut batch).into_iter().unzip();
        history = history.append(rows).await?;
        drop(permits);
    }
    history.close().await
}

#[cfg(test)]
mod tests;
