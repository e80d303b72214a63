//! BulkUpdate: several statements in one transaction.
//!
//! **BulkUpdate** (unary): every statement (each may hold several; none may take parameters)
//! runs inside one `BEGIN IMMEDIATE` transaction: all or nothing. An error names the
//! statement's 1-based position.

use std::path::Path;
use std::sync::Arc;

use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::{Batch, Connection, TransactionBehavior};
use tdx_volt::proto::data as pb;

use crate::call::{Caller, Failure};
use crate::services::access::names;
use crate::services::Services;

use super::databases::{connect, resolve_database, touch};
use super::{prefixed, run_blocking, sql_failure};

pub(super) async fn bulk_update(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::SqlBulkUpdateRequest,
) -> Result<pb::SqlBulkUpdateResponse, Failure> {
    let (resource, path) = resolve_database(svc, caller, &r.database_id, names::DATABASE_WRITE)?;
    let statements = r.statement;
    let svc = Arc::clone(svc);
    run_blocking(move || {
        bulk_blocking(&path, &statements)?;
        touch(&svc, &resource.id, &path);
        Ok(())
    })
    .await?;
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
