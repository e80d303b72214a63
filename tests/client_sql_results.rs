//! Large SQL results through the helpers, on every transport, read by a consumer that pauses:
//! never a failure (no call ended for falling behind), and what waits unread stays bounded.

mod support;

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{json, Value};
use support::{within, TestVolt};
use tdx_volt::client::{CallEvent, DEFAULT_CALL_BUFFER};
use tdx_volt::{ErrorKind, Transport, VoltClient};

/// A statement yielding `n` rows (`id` 1..=n, `name`) without a table to fill first.
fn counting(n: u64) -> String {
    format!(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) \
         SELECT x AS id, 'row number ' || x AS name FROM c"
    )
}

async fn database(client: &VoltClient) -> String {
    let created = client
        .create_database(json!({"name": "results"}))
        .await
        .expect("CreateDatabase");
    created["resource"]["id"]
        .as_str()
        .expect("database id")
        .to_owned()
}

/// Reads `n` rows with [`VoltClient::sql_rows`], pausing every `pause_every` rows long
/// enough for the Volt to get far ahead of a reader that did not hold it back, and checks
/// after each pause that what waits unread is within `bound` (an unbounded reader would
/// hold every row sent meanwhile).
async fn read_slowly(
    client: &VoltClient,
    database_id: &str,
    n: u64,
    pause_every: u64,
    bound: usize,
) {
    let mut rows = client
        .sql_rows(json!({"database_id": database_id, "statement": counting(n)}))
        .await
        .expect("Execute opens");
    let mut expected = 1u64;
    let mut most_unread = 0;
    while let Some(row) = rows
        .next_row()
        .await
        .unwrap_or_else(|e| panic!("row {expected} of {n} over {:?}: {e}", client.transport()))
    {
        assert_eq!(row["id"], json!(expected));
        if expected.is_multiple_of(pause_every) {
            // A consumer busy elsewhere for a while.
            tokio::time::sleep(Duration::from_millis(200)).await;
            most_unread = most_unread.max(rows.unread());
            assert!(
                rows.unread() <= bound,
                "{} responses unread after a pause (bound {bound})",
                rows.unread()
            );
        }
        expected += 1;
    }
    assert_eq!(expected - 1, n, "every row, once, in order");
    assert!(most_unread > 0, "the Volt never got ahead of the reader");
}

const MILLION: u64 = 1_000_000;

