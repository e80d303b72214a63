//! The table a persistent wire keeps its chunks in, inside the wire's own database file.
//!
//! The table is created on first use (`CREATE TABLE IF NOT EXISTS`) with this layout:
//!
//! | column | type | what |
//! | --- | --- | --- |
//! | `id` | `INTEGER PRIMARY KEY` | increases in publish order (SQLite's rowid) |
//! | `received_at` | `INTEGER NOT NULL` | when the emulator took the chunk, ms since the epoch |
//! | `publisher` | `TEXT NOT NULL` | the client id of the caller that published it |
//! | `chunk` | `BLOB NOT NULL` | the chunk's bytes, as published (the API's `bytes`) |
//!
//! A table of that name made by other means is used as it is: when it lacks these columns the
//! insert fails with SQLite's message. Every SQLite step runs on a blocking thread; the one
//! connection is kept between batches and handed back and forth with each step.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, TransactionBehavior};

use crate::call::Failure;
use crate::services::Services;

use super::databases::{connect, touch};
use super::{prefixed, run_blocking, sql_failure};

/// How often, at most, appending brings the resource's size and modified time up to date
/// (each time rewrites the resource tree); closing the table always does.
const TOUCH_EVERY: Duration = Duration::from_secs(1);

/// One chunk to store.
pub struct HistoryRow {
    /// Milliseconds since the epoch.
    pub received_at: i64,
    /// The publishing client's id.
    pub publisher: String,
    /// The chunk's bytes.
    pub chunk: Vec<u8>,
}

/// An open history table: its database connection and where to report changes.
pub struct HistoryTable {
    svc: Arc<Services>,
    resource_id: String,
    path: PathBuf,
    table: String,
    conn: Connection,
    last_touch: Option<Instant>,
}

impl HistoryTable {
    /// Opens the database of wire resource `resource_id` (creating the file when missing)
    /// and creates `table` in it unless it exists. `table` must already be a checked plain
    /// identifier: it is put in the SQL text, quoted.
    pub async fn open(
        svc: &Arc<Services>,
        resource_id: &str,
        table: &str,
    ) -> Result<HistoryTable, Failure> {
        let path = svc.sqlite().path_of(resource_id).ok_or_else(|| {
            Failure::invalid(format!(
                "wire {resource_id}: its id cannot name a database file"
            ))
        })?;
        let create = format!(
            "CREATE TABLE IF NOT EXISTS \"{table}\" (id INTEGER PRIMARY KEY, \
             received_at INTEGER NOT NULL, publisher TEXT NOT NULL, chunk BLOB NOT NULL)"
        );
        let conn = {
            let path = path.clone();
            let context = format!("creating wire history table {table}");
            run_blocking(move || {
                let conn = connect(&path)?;
                conn.execute_batch(&create)
                    .map_err(|e| prefixed(&context, sql_failure(e)))?;
                Ok(conn)
            })
            .await?
        };
        Ok(HistoryTable {
            svc: Arc::clone(svc),
            resource_id: resource_id.to_owned(),
            path,
            table: table.to_owned(),
            conn,
            last_touch: None,
        })
    }

    /// Stores `rows` in one transaction, in order; hands the table back for the next batch.
    pub async fn append(mut self, rows: Vec<HistoryRow>) -> Result<HistoryTable, Failure> {
        run_blocking(move || {
            self.insert(&rows)?;
            if self.last_touch.is_none_or(|t| t.elapsed() >= TOUCH_EVERY) {
                touch(&self.svc, &self.resource_id, &self.path);
                self.last_touch = Some(Instant::now());
            }
            Ok(self)
        })
        .await
    }

    /// Brings the resource's size and modified time up to date; the connection closes.
    pub async fn close(self) -> Result<(), Failure> {
        run_blocking(move || {
            if self.last_touch.is_some() {
                touch(&self.svc, &self.resource_id, &self.path);
            }
            Ok(())
        })
        .await
    }

    fn insert(&mut self, rows: &[HistoryRow]) -> Result<(), Failure> {
        let context = format!("storing a chunk in {}", self.table);
        let failed = |e| prefixed(&context, sql_failure(e));
        let sql = format!(
            "INSERT INTO \"{}\" (received_at, publisher, chunk) VALUES (?1, ?2, ?3)",
            self.table
        );
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed)?;
        {
            let mut insert = tx.prepare_cached(&sql).map_err(failed)?;
            for row in rows {
                insert
                    .execute(params![row.received_at, row.publisher, row.chunk])
                    .map_err(failed)?;
            }
        }
        tx.commit().map_err(failed)
    }
}
