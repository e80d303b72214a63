//! SQL rows straight from their protobuf cells: a row of `Variant`s read into the caller's
//! serde type without a JSON value in between, and into the same JSON object the gateway's
//! rows make ([`cells_object`]).
//!
//! A row deserializes as a map of column name to cell, exactly as its JSON object would:
//! integers as `i64`, reals as `f64`, text as strings, NULL as none/unit, and blobs as the
//! base64 string the JSON carries (so the [`sql_blob`](super::sql_blob) helpers read them the
//! same way), or as raw bytes to a type that asks for bytes. Where two columns share a name,
//! the last one is the row's, as in the JSON object.

use base64::Engine as _;
use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer as _, MapAccess, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::{Map, Number, Value};

use crate::proto::data::variant::Data;
use crate::proto::data::Variant;

/// Why a row's cells did not fit the caller's type.
#[derive(Debug)]
pub(crate) struct Misfit(String);

impl std::fmt::Display for Misfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Misfit {}

impl de::Error for Misfit {
    fn custom<T: std::fmt::Display>(msg: T) -> Misfit {
        Misfit(msg.to_string())
    }
}

/// Which of a header's columns a row reads: all but one whose name a later column repeats.
pub(crate) fn kept_columns(columns: &[String]) -> Vec<bool> {
    columns
        .iter()
        .enumerate()
        .map(|(i, name)| !columns[i + 1..].contains(name))
        .collect()
}

/// A row of cells under its header's column names, as a serde map.
pub(crate) struct RowDeserializer<'a> {
    pub columns: &'a [String],
    pub kept: &'a [bool],
    pub cells: &'a [Variant],
}

impl<'de> de::Deserializer<'de> for RowDeserializer<'de> {
    type Error = Misfit;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        visitor.visit_map(RowAccess { row: self, next: 0 })
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

struct RowAccess<'a> {
    row: RowDeserializer<'a>,
    next: usize,
}

impl<'de> MapAccess<'de> for RowAccess<'de> {
    type Error = Misfit;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Misfit> {
        let row = &self.row;
        while self.next < row.columns.len() && !row.kept.get(self.next).copied().unwrap_or(true) {
            self.next += 1;
        }
        match row.columns.get(self.next) {
            Some(name) => seed
                .deserialize(BorrowedStrDeserializer::new(name.as_str()))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Misfit> {
        let cell = self.row.cells.get(self.next);
        self.next += 1;
        seed.deserialize(CellDeserializer(cell.and_then(|c| c.data.as_ref())))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.row.columns.len().saturating_sub(self.next))
    }
}

/// One cell (`None`: NULL, or a cell that names no type).
struct CellDeserializer<'a>(Option<&'a Data>);

