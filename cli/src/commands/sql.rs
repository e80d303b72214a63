//! `volt sql DB "STATEMENT"`: rows as an aligned table, CSV or JSON.

use serde_json::{json, Map, Value};
use tdx_volt::client::SqlRows;

use super::Context;
use crate::args::SqlFormat;
use crate::exit::{Failure, PROTOCOL};
use crate::output::{table, Output};

/// Rows of CSV or JSON written to stdout at once.
const ROWS_PER_WRITE: usize = 256;

/// Runs `statement` on `database` and prints its rows.
pub async fn run(
    cx: &Context,
    database: &str,
    statement: &str,
    format: Option<SqlFormat>,
) -> Result<(), Failure> {
    let format = format.unwrap_or(if cx.out.json {
        SqlFormat::Json
    } else {
        SqlFormat::Table
    });
    let client = cx.connect().await?;
    let rows = client
        .sql_rows(json!({ "database_id": database, "statement": statement }))
        .await?;
    match format {
        SqlFormat::Table => print_tables(&cx.out, rows).await,
        SqlFormat::Csv => print_csv(&cx.out, rows).await,
        SqlFormat::Json => print_json(&cx.out, rows).await,
    }
}

/// The cells of a row in the order of `columns`.
fn cells(columns: &[String], row: &Map<String, Value>) -> Vec<Value> {
    columns
        .iter()
        .map(|c| row.get(c).cloned().unwrap_or(Value::Null))
        .collect()
}

/// One table per statement that returned rows (the columns change between them), each
/// followed by its row count. The rows are held until the widths are known.
async fn print_tables(out: &Output, mut rows: SqlRows) -> Result<(), Failure> {
    let mut tables: Vec<(Vec<String>, Vec<Vec<Value>>)> = Vec::new();
    while let Some(row) = rows.next_row().await? {
        let columns = rows.columns();
        if tables.last().is_none_or(|(c, _)| c.as_slice() != columns) {
            tables.push((columns.to_vec(), Vec::new()));
        }
        if let Some((columns, held)) = tables.last_mut() {
            held.push(cells(columns, &row));
        }
    }
    if tables.is_empty() {
        let columns = rows.columns();
        if columns.is_empty() {
            return out.line(&match rows.affected_rows() {
                Some(1) => "(1 row affected)".to_owned(),
                Some(n) => format!("({n} rows affected)"),
                None => "(no rows)".to_owned(),
            });
        }
        tables.push((columns.to_vec(), Vec::new()));
    }
    let text: Vec<String> = tables
        .iter()
        .map(|(columns, held)| {
            let count = match held.len() {
                1 => "(1 row)".to_owned(),
                n => format!("({n} rows)"),
            };
            format!("{}\n{count}", table(columns, held))
        })
        .collect();
    out.line(&text.join("\n\n"))
}

/// CSV (RFC 4180) with a header line, and another header where the columns change; NULL is
/// an empty field, blobs are base64.
async fn print_csv(out: &Output, mut rows: SqlRows) -> Result<(), Failure> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut columns: Option<Vec<String>> = None;
    let mut pending = 0;
    while let Some(row) = rows.next_row().await? {
        if columns.as_deref() != Some(rows.columns()) {
            let header = rows.columns().to_vec();
            writer.write_record(&header).map_err(csv_error)?;
            columns = Some(header);
        }
        let fields = cells(rows.columns(), &row).into_iter().map(|v| match v {
            Value::Null => String::new(),
            Value::String(s) => s,
            other => other.to_string(),
        });
        writer.write_record(fields).map_err(csv_error)?;
        pending += 1;
        if pending == ROWS_PER_WRITE {
            flush_csv(out, writer)?;
            writer = csv::Writer::from_writer(Vec::new());
            pending = 0;
        }
    }
    if columns.is_none() && !rows.columns().is_empty() {
        writer.write_record(rows.columns()).map_err(csv_error)?;
    }
    flush_csv(out, writer)
}

/// Writes out what `writer` holds.
fn flush_csv(out: &Output, writer: csv::Writer<Vec<u8>>) -> Result<(), Failure> {
    let bytes = writer
        .into_inner()
        .map_err(|e| Failure::new(PROTOCOL, format!("writing CSV: {}", e.error())))?;
    out.bytes(&bytes)
}

fn csv_error(e: csv::Error) -> Failure {
    Failure::new(PROTOCOL, format!("writing CSV: {e}"))
}

/// A JSON array of row objects, one row per line, written as the rows come.
async fn print_json(out: &Output, mut rows: SqlRows) -> Result<(), Failure> {
    let mut text = String::from("[");
    let mut count = 0usize;
    while let Some(row) = rows.next_row().await? {
        if count > 0 {
            text.push(',');
        }
        text.push('\n');
        text.push_str(&Value::Object(row).to_string());
        count += 1;
        if count.is_multiple_of(ROWS_PER_WRITE) {
            out.bytes(std::mem::take(&mut text).as_bytes())?;
        }
    }
    if count > 0 {
        text.push('\n');
    }
    text.push(']');
    out.line(&text)
}
