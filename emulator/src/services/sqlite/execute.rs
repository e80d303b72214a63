//! Execute: statements with their results, paged on request, in a transaction on request.
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
//! - Responses go out in small batches, as a server's buffered writes would: up to
//!   [`HOLD_MESSAGES`] or [`HOLD_BYTES`] together, none held once [`HOLD_FOR`] has passed
//!   since the oldest was made (checked as each row is made), and all of them before the
//!   call waits for the client or ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::{Batch, Connection, Statement};
use tdx_volt::proto::data as pb;
use tdx_volt::proto::data::sql_execute_request::Payload as ExecRequest;
use tdx_volt::proto::data::sql_execute_response::Payload as ExecResponse;

use crate::call::{Caller, Code, Failure, Inbound, Outbound};
use crate::services::access::{denied, names};
use crate::services::Services;

use super::databases::{connect, resolve_database, touch};
use super::values::{bind_parameters, fetch_row, header_type};
use super::{run_blocking, sql_failure, MAX_LIVE_EXECUTES, MAX_PAGE_SIZE};

pub(super) async fn execute(
    svc: &Arc<Services>,
    caller: &Caller,
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
    let (resource, path) = resolve_database(svc, caller, &start.database_id, names::DATABASE_READ)?;
    let may_write = svc
        .authorize(caller, &resource.id, names::DATABASE_WRITE)
        .is_ok();
    let svc = Arc::clone(svc);
    let outbound = outbound.clone();
    let idle = svc.execute_idle_timeout();
    run_blocking(move || {
        let conn = connect(&path)?;
        let mut pipe = Pipe::new(inbound, outbound, idle);
        let mut state = ExecState {
            names: [start.database_id.clone(), resource.id.clone()],
            transaction: start.transaction,
            wrote: false,
            may_write,
            committed: false,
        };
        let result = run_execute(&conn, &mut pipe, &mut state, start);
        // What was made before an error goes out before it.
        let flushed = pipe.flush();
        let result = result.and(flushed);
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

/// The most responses held to go out together.
pub const HOLD_MESSAGES: usize = 64;
/// The most bytes of responses held to go out together.
pub const HOLD_BYTES: usize = 64 * 1024;
/// How long a response is held at most before the next one is made.
pub const HOLD_FOR: Duration = Duration::from_millis(1);

/// The call's request and response channels, used from the blocking thread.
struct Pipe {
    inbound: Inbound,
    outbound: Outbound,
    /// How long a paused query or open transaction waits for the client's next request.
    idle: Duration,
    /// Responses made and not yet sent, and when the oldest was made.
    held: Vec<Bytes>,
    held_bytes: usize,
    held_since: Option<Instant>,
}

impl Pipe {
    fn new(inbound: Inbound, outbound: Outbound, idle: Duration) -> Pipe {
        Pipe {
            inbound,
            outbound,
            idle,
            held: Vec::with_capacity(HOLD_MESSAGES),
            held_bytes: 0,
            held_since: None,
        }
    }

    fn send(&mut self, payload: ExecResponse) -> Result<(), Failure> {
        let bytes = Bytes::from(
            pb::SqlExecuteResponse {
                payload: Some(payload),
            }
            .encode_to_vec(),
        );
        self.held_bytes += bytes.len();
        self.held.push(bytes);
        let since = *self.held_since.get_or_insert_with(Instant::now);
        if self.held.len() >= HOLD_MESSAGES
            || self.held_bytes >= HOLD_BYTES
            || since.elapsed() >= HOLD_FOR
        {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends every response held.
    fn flush(&mut self) -> Result<(), Failure> {
        self.held_bytes = 0;
        self.held_since = None;
        self.outbound.blocking_send_batch(&mut self.held)
    }

    /// Waits, with a page sent, for the client to ask for more.
    fn pull(&mut self) -> Result<Pull, Failure> {
        self.flush()?;
        let idle = self.idle;
        match self
            .inbound
            .blocking_next_within::<pb::SqlExecuteRequest>(idle, "a paused query was let go")?
        {
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
    /// The caller has `volt:database-write`: without it, only statements that do not write
    /// may run.
    may_write: bool,
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
        match run_statements(conn, pipe, &start, state)? {
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
    pipe.flush()?;
    loop {
        let idle = pipe.idle;
        let Some(request) = pipe.inbound.blocking_next_within::<pb::SqlExecuteRequest>(
            idle,
            "an open transaction was rolled back",
        )?
        else {
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
    state: &mut ExecState,
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
            if !state.may_write {
                return Err(denied(names::DATABASE_WRITE, &state.names[1]));
            }
            state.wrote = true;
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
