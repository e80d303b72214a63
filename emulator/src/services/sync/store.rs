//! Where a synced document's state lives on disk: a table in its sync database's SQLite file.
//!
//! Table [`TABLE`] holds, per document, the Yjs v2 updates the emulator has accepted, in the
//! order they were applied. Loading a document applies them in that order. After
//! [`COMPACT_AFTER`] rows a document's rows are replaced, in one SQLite transaction, by a single
//! update holding its whole state, so loading stays quick and the file stays small.
//!
//! A loaded document keeps one connection to the file. It writes with `synchronous=NORMAL`
//! (the database is in WAL mode): an accepted update is in the file once stored, so it
//! survives the emulator stopping or crashing; only a power loss may take the last ones.
//!
//! Every method blocks on SQLite: callers run them on a blocking thread.

use std::path::Path;

use rusqlite::{params, Connection};

use crate::call::Failure;
use crate::services::sqlite::databases::connect;

/// The table the documents of a sync database are kept in.
pub const TABLE: &str = "volt_sync_document_updates";

/// How many updates a document may have stored before they are merged into one.
pub const COMPACT_AFTER: u64 = 200;

fn failure(context: &str, e: rusqlite::Error) -> Failure {
    Failure::internal(context, e)
}

/// One document's rows in its sync database.
pub struct Store {
    conn: Connection,
    document_id: String,
}

impl Store {
    /// Opens the sync database file `path` for the document `document_id`, creating the table
    /// when it is not there yet.
    pub fn open(path: &Path, document_id: &str) -> Result<Store, Failure> {
        let conn = connect(path)?;
        conn.execute_batch(&format!(
            "PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS {TABLE} (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 document_id TEXT NOT NULL,
                 update_v2 BLOB NOT NULL
             );
             CREATE INDEX IF NOT EXISTS {TABLE}_document ON {TABLE} (document_id, seq);"
        ))
        .map_err(|e| failure("preparing the sync table", e))?;
        Ok(Store {
            conn,
            document_id: document_id.to_owned(),
        })
    }

    /// The stored updates of the document, oldest first.
    pub fn load(&self) -> Result<Vec<Vec<u8>>, Failure> {
        let mut statement = self
            .conn
            .prepare(&format!(
                "SELECT update_v2 FROM {TABLE} WHERE document_id = ?1 ORDER BY seq"
            ))
            .map_err(|e| failure("reading a synced document", e))?;
        let rows = statement
            .query_map([&self.document_id], |row| row.get::<_, Vec<u8>>(0))
            .map_err(|e| failure("reading a synced document", e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| failure("reading a synced document", e))
    }

    /// Appends one accepted update.
    pub fn append(&self, update: &[u8]) -> Result<(), Failure> {
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO {TABLE} (document_id, update_v2) VALUES (?1, ?2)"
            ))
            .and_then(|mut insert| insert.execute(params![self.document_id, update]))
            .map_err(|e| failure("storing a document update", e))?;
        Ok(())
    }

    /// Replaces every stored update of the document with `state` (its whole state as one
    /// update).
    pub fn compact(&mut self, state: &[u8]) -> Result<(), Failure> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| failure("compacting a document", e))?;
        tx.execute(
            &format!("DELETE FROM {TABLE} WHERE document_id = ?1"),
            [&self.document_id],
        )
        .map_err(|e| failure("compacting a document", e))?;
        tx.execute(
            &format!("INSERT INTO {TABLE} (document_id, update_v2) VALUES (?1, ?2)"),
            params![self.document_id, state],
        )
        .map_err(|e| failure("compacting a document", e))?;
        tx.commit().map_err(|e| failure("compacting a document", e))
    }
}