impl<'de> de::Deserializer<'de> for CellDeserializer<'de> {
    type Error = Misfit;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        match self.0 {
            Some(Data::Text(text)) => visitor.visit_borrowed_str(text),
            Some(Data::Integer(n)) => visitor.visit_i64(*n),
            Some(Data::Real(x)) => visitor.visit_f64(*x),
            Some(Data::Blob(bytes)) => visitor.visit_string(base64_text(bytes)),
            Some(Data::Null(_)) | None => visitor.visit_unit(),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        match self.0 {
            Some(Data::Null(_)) | None => visitor.visit_none(),
            Some(_) => visitor.visit_some(self),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        match self.0 {
            Some(Data::Blob(bytes)) => visitor.visit_borrowed_bytes(bytes),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Misfit> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Misfit> {
        // A text cell names a unit variant, as a JSON string does.
        match self.0 {
            Some(Data::Text(text)) => visitor.visit_enum(text.as_str().into_deserializer()),
            _ => self.deserialize_any(visitor),
        }
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// A blob as the base64 text its JSON carries.
fn base64_text(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A row of cells as the object the gateway's JSON row makes (column name to cell): the
/// same values [`super::sql::cell_value`] gives, non-finite reals as proto3 JSON's strings.
pub(crate) fn cells_object(columns: &[String], cells: Vec<Variant>) -> Map<String, Value> {
    let mut object = Map::new();
    for (name, cell) in columns.iter().zip(cells) {
        object.insert(name.clone(), cell_json(cell.data));
    }
    object
}

fn cell_json(data: Option<Data>) -> Value {
    match data {
        Some(Data::Text(text)) => Value::String(text),
        Some(Data::Integer(n)) => Value::from(n),
        Some(Data::Real(x)) => Number::from_f64(x).map_or_else(
            || {
                let text = if x.is_nan() {
                    "NaN"
                } else if x > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                };
                Value::String(text.to_owned())
            },
            Value::Number,
        ),
        Some(Data::Blob(bytes)) => Value::String(base64_text(&bytes)),
        Some(Data::Null(_)) | None => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    fn cell(data: Data) -> Variant {
        Variant { data: Some(data) }
    }

    fn read<'a, T: Deserialize<'a>>(
        columns: &'a [String],
        kept: &'a [bool],
        cells: &'a [Variant],
    ) -> Result<T, Misfit> {
        T::deserialize(RowDeserializer {
            columns,
            kept,
            cells,
        })
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Row {
        id: i64,
        name: String,
        score: Option<f64>,
        #[serde(default, with = "crate::client::sql_blob::option")]
        photo: Option<Vec<u8>>,
        #[serde(default)]
        absent: Option<String>,
    }

    fn columns(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn rows_read_into_structs_as_their_json_would() {
        let names = columns(&["id", "name", "score", "photo"]);
        let kept = kept_columns(&names);
        let cells = [
            cell(Data::Integer(i64::MAX)),
            cell(Data::Text("ada".into())),
            cell(Data::Null(true)),
            cell(Data::Blob(vec![0xff, 0])),
        ];
        let row: Row = read(&names, &kept, &cells).unwrap();
        assert_eq!(
            row,
            Row {
                id: i64::MAX,
                name: "ada".into(),
                score: None,
                photo: Some(vec![0xff, 0]),
                absent: None,
            }
        );
        // The same row through JSON.
        let object = cells_object(&names, cells.to_vec());
        let through_json: Row = serde_json::from_value(Value::Object(object.clone())).unwrap();
        assert_eq!(through_json, row);
        assert_eq!(
            Value::Object(object),
            json!({"id": i64::MAX, "name": "ada", "score": null, "photo": "/wA="})
        );
        // And as a JSON value of its own.
        let value: Value = read(&names, &kept, &cells).unwrap();
        assert_eq!(value["photo"], json!("/wA="));
    }

    #[test]
    fn misfits_are_errors_and_numbers_widen_as_in_json() {
        let names = columns(&["id", "name", "score", "photo"]);
        let kept = kept_columns(&names);
        let text_id = [
            cell(Data::Text("seven".into())),
            cell(Data::Text("a".into())),
            cell(Data::Real(1.5)),
            Variant { data: None },
        ];
        assert!(read::<Row>(&names, &kept, &text_id).is_err());
        // An integer cell reads into a real field; a missing cell is NULL.
        let widened = [
            cell(Data::Integer(3)),
            cell(Data::Text("a".into())),
            cell(Data::Integer(2)),
        ];
        let row: Row = read(&names, &kept, &widened).unwrap();
        assert_eq!(row.score, Some(2.0));
        assert_eq!(row.photo, None);
        // A bad tuple: a row is a map, not a sequence.
        assert!(read::<(i64, String)>(&names, &kept, &widened).is_err());
    }

    #[test]
    fn the_last_of_two_same_named_columns_is_kept() {
        let names = columns(&["id", "name", "id", "score"]);
        let kept = kept_columns(&names);
        assert_eq!(kept, [false, true, true, true]);
        let cells = [
            cell(Data::Integer(1)),
            cell(Data::Text("a".into())),
            cell(Data::Integer(2)),
            cell(Data::Real(0.5)),
        ];
        let row: Row = read(&names, &kept, &cells).unwrap();
        assert_eq!(row.id, 2);
        let object = cells_object(&names, cells.to_vec());
        assert_eq!(object["id"], json!(2));
    }

    #[test]
    fn non_finite_reals_are_strings_in_json_and_floats_in_structs() {
        let names = columns(&["x"]);
        let kept = kept_columns(&names);
        for (x, text) in [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ] {
            let object = cells_object(&names, vec![cell(Data::Real(x))]);
            assert_eq!(object["x"], json!(text));
            #[derive(Deserialize)]
            struct X {
                x: f64,
            }
            let read: X = read(&names, &kept, &[cell(Data::Real(x))]).unwrap();
            assert_eq!(read.x.to_bits(), x.to_bits());
        }
    }

    #[test]
    fn text_cells_name_enum_variants_and_blobs_read_as_bytes() {
        #[derive(Debug, Deserialize, PartialEq)]
        enum Colour {
            Red,
            Blue,
        }
        #[derive(Debug, Deserialize, PartialEq)]
        struct Tagged {
            colour: Colour,
            #[serde(with = "serde_bytes_like")]
            raw: Vec<u8>,
        }
        mod serde_bytes_like {
            pub fn deserialize<'de, D: serde::Deserializer<'de>>(
                d: D,
            ) -> Result<Vec<u8>, D::Error> {
                struct Bytes;
                impl serde::de::Visitor<'_> for Bytes {
                    type Value = Vec<u8>;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("bytes")
                    }
                    fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                        Ok(v.to_vec())
                    }
                }
                d.deserialize_bytes(Bytes)
            }
        }
        let names = columns(&["colour", "raw"]);
        let kept = kept_columns(&names);
        let cells = [
            cell(Data::Text("Blue".into())),
            cell(Data::Blob(vec![1, 2])),
        ];
        let row: Tagged = read(&names, &kept, &cells).unwrap();
        assert_eq!(
            row,
            Tagged {
                colour: Colour::Blue,
                raw: vec![1, 2]
            }
        );
        let red = [cell(Data::Text("Green".into())), cell(Data::Blob(vec![]))];
        assert!(read::<Tagged>(&names, &kept, &red).is_err());
        let _ = Colour::Red;
    }
}
