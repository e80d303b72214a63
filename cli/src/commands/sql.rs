//! `volt sql DB "STATEMENT"`: rows as an aligned table, CSV or JSON.

use serde_json::{json, Map, Value};
use tdx_volt::client::SqlRows;

use super::Context;
use crate::args::SqlFormat;
use crate::exit::{Failure, PROTOCOL};
use crate::output::{Output, TableLayout};

/// Rows of CSV or JSON written to stdout at once.
const ROWS_PER_WRITE: usize = 256;

/// The rows a table's column widths are fitted to (held until then: at most this many rows
/// are in memory).
const TABLE_SAMPLE_ROWS: usize = 1_000;

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
/// followed by its row count. The column widths fit the first [`TABLE_SAMPLE_ROWS`] rows,
/// which are held until then; later rows are printed as they come.
async fn print_tables(out: &Output, mut rows: SqlRows) -> Result<(), Failure> {
    let mut table: Option<Table> = None;
    let mut text = String::new();
    while let Some(row) = rows.next_row().await? {
        let columns = rows.columns();
        if table
            .as_ref()
            .is_none_or(|t| t.columns.as_slice() != columns)
        {
            if let Some(done) = table.take() {
                done.finish(&mut text);
                text.push('\n');
            }
            table = Some(Table::new(columns.to_vec()));
        }
        if let Some(table) = table.as_mut() {
            let cells = cells(&table.columns, &row);
            table.push(cells, &mut text);
        }
        if text.len() >= 64 * 1024 {
            out.bytes(std::mem::take(&mut text).as_bytes())?;
        }
    }
    match table {
        Some(done) => done.finish(&mut text),
        None if rows.columns().is_empty() => {
            text.push_str(&match rows.affected_rows() {
                Some(1) => "(1 row affected)\n".to_owned(),
                Some(n) => format!("({n} rows affected)\n"),
                None => "(no rows)\n".to_owned(),
            });
        }
        None => Table::new(rows.columns().to_vec()).finish(&mut text),
    }
    out.bytes(text.as_bytes())
}

/// The rows of a table that shows them one per line once its layout is known.
struct Table {
    columns: Vec<String>,
    /// Rows held until the layout is chosen.
    held: Vec<Vec<Value>>,
    layout: Option<TableLayout>,
    count: u64,
}

impl Table {
    fn new(columns: Vec<String>) -> Table {
        Table {
            columns,
            held: Vec::new(),
            layout: None,
            count: 0,
        }
    }

    fn push(&mut self, row: Vec<Value>, text: &mut String) {
        self.count += 1;
        match &self.layout {
            Some(layout) => {
                text.push_str(&layout.row(&row));
                text.push('\n');
            }
            None => {
                self.held.push(row);
                if self.held.len() == TABLE_SAMPLE_ROWS {
                    self.lay_out(text);
                }
            }
        }
    }

    /// Chooses the layout from the rows held, and writes the header and them.
    fn lay_out(&mut self, text: &mut String) {
        let layout = TableLayout::fit(&self.columns, &self.held);
        text.push_str(&layout.header(&self.columns));
        text.push('\n');
        for row in self.held.drain(..) {
            text.push_str(&layout.row(&row));
            text.push('\n');
        }
        self.layout = Some(layout);
    }

    fn finish(mut self, text: &mut String) {
        if self.layout.is_none() {
            self.lay_out(text);
        }
        text.push_str(&match self.count {
            1 => "(1 row)\n".to_owned(),
            n => format!("({n} rows)\n"),
        });
    }
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
