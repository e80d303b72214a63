//! Persistent wires' unit tests: publish through WireAPI's `dispatch`, read the history back
//! through SqliteDatabaseAPI's, as a client would.

use std::sync::Arc;

use prost::Message;
use tdx_volt::proto::data as sql;
use tdx_volt::proto::data::sql_execute_request::Payload as ExecIn;
use tdx_volt::proto::data::sql_execute_response::Payload as ExecOut;
use tdx_volt::proto::data::variant::Data;
use tdx_volt::proto::volt as pb;
use tokio::task::JoinHandle;

use super::*;
use crate::call::{Inbound, InboundSender, Outbound, OutboundReceiver};
use crate::services::test_support::{caller, recv, send, TestServices};

type Call = (
    InboundSender,
    OutboundReceiver,
    JoinHandle<Result<(), Failure>>,
);

fn start(f: &TestServices, method: &'static str) -> Call {
    let (tx, inbound) = Inbound::channel();
    let (outbound, rx) = Outbound::channel();
    let svc = Arc::clone(&f.svc);
    let handle = tokio::spawn(async move {
        let caller = caller();
        match method {
            "Execute" => {
                crate::services::sqlite::dispatch(&svc, &caller, method, inbound, &outbound).await
            }
            _ => super::super::dispatch(&svc, &caller, method, inbound, &outbound).await,
        }
    });
    (tx, rx, handle)
}

fn attr(id: &str, value: Value) -> ResourceAttribute {
    ResourceAttribute {
        attribute_id: id.into(),
        value: vec![AttributeValue { value: Some(value) }],
        ..ResourceAttribute::default()
    }
}

/// A resource saved as `VoltAPI/SaveResource` saves it, with these kinds and attributes.
async fn saved_resource(
    f: &TestServices,
    kinds: &[&str],
    attribute: Vec<ResourceAttribute>,
) -> String {
    let root = f.svc.resources().root_id().to_owned();
    let template = Resource {
        name: "persistent".into(),
        kind: kinds.iter().map(|k| (*k).to_owned()).collect(),
        attribute,
        ..Resource::default()
    };
    f.svc
        .resources()
        .create(&root, "client-1", template)
        .await
        .unwrap()
        .id
}

const VENDOR_KINDS: [&str; 3] = ["volt:wire", "volt:database", "volt:sqlite-database"];

fn chunk(wire_id: &str, bytes: &[u8], do_not_persist: bool) -> pb::PublishWireRequest {
    pb::PublishWireRequest {
        wire_id: wire_id.into(),
        chunk: bytes.to_vec(),
        do_not_persist,
    }
}

/// Publishes `requests` in one call; returns how the call ended.
async fn publish(f: &TestServices, requests: &[pb::PublishWireRequest]) -> Result<(), Failure> {
    let (tx, mut rx, handle) = start(f, "PublishWire");
    for r in requests {
        if tx.send(r.encode_to_vec().into()).await.is_err() {
            break; // the call failed already
        }
    }
    drop(tx);
    let result = handle.await.unwrap();
    if result.is_ok() {
        let done: pb::PublishWireResponse = recv(&mut rx).await.unwrap();
        assert_eq!(done.status.unwrap_or_default().message, "");
    }
    result
}

/// Runs one query with Execute; returns the rows' cells, or how the call failed.
async fn query(
    f: &TestServices,
    database_id: &str,
    statement: &str,
) -> Result<Vec<Vec<Data>>, Failure> {
    let (tx, mut rx, handle) = start(f, "Execute");
    let start = sql::SqlExecuteStart {
        database_id: database_id.into(),
        statement: statement.into(),
        ..sql::SqlExecuteStart::default()
    };
    send(
        &tx,
        &sql::SqlExecuteRequest {
            payload: Some(ExecIn::Start(start)),
        },
    )
    .await;
    let mut rows = Vec::new();
    while let Some(r) = recv::<sql::SqlExecuteResponse>(&mut rx).await {
        if let Some(ExecOut::Row(row)) = r.payload {
            rows.push(row.column.into_iter().map(|c| c.data.unwrap()).collect());
        }
    }
    handle.await.unwrap().map(|()| rows)
}

#[tokio::test]
async fn chunks_of_a_persistent_wire_are_read_back_in_order() {
    let f = TestServices::new("wire-persist");
    let wire = saved_resource(
        &f,
        &VENDOR_KINDS,
        vec![
            attr(PERSIST_ATTRIBUTE, Value::Boolean(true)),
            attr(TABLE_ATTRIBUTE, Value::String("wire_data".into())),
        ],
    )
    .await;
    let before = i64::try_from(now_millis()).unwrap();
    publish(
        &f,
        &[
            chunk(&wire, b"", false),
            chunk("", b"one", false),
            chunk("", b"skipped", true),
            chunk("", b"two", false),
            chunk(&wire, &[0, 255, 3], false),
        ],
    )
    .await
    .unwrap();
    let after = i64::try_from(now_millis()).unwrap();

    let rows = query(
        &f,
        &wire,
        "SELECT id, received_at, publisher, chunk FROM wire_data ORDER BY id",
    )
    .await
    .unwrap();
    let chunks: Vec<&Data> = rows.iter().map(|r| &r[3]).collect();
    assert_eq!(
        chunks,
        [
            &Data::Blob(b"one".to_vec()),
            &Data::Blob(b"two".to_vec()),
            &Data::Blob(vec![0, 255, 3])
        ]
    );
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], Data::Integer(i64::try_from(i).unwrap() + 1));
        match row[1] {
            Data::Integer(ms) => assert!(
                (before..=after).contains(&ms),
                "{ms} not in {before}..={after}"
            ),
            ref other => panic!("received_at is {other:?}"),
        }
        assert_eq!(row[2], Data::Text("client-1".into()));
    }

    // A second call appends to the same table.
    publish(&f, &[chunk(&wire, b"four", false)]).await.unwrap();
    let rows = query(&f, &wire, "SELECT count(*) FROM wire_data")
        .await
        .unwrap();
    assert_eq!(rows, [[Data::Integer(4)]]);
}

