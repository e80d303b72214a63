//! SqliteServerAPI and SqliteDatabaseAPI over real SQLite databases kept in the data directory.
//!
//! A database is a resource of kind `database` whose content is the SQLite file
//! `DIR/databases/<resource id>.sqlite` (WAL journal mode). `database_id` in a request may be
//! the resource id or one of the database's aliases. Every call opens its own connection on a
//! blocking thread, with a [`BUSY_TIMEOUT`], SQLite's defensive mode and `ATTACH` disabled, so
//! concurrent calls on one database work and a paged query keeps a live statement between
//! pages.
//!
//! This file routes the methods and holds what they share (the service, its limits, blocking
//! threads, SQLite errors as replies). Each method is described where it is implemented:
//!
//! - `databases.rs`: **CreateDatabase**, and finding and opening a database file for the others.
//! - `execute.rs`: **Execute**, with paging and transactions; `values.rs` converts between
//!   SQLite values and the protos' `Variant` and `AttributeValue`.
//! - `bulk_update.rs`: **BulkUpdate**.
//! - `import_csv.rs`: **ImportCSV**; `csv.rs` parses the CSV and infers column types.
//! - `wire_history.rs`: the table a persistent wire stores its chunks in (for WireAPI).
//!
//! **SaveDataView** is not implemented.

mod bulk_update;
mod csv;
pub(crate) mod databases;
mod execute;
mod import_csv;
pub mod save_database;
#[cfg(test)]
mod tests;
mod values;
pub mod wire_history;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::ErrorCode;
use tdx_volt::proto::data as pb;

use crate::call::{Caller, Code, Failure, Inbound, Outbound};

use super::{unary, Services};

/// The largest page Execute sends before waiting for `next`; larger requests are capped.
pub const MAX_PAGE_SIZE: u32 = 10_000;
/// How long a call waits for another connection's lock before failing with "database is
/// locked".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The most CSV data one ImportCSV call may send.
pub const MAX_CSV_BYTES: usize = 128 * 1024 * 1024;

/// The folder of the data directory that holds the database files.
const DATABASES_DIR: &str = "databases";
const SERVER_SERVICE: &str = "/tdx.volt_api.data.v1.SqliteServerAPI";
const DATABASE_SERVICE: &str = "/tdx.volt_api.data.v1.SqliteDatabaseAPI";

/// The SQLite databases of this Volt.
pub struct SqliteService {
    dir: PathBuf,
    /// Execute calls hold a blocking thread while they wait for `next` or for the next
    /// statement of a transaction; this caps how many may do so at once, so that paused
    /// queries cannot take every blocking thread from the rest of the emulator.
    live_executes: Arc<tokio::sync::Semaphore>,
}

/// Execute calls that may be open at once; one more is refused with RESOURCE_EXHAUSTED.
pub const MAX_LIVE_EXECUTES: usize = 128;

impl SqliteService {
    /// Opens the database area of the data directory, creating it when missing.
    pub fn open(dir: &Path) -> tdx_volt::Result<SqliteService> {
        let dir = dir.join(DATABASES_DIR);
        crate::files::create_dir(&dir)?;
        Ok(SqliteService {
            dir,
            live_executes: Arc::new(tokio::sync::Semaphore::new(MAX_LIVE_EXECUTES)),
        })
    }
}

/// Routes a SqliteServerAPI / SqliteDatabaseAPI method.
pub async fn dispatch(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    match name {
        "CreateDatabase" => {
            unary(inbound, outbound, |r: pb::CreateDatabaseRequest| {
                databases::create_database(svc, caller, r)
            })
            .await
        }
        "BulkUpdate" => {
            unary(inbound, outbound, |r: pb::SqlBulkUpdateRequest| {
                bulk_update::bulk_update(svc, caller, r)
            })
            .await
        }
        "Execute" => execute::execute(svc, caller, inbound, outbound).await,
        "ImportCSV" => import_csv::import_csv(svc, caller, inbound, outbound).await,
        "SaveDataView" => Err(Failure::unimplemented(&format!("{SERVER_SERVICE}/{name}"))),
        _ => Err(Failure::unimplemented(&format!(
            "{DATABASE_SERVICE}/{name}"
        ))),
    }
}

/// Runs SQLite work on a blocking thread.
async fn run_blocking<T, F>(work: F) -> Result<T, Failure>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Failure> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Failure::internal("SQLite worker", e))?
}

/// A SQLite error as a reply, carrying SQLite's own message.
fn sql_failure(e: rusqlite::Error) -> Failure {
    let code = match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation)
        | Some(ErrorCode::DatabaseBusy)
        | Some(ErrorCode::DatabaseLocked)
        | Some(ErrorCode::SchemaChanged) => Code::FailedPrecondition,
        Some(ErrorCode::ReadOnly)
        | Some(ErrorCode::PermissionDenied)
        | Some(ErrorCode::AuthorizationForStatementDenied) => Code::PermissionDenied,
        Some(ErrorCode::DiskFull) | Some(ErrorCode::TooBig) | Some(ErrorCode::OutOfMemory) => {
            Code::ResourceExhausted
        }
        Some(ErrorCode::SystemIoFailure)
        | Some(ErrorCode::DatabaseCorrupt)
        | Some(ErrorCode::NotADatabase)
        | Some(ErrorCode::CannotOpen)
        | Some(ErrorCode::InternalMalfunction)
        | Some(ErrorCode::FileLockingProtocolFailed)
        | Some(ErrorCode::NoLargeFileSupport) => Code::Internal,
        _ => Code::InvalidArgument,
    };
    let message = match &e {
        rusqlite::Error::SqliteFailure(err, msg) => msg.clone().unwrap_or_else(|| err.to_string()),
        rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
        other => other.to_string(),
    };
    Failure::reply(code, message)
}

/// The same failure with `context` in front of its message.
fn prefixed(context: &str, failure: Failure) -> Failure {
    Failure::reply(failure.code(), format!("{context}: {}", failure.message()))
}
