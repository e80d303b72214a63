//! Typed SQL rows: each row of [`SqlRows`] deserialized with serde into the caller's own type,
//! one at a time ([`SqlRows::next_as`], [`SqlRows::into_stream_as`]) or all at once
//! ([`VoltClient::sql_query_as`]).
//!
//! A row is the object [`SqlRows::next_row`] returns (column name to cell), so a struct's
//! fields match columns by name (`#[serde(rename = "...")]` for others, `Option<_>` for
//! columns that may be NULL). Integers arrive exact to 64 bits, reals as `f64`, text as
//! strings and blobs as base64 strings; [`blob`] turns a blob column into bytes. Over gRPC a
//! row is read straight from its protobuf cells into `T`, with no JSON in between (see
//! `sql_cells`); the gateway's rows arrive as JSON and are read from it.

use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::sql::{row_object, Fetched, SqlRows};
use super::sql_cells::RowDeserializer;
use super::VoltClient;
use crate::{Error, ErrorKind, Result};

impl SqlRows {
    /// The next row deserialized as `T`, or `None` once every row has been read.
    ///
    /// A row that does not fit `T` is a [`Schema`](ErrorKind::Schema) error naming the row
    /// (counted from 1) and what did not fit; it ends nothing, and the next call reads the
    /// next row. Pages are asked for as [`next_row`](Self::next_row) does, so only a page is
    /// ever held.
    ///
    /// ```no_run
    /// #[derive(serde::Deserialize)]
    /// struct Person {
    ///     id: i64,
    ///     name: String,
    ///     email: Option<String>,
    /// }
    ///
    /// # async fn demo(client: tdx_volt::VoltClient, db: &str) -> tdx_volt::Result<()> {
    /// let mut rows = client
    ///     .sql_rows(serde_json::json!({"database_id": db, "statement": "SELECT * FROM person"}))
    ///     .await?;
    /// while let Some(person) = rows.next_as::<Person>().await? {
    ///     println!("{} {} {:?}", person.id, person.name, person.email);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn next_as<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        let Some(row) = self.next_fetched().await? else {
            return Ok(None);
        };
        let number = self.rows_read();
        let (columns, kept) = self.header();
        match row {
            Fetched::Json(row) => serde_json::from_value(Value::Object(row_object(columns, &row)?))
                .map(Some)
                .map_err(|e| misfit::<T>(number, e)),
            Fetched::Cells(cells) => T::deserialize(RowDeserializer {
                columns,
                kept,
                cells: &cells,
            })
            .map(Some)
            .map_err(|e| misfit::<T>(number, e)),
        }
    }

    /// The remaining rows as a [`Stream`] of `T` ([`next_as`](Self::next_as) in a loop). The
    /// stream ends after the last row or after an error of the call; a row that does not fit
    /// `T` is an item of its own and the stream goes on. Dropping it stops the query.
    pub fn into_stream_as<T>(self) -> impl Stream<Item = Result<T>> + Send + Unpin
    where
        T: DeserializeOwned + Send + 'static,
    {
        Box::pin(futures_util::stream::unfold(
            Some(self),
            |rows| async move {
                let mut rows = rows?;
                match rows.next_as::<T>().await {
                    Ok(Some(row)) => Some((Ok(row), Some(rows))),
                    Ok(None) => None,
                    // A row that did not fit leaves the call as it was: read on.
                    Err(e) if e.kind() == ErrorKind::Schema => Some((Err(e), Some(rows))),
                    Err(e) => Some((Err(e), None)),
                }
            },
        ))
    }
}

