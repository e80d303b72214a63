//! SqliteServerAPI and SqliteDatabaseAPI over real SQLite databases kept in the data directory.
//!
//! A database is a resource of kind `database` whose content is the SQLite file
//! `DIR/databases/<resource id>.sqlite` (WAL journal mode). `database_id` in a request may be
//! the resource id or one of the database's aliases. Every call opens its own connection on a
//! blocking thread, with a [`BUSY_TIMEOUT`], SQLite's defensive mode and `ATTACH` disabled, so
//! concurrent calls on one database work and a paged query keeps a live statement between
//! pages.
//!
//! **CreateDatabase** (unary): needs a `name`; the parent is `create_in_parent_id` or the
//! caller's home folder; aliases must be unique across the Volt. `encrypted`, `read_audit`,
//! `write_audit` and `discoverable` are accepted and ignored. The response carries the new
//! resource (its `id` is the `database_id` for the other methods).
//!
//! **Execute** (bidi):
//! - The first request must be `start`. Its `statement` may hold several statements; they run
//!   in order. A statement that yields columns sends `header` (column names; types from the
//!   declared column type's SQLite affinity, else from the first row's value, else
//!   `DATA_TYPE_UNKNOWN` for an empty result) and then one `row` per result row, each cell
//!   typed by its own SQLite value. When no statement of the text yields columns, one
//!   `affected_rows` (the rows changed by its INSERT/UPDATE/DELETE statements, 0 for DDL;
//!   capped at `u32::MAX`) is sent instead.
//! - `parameter` values bind to the statement's parameters by name (`:x`, `@x`, `$x` look up
//!   `"x"` or the full `":x"`), numbered ones (`?3`) by `"3"`, anonymous `?` by their position
//!   (`"1"`, `"2"`, ...). A parameter without a value is an error; unused values are ignored.
//!   Booleans bind as 0/1.
//! - `page_size` 0 streams every row; otherwise at most `page_size` rows (capped at
//!   [`MAX_PAGE_SIZE`]) are sent, then the call waits for `next` before sending more. The
//!   emulator looks one row ahead, so it never waits when no rows remain.
//! - Without `transaction`, each statement commits on its own and the call ends as soon as the
//!   result is sent (the official clients' `SqlExecuteJSON` sends only `start` and waits for the
//!   end of the call). `end` (or the client half-closing) while paging stops the query.
//! - With `transaction`, `BEGIN IMMEDIATE` runs first and, after each result, the call waits:
//!   another `start` runs a further statement in the same transaction (same database), `next`
//!   is ignored, `end {commit_transaction: true}` commits and ends the call, `end` without
//!   commit rolls back and ends it. A client that goes away, or any error, rolls back.
//! - An error ends the call with a `status` response (SQLite's own message for bad SQL).
//!
//! **BulkUpdate** (unary): every statement (each may hold several; none may take parameters)
//! runs inside one `BEGIN IMMEDIATE` transaction: all or nothing. An error names the
//! statement's 1-based position.
//!
//! **ImportCSV** (bidi): `configuration` first, then `block`s of CSV bytes, ended by
//! `upload_complete` or by the client half-closing; `abort` ends the call without importing.
//! The CSV is RFC 4180 (comma separated, optional `"` quoting with `""` escapes, CRLF, LF or CR
//! line ends, UTF-8 with optional BOM; blank lines are skipped). The first record is the header
//! of column names and at least one data record is required; a record may have fewer fields
//! than the header (the rest are NULL) but not more. Column types are inferred from the first
//! `schema_scan_limit` records (0 = all): INTEGER when every non-empty value is a 64-bit integer
//! without leading zeros, REAL when every one is a finite decimal number, else TEXT. Empty
//! fields are NULL. The table is created when it does not exist (`CREATE TABLE IF NOT EXISTS`;
//! an existing table is appended to, matching columns by name) and all rows are inserted in one
//! transaction. Every `progress_interval` rows a response with `row_count` and `total_rows` is
//! sent, and a final one with both set to the number of rows imported. CSV data is capped at
//! [`MAX_CSV_BYTES`]; `source_resource_id` is not supported (send the data in blocks).
//!
//! **SaveDataView** is not implemented.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::limits::Limit;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Batch, Connection, ErrorCode, OpenFlags, Rows, Statement, TransactionBehavior};
use tdx_volt::proto::data as pb;
use tdx_volt::proto::data::sql_execute_request::Payload as ExecRequest;
use tdx_volt::proto::data::sql_execute_response::Payload as ExecResponse;
use tdx_volt::proto::data::sql_import_csv_request::Payload as ImportRequest;
use tdx_volt::proto::data::variant::Data;
use tdx_volt::proto::volt::attribute_value::Value as AttrValue;
use tdx_volt::proto::volt::{AttributeValue, Resource};

use crate::call::{Caller, Code, Failure, Inbound, Outbound};

use super::resources::{kind, new_id};
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

    /// The file holding a database resource's content, or `None` when the id could not name a
    /// file of ours (only ASCII letters, digits, `-` and `_` are accepted).
    pub fn path_of(&self, resource_id: &str) -> Option<PathBuf> {
        let plain = !resource_id.is_empty()
            && resource_id.len() <= 128
            && resource_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        plain.then(|| self.dir.join(format!("{resource_id}.sqlite")))
    }

    /// Drops whatever is kept for a deleted resource: the database file and its journals.
    pub fn forget(&self, resource_id: &str) {
        let Some(path) = self.path_of(resource_id) else {
            return;
        };
        for file in with_companions(&path) {
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("removing {}: {e}", file.display()),
            }
        }
    }
}

/// A database file and the journal files SQLite may keep next to it.
fn with_companions(path: &Path) -> Vec<PathBuf> {
    let mut files = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(PathBuf::from(name));
    }
    files
}

/// The size reported for a database resource: the file plus its write-ahead log.
fn file_size(path: &Path) -> u64 {
    with_companions(path)
        .iter()
        .take(2)
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
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
                create_database(svc, caller, r)
            })
            .await
        }
        "BulkUpdate" => {
            unary(inbound, outbound, |r: pb::SqlBulkUpdateRequest| {
                bulk_update(svc, r)
            })
            .await
        }
        "Execute" => execute(svc, inbound, outbound).await,
        "ImportCSV" => import_csv(svc, inbound, outbound).await,
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

/// Finds a database by resource id or alias, and its file.
fn resolve_database(svc: &Services, database_id: &str) -> Result<(Resource, PathBuf), Failure> {
    if database_id.is_empty() {
        return Err(Failure::invalid("database_id is required"));
    }
    let is_database = |r: &Resource| r.kind.iter().any(|k| k == kind::DATABASE);
    let resource = match svc.resources().get(database_id) {
        Some(r) => r,
        None => svc
            .resources()
            .all()
            .into_iter()
            .map(|(_, r)| r)
            .find(|r| is_database(r) && r.alias.iter().any(|a| a == database_id))
            .ok_or_else(|| Failure::not_found(format!("database not found: {database_id}")))?,
    };
    if !is_database(&resource) {
        return Err(Failure::invalid(format!(
            "resource {database_id} is not a database"
        )));
    }
    let path = svc
        .sqlite()
        .path_of(&resource.id)
        .filter(|p| p.is_file())
        .ok_or_else(|| Failure::not_found(format!("database file not found for {database_id}")))?;
    Ok((resource, path))
}

/// Records that a database's content changed (size, version, modified time).
fn touch(svc: &Services, resource_id: &str, path: &Path) {
    if let Err(e) = svc.resources().touch(resource_id, Some(file_size(path))) {
        tracing::debug!("updating database resource {resource_id}: {e}");
    }
}

/// Opens a connection to an existing database file for one call.
fn connect(path: &Path) -> Result<Connection, Failure> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Failure::internal("opening database", e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| Failure::internal("configuring database", e))?;
    // Defensive mode stops SQL from corrupting the file (writable_schema and friends);
    // ATTACH would reach files outside the data directory.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
        .map_err(|e| Failure::internal("configuring database", e))?;
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)
        .map_err(|e| Failure::internal("configuring database", e))?;
    Ok(conn)
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

