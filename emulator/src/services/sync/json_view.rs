//! A document's JSON view, and JSON paths into it for reading and writing.
//!
//! The view is an object with one member per root type: a map as an object, an array as an
//! array, a text as a string; nested types likewise. Roots the server only knows from clients'
//! updates carry no type, so they are read as a map when they have keys, else as a text when
//! they hold text, else as an array.
//!
//! A path is `$` followed by `.name`, `['name']` / `["name"]` or `[index]` steps (the `$` may
//! be left out). The first step names a root type.
//!
//! Writing `json` at a path (WriteSynapsePath) replaces the value there: objects become maps
//! and arrays become arrays (nested Y types, so later paths can go inside them), other values
//! are stored as they are. Missing maps on the way are created. At a root, an object fills a
//! map root (keys not in it are removed), an array an array root and a string a text root.
//! An empty `json` removes the value at the path.

use serde_json::{Map as JsonMap, Number as JsonNumber, Value};
use yrs::types::ToJson;
use yrs::{
    Any, Array, ArrayPrelim, ArrayRef, GetString, In, Map, MapPrelim, MapRef, Out, ReadTxn, Text,
    TextRef, TransactionMut, WriteTxn,
};

use crate::call::{Code, Failure};

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(u32),
}

/// Parses a path; `$` alone is the empty path (the whole view).
pub fn parse(path: &str) -> Result<Vec<Step>, Failure> {
    let bad = |why: &str| Failure::invalid(format!("path {path:?}: {why}"));
    let mut rest = path.trim();
    rest = rest.strip_prefix('$').unwrap_or(rest);
    let mut steps = Vec::new();
    if !rest.is_empty() && !rest.starts_with(['.', '[']) {
        // A bare first name: `map.key`.
        let end = rest.find(['.', '[', ']']).unwrap_or(rest.len());
        steps.push(Step::Key(rest[..end].to_owned()));
        rest = &rest[end..];
    }
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[', ']']).unwrap_or(after.len());
            if end == 0 {
                return Err(bad("an empty name"));
            }
            steps.push(Step::Key(after[..end].to_owned()));
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let close = after.find(']').ok_or_else(|| bad("a `[` without `]`"))?;
            let inside = after[..close].trim();
            let quoted = inside
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .or_else(|| inside.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
            match quoted {
                Some(name) => steps.push(Step::Key(name.to_owned())),
                None => steps.push(Step::Index(
                    inside
                        .parse()
                        .map_err(|_| bad("an index that is not a number"))?,
                )),
            }
            rest = &after[close + 1..];
        } else {
            return Err(bad("expected `.` or `[`"));
        }
    }
    Ok(steps)
}

/// A path's text for responses: `$` and its steps.
pub fn render(steps: &[Step]) -> String {
    let mut out = String::from("$");
    for step in steps {
        match step {
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// How a root type is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RootKind {
    Map,
    Array,
    Text,
}

fn root_kind<T: ReadTxn>(txn: &T, out: &Out) -> RootKind {
    match out {
        Out::YMap(_) => RootKind::Map,
        Out::YArray(_) => RootKind::Array,
        Out::YText(_) | Out::YXmlText(_) | Out::YXmlFragment(_) | Out::YXmlElement(_) => {
            RootKind::Text
        }
        Out::UndefinedRef(branch) => {
            if MapRef::from(*branch).len(txn) > 0 {
                RootKind::Map
            } else if !TextRef::from(*branch).get_string(txn).is_empty() {
                RootKind::Text
            } else {
                RootKind::Array
            }
        }
        _ => RootKind::Map,
    }
}

/// Whether `out` is a root of no known type that holds nothing.
fn empty_untyped<T: ReadTxn>(txn: &T, out: &Out) -> bool {
    match out {
        Out::UndefinedRef(branch) => {
            ArrayRef::from(*branch).len(txn) == 0 && MapRef::from(*branch).len(txn) == 0
        }
        _ => false,
    }
}

fn root_json<T: ReadTxn>(txn: &T, out: &Out) -> Value {
    match (out, root_kind(txn, out)) {
        (Out::UndefinedRef(branch), RootKind::Map) => map_json(txn, &MapRef::from(*branch)),
        (Out::UndefinedRef(branch), RootKind::Text) => {
            Value::String(TextRef::from(*branch).get_string(txn))
        }
        (Out::UndefinedRef(branch), RootKind::Array) => array_json(txn, &ArrayRef::from(*branch)),
        (out, _) => out_json(txn, out),
    }
}

fn map_json<T: ReadTxn>(txn: &T, map: &MapRef) -> Value {
    let mut object = JsonMap::new();
    let mut entries: Vec<(String, Value)> = map
        .iter(txn)
        .map(|(k, v)| (k.to_owned(), out_json(txn, &v)))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    object.extend(entries);
    Value::Object(object)
}

fn array_json<T: ReadTxn>(txn: &T, array: &ArrayRef) -> Value {
    Value::Array(array.iter(txn).map(|v| out_json(txn, &v)).collect())
}

fn out_json<T: ReadTxn>(txn: &T, out: &Out) -> Value {
    match out {
        Out::Any(any) => any_json(any),
        Out::YMap(map) => map_json(txn, map),
        Out::YArray(array) => array_json(txn, array),
        other => any_json(&other.to_json(txn)),
    }
}

fn any_json(any: &Any) -> Value {
    match any {
        Any::Null | Any::Undefined => Value::Null,
        Any::Bool(b) => Value::Bool(*b),
        Any::Number(yrs::Number::Int(i)) => Value::Number((*i).into()),
        Any::Number(yrs::Number::Float(f)) => {
            let whole = f.fract() == 0.0 && f.abs() <= yrs::Number::F64_MAX_SAFE_INTEGER;
            if whole {
                // `whole` bounds it to ±2^53, which i64 holds exactly.
                Value::Number((*f as i64).into())
            } else {
                JsonNumber::from_f64(*f).map_or(Value::Null, Value::Number)
            }
        }
        Any::String(s) => Value::String(s.to_string()),
        Any::Buffer(b) => Value::Array(b.iter().map(|x| Value::Number((*x).into())).collect()),
        Any::Array(items) => Value::Array(items.iter().map(any_json).collect()),
        Any::Map(map) => {
            let mut entries: Vec<(&String, &Any)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), any_json(v)))
                    .collect(),
            )
        }
    }
}

