//! The SQLite service's unit tests: calls made through `dispatch` as a transport makes them,
//! and the CSV parser and JSON form on their own.

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message;
use rusqlite::types::Value;
use tdx_volt::proto::data::sql_execute_request::Payload as ExecRequest;
use tdx_volt::proto::data::sql_execute_response::Payload as ExecResponse;
use tdx_volt::proto::data::sql_import_csv_request::Payload as ImportRequest;
use tdx_volt::proto::data::variant::Data;
use tdx_volt::proto::volt::attribute_value::Value as AttrValue;
use tdx_volt::proto::volt::AttributeValue;
use tokio::task::JoinHandle;

use crate::call::{InboundSender, OutboundReceiver};
use crate::services::resources::{kind, new_id};
use crate::services::test_support::{caller, TestServices};

use super::csv::{infer_type, parse_csv, CsvType};
use super::*;

/// The shared fixture, with SQL helpers on top (fields reached through Deref).
struct Volt(TestServices);

impl std::ops::Deref for Volt {
    type Target = TestServices;

    fn deref(&self) -> &TestServices {
        &self.0
    }
}

impl Volt {
    fn new() -> Volt {
        Volt(TestServices::new("sqlite"))
    }

    /// Starts a call through `dispatch`.
    fn call(&self, name: &str) -> Call {
        let (tx, inbound) = Inbound::channel();
        let (outbound, rx) = Outbound::channel();
        let svc = Arc::clone(&self.svc);
        let name = name.to_owned();
        let task =
            tokio::spawn(async move { dispatch(&svc, &caller(), &name, inbound, &outbound).await });
        Call {
            tx: Some(tx),
            rx,
            task,
        }
    }

    async fn create_database(&self, name: &str) -> String {
        let mut call = self.call("CreateDatabase");
        call.send(&pb::CreateDatabaseRequest {
            name: name.into(),
            ..Default::default()
        })
        .await;
        let response: pb::CreateDatabaseResponse = call.recv().await.unwrap();
        call.finish().await.unwrap();
        response.resource.unwrap().id
    }

    /// Runs one non-transaction statement to completion.
    async fn exec(&self, db: &str, sql: &str) -> Vec<ExecResponse> {
        let (responses, result) = self.exec_start(start(db, sql)).await;
        result.unwrap();
        responses
    }

    async fn exec_start(
        &self,
        start: pb::SqlExecuteStart,
    ) -> (Vec<ExecResponse>, Result<(), Failure>) {
        let mut call = self.call("Execute");
        call.send(&exec_request(ExecRequest::Start(start))).await;
        let responses = call.drain().await;
        (responses, call.finish().await)
    }

    async fn count(&self, db: &str, table: &str) -> i64 {
        let responses = self
            .exec(db, &format!("SELECT count(*) FROM {table}"))
            .await;
        match &responses[1] {
            ExecResponse::Row(row) => match row.column[0].data {
                Some(Data::Integer(n)) => n,
                ref other => panic!("count is {other:?}"),
            },
            other => panic!("expected a row, got {other:?}"),
        }
    }
}

struct Call {
    tx: Option<InboundSender>,
    rx: OutboundReceiver,
    task: JoinHandle<Result<(), Failure>>,
}

impl Call {
    async fn send<M: Message>(&self, message: &M) {
        self.tx
            .as_ref()
            .unwrap()
            .send(Bytes::from(message.encode_to_vec()))
            .await
            .unwrap();
    }

    /// The next response, or `None` once the call has ended.
    async fn recv<M: Message + Default>(&mut self) -> Option<M> {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("timed out waiting for a response")
            .map(|bytes| M::decode(bytes).unwrap())
    }

    /// Execute responses until the call ends.
    async fn drain(&mut self) -> Vec<ExecResponse> {
        let mut out = Vec::new();
        while let Some(r) = self.recv::<pb::SqlExecuteResponse>().await {
            out.push(r.payload.unwrap());
        }
        out
    }

    /// Execute responses until `n` arrived.
    async fn take(&mut self, n: usize) -> Vec<ExecResponse> {
        let mut out = Vec::new();
        for _ in 0..n {
            let r = self.recv::<pb::SqlExecuteResponse>().await.unwrap();
            out.push(r.payload.unwrap());
        }
        out
    }

