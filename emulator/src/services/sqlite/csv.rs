//! CSV for ImportCSV: RFC 4180 records, and the SQLite column type their values fit.

use rusqlite::types::Value;

/// A column type inferred from CSV data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CsvType {
    Integer,
    Real,
    Text,
}

impl CsvType {
    pub(super) fn sql(self) -> &'static str {
        match self {
            CsvType::Integer => "INTEGER",
            CsvType::Real => "REAL",
            CsvType::Text => "TEXT",
        }
    }

    /// A CSV field as the value to insert: empty is NULL; a field that does not fit the
    /// column's type (possible beyond the scanned rows) is kept as text.
    pub(super) fn value(self, field: &str) -> Value {
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
pub(super) fn infer_type<'a>(values: impl Iterator<Item = &'a str>) -> CsvType {
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

/// Parses CSV with the csv crate: comma separated, fields quoted with `"` (a quote inside one
/// written `""`), quoted fields spanning lines, records ending with CRLF, LF or CR, a UTF-8 BOM
/// skipped and blank lines ignored. Records may differ in length here; the importer checks
/// them against the header. Like most CSV readers (and unlike a strict RFC 4180 one), it reads
/// a stray quote after a closing one as text and an unclosed quote as running to the end of
/// the data, so such input imports rather than failing. Errors name the line.
pub(super) fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| match e.position() {
            Some(at) => format!("CSV line {}: {e}", at.line()),
            None => format!("CSV: {e}"),
        })?;
        records.push(record.iter().map(str::to_owned).collect());
    }
    Ok(records)
}