/// The whole JSON view.
pub fn view<T: ReadTxn>(txn: &T) -> Value {
    let mut roots: Vec<(String, Value)> = txn
        .root_refs()
        .map(|(name, out)| (name.to_owned(), root_json(txn, &out)))
        .collect();
    roots.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Object(roots.into_iter().collect())
}

/// The value at `steps` in the JSON view, if there is one. Only the root the path names is
/// turned into JSON.
pub fn value_at<T: ReadTxn>(txn: &T, steps: &[Step]) -> Option<Value> {
    let Some((Step::Key(root), inner)) = steps.split_first() else {
        return steps.is_empty().then(|| view(txn));
    };
    let out = txn
        .root_refs()
        .find(|(name, _)| name == root)
        .map(|(_, out)| out)?;
    let mut value = root_json(txn, &out);
    for step in inner {
        value = match (step, value) {
            (Step::Key(k), Value::Object(mut map)) => map.remove(k)?,
            (Step::Index(i), Value::Array(mut items)) => {
                let i = usize::try_from(*i).ok()?;
                (i < items.len()).then(|| items.swap_remove(i))?
            }
            _ => return None,
        };
    }
    Some(value)
}

/// A JSON value as a yrs input: objects and arrays as nested types.
fn to_in(value: Value) -> In {
    match value {
        Value::Object(map) => In::Map(MapPrelim::from_iter(
            map.into_iter().map(|(k, v)| (k, to_in(v))),
        )),
        Value::Array(items) => In::Array(ArrayPrelim::from_iter(items.into_iter().map(to_in))),
        other => In::Any(to_any(other)),
    }
}

fn to_any(value: Value) -> Any {
    match value {
        Value::Null => Any::Null,
        Value::Bool(b) => Any::Bool(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Any::Number(yrs::Number::Int(i)),
            None => Any::Number(yrs::Number::Float(n.as_f64().unwrap_or(f64::NAN))),
        },
        Value::String(s) => Any::from(s),
        Value::Array(items) => Any::from(items.into_iter().map(to_any).collect::<Vec<_>>()),
        Value::Object(map) => Any::from(
            map.into_iter()
                .map(|(k, v)| (k, to_any(v)))
                .collect::<std::collections::HashMap<_, _>>(),
        ),
    }
}

fn conflict(path: &[Step], why: &str) -> Failure {
    Failure::reply(
        Code::FailedPrecondition,
        format!("path {}: {why}", render(path)),
    )
}