async fn a_million_rows_read_slowly(volt: &TestVolt, transport: Transport) {
    let client = volt.client_over(transport).await;
    assert_eq!(client.transport(), transport);
    let database_id = database(&client).await;
    // gRPC: the call buffer, as flow control holds the Volt back; the gateway: one page of
    // (1,024 - 2) / 2 rows and a header.
    let bound = match transport {
        Transport::Grpc => DEFAULT_CALL_BUFFER,
        _ => 512,
    };
    read_slowly(&client, &database_id, MILLION, 100_000, bound).await;
    // The connection is as good as before.
    let rows = client
        .sql_execute_json(json!({"database_id": database_id, "statement": counting(3)}))
        .await
        .expect("a later query");
    assert_eq!(rows.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_rows_over_grpc_with_a_reader_that_pauses() {
    let volt = TestVolt::start("sql-million-grpc").await;
    a_million_rows_read_slowly(&volt, Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_rows_over_the_gateway_with_a_reader_that_pauses() {
    let volt = TestVolt::start("sql-million-ws").await;
    a_million_rows_read_slowly(&volt, Transport::Websocket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_rows_over_the_older_gateway_with_a_reader_that_pauses() {
    let volt = TestVolt::start_with("sql-million-legacy", |b| b.legacy(true)).await;
    a_million_rows_read_slowly(&volt, Transport::LegacyWebsocket).await;
}

/// Paging at its smallest (a call buffer of one: pages of one row) across the statements of
/// a text, and a page size above what a Volt sends (it would wait for rows that never come).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_every_size_return_every_row() {
    let volt = TestVolt::start("sql-pages").await;
    for transport in [Transport::Websocket, Transport::Grpc] {
        let tiny = volt
            .client_with(transport, |b| {
                b.call_buffer(1).request_timeout(Duration::from_secs(10))
            })
            .await;
        let database_id = database(&tiny).await;
        let two = format!("{}; {}", counting(5), counting(3));
        let mut rows = tiny
            .sql_rows(json!({"database_id": database_id, "statement": two}))
            .await
            .expect("opens");
        let mut ids = Vec::new();
        while let Some(row) = rows.next_row().await.expect("a row") {
            ids.push(row["id"].as_u64().expect("id"));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(ids, [1, 2, 3, 4, 5, 1, 2, 3], "{transport:?}");

        let rows = tiny
            .sql_execute_json(json!({
                "database_id": database_id,
                "statement": counting(25_000),
                "page_size": 50_000,
            }))
            .await
            .unwrap_or_else(|e| panic!("{transport:?}: {e}"));
        assert_eq!(rows.len(), 25_000);
    }
}

/// The case the peers found: 20,000-row results, several at once, with default settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_results_all_arrive_on_every_transport() {
    let volt = TestVolt::start("sql-concurrent").await;
    for transport in [Transport::Grpc, Transport::Websocket] {
        let client = volt.client_over(transport).await;
        let database_id = database(&client).await;
        let queries = (0..4).map(|_| {
            client.sql_execute_json(
                json!({"database_id": database_id, "statement": counting(20_000)}),
            )
        });
        for rows in futures_util::future::join_all(queries).await {
            let rows = rows.unwrap_or_else(|e| panic!("{transport:?}: {e}"));
            assert_eq!(rows.len(), 20_000);
            assert_eq!(rows[19_999]["id"], json!(20_000));
        }
    }
}

/// Over gRPC a call whose caller does not read stops reading and leaves the connection to
/// the others: calls with large results left unread never hold back another call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_grpc_calls_never_hold_back_the_others() {
    let volt = TestVolt::start("sql-unread-grpc").await;
    let client = volt.client_over(Transport::Grpc).await;
    let database_id = database(&client).await;
    let mut unread = Vec::new();
    for _ in 0..8 {
        // About 3 MiB each, none of it read.
        let mut call = client
            .sql_execute(
                json!({"start": {"database_id": database_id, "statement": counting(100_000)}}),
            )
            .await
            .expect("Execute opens");
        assert!(matches!(
            within("the header", call.next()).await,
            Some(CallEvent::Data(_))
        ));
        unread.push(call);
    }
    let rows = within(
        "a query beside the unread ones",
        client.sql_execute_json(json!({"database_id": database_id, "statement": counting(50_000)})),
    )
    .await
    .expect("served");
    assert_eq!(rows.len(), 50_000);
    // And the unread ones lost nothing: each reads on to its last row.
    for mut call in unread {
        let mut rows = 0;
        while let Some(event) = within("the rest", call.next()).await {
            match event {
                CallEvent::Data(message) if message.get("row").is_some() => rows += 1,
                CallEvent::Data(_) => {}
                CallEvent::End => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(rows, 100_000);
    }
}

/// A raw call on the websocket gateway whose caller stops reading still loses only itself
/// (the shared socket never waits), and says how to avoid it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_raw_call_on_the_gateway_is_cut_off_alone() {
    let volt = TestVolt::start("sql-unread-ws").await;
    let client = volt
        .client_with(Transport::Websocket, |b| b.call_buffer(64))
        .await;
    let database_id = database(&client).await;
    let mut call = client
        .sql_execute(json!({"start": {"database_id": database_id, "statement": counting(10_000)}}))
        .await
        .expect("Execute opens");
    // Another call completes while the first one's rows pile up unread.
    let rows = client
        .sql_execute_json(json!({"database_id": database_id, "statement": counting(5_000)}))
        .await
        .expect("served");
    assert_eq!(rows.len(), 5_000);
    let mut last: Option<Value> = None;
    let err = loop {
        match within("the cut-off call", call.next()).await {
            Some(CallEvent::Data(message)) => last = Some(message),
            Some(CallEvent::Failed(e)) => break e,
            other => panic!("expected the call to be cut off, got {other:?} after {last:?}"),
        }
    };
    assert_eq!(err.kind(), ErrorKind::Limit, "{err}");
}

/// A statement that changes rows yields none, and says how many it changed.
#[tokio::test(flavor = "multi_thread")]
async fn a_statement_without_rows_tells_how_many_it_changed() {
    let volt = TestVolt::start("affected").await;
    for transport in [Transport::Grpc, Transport::Websocket] {
        let client = volt.client_over(transport).await;
        let db = database(&client).await;
        let run = |statement: &str| {
            let client = client.clone();
            let request = json!({"database_id": db, "statement": statement});
            async move {
                let mut rows = client.sql_rows(request).await.expect("Execute opens");
                assert!(rows.next_row().await.expect("no error").is_none());
                rows.affected_rows()
            }
        };
        assert_eq!(run("CREATE TABLE t (n INTEGER)").await.unwrap_or(0), 0);
        assert_eq!(run("INSERT INTO t VALUES (1), (2), (3)").await, Some(3));
        assert_eq!(run("DELETE FROM t WHERE n > 1").await, Some(2));
    }
}
