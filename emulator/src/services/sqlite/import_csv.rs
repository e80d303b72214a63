//! ImportCSV: CSV data sent in blocks, inserted into a table.
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

use std::path::Path;
use std::sync::Arc;

use rusqlite::TransactionBehavior;
use tdx_volt::proto::data as pb;
use tdx_volt::proto::data::sql_import_csv_request::Payload as ImportRequest;

use crate::call::{Caller, Code, Failure, Inbound, Outbound};
use crate::services::access::names;
use crate::services::Services;

use super::csv::{infer_type, parse_csv, CsvType};
use super::databases::{connect, resolve_database, touch};
use super::{prefixed, run_blocking, sql_failure, MAX_CSV_BYTES};

pub(super) async fn import_csv(
    svc: &Arc<Services>,
    caller: &Caller,
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
    let (resource, path) =
        resolve_database(svc, caller, &config.database_id, names::DATABASE_WRITE)?;
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
        let svc = Arc::clone(svc);
        let outbound = outbound.clone();
        run_blocking(move || {
            let total = import_blocking(&path, &config, &data, &outbound)?;
            touch(&svc, &resource.id, &path);
            Ok(total)
        })
        .await?
    };
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