/// Writes `value` at `steps` (removes what is there for `None`).
pub fn write(
    txn: &mut TransactionMut<'_>,
    steps: &[Step],
    value: Option<Value>,
) -> Result<(), Failure> {
    let Some((Step::Key(root), inner)) = steps.split_first() else {
        return match value {
            Some(Value::Object(roots)) if steps.is_empty() => {
                for (name, v) in roots {
                    write(txn, &[Step::Key(name)], Some(v))?;
                }
                Ok(())
            }
            _ => Err(Failure::invalid(
                "the path must start with the name of a root type (`$.name...`)",
            )),
        };
    };
    // A root of no known type that holds nothing (everything in it deleted) takes any shape.
    let existing = txn
        .root_refs()
        .find(|(name, _)| name == root)
        .filter(|(_, out)| !empty_untyped(txn, out))
        .map(|(_, out)| root_kind(txn, &out));
    if inner.is_empty() {
        return write_root(txn, steps, root, existing, value);
    }
    let mut parent = match (existing, &inner[0]) {
        (None | Some(RootKind::Map), Step::Key(_)) => {
            Out::YMap(txn.get_or_insert_map(root.as_str()))
        }
        (Some(RootKind::Array), Step::Index(_)) => {
            Out::YArray(txn.get_or_insert_array(root.as_str()))
        }
        _ => return Err(conflict(steps, "the root type does not have that shape")),
    };
    let (last, middle) = inner.split_last().unwrap_or((&inner[0], &[]));
    for step in middle {
        let next = match (&parent, step) {
            (Out::YMap(map), Step::Key(k)) => match map.get(txn, k) {
                Some(out @ (Out::YMap(_) | Out::YArray(_))) => out,
                None => Out::YMap(map.insert(txn, k.as_str(), MapPrelim::default())),
                Some(_) => return Err(conflict(steps, "a step goes inside a plain value")),
            },
            (Out::YArray(array), Step::Index(i)) => match array.get(txn, *i) {
                Some(out @ (Out::YMap(_) | Out::YArray(_))) => out,
                _ => return Err(conflict(steps, "no map or array at that index")),
            },
            _ => {
                return Err(conflict(
                    steps,
                    "a step does not fit the value it goes into",
                ))
            }
        };
        parent = next;
    }
    match (&parent, last, value) {
        (Out::YMap(map), Step::Key(k), Some(v)) => {
            map.insert(txn, k.as_str(), to_in(v));
        }
        (Out::YMap(map), Step::Key(k), None) => {
            map.remove(txn, k);
        }
        (Out::YArray(array), Step::Index(i), value) => {
            let len = array.len(txn);
            if *i > len || (*i == len && value.is_none()) {
                return Err(conflict(steps, "the index is past the end of the array"));
            }
            if *i < len {
                array.remove(txn, *i);
            }
            if let Some(v) = value {
                array.insert(txn, *i, to_in(v));
            }
        }
        _ => {
            return Err(conflict(
                steps,
                "the last step does not fit the value it goes into",
            ))
        }
    }
    Ok(())
}

fn write_root(
    txn: &mut TransactionMut<'_>,
    steps: &[Step],
    root: &str,
    existing: Option<RootKind>,
    value: Option<Value>,
) -> Result<(), Failure> {
    match (existing, value) {
        (None | Some(RootKind::Map), Some(Value::Object(members))) => {
            let map = txn.get_or_insert_map(root);
            let stale: Vec<String> = map
                .keys(txn)
                .filter(|k| !members.contains_key(*k))
                .map(str::to_owned)
                .collect();
            for key in stale {
                map.remove(txn, &key);
            }
            for (k, v) in members {
                map.insert(txn, k, to_in(v));
            }
        }
        (None | Some(RootKind::Array), Some(Value::Array(items))) => {
            let array = txn.get_or_insert_array(root);
            let len = array.len(txn);
            array.remove_range(txn, 0, len);
            for item in items {
                array.push_back(txn, to_in(item));
            }
        }
        (None | Some(RootKind::Text), Some(Value::String(text))) => {
            let target = txn.get_or_insert_text(root);
            let len = target.len(txn);
            target.remove_range(txn, 0, len);
            target.insert(txn, 0, &text);
        }
        (Some(RootKind::Map), None) => txn.get_or_insert_map(root).clear(txn),
        (Some(RootKind::Array), None) => {
            let array = txn.get_or_insert_array(root);
            let len = array.len(txn);
            array.remove_range(txn, 0, len);
        }
        (Some(RootKind::Text), None) => {
            let target = txn.get_or_insert_text(root);
            let len = target.len(txn);
            target.remove_range(txn, 0, len);
        }
        (None, None) => {}
        _ => return Err(conflict(
            steps,
            "a root type holds an object (map), an array or a string (text), and keeps its shape",
        )),
    }
    Ok(())
}