// ---------------------------------------------------------------------------------------------
// CreateDatabase

async fn create_database(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::CreateDatabaseRequest,
) -> Result<pb::CreateDatabaseResponse, Failure> {
    if r.name.trim().is_empty() {
        return Err(Failure::invalid("CreateDatabase needs a name"));
    }
    let store = svc.resources();
    let parent = if r.create_in_parent_id.is_empty() {
        super::volt_api::home_of(svc, caller)
    } else {
        r.create_in_parent_id.clone()
    };
    if store.get(&parent).is_none() {
        return Err(Failure::not_found(format!("parent not found: {parent}")));
    }
    let existing = store.all();
    for (i, alias) in r.alias.iter().enumerate() {
        if alias.trim().is_empty() {
            return Err(Failure::invalid("a database alias must not be empty"));
        }
        if r.alias[..i].contains(alias) || existing.iter().any(|(_, x)| x.alias.contains(alias)) {
            return Err(Failure::reply(
                Code::AlreadyExists,
                format!("alias already in use: {alias}"),
            ));
        }
    }

    let id = new_id();
    let path = svc
        .sqlite()
        .path_of(&id)
        .ok_or_else(|| Failure::internal("creating database", "unusable resource id"))?;
    let size = {
        let path = path.clone();
        run_blocking(move || create_file(&path)).await?
    };
    let template = Resource {
        id: id.clone(),
        name: r.name,
        description: r.description,
        kind: vec![kind::DATABASE.to_owned()],
        alias: r.alias,
        size,
        ..Resource::default()
    };
    match store.create(&parent, &caller.client_id, template) {
        Ok(resource) => Ok(pb::CreateDatabaseResponse {
            status: None,
            resource: Some(resource),
        }),
        Err(failure) => {
            svc.sqlite().forget(&id);
            Err(failure)
        }
    }
}

/// Creates an empty database file in WAL mode; returns its size.
fn create_file(path: &Path) -> Result<u64, Failure> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Failure::internal("creating database file", e))?;
    conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get::<_, String>(0))
        .map_err(|e| Failure::internal("creating database file", e))?;
    drop(conn);
    Ok(file_size(path))
}

// ---------------------------------------------------------------------------------------------
// BulkUpdate

async fn bulk_update(
    svc: &Arc<Services>,
    r: pb::SqlBulkUpdateRequest,
) -> Result<pb::SqlBulkUpdateResponse, Failure> {
    let (resource, path) = resolve_database(svc, &r.database_id)?;
    let statements = r.statement;
    {
        let path = path.clone();
        run_blocking(move || bulk_blocking(&path, &statements)).await?;
    }
    touch(svc, &resource.id, &path);
    Ok(pb::SqlBulkUpdateResponse { status: None })
}

fn bulk_blocking(path: &Path, statements: &[String]) -> Result<(), Failure> {
    let mut conn = connect(path)?;
    // Dropping the transaction without commit rolls it back.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_failure)?;
    for (i, sql) in statements.iter().enumerate() {
        run_script(&tx, sql).map_err(|f| prefixed(&format!("statement {}", i + 1), f))?;
    }
    tx.commit().map_err(sql_failure)
}

/// Runs every statement of `sql` to completion, discarding any rows.
fn run_script(conn: &Connection, sql: &str) -> Result<(), Failure> {
    let mut batch = Batch::new(conn, sql);
    while let Some(mut stmt) = batch.next().map_err(sql_failure)? {
        if stmt.parameter_count() > 0 {
            return Err(Failure::invalid(
                "BulkUpdate statements cannot take parameters",
            ));
        }
        let mut rows = stmt.raw_query();
        while rows.next().map_err(sql_failure)?.is_some() {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Execute

async fn execute(
    svc: &Arc<Services>,
    mut inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    let _permit = svc
        .sqlite()
        .live_executes
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            Failure::reply(
                Code::ResourceExhausted,
                format!("too many open Execute calls (limit {MAX_LIVE_EXECUTES})"),
            )
        })?;
    let first = inbound
        .next::<pb::SqlExecuteRequest>()
        .await?
        .ok_or_else(|| Failure::abort(Code::InvalidArgument, "the call ended without a request"))?;
    let Some(ExecRequest::Start(start)) = first.payload else {
        return Err(Failure::invalid(
            "the first Execute request must be `start`",
        ));
    };
    let (resource, path) = resolve_database(svc, &start.database_id)?;
    let svc = Arc::clone(svc);
    let outbound = outbound.clone();
    run_blocking(move || {
        let conn = connect(&path)?;
        let mut pipe = Pipe { inbound, outbound };
        let mut state = ExecState {
            names: [start.database_id.clone(), resource.id.clone()],
            transaction: start.transaction,
            wrote: false,
            committed: false,
        };
        let result = run_execute(&conn, &mut pipe, &mut state, start);
        // Whatever was not committed explicitly is rolled back, also after an error.
        if !conn.is_autocommit() {
            if let Err(e) = conn.execute_batch("ROLLBACK") {
                tracing::debug!("rolling back on {}: {e}", resource.id);
            }
        }
        drop(conn);
        if state.wrote && (!state.transaction || state.committed) {
            touch(&svc, &resource.id, &path);
        }
        result
    })
    .await
}

/// The call's request and response channels, used from the blocking thread.
struct Pipe {
    inbound: Inbound,
    outbound: Outbound,
}

impl Pipe {
    fn send(&self, payload: ExecResponse) -> Result<(), Failure> {
        self.outbound.blocking_send(&pb::SqlExecuteResponse {
            payload: Some(payload),
        })
    }

    /// Waits, with a page sent, for the client to ask for more.
    fn pull(&mut self) -> Result<Pull, Failure> {
        match self.inbound.blocking_next::<pb::SqlExecuteRequest>()? {
            None => Ok(Pull::Gone),
            Some(request) => match request.payload {
                Some(ExecRequest::Next(_)) => Ok(Pull::More),
                Some(ExecRequest::End(end)) => Ok(Pull::End(end.commit_transaction)),
                Some(ExecRequest::Start(_)) => Err(Failure::invalid(
                    "a statement is still returning rows: send `next` for more or `end` to stop",
                )),
                None => Err(empty_request()),
            },
        }
    }
}

fn empty_request() -> Failure {
    Failure::invalid("an Execute request must carry `start`, `next` or `end`")
}

/// What the client asked for after a page.
enum Pull {
    More,
    End(bool),
    Gone,
}

/// How running a statement text ended.
enum Flow {
    /// Every result was sent.
    Done,
    /// The client sent `end` (with `commit_transaction`) before the results were all sent.
    End(bool),
    /// The client ended its side before the results were all sent.
    Gone,
}

struct ExecState {
    /// The `database_id` the call was started with, and the resource id it resolved to.
    names: [String; 2],
    transaction: bool,
    /// A statement that may change the database ran.
    wrote: bool,
    committed: bool,
}

/// What a transaction call's client asked for once a result was sent.
enum After {
    /// Run another statement in the same transaction.
    Start(pb::SqlExecuteStart),
    /// End the call, committing when `true`.
    End(bool),
}

fn run_execute(
    conn: &Connection,
    pipe: &mut Pipe,
    state: &mut ExecState,
    first: pb::SqlExecuteStart,
) -> Result<(), Failure> {
    if state.transaction {
        conn.execute_batch("BEGIN IMMEDIATE").map_err(sql_failure)?;
    }
    let mut start = first;
    let commit = loop {
        match run_statements(conn, pipe, &start, &mut state.wrote)? {
            Flow::Done if !state.transaction => return Ok(()),
            Flow::Done => match after_result(pipe, &state.names)? {
                After::Start(next) => start = next,
                After::End(commit) => break commit,
            },
            Flow::End(commit) => break commit,
            Flow::Gone => break false,
        }
    };
    if commit && state.transaction && !conn.is_autocommit() {
        conn.execute_batch("COMMIT").map_err(sql_failure)?;
        state.committed = true;
    }
    Ok(())
}

/// In a transaction, with a result sent: waits for the client's next move. A client that
/// goes away ends the call without commit.
fn after_result(pipe: &mut Pipe, names: &[String; 2]) -> Result<After, Failure> {
    loop {
        let Some(request) = pipe.inbound.blocking_next::<pb::SqlExecuteRequest>()? else {
            return Ok(After::End(false));
        };
        match request.payload {
            Some(ExecRequest::Start(start)) => {
                if !start.database_id.is_empty() && !names.contains(&start.database_id) {
                    return Err(Failure::invalid(
                        "a transaction cannot span databases: a later `start` must name the \
                         same database or none",
                    ));
                }
                return Ok(After::Start(start));
            }
            // Nothing is left to page through.
            Some(ExecRequest::Next(_)) => {}
            Some(ExecRequest::End(end)) => return Ok(After::End(end.commit_transaction)),
            None => return Err(empty_request()),
        }
    }
}

/// Runs every statement of a `start`, sending its results.
fn run_statements(
    conn: &Connection,
    pipe: &mut Pipe,
    start: &pb::SqlExecuteStart,
    wrote: &mut bool,
) -> Result<Flow, Failure> {
    if start.statement.trim().is_empty() {
        return Err(Failure::invalid("Execute needs a statement"));
    }
    let page = start.page_size.min(MAX_PAGE_SIZE) as usize;
    let mut affected: u64 = 0;
    let mut returned_rows = false;
    // Rows sent since the last `next`, across the statements of the text.
    let mut in_page = 0usize;
    let mut batch = Batch::new(conn, &start.statement);
    while let Some(mut stmt) = batch.next().map_err(sql_failure)? {
        bind_parameters(&mut stmt, &start.parameter)?;
        if !stmt.readonly() {
            *wrote = true;
        }
        if stmt.column_count() == 0 {
            // `changes()` keeps the count of the last INSERT/UPDATE/DELETE, so it only counts
            // when this statement changed something.
            let before = conn.total_changes();
            stmt.raw_execute().map_err(sql_failure)?;
            if conn.total_changes() != before {
                affected = affected.saturating_add(conn.changes());
            }
            continue;
        }
        returned_rows = true;
        match stream_rows(&mut stmt, pipe, page, &mut in_page)? {
            Flow::Done => {}
            other => return Ok(other),
        }
    }
    if !returned_rows {
        let count = u32::try_from(affected).unwrap_or(u32::MAX);
        pipe.send(ExecResponse::AffectedRows(count))?;
    }
    Ok(Flow::Done)
}

/// Sends a statement's header and rows, a page at a time when `page` > 0.
fn stream_rows(
    stmt: &mut Statement<'_>,
    pipe: &mut Pipe,
    page: usize,
    in_page: &mut usize,
) -> Result<Flow, Failure> {
    let columns: Vec<(String, Option<String>)> = stmt
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), c.decl_type().map(str::to_owned)))
        .collect();
    let width = columns.len();
    let mut rows = stmt.raw_query();
    let mut pending = fetch_row(&mut rows, width)?;
    let header = pb::RowHeader {
        column: columns
            .into_iter()
            .enumerate()
            .map(|(i, (name, decl))| {
                let first = pending.as_ref().and_then(|r| r.column.get(i));
                pb::Column {
                    name,
                    description: String::new(),
                    r#type: header_type(decl.as_deref(), first) as i32,
                }
            })
            .collect(),
    };
    pipe.send(ExecResponse::Header(header))?;
    while let Some(row) = pending.take() {
        if page > 0 && *in_page >= page {
            match pipe.pull()? {
                Pull::More => *in_page = 0,
                Pull::End(commit) => return Ok(Flow::End(commit)),
                Pull::Gone => return Ok(Flow::Gone),
            }
        }
        pipe.send(ExecResponse::Row(row))?;
        *in_page += 1;
        pending = fetch_row(&mut rows, width)?;
    }
    Ok(Flow::Done)
}

