//! SQLite values and the protos' types: result cells as `Variant`s, header column types, and
//! `AttributeValue` parameters bound to a statement.

use std::collections::HashMap;

use rusqlite::types::{Value, ValueRef};
use rusqlite::{Rows, Statement};
use tdx_volt::proto::data as pb;
use tdx_volt::proto::data::variant::Data;
use tdx_volt::proto::volt::attribute_value::Value as AttrValue;
use tdx_volt::proto::volt::AttributeValue;

use crate::call::Failure;

use super::sql_failure;

/// The next result row as Variants, or `None` at the end.
pub(super) fn fetch_row(
    rows: &mut Rows<'_>,
    width: usize,
) -> Result<Option<pb::VariantRow>, Failure> {
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
pub(super) fn header_type(decl: Option<&str>, first: Option<&pb::Variant>) -> pb::DataType {
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

/// Binds `parameter` values to a statement's parameters (the rules are in `execute.rs`).
pub(super) fn bind_parameters(
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
