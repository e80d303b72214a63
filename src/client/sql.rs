//! [`VoltClient::sql_rows`] and [`VoltClient::sql_execute_json`]: a query's rows as JSON
//! objects, one at a time or all at once (`sql_typed` reads them into the caller's types).

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::sql_cells::{cells_object, kept_columns};
use super::{Call, CallEvent, VoltClient};
use crate::proto::data::sql_execute_response::Payload;
use crate::proto::data::{SqlExecuteResponse, Variant};
use crate::transport::{Arrival, Unread};
use crate::{Error, ErrorKind, Result};

/// A row as it arrived.
pub(super) enum Fetched {
    /// A `VariantRow` as proto3 JSON (the gateway's rows).
    Json(Value),
    /// A row's cells as protobuf decoded them (gRPC's rows).
    Cells(Vec<Variant>),
}

const EXECUTE: &str = "/tdx.volt_api.data.v1.SqliteDatabaseAPI/Execute";

/// The most rows a page holds when [`VoltClient::sql_rows`] pages by itself.
pub const DEFAULT_SQL_PAGE: u32 = 1_000;
/// The largest `page_size` [`VoltClient::sql_rows`] asks for (a Volt sends no larger page,
/// so a client counting to more would wait for rows that never come).
pub const MAX_SQL_PAGE: u32 = 10_000;

impl VoltClient {
    /// Runs an SQL statement with `SqliteDatabaseAPI/Execute` and returns its rows one at a
    /// time ([`SqlRows::next_row`]), each as an object keyed by column name, without holding
    /// the whole result.
    ///
    /// `request` is an `SqlExecuteStart` (`database_id`, `statement`, `parameter`,
    /// `page_size`, ...), bare or wrapped as `{"start": {...}}`. With a `page_size` (at most
    /// [`MAX_SQL_PAGE`]), the next page is asked for (`next`) when the row after a page's
    /// last is asked for. Cells keep their SQLite type whatever the column's declared type:
    /// integers are JSON numbers (exact to 64 bits), reals numbers, text strings, blobs
    /// base64 strings and NULL `null`. Each wait for the next response is bounded by the
    /// request timeout.
    ///
    /// However large the result and however slowly the rows are read, the call is not ended
    /// for falling behind, and what waits unread is bounded:
    /// - over gRPC, by the client's [`call_buffer`](crate::VoltClientBuilder::call_buffer)
    ///   (flow control holds the Volt back while rows go unread);
    /// - on the websocket gateway (no flow control per call), by one page: the query is
    ///   paged, by half the `call_buffer` (less two) and at most [`DEFAULT_SQL_PAGE`] rows, or
    ///   by the request's own `page_size` if smaller. Rows count, not their bytes: a page of
    ///   large rows is held whole. Each statement of a text also sends a header, which is not
    ///   paged: a text of many statements that return no rows can still fall behind.
    ///
    /// For a statement inside a transaction, use [`sql_execute`](VoltClient::sql_execute).
    ///
    /// ```no_run
    /// # async fn demo(client: tdx_volt::VoltClient, db: &str) -> tdx_volt::Result<()> {
    /// let mut rows = client
    ///     .sql_rows(serde_json::json!({"database_id": db, "statement": "SELECT * FROM log"}))
    ///     .await?;
    /// while let Some(row) = rows.next_row().await? {
    ///     println!("{}", row["message"]);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn sql_rows(&self, request: Value) -> Result<SqlRows> {
        let mut request = if request.get("start").is_some() {
            request
        } else {
            json!({ "start": request })
        };
        let asked = request
            .get("start")
            .and_then(|s| s.get("page_size"))
            .and_then(|p| {
                p.as_u64()
                    .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(0);
        // The page is chosen for the connection the call goes out on.
        let connection = self.connection();
        // A transport that holds the Volt back for a slow reader needs no paging of ours.
        let page_size = if connection.holds_back_slow_readers() {
            asked.min(u64::from(MAX_SQL_PAGE))
        } else {
            let buffer = self.shared.setup.options.call_buffer;
            let most = (buffer.saturating_sub(2) / 2).clamp(1, DEFAULT_SQL_PAGE as usize) as u64;
            if asked == 0 {
                most
            } else {
                asked.min(most)
            }
        };
        if page_size != asked {
            if let Some(start) = request.get_mut("start").and_then(Value::as_object_mut) {
                start.insert("page_size".into(), json!(page_size));
            }
        }
        // A paged call holds at most a page unread (the next is asked for once the last row
        // is read), so it is bounded by events, not bytes: large rows are not a slow reader.
        let unread = if page_size > 0 {
            Unread::EventsOnly
        } else {
            Unread::Bounded
        };
        let trace = super::trace::CallSpan::start(EXECUTE, connection.label());
        let call = self
            .open_on(
                connection,
                EXECUTE,
                Some(request),
                false,
                unread,
                None,
                trace,
            )
            .await?;
        Ok(SqlRows {
            call,
            columns: Vec::new(),
            kept: Vec::new(),
            page_size,
            in_page: 0,
            next_due: false,
            timeout: self.request_timeout,
            done: false,
            affected_rows: None,
            rows_read: 0,
        })
    }

    /// Runs an SQL statement with `SqliteDatabaseAPI/Execute` and returns every row as an
    /// object keyed by column name: [`sql_rows`](VoltClient::sql_rows), collected.
    ///
    /// ```no_run
    /// # async fn demo(client: tdx_volt::VoltClient, db: &str) -> tdx_volt::Result<()> {
    /// let rows = client
    ///     .sql_execute_json(serde_json::json!({
    ///         "database_id": db,
    ///         "statement": "SELECT id, name FROM person WHERE id > :min",
    ///         "parameter": {"min": {"integer": 1}},
    ///     }))
    ///     .await?;
    /// for row in rows {
    ///     println!("{} {}", row["id"], row["name"]);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn sql_execute_json(&self, request: Value) -> Result<Vec<Map<String, Value>>> {
        let mut rows = self.sql_rows(request).await?;
        let mut all = Vec::new();
        while let Some(row) = rows.next_row().await? {
            all.push(row);
        }
        Ok(all)
    }
}