/// The next result row as Variants, or `None` at the end.
fn fetch_row(rows: &mut Rows<'_>, width: usize) -> Result<Option<pb::VariantRow>, Failure> {
    let Some(row) = rows.next().map_err(sql_failure)? else {
        return Ok(None);
    };
    let mut column = Vec::with_capacity(width);
    for i in 0..width {
        column.push(variant(row.get_ref(i).map_err(sql_failure)?));
    }
    Ok(Some(pb::VariantRow { column }))
}

/// A SQLite value as a Variant of the same type.
fn variant(value: ValueRef<'_>) -> pb::Variant {
    let data = match value {
        ValueRef::Null => Data::Null(true),
        ValueRef::Integer(i) => Data::Integer(i),
        ValueRef::Real(f) => Data::Real(f),
        ValueRef::Text(t) => Data::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Data::Blob(b.to_vec()),
    };
    pb::Variant { data: Some(data) }
}

/// A header column's type: the declared type's affinity when that fixes the storage type
/// (INTEGER, TEXT, REAL), else the type of the first row's value, else UNKNOWN (no rows).
fn header_type(decl: Option<&str>, first: Option<&pb::Variant>) -> pb::DataType {
    if let Some(t) = decl.and_then(affinity) {
        return t;
    }
    match first.and_then(|v| v.data.as_ref()) {
        Some(Data::Text(_)) => pb::DataType::Text,
        Some(Data::Integer(_)) => pb::DataType::Integer,
        Some(Data::Real(_)) => pb::DataType::Real,
        Some(Data::Blob(_)) => pb::DataType::Blob,
        Some(Data::Null(_)) => pb::DataType::Null,
        None => pb::DataType::Unknown,
    }
}

/// SQLite's column affinity rules (in their order), for the affinities that decide how a
/// value is stored; BLOB and NUMERIC affinity give `None`.
fn affinity(decl: &str) -> Option<pb::DataType> {
    let d = decl.to_ascii_uppercase();
    if d.contains("INT") {
        Some(pb::DataType::Integer)
    } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        Some(pb::DataType::Text)
    } else if d.contains("BLOB") || d.is_empty() {
        None
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        Some(pb::DataType::Real)
    } else {
        None
    }
}

/// Binds `parameter` values to a statement's parameters (see the module docs).
fn bind_parameters(
    stmt: &mut Statement<'_>,
    values: &HashMap<String, AttributeValue>,
) -> Result<(), Failure> {
    for index in 1..=stmt.parameter_count() {
        let name = stmt.parameter_name(index).map(str::to_owned);
        let value = match &name {
            // `:x`, `@x`, `$x` and `?3`: the name with or without its prefix character.
            Some(n) => values
                .get(n)
                .or_else(|| n.get(1..).and_then(|bare| values.get(bare))),
            None => values.get(&index.to_string()),
        };
        let Some(value) = value else {
            let shown = name.unwrap_or_else(|| format!("?{index}"));
            return Err(Failure::invalid(format!(
                "no value given for SQL parameter {shown}"
            )));
        };
        stmt.raw_bind_parameter(index, sql_value(value))
            .map_err(sql_failure)?;
    }
    Ok(())
}

fn sql_value(value: &AttributeValue) -> Value {
    match &value.value {
        Some(AttrValue::String(s)) => Value::Text(s.clone()),
        Some(AttrValue::Integer(i)) => Value::Integer(*i),
        Some(AttrValue::Real(f)) => Value::Real(*f),
        Some(AttrValue::Boolean(b)) => Value::Integer(i64::from(*b)),
        Some(AttrValue::Bytes(b)) => Value::Blob(b.clone()),
        None => Value::Null,
    }
}

// ---------------------------------------------------------------------------------------------
// ImportCSV