    /// Asserts that nothing arrives for a moment (the handler is waiting for us).
    async fn quiet(&mut self) {
        let waited = tokio::time::timeout(Duration::from_millis(200), self.rx.recv()).await;
        assert!(waited.is_err(), "unexpected response or end: {waited:?}");
    }

    /// Half-closes the request side.
    fn close(&mut self) {
        self.tx = None;
    }

    async fn finish(self) -> Result<(), Failure> {
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the call did not end")
            .unwrap()
    }
}

fn start(db: &str, sql: &str) -> pb::SqlExecuteStart {
    pb::SqlExecuteStart {
        database_id: db.into(),
        statement: sql.into(),
        ..Default::default()
    }
}

fn exec_request(payload: ExecRequest) -> pb::SqlExecuteRequest {
    pb::SqlExecuteRequest {
        payload: Some(payload),
    }
}

fn rows(responses: &[ExecResponse]) -> Vec<Vec<Option<Data>>> {
    responses
        .iter()
        .filter_map(|r| match r {
            ExecResponse::Row(row) => Some(row.column.iter().map(|v| v.data.clone()).collect()),
            _ => None,
        })
        .collect()
}

fn header(responses: &[ExecResponse]) -> Vec<(String, pb::DataType)> {
    match &responses[0] {
        ExecResponse::Header(h) => h
            .column
            .iter()
            .map(|c| (c.name.clone(), c.r#type()))
            .collect(),
        other => panic!("expected a header, got {other:?}"),
    }
}

fn text(s: &str) -> Option<Data> {
    Some(Data::Text(s.into()))
}

async fn with_numbers(volt: &Volt, n: i64) -> String {
    let db = volt.create_database("numbers").await;
    volt.exec(&db, "CREATE TABLE t (n INTEGER)").await;
    let values: Vec<String> = (1..=n).map(|i| format!("({i})")).collect();
    volt.exec(&db, &format!("INSERT INTO t VALUES {}", values.join(",")))
        .await;
    db
}

#[tokio::test(flavor = "multi_thread")]
async fn create_insert_select_with_typed_header_and_rows() {
    let volt = Volt::new();
    let db = volt.create_database("people").await;
    let resource = volt.svc.resources().get(&db).unwrap();
    assert_eq!(resource.kind, kind::database());
    assert_eq!(resource.name, "people");
    let path = volt.svc.sqlite().path_of(&db).unwrap();
    assert!(path.is_file());

    let created = volt
        .exec(
            &db,
            "CREATE TABLE p (id INTEGER PRIMARY KEY, name TEXT, score REAL, photo BLOB, \
             note)",
        )
        .await;
    assert_eq!(created, vec![ExecResponse::AffectedRows(0)]);
    let inserted = volt
        .exec(
            &db,
            "INSERT INTO p VALUES (1, 'Ann', 1.5, x'0102', NULL), \
             (9223372036854775807, 'Bob', NULL, NULL, 'x')",
        )
        .await;
    assert_eq!(inserted, vec![ExecResponse::AffectedRows(2)]);

    let selected = volt
        .exec(
            &db,
            "SELECT id, name, score, photo, note, 1 + 1 AS two FROM p ORDER BY id",
        )
        .await;
    assert_eq!(
        header(&selected),
        vec![
            ("id".into(), pb::DataType::Integer),
            ("name".into(), pb::DataType::Text),
            ("score".into(), pb::DataType::Real),
            // BLOB and no declared type: the first row's value decides.
            ("photo".into(), pb::DataType::Blob),
            ("note".into(), pb::DataType::Null),
            ("two".into(), pb::DataType::Integer),
        ]
    );
    assert_eq!(
        rows(&selected),
        vec![
            vec![
                Some(Data::Integer(1)),
                text("Ann"),
                Some(Data::Real(1.5)),
                Some(Data::Blob(vec![1, 2])),
                Some(Data::Null(true)),
                Some(Data::Integer(2)),
            ],
            vec![
                Some(Data::Integer(i64::MAX)),
                text("Bob"),
                Some(Data::Null(true)),
                Some(Data::Null(true)),
                text("x"),
                Some(Data::Integer(2)),
            ],
        ]
    );

    // An empty result still has its header; an expression column has no type to show.
    let empty = volt.exec(&db, "SELECT name, 1 AS one FROM p WHERE 0").await;
    assert_eq!(
        header(&empty),
        vec![
            ("name".into(), pb::DataType::Text),
            ("one".into(), pb::DataType::Unknown)
        ]
    );
    assert_eq!(empty.len(), 1);

    // Writes are recorded on the resource.
    assert!(volt.svc.resources().get(&db).unwrap().version > resource.version);

    // Deleting the resource deletes the file.
    volt.svc.sqlite().forget(&db);
    assert!(!path.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn paging_waits_for_next_between_pages() {
    let volt = Volt::new();
    let db = with_numbers(&volt, 5).await;
    let mut call = volt.call("Execute");
    call.send(&exec_request(ExecRequest::Start(pb::SqlExecuteStart {
        page_size: 2,
        ..start(&db, "SELECT n FROM t ORDER BY n")
    })))
    .await;
    let first = call.take(3).await;
    assert_eq!(header(&first), vec![("n".into(), pb::DataType::Integer)]);
    assert_eq!(rows(&first).len(), 2);
    call.quiet().await;

    call.send(&exec_request(ExecRequest::Next(pb::SqlExecuteNext {})))
        .await;
    let second = call.take(2).await;
    assert_eq!(
        rows(&second),
        vec![vec![Some(Data::Integer(3))], vec![Some(Data::Integer(4))]]
    );
    call.quiet().await;

    call.send(&exec_request(ExecRequest::Next(pb::SqlExecuteNext {})))
        .await;
    // The last page, then the call ends without being asked again.
    let last = call.drain().await;
    assert_eq!(rows(&last), vec![vec![Some(Data::Integer(5))]]);
    call.finish().await.unwrap();

    // A page that ends exactly at the last row ends the call without waiting.
    let (responses, result) = volt
        .exec_start(pb::SqlExecuteStart {
            page_size: 5,
            ..start(&db, "SELECT n FROM t")
        })
        .await;
    result.unwrap();
    assert_eq!(rows(&responses).len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn paging_stops_on_end_or_when_the_client_goes() {
    let volt = Volt::new();
    let db = with_numbers(&volt, 5).await;
    for how in ["end", "close"] {
        let mut call = volt.call("Execute");
        call.send(&exec_request(ExecRequest::Start(pb::SqlExecuteStart {
            page_size: 2,
            ..start(&db, "SELECT n FROM t")
        })))
        .await;
        assert_eq!(rows(&call.take(3).await).len(), 2);
        if how == "end" {
            call.send(&exec_request(ExecRequest::End(pb::SqlExecuteEnd {
                commit_transaction: false,
            })))
            .await;
        } else {
            call.close();
        }
        assert!(call.drain().await.is_empty(), "{how}");
        call.finish().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_query_does_not_block_writers() {
    let volt = Volt::new();
    let db = with_numbers(&volt, 3).await;
    let mut call = volt.call("Execute");
    call.send(&exec_request(ExecRequest::Start(pb::SqlExecuteStart {
        page_size: 1,
        ..start(&db, "SELECT n FROM t ORDER BY n")
    })))
    .await;
    assert_eq!(rows(&call.take(2).await).len(), 1);
    // Another call writes while the first holds its statement between pages.
    let inserted = volt.exec(&db, "INSERT INTO t VALUES (4)").await;
    assert_eq!(inserted, vec![ExecResponse::AffectedRows(1)]);
    let mut seen = 1;
    loop {
        call.send(&exec_request(ExecRequest::Next(pb::SqlExecuteNext {})))
            .await;
        match call.recv::<pb::SqlExecuteResponse>().await {
            Some(_) => seen += 1,
            None => break,
        }
    }
    // The paused query kept reading its own snapshot.
    assert_eq!(seen, 3);
    call.finish().await.unwrap();
    assert_eq!(volt.count(&db, "t").await, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn parameters_bind_by_name_number_and_position() {
    let volt = Volt::new();
    let db = volt.create_database("params").await;
    volt.exec(&db, "CREATE TABLE kv (k TEXT, v, flag INTEGER, data BLOB)")
        .await;
    let value = |v: AttrValue| AttributeValue { value: Some(v) };
    let parameter: HashMap<String, AttributeValue> = [
        ("k".to_owned(), value(AttrValue::String("alpha".into()))),
        (":v".to_owned(), value(AttrValue::Real(2.5))),
        ("3".to_owned(), value(AttrValue::Boolean(true))),
        ("4".to_owned(), value(AttrValue::Bytes(vec![0xff]))),
        ("unused".to_owned(), value(AttrValue::Integer(1))),
    ]
    .into();
    let (responses, result) = volt
        .exec_start(pb::SqlExecuteStart {
            parameter: parameter.clone(),
            ..start(&db, "INSERT INTO kv VALUES (:k, :v, ?3, ?4)")
        })
        .await;
    result.unwrap();
    assert_eq!(responses, vec![ExecResponse::AffectedRows(1)]);

    let (responses, result) = volt
        .exec_start(pb::SqlExecuteStart {
            parameter: [("1".to_owned(), value(AttrValue::String("alpha".into())))].into(),
            ..start(&db, "SELECT v, flag, data FROM kv WHERE k = ?")
        })
        .await;
    result.unwrap();
    assert_eq!(
        rows(&responses),
        vec![vec![
            Some(Data::Real(2.5)),
            Some(Data::Integer(1)),
            Some(Data::Blob(vec![0xff]))
        ]]
    );

    let (_, result) = volt
        .exec_start(start(&db, "SELECT * FROM kv WHERE k = @missing"))
        .await;
    let failure = result.unwrap_err();
    assert_eq!(failure.code(), Code::InvalidArgument);
    assert!(failure.message().contains("@missing"), "{failure:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn affected_rows_counts_changes_of_several_statements() {
    let volt = Volt::new();
    let db = with_numbers(&volt, 5).await;
    let updated = volt.exec(&db, "UPDATE t SET n = n * 10 WHERE n > 2").await;
    assert_eq!(updated, vec![ExecResponse::AffectedRows(3)]);
    let script = volt
        .exec(
            &db,
            "CREATE TABLE u (x); INSERT INTO u VALUES (1); INSERT INTO u VALUES (2), (3);",
        )
        .await;
    assert_eq!(script, vec![ExecResponse::AffectedRows(3)]);
    let deleted = volt.exec(&db, "DELETE FROM t WHERE n > 100").await;
    assert_eq!(deleted, vec![ExecResponse::AffectedRows(0)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn transaction_rolls_back_unless_end_commits() {
    let volt = Volt::new();
    let db = with_numbers(&volt, 3).await;

    // end without commit: rolled back.
    let mut call = volt.call("Execute");
    call.send(&exec_request(ExecRequest::Start(pb::SqlExecuteStart {
        transaction: true,
        ..start(&db, "DELETE FROM t")
    })))
    .await;
    assert_eq!(call.take(1).await, vec![ExecResponse::AffectedRows(3)]);
    // The transaction stays open until the client says how to end it.
    call.quiet().await;
    call.send(&exec_request(ExecRequest::End(pb::SqlExecuteEnd {
        commit_transaction: false,
    })))
    .await;
    assert!(call.drain().await.is_empty());
    call.finish().await.unwrap();
    assert_eq!(volt.count(&db, "t").await, 3);

    // The client going away: rolled back too.
    let mut call = volt.call("Execute");
    call.send(&exec_request(ExecRequest::Start(pb::SqlExecuteStart {
        transaction: true,
        ..start(&db, "DELETE FROM t")
    })))
    .await;
    assert_eq!(call.take(1).await, vec![ExecResponse::AffectedRows(3)]);
    call.close();
    assert!(call.drain().await.is_empty());
    call.finish().await.unwrap();
    assert_eq!(volt.count(&db, "t").await, 3);

    // Two statements in one transaction, then commit.
    let mut call = volt.call("Execute");
    call.send(&exec_request(ExecRequest::Start(pb::SqlExecuteStart {
        transaction: true,
        ..start(&db, "DELETE FROM t WHERE n = 1")
    })))
    .await;
    assert_eq!(call.take(1).await, vec![ExecResponse::AffectedRows(1)]);
    call.send(&exec_request(ExecRequest::Start(start(
        "",
        "SELECT count(*) FROM t",
    ))))
    .await;
    let inside = call.take(2).await;
    assert_eq!(rows(&inside), vec![vec![Some(Data::Integer(2))]]);
    call.send(&exec_request(ExecRequest::End(pb::SqlExecuteEnd {
        commit_transaction: true,
    })))
    .await;
    assert!(call.drain().await.is_empty());
    call.finish().await.unwrap();
    assert_eq!(volt.count(&db, "t").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_update_is_all_or_nothing() {
    let volt = Volt::new();
    let db = volt.create_database("bulk").await;
    volt.exec(&db, "CREATE TABLE b (x INTEGER NOT NULL)").await;

    let mut call = volt.call("BulkUpdate");
    call.send(&pb::SqlBulkUpdateRequest {
        database_id: db.clone(),
        statement: vec![
            "INSERT INTO b VALUES (1)".into(),
            "INSERT INTO b VALUES (2); INSERT INTO b VALUES (3)".into(),
            "INSERT INTO b VALUES (NULL)".into(),
        ],
    })
    .await;
    assert!(call.recv::<pb::SqlBulkUpdateResponse>().await.is_none());
    let failure = call.finish().await.unwrap_err();
    assert_eq!(failure.code(), Code::FailedPrecondition);
    assert!(
        failure
            .message()
            .starts_with("statement 3: NOT NULL constraint failed"),
        "{failure:?}"
    );
    assert_eq!(volt.count(&db, "b").await, 0);

    let mut call = volt.call("BulkUpdate");
    call.send(&pb::SqlBulkUpdateRequest {
        database_id: db.clone(),
        statement: vec![
            "INSERT INTO b VALUES (1)".into(),
            "INSERT INTO b VALUES (2); INSERT INTO b VALUES (3)".into(),
        ],
    })
    .await;
    let response: pb::SqlBulkUpdateResponse = call.recv().await.unwrap();
    assert_eq!(response.status, None);
    call.finish().await.unwrap();
    assert_eq!(volt.count(&db, "b").await, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn import_csv_infers_types_and_handles_quotes() {
    let volt = Volt::new();
    let db = volt.create_database("imports").await;
    let csv = "\u{feff}id,name,price,code,note\r\n\
               1,\"Smith, John\",2.5,007,\"said \"\"hi\"\"\"\r\n\
               2,plain,3,010,\"two\r\nlines\"\r\n\
               \r\n\
               3,,1e2,123,\r\n";
    let mut call = volt.call("ImportCSV");
    let request = |p: ImportRequest| pb::SqlImportCsvRequest { payload: Some(p) };
    call.send(&request(ImportRequest::Configuration(
        pb::SqlImportCsvConfiguration {
            database_id: db.clone(),
            table_name: "items".into(),
            progress_interval: 2,
            ..Default::default()
        },
    )))
    .await;
    // Blocks may split the data anywhere, even inside a quoted field.
    let (a, b) = csv.as_bytes().split_at(30);
    call.send(&request(ImportRequest::Block(a.to_vec()))).await;
    call.send(&request(ImportRequest::Block(b.to_vec()))).await;
    call.send(&request(ImportRequest::UploadComplete(true)))
        .await;
    let progress: pb::SqlImportCsvResponse = call.recv().await.unwrap();
    assert_eq!((progress.row_count, progress.total_rows), (2, 3));
    let done: pb::SqlImportCsvResponse = call.recv().await.unwrap();
    assert_eq!((done.row_count, done.total_rows), (3, 3));
    assert!(call.recv::<pb::SqlImportCsvResponse>().await.is_none());
    call.finish().await.unwrap();

    let selected = volt
        .exec(
            &db,
            "SELECT id, name, price, code, note FROM items ORDER BY id",
        )
        .await;
    assert_eq!(
        header(&selected),
        vec![
            ("id".into(), pb::DataType::Integer),
            ("name".into(), pb::DataType::Text),
            ("price".into(), pb::DataType::Real),
            ("code".into(), pb::DataType::Text),
            ("note".into(), pb::DataType::Text),
        ]
    );
    assert_eq!(
        rows(&selected),
        vec![
            vec![
                Some(Data::Integer(1)),
                text("Smith, John"),
                Some(Data::Real(2.5)),
                text("007"),
                text("said \"hi\""),
            ],
            vec![
                Some(Data::Integer(2)),
                text("plain"),
                Some(Data::Real(3.0)),
                text("010"),
                text("two\r\nlines"),
            ],
            vec![
                Some(Data::Integer(3)),
                Some(Data::Null(true)),
                Some(Data::Real(100.0)),
                text("123"),
                Some(Data::Null(true)),
            ],
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn import_csv_rejects_bad_csv() {
    let volt = Volt::new();
    let db = volt.create_database("imports").await;
    for (csv, expected) in [
        ("a,b\n1,2,3\n", "record 2 has 3 fields"),
        ("a,b\n", "no data rows"),
    ] {
        let mut call = volt.call("ImportCSV");
        call.send(&pb::SqlImportCsvRequest {
            payload: Some(ImportRequest::Configuration(
                pb::SqlImportCsvConfiguration {
                    database_id: db.clone(),
                    table_name: "bad".into(),
                    ..Default::default()
                },
            )),
        })
        .await;
        call.send(&pb::SqlImportCsvRequest {
            payload: Some(ImportRequest::Block(csv.as_bytes().to_vec())),
        })
        .await;
        call.close();
        let failure = call.finish().await.unwrap_err();
        assert_eq!(failure.code(), Code::InvalidArgument);
        assert!(failure.message().contains(expected), "{failure:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_database_and_bad_sql_are_status_errors() {
    let volt = Volt::new();
    let (_, result) = volt.exec_start(start("no-such-db", "SELECT 1")).await;
    let failure = result.unwrap_err();
    assert_eq!(failure.code(), Code::NotFound);
    assert!(!failure.is_abort());
    assert_eq!(failure.message(), "database not found: no-such-db");

    let db = volt.create_database("errors").await;
    let (_, result) = volt.exec_start(start(&db, "SELEC 1")).await;
    let failure = result.unwrap_err();
    assert_eq!(failure.code(), Code::InvalidArgument);
    assert_eq!(failure.message(), "near \"SELEC\": syntax error");
    let (_, result) = volt.exec_start(start(&db, "SELECT * FROM nowhere")).await;
    assert_eq!(result.unwrap_err().message(), "no such table: nowhere");

    // Through the router, a reply failure becomes a response carrying only `status`.
    for (path, database_id, code) in [
        ("SqliteDatabaseAPI/Execute", "no-such-db", Code::NotFound),
        (
            "SqliteDatabaseAPI/Execute",
            db.as_str(),
            Code::InvalidArgument,
        ),
    ] {
        let method = tdx_volt::protocol::schema::methods()
            .lookup(&format!("/tdx.volt_api.data.v1.{path}"))
            .unwrap();
        let (tx, inbound) = Inbound::channel();
        let (outbound, mut rx) = Outbound::channel();
        tx.send(Bytes::from(
            exec_request(ExecRequest::Start(start(database_id, "SELEC 1"))).encode_to_vec(),
        ))
        .await
        .unwrap();
        Arc::clone(&volt.svc)
            .call(caller(), method, inbound, outbound)
            .await
            .unwrap();
        let response = pb::SqlExecuteResponse::decode(rx.recv().await.unwrap()).unwrap();
        match response.payload {
            Some(ExecResponse::Status(status)) => {
                assert_eq!(status.code, code.as_i32());
                assert!(!status.message.is_empty());
            }
            other => panic!("expected a status, got {other:?}"),
        }
        assert!(rx.recv().await.is_none());
        drop(tx);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn databases_are_found_by_alias_and_other_methods_are_unimplemented() {
    let volt = Volt::new();
    let mut call = volt.call("CreateDatabase");
    call.send(&pb::CreateDatabaseRequest {
        name: "aliased".into(),
        alias: vec!["my-db".into()],
        ..Default::default()
    })
    .await;
    let created: pb::CreateDatabaseResponse = call.recv().await.unwrap();
    call.finish().await.unwrap();
    assert_eq!(created.resource.unwrap().alias, vec!["my-db".to_owned()]);
    assert_eq!(
        volt.exec("my-db", "SELECT 1 AS one").await.len(),
        2,
        "header and one row"
    );

    let call = volt.call("CreateDatabase");
    call.send(&pb::CreateDatabaseRequest {
        name: "again".into(),
        alias: vec!["my-db".into()],
        ..Default::default()
    })
    .await;
    assert_eq!(call.finish().await.unwrap_err().code(), Code::AlreadyExists);

    let call = volt.call("SaveDataView");
    let failure = call.finish().await.unwrap_err();
    assert!(failure.is_abort());
    assert_eq!(failure.code(), Code::Unimplemented);
    assert!(failure
        .message()
        .contains("/tdx.volt_api.data.v1.SqliteServerAPI/SaveDataView"));
}

#[test]
fn zero_values_survive_the_json_form() {
    // The websocket gateway sends proto3 JSON; the official clients pick a cell's type by
    // which key is present, so a set oneof member must appear even when it is zero.
    let desc =
        tdx_volt::protocol::schema::message("tdx.volt_api.data.v1.SqlExecuteResponse").unwrap();
    let row = pb::SqlExecuteResponse {
        payload: Some(ExecResponse::Row(pb::VariantRow {
            column: [
                Data::Integer(0),
                Data::Text(String::new()),
                Data::Real(0.0),
                Data::Blob(Vec::new()),
                Data::Null(true),
            ]
            .into_iter()
            .map(|d| pb::Variant { data: Some(d) })
            .collect(),
        })),
    };
    let json = tdx_volt::protocol::schema::protobuf_to_json(&desc, &row.encode_to_vec()).unwrap();
    let cells = json["row"]["column"].as_array().unwrap();
    for (cell, key) in cells
        .iter()
        .zip(["integer", "text", "real", "blob", "null"])
    {
        assert!(cell.get(key).is_some(), "{key} missing in {json}");
    }
    let affected = pb::SqlExecuteResponse {
        payload: Some(ExecResponse::AffectedRows(0)),
    };
    let json =
        tdx_volt::protocol::schema::protobuf_to_json(&desc, &affected.encode_to_vec()).unwrap();
    assert_eq!(json["affected_rows"], 0, "{json}");
}

#[test]
fn csv_parser_and_type_inference() {
    assert_eq!(
        parse_csv("a,b\n\"x,\"\"y\"\"\",\n\n\"\"\rlast").unwrap(),
        vec![
            vec!["a".to_owned(), "b".to_owned()],
            vec!["x,\"y\"".to_owned(), String::new()],
            vec![String::new()],
            vec!["last".to_owned()],
        ]
    );
    assert_eq!(parse_csv("").unwrap(), Vec::<Vec<String>>::new());
    // Lenient, as most CSV readers are: a stray quote is text, an unclosed one runs to the end.
    assert_eq!(
        parse_csv("\u{feff}a,\"x\"y\n1,\"open\n2").unwrap(),
        vec![
            vec!["a".to_owned(), "xy".to_owned()],
            vec!["1".to_owned(), "open\n2".to_owned()],
        ]
    );
    assert_eq!(infer_type(["1", "-2", ""].into_iter()), CsvType::Integer);
    assert_eq!(infer_type(["1", "2.5"].into_iter()), CsvType::Real);
    assert_eq!(infer_type(["1", "abc"].into_iter()), CsvType::Text);
    assert_eq!(infer_type(["007"].into_iter()), CsvType::Text);
    assert_eq!(
        infer_type(["99999999999999999999"].into_iter()),
        CsvType::Text
    );
    assert_eq!(infer_type(["inf", "NaN"].into_iter()), CsvType::Text);
    assert_eq!(infer_type(["", ""].into_iter()), CsvType::Text);
    assert_eq!(CsvType::Integer.value("x"), Value::Text("x".into()));
}

/// SQL that would reach outside the data directory is refused: ATTACH (of a file or another
/// database), VACUUM INTO a path, loading an extension; the refusal is a status on the call,
/// and nothing is written.
#[tokio::test(flavor = "multi_thread")]
async fn sql_that_reaches_outside_the_data_directory_is_refused() {
    let volt = Volt::new();
    let db = volt.create_database("outside").await;
    let outside = std::env::temp_dir().join(format!("volt-outside-{}.db", new_id()));
    let target = outside.display().to_string();
    for sql in [
        format!("ATTACH DATABASE '{target}' AS other"),
        format!("VACUUM INTO '{target}'"),
        format!("VACUUM main INTO '{target}'"),
        "SELECT load_extension('/usr/lib/x86_64-linux-gnu/libsqlite3.so.0')".to_owned(),
    ] {
        let (_, result) = volt.exec_start(start(&db, &sql)).await;
        let failure = result.expect_err(&sql);
        assert_eq!(failure.code(), Code::InvalidArgument, "{sql}: {failure:?}");
        assert!(!failure.is_abort(), "{sql}");
        assert!(!outside.exists(), "{sql} wrote {target}");
    }
    // The database itself still serves.
    let (_, result) = volt.exec_start(start(&db, "SELECT 1")).await;
    assert!(result.is_ok());
}