/// The rows of one query, read one at a time: [`VoltClient::sql_rows`]. Dropping it before
/// the last row stops the query.
#[must_use = "dropping SqlRows stops the query"]
#[derive(Debug)]
pub struct SqlRows {
    call: Call,
    columns: Vec<String>,
    /// Which columns a row deserializes (the last of those that share a name).
    kept: Vec<bool>,
    /// Rows per page (0: the Volt sends every row without waiting).
    page_size: u64,
    /// Rows of the current page read so far.
    in_page: u64,
    /// The last row of a page has been read: the next page is asked for with the next row.
    next_due: bool,
    timeout: Duration,
    done: bool,
    affected_rows: Option<u64>,
    rows_read: u64,
}

impl SqlRows {
    /// The next row, or `None` once every row has been read. An error ends the rows.
    ///
    /// Cancel-safe: a row taken off the call is always returned.
    pub async fn next_row(&mut self) -> Result<Option<Map<String, Value>>> {
        Ok(match self.next_fetched().await? {
            Some(Fetched::Json(row)) => Some(row_object(&self.columns, &row)?),
            Some(Fetched::Cells(cells)) => Some(cells_object(&self.columns, cells)),
            None => None,
        })
    }

    /// The next row as it arrived: JSON (the gateway's) or protobuf cells (gRPC's). A row
    /// of cells is checked against its header here; a JSON row when it is read.
    pub(super) async fn next_fetched(&mut self) -> Result<Option<Fetched>> {
        if self.next_due && !self.done {
            // The Volt may already have ended the call (no rows were left); the end then
            // arrives as the next event.
            match self.call.send(json!({ "next": {} })).await {
                Err(e) if !e.is_closed() => {
                    self.done = true;
                    return Err(e);
                }
                _ => self.next_due = false,
            }
        }
        while !self.done {
            let arrival = tokio::time::timeout(self.timeout, self.call.next_arrival())
                .await
                .map_err(|_| {
                    Error::new(
                        ErrorKind::Timeout,
                        format!("{EXECUTE}: no response within {:?}", self.timeout),
                    )
                })?;
            let event = match arrival {
                Some(Arrival::Encoded(encoded)) => match self.call.decode_as(encoded) {
                    Ok(response) => match self.take_response(response) {
                        Ok(Some(cells)) => return Ok(Some(Fetched::Cells(cells))),
                        Ok(None) => continue,
                        Err(e) => {
                            self.done = true;
                            return Err(e);
                        }
                    },
                    Err(event) => event,
                },
                Some(Arrival::Json(text)) => self.call.decoded_json(&text),
                Some(Arrival::Event(event)) => event,
                None => CallEvent::End,
            };
            match event {
                CallEvent::Data(mut message) => {
                    if let Some(header) = message.get("header") {
                        self.set_columns(column_names(header)?);
                    } else if let Some(row) = message.get_mut("row") {
                        let row = row.take();
                        self.count_row();
                        return Ok(Some(Fetched::Json(row)));
                    } else if let Some(affected) = message.get("affected_rows") {
                        self.affected_rows = affected
                            .as_u64()
                            .or_else(|| affected.as_str().and_then(|s| s.parse().ok()));
                    }
                }
                CallEvent::Error(e) | CallEvent::Failed(e) => {
                    self.done = true;
                    return Err(e);
                }
                CallEvent::End => self.done = true,
            }
        }
        Ok(None)
    }

