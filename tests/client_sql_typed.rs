//! Typed SQL rows: rows deserialized into the caller's own structs, on every transport, page
//! by page, with a row that does not fit reported alone.

mod support;

use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::json;
use support::TestVolt;
use tdx_volt::{ErrorKind, Transport, VoltClient};

#[derive(Debug, Deserialize, PartialEq)]
struct Item {
    id: i64,
    label: String,
    weight: Option<f64>,
    #[serde(default, with = "tdx_volt::client::sql_blob::option")]
    data: Option<Vec<u8>>,
}

#[derive(Debug, Deserialize)]
struct Counted {
    id: u64,
    name: String,
}

async fn filled_database(client: &VoltClient) -> String {
    let created = client
        .create_database(json!({"name": "typed"}))
        .await
        .expect("CreateDatabase");
    let db = created["resource"]["id"].as_str().expect("id").to_owned();
    let statement = "CREATE TABLE item (id INTEGER, label TEXT, weight REAL, data BLOB);\
         INSERT INTO item VALUES (9223372036854775807, 'max', 1.5, x'00ff10'),\
         (-1, 'negative', NULL, NULL), (3, 'third', 2.0, x'');";
    client
        .sql_execute_json(json!({"database_id": db, "statement": statement}))
        .await
        .expect("fill");
    db
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_become_the_callers_structs_on_every_transport() {
    let volt = TestVolt::start("typed-rows").await;
    let legacy = TestVolt::start_with("typed-rows-legacy", |b| b.legacy(true)).await;
    for (volt, transport) in [
        (&volt, Transport::Grpc),
        (&volt, Transport::Websocket),
        (&legacy, Transport::LegacyWebsocket),
    ] {
        let client = volt.client_over(transport).await;
        let db = filled_database(&client).await;
        let items: Vec<Item> = client
            .sql_query_as(
                json!({"database_id": db, "statement": "SELECT * FROM item ORDER BY rowid"}),
            )
            .await
            .unwrap_or_else(|e| panic!("{transport:?}: {e}"));
        assert_eq!(
            items,
            [
                Item {
                    id: i64::MAX,
                    label: "max".into(),
                    weight: Some(1.5),
                    data: Some(vec![0, 0xff, 0x10]),
                },
                Item {
                    id: -1,
                    label: "negative".into(),
                    weight: None,
                    data: None,
                },
                Item {
                    id: 3,
                    label: "third".into(),
                    weight: Some(2.0),
                    data: Some(Vec::new()),
                },
            ],
            "{transport:?}"
        );
    }
}

/// Many pages, read as a stream of structs: every row arrives once, in order.
#[tokio::test(flavor = "multi_thread")]
async fn pages_of_rows_stream_into_structs() {
    let volt = TestVolt::start("typed-pages").await;
    for transport in [Transport::Grpc, Transport::Websocket] {
        let client = volt.client_over(transport).await;
        let db = filled_database(&client).await;
        let n = 5_000u64;
        let statement = format!(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) \
             SELECT x AS id, 'row ' || x AS name FROM c"
        );
        let rows = client
            .sql_rows(json!({"database_id": db, "statement": statement, "page_size": 128}))
            .await
            .expect("Execute opens");
        let mut stream = rows.into_stream_as::<Counted>();
        let mut expected = 1;
        while let Some(row) = stream.next().await {
            let row = row.unwrap_or_else(|e| panic!("{transport:?}: {e}"));
            assert_eq!(row.id, expected);
            assert_eq!(row.name, format!("row {expected}"));
            expected += 1;
        }
        assert_eq!(expected, n + 1, "{transport:?}: every row, once");
    }
}

/// A row that does not fit is a schema error naming it; the rows after it still arrive.
#[tokio::test(flavor = "multi_thread")]
async fn a_row_that_does_not_fit_is_reported_alone() {
    let volt = TestVolt::start("typed-misfit").await;
    let client = volt.client_over(Transport::Grpc).await;
    let db = filled_database(&client).await;
    let mut rows = client
        .sql_rows(json!({"database_id": db,
            "statement": "SELECT id, label, weight FROM item ORDER BY rowid"}))
        .await
        .expect("Execute opens");
    #[derive(Debug, Deserialize)]
    struct Strict {
        id: i64,
        weight: f64,
    }
    let first = rows.next_as::<Strict>().await.expect("first fits");
    assert_eq!(first.map(|r| (r.id, r.weight)), Some((i64::MAX, 1.5)));
    let second = rows
        .next_as::<Strict>()
        .await
        .expect_err("NULL weight does not fit");
    assert_eq!(second.kind(), ErrorKind::Schema);
    assert!(second.to_string().contains("row 2"), "{second}");
    let third = rows.next_as::<Strict>().await.expect("third fits");
    assert_eq!(third.map(|r| r.id), Some(3));
    assert!(rows.next_as::<Strict>().await.expect("end").is_none());
    assert_eq!(rows.rows_read(), 3);

    // Collected, the first misfit fails the whole call.
    let all = client
        .sql_query_as::<Strict>(json!({"database_id": db,
            "statement": "SELECT id, weight FROM item ORDER BY rowid"}))
        .await;
    assert_eq!(all.expect_err("a misfit").kind(), ErrorKind::Schema);
}

/// A statement the Volt refuses is its error, with SQLite's message, read as rows or as
/// structs, on either transport (over gRPC it arrives as a `status` in the protobuf rows).
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_statement_is_the_volts_error() {
    let volt = TestVolt::start("typed-refused").await;
    for transport in [Transport::Grpc, Transport::Websocket] {
        let client = volt.client_over(transport).await;
        let db = filled_database(&client).await;
        let request = json!({"database_id": db, "statement": "SELECT * FROM missing"});
        let as_rows = client
            .sql_execute_json(request.clone())
            .await
            .expect_err("no such table");
        let as_structs = client
            .sql_query_as::<Counted>(request)
            .await
            .expect_err("no such table");
        for e in [as_rows, as_structs] {
            assert!(e.is_status(), "{transport:?}: {e:?}");
            assert!(
                e.to_string().contains("no such table"),
                "{transport:?}: {e}"
            );
        }
    }
}