impl VoltClient {
    /// Runs an SQL statement and returns every row deserialized as `T`: [`VoltClient::sql_rows`]
    /// read with [`SqlRows::next_as`], collected. The first row that does not fit `T` fails
    /// the whole call.
    ///
    /// ```no_run
    /// #[derive(serde::Deserialize)]
    /// struct Count {
    ///     n: u64,
    /// }
    ///
    /// # async fn demo(client: tdx_volt::VoltClient, db: &str) -> tdx_volt::Result<()> {
    /// let counts: Vec<Count> = client
    ///     .sql_query_as(serde_json::json!({
    ///         "database_id": db,
    ///         "statement": "SELECT count(*) AS n FROM person",
    ///     }))
    ///     .await?;
    /// println!("{}", counts[0].n);
    /// # Ok(()) }
    /// ```
    pub async fn sql_query_as<T: DeserializeOwned>(&self, request: Value) -> Result<Vec<T>> {
        let mut rows = self.sql_rows(request).await?;
        let mut all = Vec::new();
        while let Some(row) = rows.next_as().await? {
            all.push(row);
        }
        Ok(all)
    }
}

fn misfit<T>(number: u64, cause: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(
        ErrorKind::Schema,
        format!(
            "SQL row {number} does not fit {}",
            std::any::type_name::<T>()
        ),
    )
    .with_source(cause)
}

/// Serde helpers for blob columns, which rows carry as base64 strings:
/// `#[serde(with = "tdx_volt::client::sql_blob")]` on a `Vec<u8>` field, and
/// `#[serde(with = "tdx_volt::client::sql_blob::option")]` on an `Option<Vec<u8>>` field of
/// a column that may be NULL.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct Attachment {
///     #[serde(with = "tdx_volt::client::sql_blob")]
///     data: Vec<u8>,
///     #[serde(default, with = "tdx_volt::client::sql_blob::option")]
///     thumbnail: Option<Vec<u8>>,
/// }
///
/// let row = serde_json::json!({"data": "AAEC", "thumbnail": null});
/// let a: Attachment = serde_json::from_value(row).unwrap();
/// assert_eq!(a.data, [0, 1, 2]);
/// assert_eq!(a.thumbnail, None);
/// ```
pub mod blob {
    use base64::Engine as _;
    use serde::{Deserialize as _, Deserializer, Serializer};

    /// Reads a blob cell (a base64 string) as bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }

    /// Writes bytes as a base64 string, as a blob parameter is given.
    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// The same for a blob column that may be NULL.
    pub mod option {
        use serde::{Deserialize as _, Deserializer, Serializer};

        /// Reads a blob cell or NULL.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Vec<u8>>, D::Error> {
            #[derive(serde::Deserialize)]
            struct Blob(#[serde(with = "super")] Vec<u8>);
            Ok(Option::<Blob>::deserialize(deserializer)?.map(|b| b.0))
        }

        /// Writes bytes as a base64 string, or `None` as null.
        pub fn serialize<S: Serializer>(
            bytes: &Option<Vec<u8>>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match bytes {
                Some(bytes) => super::serialize(bytes, serializer),
                None => serializer.serialize_none(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Row {
        id: i64,
        name: String,
        score: Option<f64>,
        #[serde(default, with = "blob::option")]
        photo: Option<Vec<u8>>,
    }

    #[test]
    fn misfits_name_the_row_and_keep_the_cause() {
        let cause = serde_json::from_value::<Row>(json!({"id": "x"})).unwrap_err();
        let e = misfit::<Row>(7, cause);
        assert_eq!(e.kind(), ErrorKind::Schema);
        assert!(e.to_string().contains("row 7"), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn blobs_decode_and_bad_base64_is_an_error() {
        let row: Row =
            serde_json::from_value(json!({"id": 1, "name": "a", "score": null, "photo": "/wA="}))
                .unwrap();
        assert_eq!(row.photo, Some(vec![0xff, 0]));
        let missing: Row = serde_json::from_value(json!({"id": 1, "name": "a"})).unwrap();
        assert_eq!(missing.photo, None);
        assert!(
            serde_json::from_value::<Row>(json!({"id": 1, "name": "a", "photo": "%%"})).is_err()
        );
    }
}
