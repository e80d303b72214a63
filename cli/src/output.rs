//! Writing to stdout: JSON for scripts, text for people (key/value lists, aligned tables,
//! trees). A reader that goes away (`volt ... | head`) ends the command quietly.

use std::io::Write as _;

use serde_json::Value;

use crate::exit::Failure;

/// Where results go, and in which form.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// `--json`.
    pub json: bool,
}

impl Output {
    /// Writes one line (a newline is added) and flushes it.
    pub fn line(&self, text: &str) -> Result<(), Failure> {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{text}")
            .and_then(|()| stdout.flush())
            .map_err(stdout_error)
    }

    /// Writes bytes as they are and flushes them.
    pub fn bytes(&self, bytes: &[u8]) -> Result<(), Failure> {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(bytes)
            .and_then(|()| stdout.flush())
            .map_err(stdout_error)
    }

    /// A value as one line of JSON.
    pub fn json_line(&self, value: &Value) -> Result<(), Failure> {
        self.line(&value.to_string())
    }

    /// A value as JSON: one line with `--json`, indented for people.
    pub fn value(&self, value: &Value) -> Result<(), Failure> {
        if self.json {
            self.json_line(value)
        } else {
            let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
            self.line(&text)
        }
    }
}

/// Writes a line to stderr (errors, summaries next to content on stdout). A stderr that
/// cannot be written to is ignored: there is nowhere left to say so.
pub fn note(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{text}");
}

/// Writing to stdout failed: a closed pipe is the reader's choice, anything else an error.
fn stdout_error(e: std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Failure::quiet()
    } else {
        Failure::new(crate::exit::LOCAL_IO, format!("writing to stdout: {e}"))
    }
}

/// A JSON value as text in a cell or list: strings as they are, `null` empty, arrays of
/// scalars joined with `, `, anything else as JSON. Control characters are escaped so that
/// a value stays on its line.
pub fn text_of(value: &Value) -> String {
    let text = match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(|i| !i.is_array() && !i.is_object()) => {
            items.iter().map(text_of).collect::<Vec<_>>().join(", ")
        }
        other => other.to_string(),
    };
    escape_controls(&text)
}

fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| match c {
            '\n' => "\\n".to_owned(),
            '\r' => "\\r".to_owned(),
            '\t' => "\\t".to_owned(),
            c if c.is_control() => format!("\\u{{{:x}}}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

/// The fields of an object as `key  value` lines, keys aligned; empty values left out.
pub fn key_values(object: &serde_json::Map<String, Value>) -> String {
    let fields: Vec<(&str, String)> = object
        .iter()
        .map(|(k, v)| (k.as_str(), text_of(v)))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let width = fields.iter().map(|(k, _)| width(k)).max().unwrap_or(0);
    fields
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// How a table's columns are laid out: their widths, and which are aligned right.
#[derive(Debug, Clone)]
pub struct TableLayout {
    widths: Vec<usize>,
    right: Vec<bool>,
}

impl TableLayout {
    /// The layout that fits `columns` and the `rows` seen (later rows wider than a column
    /// stick out). Columns whose values are all numbers (or NULL) are aligned right.
    pub fn fit(columns: &[String], rows: &[Vec<Value>]) -> TableLayout {
        let widths = columns
            .iter()
            .enumerate()
            .map(|(i, name)| {
                rows.iter()
                    .filter_map(|r| r.get(i))
                    .map(|v| width(&cell_text(v)))
                    .chain([width(name)])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let right = (0..columns.len())
            .map(|i| {
                rows.iter().any(|r| r.get(i).is_some_and(Value::is_number))
                    && rows
                        .iter()
                        .all(|r| r.get(i).is_none_or(|v| v.is_number() || v.is_null()))
            })
            .collect();
        TableLayout { widths, right }
    }

    /// The header and the rule of dashes under it.
    pub fn header(&self, columns: &[String]) -> String {
        let rule: Vec<String> = self.widths.iter().map(|&w| "-".repeat(w)).collect();
        format!("{}\n{}", self.line(columns), self.line(&rule))
    }

    /// One row.
    pub fn row(&self, row: &[Value]) -> String {
        let cells: Vec<String> = row.iter().map(cell_text).collect();
        self.line(&cells)
    }

    /// Cells padded to their columns, two spaces apart, without trailing spaces.
    fn line(&self, cells: &[String]) -> String {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let w = self.widths.get(i).copied().unwrap_or(0);
                let pad = " ".repeat(w.saturating_sub(width(c)));
                if self.right.get(i).copied().unwrap_or(false) {
                    format!("{pad}{c}")
                } else {
                    format!("{c}{pad}")
                }
            })
            .collect();
        padded.join("  ").trim_end().to_owned()
    }
}

/// A cell as a table shows it: NULL for null.
fn cell_text(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_owned(),
        other => text_of(other),
    }
}

/// How many columns `text` takes on a terminal (one per character: close enough for the
/// text of tables; wide characters may misalign).
pub fn width(text: &str) -> usize {
    text.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Rows as a table laid out for all of them.
    fn table(columns: &[String], rows: &[Vec<Value>]) -> String {
        let layout = TableLayout::fit(columns, rows);
        let mut out = vec![layout.header(columns)];
        out.extend(rows.iter().map(|r| layout.row(r)));
        out.join("\n")
    }

    #[test]
    fn tables_align_text_left_and_numbers_right() {
        let columns = vec!["id".to_owned(), "name".to_owned()];
        let rows = vec![
            vec![json!(1), json!("one")],
            vec![json!(100), json!("a\nb")],
            vec![Value::Null, Value::Null],
        ];
        assert_eq!(
            table(&columns, &rows),
            "  id  name\n----  ----\n   1  one\n 100  a\\nb\nNULL  NULL"
        );
    }

    #[test]
    fn key_values_align_keys_and_skip_empty_values() {
        let object = json!({"id": "x", "kind": ["a", "b"], "description": "", "size": 3});
        let text = key_values(object.as_object().unwrap());
        assert_eq!(text, "id    x\nkind  a, b\nsize  3");
    }
}
