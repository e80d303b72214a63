//! [`VoltClient::sql_execute_json`]: a query's rows as JSON objects.

use futures_util::StreamExt as _;
use serde_json::{json, Map, Value};

use super::{CallEvent, VoltClient};
use crate::{Error, ErrorKind, Result};

const EXECUTE: &str = "/tdx.volt_api.data.v1.SqliteDatabaseAPI/Execute";

impl VoltClient {
    /// Runs an SQL statement with `SqliteDatabaseAPI/Execute` and returns every row as an
    /// object keyed by column name.
    ///
    /// `request` is an `SqlExecuteStart` (`database_id`, `statement`, `parameter`,
    /// `page_size`, ...), bare or wrapped as `{"start": {...}}`. With a `page_size`, the next
    /// page is asked for (`next`) each time a page is complete, until the Volt ends the call.
    /// Cells keep their SQLite type whatever the column's declared type: integers are JSON
    /// numbers (exact to 64 bits), reals numbers, text strings, blobs base64 strings and NULL
    /// `null`. Each wait for the next response is bounded by the request timeout. For a
    /// statement inside a transaction, use [`sql_execute`](VoltClient::sql_execute).
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
        let request = if request.get("start").is_some() {
            request
        } else {
            json!({ "start": request })
        };
        let page_size = request
            .get("start")
            .and_then(|s| s.get("page_size"))
            .and_then(|p| {
                p.as_u64()
                    .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(0);
        let timeout = self.request_timeout;
        let mut call = self.streaming(EXECUTE, Some(request)).await?;
        let mut columns: Vec<String> = Vec::new();
        let mut rows = Vec::new();
        let mut in_page = 0u64;
        loop {
            let event = tokio::time::timeout(timeout, call.next())
                .await
                .map_err(|_| {
                    Error::new(
                        ErrorKind::Timeout,
                        format!("{EXECUTE}: no response within {timeout:?}"),
                    )
                })?;
            match event {
                Some(CallEvent::Data(message)) => {
                    if let Some(header) = message.get("header") {
                        columns = column_names(header)?;
                    } else if let Some(row) = message.get("row") {
                        rows.push(row_object(&columns, row)?);
                        in_page += 1;
                        if page_size > 0 && in_page == page_size {
                            in_page = 0;
                            // The Volt may already have ended the call (no rows were left);
                            // the end then arrives as the next event.
                            match call.send(json!({ "next": {} })).await {
                                Err(e) if !e.is_closed() => return Err(e),
                                _ => {}
                            }
                        }
                    }
                }
                Some(CallEvent::Error(e)) => return Err(e),
                Some(CallEvent::End) | None => return Ok(rows),
            }
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
fn row_object(columns: &[String], row: &Value) -> Result<Map<String, Value>> {
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