async fn import_csv(
    svc: &Arc<Services>,
    mut inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    let first = inbound
        .next::<pb::SqlImportCsvRequest>()
        .await?
        .ok_or_else(|| Failure::abort(Code::InvalidArgument, "the call ended without a request"))?;
    let Some(ImportRequest::Configuration(config)) = first.payload else {
        return Err(Failure::invalid(
            "the first ImportCSV request must be `configuration`",
        ));
    };
    if config.table_name.trim().is_empty() {
        return Err(Failure::invalid("ImportCSV needs a table_name"));
    }
    let (resource, path) = resolve_database(svc, &config.database_id)?;
    if !config.source_resource_id.is_empty() {
        return Err(Failure::reply(
            Code::Unimplemented,
            "volt-emulator imports CSV sent in `block` requests only; source_resource_id is \
             not supported",
        ));
    }

    let mut data = Vec::new();
    loop {
        let Some(request) = inbound.next::<pb::SqlImportCsvRequest>().await? else {
            break;
        };
        match request.payload {
            Some(ImportRequest::Block(block)) => {
                if data.len().saturating_add(block.len()) > MAX_CSV_BYTES {
                    return Err(Failure::reply(
                        Code::ResourceExhausted,
                        format!("CSV data exceeds volt-emulator's limit of {MAX_CSV_BYTES} bytes"),
                    ));
                }
                data.extend_from_slice(&block);
            }
            Some(ImportRequest::UploadComplete(true)) => break,
            Some(ImportRequest::Abort(true)) => return Ok(()),
            Some(ImportRequest::UploadComplete(false)) | Some(ImportRequest::Abort(false)) => {}
            Some(ImportRequest::Configuration(_)) => {
                return Err(Failure::invalid(
                    "ImportCSV takes one `configuration`, in the first request",
                ));
            }
            None => {
                return Err(Failure::invalid(
                    "an ImportCSV request must carry `configuration`, `block`, \
                     `upload_complete` or `abort`",
                ));
            }
        }
    }

    let total = {
        let path = path.clone();
        let outbound = outbound.clone();
        run_blocking(move || import_blocking(&path, &config, &data, &outbound)).await?
    };
    touch(svc, &resource.id, &path);
    outbound
        .send(&pb::SqlImportCsvResponse {
            status: None,
            row_count: total,
            total_rows: total,
        })
        .await
}

/// Parses the CSV, creates the table when needed and inserts every row in one transaction;
/// returns the number of rows inserted.
fn import_blocking(
    path: &Path,
    config: &pb::SqlImportCsvConfiguration,
    data: &[u8],
    outbound: &Outbound,
) -> Result<i64, Failure> {
    let text = std::str::from_utf8(data)
        .map_err(|e| Failure::invalid(format!("CSV data is not valid UTF-8: {e}")))?;
    let mut records = parse_csv(text).map_err(Failure::invalid)?.into_iter();
    let Some(header) = records.next() else {
        return Err(Failure::invalid(
            "CSV data is empty: a header row and at least one data row are needed",
        ));
    };
    let rows: Vec<Vec<String>> = records.collect();
    if rows.is_empty() {
        return Err(Failure::invalid(
            "CSV data has a header but no data rows: at least one is needed to infer the \
             column types",
        ));
    }
    check_identifier("table name", &config.table_name)?;
    for (i, name) in header.iter().enumerate() {
        if name.is_empty() {
            return Err(Failure::invalid(format!(
                "CSV header column {} has no name",
                i + 1
            )));
        }
        check_identifier("CSV column name", name)?;
        if header[..i].iter().any(|n| n.eq_ignore_ascii_case(name)) {
            return Err(Failure::invalid(format!(
                "CSV header names column {name} twice"
            )));
        }
    }
    let width = header.len();
    for (n, row) in rows.iter().enumerate() {
        if row.len() > width {
            return Err(Failure::invalid(format!(
                "CSV record {} has {} fields but the header has {width}",
                n + 2,
                row.len()
            )));
        }
    }

    let scanned = match config.schema_scan_limit {
        0 => rows.len(),
        limit => rows.len().min(limit as usize),
    };
    let types: Vec<CsvType> = (0..width)
        .map(|c| {
            infer_type(
                rows.iter()
                    .take(scanned)
                    .filter_map(|r| r.get(c))
                    .map(String::as_str),
            )
        })
        .collect();

    let table = quote_identifier(&config.table_name);
    let definitions: Vec<String> = header
        .iter()
        .zip(&types)
        .map(|(name, t)| format!("{} {}", quote_identifier(name), t.sql()))
        .collect();
    let names: Vec<String> = header.iter().map(|n| quote_identifier(n)).collect();
    let placeholders: Vec<String> = (1..=width).map(|i| format!("?{i}")).collect();

    let mut conn = connect(path)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_failure)?;
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {table} ({})",
        definitions.join(", ")
    ))
    .map_err(sql_failure)?;
    let total = rows.len();
    let total_i64 = i64::try_from(total).unwrap_or(i64::MAX);
    let interval = config.progress_interval as usize;
    {
        let mut insert = tx
            .prepare(&format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                names.join(", "),
                placeholders.join(", ")
            ))
            .map_err(sql_failure)?;
        for (n, row) in rows.iter().enumerate() {
            for (c, ty) in types.iter().enumerate() {
                let field = row.get(c).map(String::as_str).unwrap_or("");
                insert
                    .raw_bind_parameter(c + 1, ty.value(field))
                    .map_err(sql_failure)?;
            }
            insert
                .raw_execute()
                .map_err(|e| prefixed(&format!("CSV record {}", n + 2), sql_failure(e)))?;
            let done = n + 1;
            if interval > 0 && done % interval == 0 && done < total {
                outbound.blocking_send(&pb::SqlImportCsvResponse {
                    status: None,
                    row_count: i64::try_from(done).unwrap_or(i64::MAX),
                    total_rows: total_i64,
                })?;
            }
        }
    }
    tx.commit().map_err(sql_failure)?;
    Ok(total_i64)
}

fn check_identifier(what: &str, name: &str) -> Result<(), Failure> {
    if name.contains('\0') {
        return Err(Failure::invalid(format!(
            "{what} must not contain a NUL character"
        )));
    }
    Ok(())
}

/// `name` as a quoted SQL identifier.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A column type inferred from CSV data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CsvType {
    Integer,
    Real,
    Text,
}

impl CsvType {
    fn sql(self) -> &'static str {
        match self {
            CsvType::Integer => "INTEGER",
            CsvType::Real => "REAL",
            CsvType::Text => "TEXT",
        }
    }

    /// A CSV field as the value to insert: empty is NULL; a field that does not fit the
    /// column's type (possible beyond the scanned rows) is kept as text.
    fn value(self, field: &str) -> Value {
        if field.is_empty() {
            return Value::Null;
        }
        let number = match self {
            CsvType::Integer if is_integer(field) => field.parse().ok().map(Value::Integer),
            CsvType::Real if is_integer(field) || is_real(field) => {
                field.parse().ok().map(Value::Real)
            }
            _ => None,
        };
        number.unwrap_or_else(|| Value::Text(field.to_owned()))
    }
}

/// INTEGER when every non-empty value is an integer, REAL when every one is a number, else
/// TEXT (also when every value is empty).
fn infer_type<'a>(values: impl Iterator<Item = &'a str>) -> CsvType {
    let mut inferred = CsvType::Integer;
    let mut seen = false;
    for v in values.filter(|v| !v.is_empty()) {
        seen = true;
        if inferred == CsvType::Integer && !is_integer(v) {
            inferred = CsvType::Real;
        }
        if inferred == CsvType::Real && !is_real(v) && !is_integer(v) {
            return CsvType::Text;
        }
    }
    if seen {
        inferred
    } else {
        CsvType::Text
    }
}

/// A 64-bit integer written plainly: optional `-`, digits, no leading zero (so codes like
/// `007` stay text).
fn is_integer(v: &str) -> bool {
    let digits = v.strip_prefix('-').unwrap_or(v);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && v.parse::<i64>().is_ok()
}