    /// Takes in a decoded response: a row's cells, or what else it says (`None`). An error
    /// status is an error.
    fn take_response(&mut self, response: SqlExecuteResponse) -> Result<Option<Vec<Variant>>> {
        match response.payload {
            Some(Payload::Row(row)) => {
                if row.column.len() != self.columns.len() {
                    return Err(malformed("a row does not match its header"));
                }
                self.count_row();
                return Ok(Some(row.column));
            }
            Some(Payload::Header(header)) => {
                self.set_columns(header.column.into_iter().map(|c| c.name).collect());
            }
            Some(Payload::AffectedRows(n)) => self.affected_rows = Some(u64::from(n)),
            Some(Payload::Status(status)) => {
                if let Some(error) = self.call.status_error(status) {
                    return Err(error);
                }
            }
            None => {}
        }
        Ok(None)
    }

    fn set_columns(&mut self, columns: Vec<String>) {
        self.kept = kept_columns(&columns);
        self.columns = columns;
    }

    /// The current header's columns, and which of them a row reads.
    pub(super) fn header(&self) -> (&[String], &[bool]) {
        (&self.columns, &self.kept)
    }

    /// The column names of the current statement's header (empty before it arrives).
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// How many rows the last statement that changes rows (INSERT, UPDATE, DELETE, ...)
    /// changed, as the Volt reported it (`affected_rows`); `None` until it reports one. Read it
    /// once [`next_row`](Self::next_row) has returned `None`.
    pub fn affected_rows(&self) -> Option<u64> {
        self.affected_rows
    }

    /// How many rows have been read so far, over every statement of the call.
    pub fn rows_read(&self) -> u64 {
        self.rows_read
    }

    /// How many responses have arrived and wait to be read (see [`Call::unread`]).
    pub fn unread(&self) -> usize {
        self.call.unread()
    }

    /// Counts a row read; after the last row of a page, the next page is due.
    fn count_row(&mut self) {
        self.rows_read += 1;
        if self.page_size == 0 {
            return;
        }
        self.in_page += 1;
        if self.in_page == self.page_size {
            self.in_page = 0;
            self.next_due = true;
        }
    }
}