#[tokio::test]
async fn save_wire_with_persist_makes_a_persistent_wire() {
    let f = TestServices::new("wire-persist");
    let (tx, mut rx, handle) = start(&f, "SaveWire");
    let request = pb::SaveWireRequest {
        resource: Some(Resource {
            name: "logged".into(),
            ..Resource::default()
        }),
        create: true,
        persist: true,
        persist_table: "readings".into(),
        ..pb::SaveWireRequest::default()
    };
    send(&tx, &request).await;
    handle.await.unwrap().unwrap();
    let saved = recv::<pb::SaveWireResponse>(&mut rx)
        .await
        .unwrap()
        .resource
        .unwrap();
    assert_eq!(table_of(&saved).unwrap().as_deref(), Some("readings"));
    for k in VENDOR_KINDS {
        assert!(
            saved.kind.iter().any(|x| x == k),
            "{k} missing from {:?}",
            saved.kind
        );
    }

    publish(&f, &[chunk(&saved.id, b"x", false)]).await.unwrap();
    let rows = query(&f, &saved.id, "SELECT chunk FROM readings")
        .await
        .unwrap();
    assert_eq!(rows, [[Data::Blob(b"x".to_vec())]]);
}

#[tokio::test]
async fn the_string_true_and_the_default_table_are_accepted() {
    let f = TestServices::new("wire-persist");
    let wire = saved_resource(
        &f,
        &VENDOR_KINDS,
        vec![attr(PERSIST_ATTRIBUTE, Value::String("true".into()))],
    )
    .await;
    publish(&f, &[chunk(&wire, b"hello", false)]).await.unwrap();
    let rows = query(&f, &wire, "SELECT chunk FROM wire_data")
        .await
        .unwrap();
    assert_eq!(rows, [[Data::Blob(b"hello".to_vec())]]);
}

#[tokio::test]
async fn a_wire_that_does_not_persist_writes_nothing() {
    let f = TestServices::new("wire-persist");
    let plain = saved_resource(&f, &["volt:wire"], Vec::new()).await;
    let off = saved_resource(
        &f,
        &VENDOR_KINDS,
        vec![attr(PERSIST_ATTRIBUTE, Value::Boolean(false))],
    )
    .await;
    for wire in [&plain, &off] {
        publish(&f, &[chunk(wire, b"gone", false)]).await.unwrap();
        let file = f.svc.sqlite().path_of(wire).unwrap();
        assert!(!file.exists(), "{} was written", file.display());
    }
    let tables = query(&f, &off, "SELECT name FROM sqlite_master")
        .await
        .unwrap();
    assert!(tables.is_empty(), "tables: {tables:?}");
}

#[tokio::test]
async fn a_table_name_that_is_not_plain_is_refused() {
    let f = TestServices::new("wire-persist");
    let wire = saved_resource(
        &f,
        &VENDOR_KINDS,
        vec![
            attr(PERSIST_ATTRIBUTE, Value::Boolean(true)),
            attr(TABLE_ATTRIBUTE, Value::String("x; DROP TABLE y".into())),
        ],
    )
    .await;
    let failure = publish(&f, &[chunk(&wire, b"", false)]).await.unwrap_err();
    assert_eq!(failure.code(), Code::InvalidArgument);
    assert!(!f.svc.sqlite().path_of(&wire).unwrap().exists());

    let (tx, _rx, handle) = start(&f, "SaveWire");
    let request = pb::SaveWireRequest {
        resource: Some(Resource::default()),
        create: true,
        persist: true,
        persist_table: "t\" (a); DROP TABLE y; --".into(),
        ..pb::SaveWireRequest::default()
    };
    send(&tx, &request).await;
    assert_eq!(
        handle.await.unwrap().unwrap_err().code(),
        Code::InvalidArgument
    );

    for bad in [
        "",
        "1abc",
        "sqlite_master",
        "SQLITE_x",
        "a-b",
        "a b",
        "é",
        &"a".repeat(65),
    ] {
        assert!(check_table(bad).is_err(), "{bad:?} accepted");
    }
    for good in ["wire_data", "_x", "T1", &"a".repeat(64)] {
        assert!(check_table(good).is_ok(), "{good:?} refused");
    }
}

#[tokio::test]
async fn persisting_needs_a_database_kind_and_a_usable_table() {
    let f = TestServices::new("wire-persist");
    let no_db = saved_resource(
        &f,
        &["volt:wire"],
        vec![attr(PERSIST_ATTRIBUTE, Value::Boolean(true))],
    )
    .await;
    let failure = publish(&f, &[chunk(&no_db, b"x", false)])
        .await
        .unwrap_err();
    assert_eq!(failure.code(), Code::FailedPrecondition);

    // A table of that name with other columns: the chunk cannot be stored, the call says why.
    let wire = saved_resource(
        &f,
        &VENDOR_KINDS,
        vec![attr(PERSIST_ATTRIBUTE, Value::Boolean(true))],
    )
    .await;
    query(&f, &wire, "CREATE TABLE wire_data (other TEXT)")
        .await
        .unwrap();
    let failure = publish(&f, &[chunk(&wire, b"x", false)]).await.unwrap_err();
    assert!(failure.message().contains("received_at"), "{failure:?}");
    assert!(!failure.is_abort());
}