/// A finite decimal number with a fraction or exponent (`1.5`, `-0.25`, `.5`, `1e6`); digit
/// strings that are not integers (leading zeros, beyond 64 bits) are not numbers here, so
/// they stay text rather than losing digits.
fn is_real(v: &str) -> bool {
    let body = v.strip_prefix(['-', '+']).unwrap_or(v);
    let numeric = body
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    let has_digit = body.bytes().any(|b| b.is_ascii_digit());
    let has_point_or_exponent = body.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'));
    let leading_zero =
        body.starts_with('0') && body.as_bytes().get(1).is_some_and(u8::is_ascii_digit);
    numeric
        && has_digit
        && has_point_or_exponent
        && !leading_zero
        && v.parse::<f64>().is_ok_and(f64::is_finite)
}

/// Where the CSV parser is within a record.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CsvState {
    /// At the start of a field.
    FieldStart,
    /// Inside a field that did not start with a quote.
    Unquoted,
    /// Inside a quoted field.
    Quoted,
    /// Just after a quote inside a quoted field: an escaped quote or the closing one.
    QuoteInQuoted,
}

/// Parses RFC 4180 CSV (comma separated; fields may be quoted with `"`, a quote inside one is
/// written `""`, quoted fields may span lines; records end with CRLF, LF or CR). A UTF-8 BOM is
/// skipped and blank lines are ignored. Errors name the line.
fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut state = CsvState::FieldStart;
    let mut line = 1usize;
    let mut quote_line = 1usize;
    let mut chars = text.chars().peekable();

    // Ends the current record; a line holding nothing at all is skipped.
    fn end_record(
        records: &mut Vec<Vec<String>>,
        record: &mut Vec<String>,
        field: &mut String,
        blank: bool,
    ) {
        if blank && record.is_empty() {
            return;
        }
        record.push(std::mem::take(field));
        records.push(std::mem::take(record));
    }

    while let Some(c) = chars.next() {
        match (state, c) {
            (CsvState::Quoted, '"') => state = CsvState::QuoteInQuoted,
            (CsvState::Quoted, c) => {
                if c == '\n' || (c == '\r' && chars.peek() != Some(&'\n')) {
                    line += 1;
                }
                field.push(c);
            }
            (CsvState::QuoteInQuoted, '"') => {
                field.push('"');
                state = CsvState::Quoted;
            }
            (CsvState::FieldStart, '"') => {
                state = CsvState::Quoted;
                quote_line = line;
            }
            (_, ',') => {
                record.push(std::mem::take(&mut field));
                state = CsvState::FieldStart;
            }
            (_, '\r' | '\n') => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                let blank = state == CsvState::FieldStart && field.is_empty();
                end_record(&mut records, &mut record, &mut field, blank);
                state = CsvState::FieldStart;
                line += 1;
            }
            (CsvState::QuoteInQuoted, other) => {
                return Err(format!(
                    "CSV line {line}: unexpected {other:?} after the closing quote of a field \
                     (a quote inside a quoted field is written \"\")"
                ));
            }
            (CsvState::FieldStart | CsvState::Unquoted, c) => {
                field.push(c);
                state = CsvState::Unquoted;
            }
        }
    }
    match state {
        CsvState::Quoted => {
            return Err(format!(
                "CSV line {quote_line}: a quoted field is never closed"
            ));
        }
        CsvState::FieldStart if record.is_empty() => {}
        _ => end_record(&mut records, &mut record, &mut field, false),
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::Bytes;
    use prost::Message;
    use tokio::task::JoinHandle;

    use crate::call::{InboundSender, OutboundReceiver};
    use crate::services::test_support::{caller, TestServices};

    /// The shared fixture, with SQL helpers on top (fields reached through Deref).
    struct Volt(TestServices);

    impl std::ops::Deref for Volt {
        type Target = TestServices;

        fn deref(&self) -> &TestServices {
            &self.0
        }
    }

    impl Volt {
        fn new() -> Volt {
            Volt(TestServices::new("sqlite"))
        }

        /// Starts a call through `dispatch`.
        fn call(&self, name: &str) -> Call {
            let (tx, inbound) = Inbound::channel();
            let (outbound, rx) = Outbound::channel();
            let svc = Arc::clone(&self.svc);
            let name = name.to_owned();
            let task =
                tokio::spawn(
                    async move { dispatch(&svc, &caller(), &name, inbound, &outbound).await },
                );
            Call {
                tx: Some(tx),
                rx,
                task,
            }
        }

        async fn create_database(&self, name: &str) -> String {
            let mut call = self.call("CreateDatabase");
            call.send(&pb::CreateDatabaseRequest {
                name: name.into(),
                ..Default::default()
            })
            .await;
            let response: pb::CreateDatabaseResponse = call.recv().await.unwrap();
            call.finish().await.unwrap();
            response.resource.unwrap().id
        }

        /// Runs one non-transaction statement to completion.
        async fn exec(&self, db: &str, sql: &str) -> Vec<ExecResponse> {
            let (responses, result) = self.exec_start(start(db, sql)).await;
            result.unwrap();
            responses
        }

        async fn exec_start(
            &self,
            start: pb::SqlExecuteStart,
        ) -> (Vec<ExecResponse>, Result<(), Failure>) {
            let mut call = self.call("Execute");
            call.send(&exec_request(ExecRequest::Start(start))).await;
            let responses = call.drain().await;
            (responses, call.finish().await)
        }

        async fn count(&self, db: &str, table: &str) -> i64 {
            let responses = self
                .exec(db, &format!("SELECT count(*) FROM {table}"))
                .await;
            match &responses[1] {
                ExecResponse::Row(row) => match row.column[0].data {
                    Some(Data::Integer(n)) => n,
                    ref other => panic!("count is {other:?}"),
                },
                other => panic!("expected a row, got {other:?}"),
            }
        }
    }

    struct Call {
        tx: Option<InboundSender>,
        rx: OutboundReceiver,
        task: JoinHandle<Result<(), Failure>>,
    }

    impl Call {
        async fn send<M: Message>(&self, message: &M) {
            self.tx
                .as_ref()
                .unwrap()
                .send(Bytes::from(message.encode_to_vec()))
                .await
                .unwrap();
        }

        /// The next response, or `None` once the call has ended.
        async fn recv<M: Message + Default>(&mut self) -> Option<M> {
            tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
                .await
                .expect("timed out waiting for a response")
                .map(|bytes| M::decode(bytes).unwrap())
        }

        /// Execute responses until the call ends.
        async fn drain(&mut self) -> Vec<ExecResponse> {
            let mut out = Vec::new();
            while let Some(r) = self.recv::<pb::SqlExecuteResponse>().await {
                out.push(r.payload.unwrap());
            }
            out
        }

        /// Execute responses until `n` arrived.
        async fn take(&mut self, n: usize) -> Vec<ExecResponse> {
            let mut out = Vec::new();
            for _ in 0..n {
                let r = self.recv::<pb::SqlExecuteResponse>().await.unwrap();
                out.push(r.payload.unwrap());
            }
            out
        }

        /// Asserts that nothing arrives for a moment (the handler is waiting for us).
        async fn quiet(&mut self) {
            let waited = tokio::time::timeout(Duration::from_millis(200), self.rx.recv()).await;
            assert!(waited.is_err(), "unexpected response or end: {waited:?}");
        }

        /// Half-closes the request side.
        fn close(&mut self) {
            self.tx = None;
        }

        async fn finish(self) -> Result<(), Failure> {
            tokio::time::timeout(Duration::from_secs(10), self.task)
                .await
                .expect("the call did not end")
                .unwrap()
        }
    }

    fn start(db: &str, sql: &str) -> pb::SqlExecuteStart {
        pb::SqlExecuteStart {
            database_id: db.into(),
            statement: sql.into(),
            ..Default::default()
        }
    }

    fn exec_request(payload: ExecRequest) -> pb::SqlExecuteRequest {
        pb::SqlExecuteRequest {
            payload: Some(payload),
        }
    }

    fn rows(responses: &[ExecResponse]) -> Vec<Vec<Option<Data>>> {
        responses
            .iter()
            .filter_map(|r| match r {
                ExecResponse::Row(row) => Some(row.column.iter().map(|v| v.data.clone()).collect()),
                _ => None,
            })
            .collect()
    }

    fn header(responses: &[ExecResponse]) -> Vec<(String, pb::DataType)> {
        match &responses[0] {
            ExecResponse::Header(h) => h
                .column
                .iter()
                .map(|c| (c.name.clone(), c.r#type()))
                .collect(),
            other => panic!("expected a header, got {other:?}"),
        }
    }

    fn text(s: &str) -> Option<Data> {
        Some(Data::Text(s.into()))
    }

    async fn with_numbers(volt: &Volt, n: i64) -> String {
        let db = volt.create_database("numbers").await;
        volt.exec(&db, "CREATE TABLE t (n INTEGER)").await;
        let values: Vec<String> = (1..=n).map(|i| format!("({i})")).collect();
        volt.exec(&db, &format!("INSERT INTO t VALUES {}", values.join(",")))
            .await;
        db
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn create_insert_select_with_typed_header_and_rows() {
        let volt = Volt::new();
        let db = volt.create_database("people").await;
        let resource = volt.svc.resources().get(&db).unwrap();
        assert_eq!(resource.kind, vec![kind::DATABASE.to_owned()]);
        assert_eq!(resource.name, "people");
        let path = volt.svc.sqlite().path_of(&db).unwrap();
        assert!(path.is_file());

        let created = volt
            .exec(
                &db,
                "CREATE TABLE p (id INTEGER PRIMARY KEY, name TEXT, score REAL, photo BLOB, \
                 note)",
            )
            .await;
        assert_eq!(created, vec![ExecResponse::AffectedRows(0)]);
        let inserted = volt
            .exec(
                &db,
                "INSERT INTO p VALUES (1, 'Ann', 1.5, x'0102', NULL), \
                 (9223372036854775807, 'Bob', NULL, NULL, 'x')",
            )
            .await;
        assert_eq!(inserted, vec![ExecResponse::AffectedRows(2)]);

        let selected = volt
            .exec(
                &db,
                "SELECT id, name, score, photo, note, 1 + 1 AS two FROM p ORDER BY id",
            )
            .await;
        assert_eq!(
            header(&selected),
            vec![
                ("id".into(), pb::DataType::Integer),
                ("name".into(), pb::DataType::Text),
                ("score".into(), pb::DataType::Real),
                // BLOB and no declared type: the first row's value decides.
                ("photo".into(), pb::DataType::Blob),
                ("note".into(), pb::DataType::Null),
                ("two".into(), pb::DataType::Integer),
            ]
        );
        assert_eq!(
            rows(&selected),
            vec![
                vec![
                    Some(Data::Integer(1)),
                    text("Ann"),
                    Some(Data::Real(1.5)),
                    Some(Data::Blob(vec![1, 2])),
                    Some(Data::Null(true)),
                    Some(Data::Integer(2)),
                ],
                vec![
                    Some(Data::Integer(i64::MAX)),
                    text("Bob"),
                    Some(Data::Null(true)),
                    Some(Data::Null(true)),
                    text("x"),
                    Some(Data::Integer(2)),
                ],
            ]
        );

        // An empty result still has its header; an expression column has no type to show.
        let empty = volt.exec(&db, "SELECT name, 1 AS one FROM p WHERE 0").await;
        assert_eq!(
            header(&empty),
            vec![
                ("name".into(), pb::DataType::Text),
                ("one".into(), pb::DataType::Unknown)
            ]
        );
        assert_eq!(empty.len(), 1);

        // Writes are recorded on the resource.
        assert!(volt.svc.resources().get(&db).unwrap().version > resource.version);

        // Deleting the resource deletes the file.
        volt.svc.sqlite().forget(&db);
        assert!(!path.exists());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn paging_waits_for_next_between_pages() {
        let volt = Volt::new();
        let db = with_numbers(&volt, 5).await;
        let mut call = volt.call("Execute");
        call.send(&exec_request(ExecRequest::Start(pb::SqlExecuteStart {
            page_size: 2,
            ..start(&db, "SELECT n FROM t ORDER BY n")
        })))
        .await;
        let first = call.take(3).await;
        assert_eq!(header(&first), vec![("n".into(), pb::DataType::Integer)]);
        assert_eq!(rows(&first).len(), 2);
        call.quiet().await;

        call.send(&exec_request(ExecRequest::Next(pb::SqlExecuteNext {})))
            .await;
        let second = call.take(2).await;
        assert_eq!(
            rows(&second),
            vec![vec![Some(Data::Integer(3))], vec![Some(Data::Integer(4))]]
        );
        call.quiet().await;

        call.send(&exec_request(ExecRequest::Next(pb::SqlExecuteNext {})))
            .await;
        // The last page, then the call ends without being asked again.
        let last = call.drain().await;
        assert_eq!(rows(&last), vec![vec![Some(Data::Integer(5))]]);
        call.finish().await.unwrap();

        // A page that ends exactly at the last row ends the call without waiting.
        let (responses, result) = volt
            .exec_start(pb::SqlExecuteStart {
                page_size: 5,
                ..start(&db, "SELECT n FROM t")
            })
            .await;
        result.unwrap();
        assert_eq!(rows(&responses).len(), 5);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn paging_stops_on_end_or_when_the_client_goes() {
        let volt = Volt::new();
        let db = with_numbers(&volt, 5).await;
        for how in ["end", "close"] {
            let mut call = volt.call("Execute");
            call.send(&exec_request(ExecRequest::Start(pb::SqlExecuteStart {
                page_size: 2,
                ..start(&db, "SELECT n FROM t")
            })))
            .await;
            assert_eq!(rows(&call.take(3).await).len(), 2);
            if how == "end" {
                call.send(&exec_request(ExecRequest::End(pb::SqlExecuteEnd {
                    commit_transaction: false,
                })))
                .await;
            } else {
                call.close();
            }
            assert!(call.drain().await.is_empty(), "{how}");
            call.finish().await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_paused_query_does_not_block_writers() {
        let volt = Volt::new();
        let db = with_numbers(&volt, 3).await;
        let mut call = volt.call("Execute");
        call.send(&exec_request(ExecRequest::Start(pb::SqlExecuteStart {
            page_size: 1,
            ..start(&db, "SELECT n FROM t ORDER BY n")
        })))
        .await;
        assert_eq!(rows(&call.take(2).await).len(), 1);
        // Another call writes while the first holds its statement between pages.
        let inserted = volt.exec(&db, "INSERT INTO t VALUES (4)").await;
        assert_eq!(inserted, vec![ExecResponse::AffectedRows(1)]);
        let mut seen = 1;
        loop {
            call.send(&exec_request(ExecRequest::Next(pb::SqlExecuteNext {})))
                .await;
            match call.recv::<pb::SqlExecuteResponse>().await {
                Some(_) => seen += 1,
                None => break,
            }
        }
        // The paused query kept reading its own snapshot.
        assert_eq!(seen, 3);
        call.finish().await.unwrap();
        assert_eq!(volt.count(&db, "t").await, 4);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn parameters_bind_by_name_number_and_position() {
        let volt = Volt::new();
        let db = volt.create_database("params").await;
        volt.exec(&db, "CREATE TABLE kv (k TEXT, v, flag INTEGER, data BLOB)")
            .await;
        let value = |v: AttrValue| AttributeValue { value: Some(v) };
        let parameter: HashMap<String, AttributeValue> = [
            ("k".to_owned(), value(AttrValue::String("alpha".into()))),
            (":v".to_owned(), value(AttrValue::Real(2.5))),
            ("3".to_owned(), value(AttrValue::Boolean(true))),
            ("4".to_owned(), value(AttrValue::Bytes(vec![0xff]))),
            ("unused".to_owned(), value(AttrValue::Integer(1))),
        ]
        .into();
        let (responses, result) = volt
            .exec_start(pb::SqlExecuteStart {
                parameter: parameter.clone(),
                ..start(&db, "INSERT INTO kv VALUES (:k, :v, ?3, ?4)")
            })
            .await;
        result.unwrap();
        assert_eq!(responses, vec![ExecResponse::AffectedRows(1)]);

        let (responses, result) = volt
            .exec_start(pb::SqlExecuteStart {
                parameter: [("1".to_owned(), value(AttrValue::String("alpha".into())))].into(),
                ..start(&db, "SELECT v, flag, data FROM kv WHERE k = ?")
            })
            .await;
        result.unwrap();
        assert_eq!(
            rows(&responses),
            vec![vec![
                Some(Data::Real(2.5)),
                Some(Data::Integer(1)),
                Some(Data::Blob(vec![0xff]))
            ]]
        );

        let (_, result) = volt
            .exec_start(start(&db, "SELECT * FROM kv WHERE k = @missing"))
            .await;
        let failure = result.unwrap_err();
        assert_eq!(failure.code(), Code::InvalidArgument);
        assert!(failure.message().contains("@missing"), "{failure:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn affected_rows_counts_changes_of_several_statements() {
        let volt = Volt::new();
        let db = with_numbers(&volt, 5).await;
        let updated = volt.exec(&db, "UPDATE t SET n = n * 10 WHERE n > 2").await;
        assert_eq!(updated, vec![ExecResponse::AffectedRows(3)]);
        let script = volt
            .exec(
                &db,
                "CREATE TABLE u (x); INSERT INTO u VALUES (1); INSERT INTO u VALUES (2), (3);",
            )
            .await;
        assert_eq!(script, vec![ExecResponse::AffectedRows(3)]);
        let deleted = volt.exec(&db, "DELETE FROM t WHERE n > 100").await;
        assert_eq!(deleted, vec![ExecResponse::AffectedRows(0)]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn transaction_rolls_back_unless_end_commits() {
        let volt = Volt::new();
        let db = with_numbers(&volt, 3).await;

        // end without commit: rolled back.
        let mut call = volt.call("Execute");
        call.send(&exec_request(ExecRequest::Start(pb::SqlExecuteStart {
            transaction: true,
            ..start(&db, "DELETE FROM t")
        })))
        .await;
        assert_eq!(call.take(1).await, vec![ExecResponse::AffectedRows(3)]);
        // The transaction stays open until the client says how to end it.
        call.quiet().await;
        call.send(&exec_request(ExecRequest::End(pb::SqlExecuteEnd {
            commit_transaction: false,
        })))
        .await;
        assert!(call.drain().await.is_empty());
        call.finish().await.unwrap();
        assert_eq!(volt.count(&db, "t").await, 3);

        // The client going away: rolled back too.
        let mut call = volt.call("Execute");
        call.send(&exec_request(ExecRequest::Start(pb::SqlExecuteStart {
            transaction: true,
            ..start(&db, "DELETE FROM t")
        })))
        .await;
        assert_eq!(call.take(1).await, vec![ExecResponse::AffectedRows(3)]);
        call.close();
        assert!(call.drain().await.is_empty());
        call.finish().await.unwrap();
        assert_eq!(volt.count(&db, "t").await, 3);

        // Two statements in one transaction, then commit.
        let mut call = volt.call("Execute");
        call.send(&exec_request(ExecRequest::Start(pb::SqlExecuteStart {
            transaction: true,
            ..start(&db, "DELETE FROM t WHERE n = 1")
        })))
        .await;
        assert_eq!(call.take(1).await, vec![ExecResponse::AffectedRows(1)]);
        call.send(&exec_request(ExecRequest::Start(start(
            "",
            "SELECT count(*) FROM t",
        ))))
        .await;
        let inside = call.take(2).await;
        assert_eq!(rows(&inside), vec![vec![Some(Data::Integer(2))]]);
        call.send(&exec_request(ExecRequest::End(pb::SqlExecuteEnd {
            commit_transaction: true,
        })))
        .await;
        assert!(call.drain().await.is_empty());
        call.finish().await.unwrap();
        assert_eq!(volt.count(&db, "t").await, 2);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn bulk_update_is_all_or_nothing() {
        let volt = Volt::new();
        let db = volt.create_database("bulk").await;
        volt.exec(&db, "CREATE TABLE b (x INTEGER NOT NULL)").await;

        let mut call = volt.call("BulkUpdate");
        call.send(&pb::SqlBulkUpdateRequest {
            database_id: db.clone(),
            statement: vec![
                "INSERT INTO b VALUES (1)".into(),
                "INSERT INTO b VALUES (2); INSERT INTO b VALUES (3)".into(),
                "INSERT INTO b VALUES (NULL)".into(),
            ],
        })
        .await;
        assert!(call.recv::<pb::SqlBulkUpdateResponse>().await.is_none());
        let failure = call.finish().await.unwrap_err();
        assert_eq!(failure.code(), Code::FailedPrecondition);
        assert!(
            failure
                .message()
                .starts_with("statement 3: NOT NULL constraint failed"),
            "{failure:?}"
        );
        assert_eq!(volt.count(&db, "b").await, 0);

        let mut call = volt.call("BulkUpdate");
        call.send(&pb::SqlBulkUpdateRequest {
            database_id: db.clone(),
            statement: vec![
                "INSERT INTO b VALUES (1)".into(),
                "INSERT INTO b VALUES (2); INSERT INTO b VALUES (3)".into(),
            ],
        })
        .await;
        let response: pb::SqlBulkUpdateResponse = call.recv().await.unwrap();
        assert_eq!(response.status, None);
        call.finish().await.unwrap();
        assert_eq!(volt.count(&db, "b").await, 3);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn import_csv_infers_types_and_handles_quotes() {
        let volt = Volt::new();
        let db = volt.create_database("imports").await;
        let csv = "\u{feff}id,name,price,code,note\r\n\
                   1,\"Smith, John\",2.5,007,\"said \"\"hi\"\"\"\r\n\
                   2,plain,3,010,\"two\r\nlines\"\r\n\
                   \r\n\
                   3,,1e2,123,\r\n";
        let mut call = volt.call("ImportCSV");
        let request = |p: ImportRequest| pb::SqlImportCsvRequest { payload: Some(p) };
        call.send(&request(ImportRequest::Configuration(
            pb::SqlImportCsvConfiguration {
                database_id: db.clone(),
                table_name: "items".into(),
                progress_interval: 2,
                ..Default::default()
            },
        )))
        .await;
        // Blocks may split the data anywhere, even inside a quoted field.
        let (a, b) = csv.as_bytes().split_at(30);
        call.send(&request(ImportRequest::Block(a.to_vec()))).await;
        call.send(&request(ImportRequest::Block(b.to_vec()))).await;
        call.send(&request(ImportRequest::UploadComplete(true)))
            .await;
        let progress: pb::SqlImportCsvResponse = call.recv().await.unwrap();
        assert_eq!((progress.row_count, progress.total_rows), (2, 3));
        let done: pb::SqlImportCsvResponse = call.recv().await.unwrap();
        assert_eq!((done.row_count, done.total_rows), (3, 3));
        assert!(call.recv::<pb::SqlImportCsvResponse>().await.is_none());
        call.finish().await.unwrap();

        let selected = volt
            .exec(
                &db,
                "SELECT id, name, price, code, note FROM items ORDER BY id",
            )
            .await;
        assert_eq!(
            header(&selected),
            vec![
                ("id".into(), pb::DataType::Integer),
                ("name".into(), pb::DataType::Text),
                ("price".into(), pb::DataType::Real),
                ("code".into(), pb::DataType::Text),
                ("note".into(), pb::DataType::Text),
            ]
        );
        assert_eq!(
            rows(&selected),
            vec![
                vec![
                    Some(Data::Integer(1)),
                    text("Smith, John"),
                    Some(Data::Real(2.5)),
                    text("007"),
                    text("said \"hi\""),
                ],
                vec![
                    Some(Data::Integer(2)),
                    text("plain"),
                    Some(Data::Real(3.0)),
                    text("010"),
                    text("two\r\nlines"),
                ],
                vec![
                    Some(Data::Integer(3)),
                    Some(Data::Null(true)),
                    Some(Data::Real(100.0)),
                    text("123"),
                    Some(Data::Null(true)),
                ],
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn import_csv_rejects_bad_csv() {
        let volt = Volt::new();
        let db = volt.create_database("imports").await;
        for (csv, expected) in [
            ("a,b\n1,\"open\n", "never closed"),
            ("a,b\n1,2,3\n", "record 2 has 3 fields"),
            ("a,b\n", "no data rows"),
            ("a,\"x\"y\n1,2\n", "after the closing quote"),
        ] {
            let mut call = volt.call("ImportCSV");
            call.send(&pb::SqlImportCsvRequest {
                payload: Some(ImportRequest::Configuration(
                    pb::SqlImportCsvConfiguration {
                        database_id: db.clone(),
                        table_name: "bad".into(),
                        ..Default::default()
                    },
                )),
            })
            .await;
            call.send(&pb::SqlImportCsvRequest {
                payload: Some(ImportRequest::Block(csv.as_bytes().to_vec())),
            })
            .await;
            call.close();
            let failure = call.finish().await.unwrap_err();
            assert_eq!(failure.code(), Code::InvalidArgument);
            assert!(failure.message().contains(expected), "{failure:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn unknown_database_and_bad_sql_are_status_errors() {
        let volt = Volt::new();
        let (_, result) = volt.exec_start(start("no-such-db", "SELECT 1")).await;
        let failure = result.unwrap_err();
        assert_eq!(failure.code(), Code::NotFound);
        assert!(!failure.is_abort());
        assert_eq!(failure.message(), "database not found: no-such-db");

        let db = volt.create_database("errors").await;
        let (_, result) = volt.exec_start(start(&db, "SELEC 1")).await;
        let failure = result.unwrap_err();
        assert_eq!(failure.code(), Code::InvalidArgument);
        assert_eq!(failure.message(), "near \"SELEC\": syntax error");
        let (_, result) = volt.exec_start(start(&db, "SELECT * FROM nowhere")).await;
        assert_eq!(result.unwrap_err().message(), "no such table: nowhere");

        // Through the router, a reply failure becomes a response carrying only `status`.
        for (path, database_id, code) in [
            ("SqliteDatabaseAPI/Execute", "no-such-db", Code::NotFound),
            (
                "SqliteDatabaseAPI/Execute",
                db.as_str(),
                Code::InvalidArgument,
            ),
        ] {
            let method = tdx_volt::protocol::schema::methods()
                .lookup(&format!("/tdx.volt_api.data.v1.{path}"))
                .unwrap();
            let (tx, inbound) = Inbound::channel();
            let (outbound, mut rx) = Outbound::channel();
            tx.send(Bytes::from(
                exec_request(ExecRequest::Start(start(database_id, "SELEC 1"))).encode_to_vec(),
            ))
            .await
            .unwrap();
            Arc::clone(&volt.svc)
                .call(caller(), method, inbound, outbound)
                .await
                .unwrap();
            let response = pb::SqlExecuteResponse::decode(rx.recv().await.unwrap()).unwrap();
            match response.payload {
                Some(ExecResponse::Status(status)) => {
                    assert_eq!(status.code, code.as_i32());
                    assert!(!status.message.is_empty());
                }
                other => panic!("expected a status, got {other:?}"),
            }
            assert!(rx.recv().await.is_none());
            drop(tx);
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn databases_are_found_by_alias_and_other_methods_are_unimplemented() {
        let volt = Volt::new();
        let mut call = volt.call("CreateDatabase");
        call.send(&pb::CreateDatabaseRequest {
            name: "aliased".into(),
            alias: vec!["my-db".into()],
            ..Default::default()
        })
        .await;
        let created: pb::CreateDatabaseResponse = call.recv().await.unwrap();
        call.finish().await.unwrap();
        assert_eq!(created.resource.unwrap().alias, vec!["my-db".to_owned()]);
        assert_eq!(
            volt.exec("my-db", "SELECT 1 AS one").await.len(),
            2,
            "header and one row"
        );

        let call = volt.call("CreateDatabase");
        call.send(&pb::CreateDatabaseRequest {
            name: "again".into(),
            alias: vec!["my-db".into()],
            ..Default::default()
        })
        .await;
        assert_eq!(call.finish().await.unwrap_err().code(), Code::AlreadyExists);

        let call = volt.call("SaveDataView");
        let failure = call.finish().await.unwrap_err();
        assert!(failure.is_abort());
        assert_eq!(failure.code(), Code::Unimplemented);
        assert!(failure
            .message()
            .contains("/tdx.volt_api.data.v1.SqliteServerAPI/SaveDataView"));
    }

    #[test]
    fn zero_values_survive_the_json_form() {
        // The websocket gateway sends proto3 JSON; the official clients pick a cell's type by
        // which key is present, so a set oneof member must appear even when it is zero.
        let desc =
            tdx_volt::protocol::schema::message("tdx.volt_api.data.v1.SqlExecuteResponse").unwrap();
        let row = pb::SqlExecuteResponse {
            payload: Some(ExecResponse::Row(pb::VariantRow {
                column: [
                    Data::Integer(0),
                    Data::Text(String::new()),
                    Data::Real(0.0),
                    Data::Blob(Vec::new()),
                    Data::Null(true),
                ]
                .into_iter()
                .map(|d| pb::Variant { data: Some(d) })
                .collect(),
            })),
        };
        let json =
            tdx_volt::protocol::schema::protobuf_to_json(&desc, &row.encode_to_vec()).unwrap();
        let cells = json["row"]["column"].as_array().unwrap();
        for (cell, key) in cells
            .iter()
            .zip(["integer", "text", "real", "blob", "null"])
        {
            assert!(cell.get(key).is_some(), "{key} missing in {json}");
        }
        let affected = pb::SqlExecuteResponse {
            payload: Some(ExecResponse::AffectedRows(0)),
        };
        let json =
            tdx_volt::protocol::schema::protobuf_to_json(&desc, &affected.encode_to_vec()).unwrap();
        assert_eq!(json["affected_rows"], 0, "{json}");
    }

    #[test]
    fn csv_parser_and_type_inference() {
        assert_eq!(
            parse_csv("a,b\n\"x,\"\"y\"\"\",\n\n\"\"\rlast").unwrap(),
            vec![
                vec!["a".to_owned(), "b".to_owned()],
                vec!["x,\"y\"".to_owned(), String::new()],
                vec![String::new()],
                vec!["last".to_owned()],
            ]
        );
        assert_eq!(parse_csv("").unwrap(), Vec::<Vec<String>>::new());
        assert_eq!(infer_type(["1", "-2", ""].into_iter()), CsvType::Integer);
        assert_eq!(infer_type(["1", "2.5"].into_iter()), CsvType::Real);
        assert_eq!(infer_type(["1", "abc"].into_iter()), CsvType::Text);
        assert_eq!(infer_type(["007"].into_iter()), CsvType::Text);
        assert_eq!(
            infer_type(["99999999999999999999"].into_iter()),
            CsvType::Text
        );
        assert_eq!(infer_type(["inf", "NaN"].into_iter()), CsvType::Text);
        assert_eq!(infer_type(["", ""].into_iter()), CsvType::Text);
        assert_eq!(CsvType::Integer.value("x"), Value::Text("x".into()));
    }
}