fn column_names(header: &Value) -> Result<Vec<String>> {
    let columns = match header.get("column") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(columns)) => columns,
        Some(_) => return Err(malformed("header.column is not a list")),
    };
    Ok(columns
        .iter()
        .map(|c| {
            c.get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        })
        .collect())
}

/// A `VariantRow` as an object keyed by the header's column names.
pub(super) fn row_object(columns: &[String], row: &Value) -> Result<Map<String, Value>> {
    let cells = match row.get("column") {
        None | Some(Value::Null) => &Vec::new(),
        Some(Value::Array(cells)) => cells,
        Some(_) => return Err(malformed("row.column is not a list")),
    };
    if cells.len() != columns.len() {
        return Err(malformed("a row does not match its header"));
    }
    let mut object = Map::new();
    for (name, cell) in columns.iter().zip(cells) {
        object.insert(name.clone(), cell_value(cell)?);
    }
    Ok(object)
}

/// A `Variant` (`text`, `integer`, `real`, `blob` or `null`) as a plain JSON value.
pub(crate) fn cell_value(cell: &Value) -> Result<Value> {
    let Some(fields) = cell.as_object() else {
        return Err(malformed("a cell is not an object"));
    };
    if let Some(text) = fields.get("text") {
        return Ok(text.clone());
    }
    if let Some(integer) = fields.get("integer") {
        // proto3 JSON writes int64 as a string.
        return match integer {
            Value::Number(_) => Ok(integer.clone()),
            Value::String(s) => s
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| malformed("an integer cell is not an integer")),
            _ => Err(malformed("an integer cell is not an integer")),
        };
    }
    if let Some(real) = fields.get("real") {
        // Numbers stay numbers; "NaN" and "Infinity" (which JSON numbers cannot hold) stay
        // strings.
        return match real {
            Value::String(s) => Ok(s
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or_else(|| real.clone(), Value::Number)),
            _ => Ok(real.clone()),
        };
    }
    if let Some(blob) = fields.get("blob") {
        return Ok(blob.clone());
    }
    Ok(Value::Null)
}

fn malformed(what: &str) -> Error {
    Error::new(ErrorKind::Protocol, format!("SqlExecute response: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_keep_their_own_type() {
        let cell = |v: Value| cell_value(&v).unwrap();
        assert_eq!(
            cell(json!({"integer": "9007199254740993"})),
            json!(9007199254740993i64)
        );
        assert_eq!(cell(json!({"integer": -4})), json!(-4));
        assert_eq!(cell(json!({"real": 1.5})), json!(1.5));
        assert_eq!(cell(json!({"real": "2.5"})), json!(2.5));
        assert_eq!(cell(json!({"real": "NaN"})), json!("NaN"));
        assert_eq!(cell(json!({"text": "x"})), json!("x"));
        assert_eq!(cell(json!({"blob": "AAE="})), json!("AAE="));
        assert_eq!(cell(json!({"null": true})), Value::Null);
        assert_eq!(cell(json!({})), Value::Null);
        assert!(cell_value(&json!({"integer": "1.5"}))
            .unwrap_err()
            .is_protocol());
        assert!(cell_value(&json!(3)).unwrap_err().is_protocol());
    }

    #[test]
    fn rows_are_keyed_by_header_names() {
        let header =
            json!({"column": [{"name": "id", "type": "DATA_TYPE_INTEGER"}, {"name": "n"}]});
        let columns = column_names(&header).unwrap();
        let row = row_object(
            &columns,
            &json!({"column": [{"integer": "7"}, {"text": "a"}]}),
        );
        assert_eq!(Value::Object(row.unwrap()), json!({"id": 7, "n": "a"}));
        let short = row_object(&columns, &json!({"column": [{"integer": "7"}]}));
        assert!(short.unwrap_err().is_protocol());
    }
}
