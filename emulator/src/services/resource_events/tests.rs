//! Resource events: what a subscriber hears of changes to the tree, by its interests and its
//! read access, and that a subscriber which never reads holds up no change.

use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tdx_volt::proto::data as sql;
use tdx_volt::proto::volt::{self as pb, ConnectResourceEvent as Event, PolicyDecision};
use tokio::sync::mpsc::error::TryRecvError;

use crate::call::{Inbound, Outbound};
use crate::services::access::{names, Subject};
use crate::services::events::{Interests, Subscription, EVENT_QUEUE};
use crate::services::resources::kind;
use crate::services::test_support::{caller, TestServices};

fn owner() -> Subject {
    Subject {
        client_id: caller().client_id,
        volt_owner: true,
        ..Subject::default()
    }
}

fn bob() -> Subject {
    Subject {
        client_id: "bob".to_owned(),
        ..Subject::default()
    }
}

fn all_events() -> Interests {
    Interests {
        resource_events: Some(Vec::new()),
        ..Interests::default()
    }
}

fn folder(name: &str) -> pb::Resource {
    pb::Resource {
        name: name.to_owned(),
        kind: vec![kind::FOLDER.to_owned()],
        ..pb::Resource::default()
    }
}

/// The resource events queued for `subscription` so far, as (event, resource id).
fn heard(subscription: &mut Subscription) -> Vec<(Event, String)> {
    let mut out = Vec::new();
    loop {
        match subscription.events.try_recv() {
            Ok(pb::ConnectEvent {
                event: Some(pb::connect_event::Event::ConnectResource(r)),
            }) => out.push((
                Event::try_from(r.event).unwrap_or(Event::Unknown),
                r.resource.map(|r| r.id).unwrap_or_default(),
            )),
            Ok(other) => panic!("not a resource event: {other:?}"),
            Err(TryRecvError::Empty) => return out,
            Err(TryRecvError::Disconnected) => panic!("the hub let go of the stream"),
        }
    }
}

#[tokio::test]
async fn a_reader_hears_create_update_delete_and_child_events() {
    let t = TestServices::new("events-all");
    let store = t.svc.resources();
    let mut sub = t.svc.events().subscribe(owner(), all_events());
    let root = store.root_id().to_owned();

    let outer = store
        .create(&root, "client-1", folder("outer"))
        .await
        .unwrap();
    let mut renamed = outer.clone();
    renamed.name = "renamed".to_owned();
    store.update(&renamed, false).await.unwrap();
    let inner = store
        .create(&outer.id, "client-1", folder("inner"))
        .await
        .unwrap();
    store.touch(&inner.id, Some(7)).await.unwrap();
    store.delete(&outer.id, true).await.unwrap();

    let (o, i) = (outer.id.clone(), inner.id.clone());
    assert_eq!(
        heard(&mut sub),
        vec![
            (Event::Create, o.clone()),
            (Event::CreateChild, o.clone()),
            (Event::Update, o.clone()),
            (Event::Create, i.clone()),
            (Event::CreateChild, i.clone()),
            (Event::Update, i.clone()),
            // A recursive delete: deepest first, each with its parent's DELETE_CHILD.
            (Event::Delete, i.clone()),
            (Event::DeleteChild, i),
            (Event::Delete, o.clone()),
            (Event::DeleteChild, o),
        ]
    );
}

#[tokio::test]
async fn a_subscriber_hears_nothing_of_what_it_may_not_read() {
    let t = TestServices::new("events-private");
    let store = t.svc.resources();
    let root = store.root_id().to_owned();
    let mut sub = t.svc.events().subscribe(bob(), all_events());

    // Bob may read the root, but not a folder the owner keeps to itself.
    let private = store
        .create(&root, "client-1", folder("private"))
        .await
        .unwrap();
    store.touch(&private.id, Some(1)).await.unwrap();
    let inside = store
        .create(&private.id, "client-1", folder("in"))
        .await
        .unwrap();
    assert_eq!(heard(&mut sub), vec![]);

    // Shared with him (recursively): now he hears of what happens in it.
    t.svc
        .access()
        .save(vec![pb::Access {
            id: "share".to_owned(),
            resource_id: private.id.clone(),
            subject: Some(pb::access::Subject::IdentityDid("bob".to_owned())),
            access: names::READ.to_owned(),
            decision: PolicyDecision::Permit as i32,
            recursive: true,
            ..pb::Access::default()
        }])
        .await
        .unwrap();
    store.delete(&inside.id, false).await.unwrap();
    assert_eq!(
        heard(&mut sub),
        vec![
            (Event::Delete, inside.id.clone()),
            (Event::DeleteChild, inside.id)
        ]
    );
}

#[tokio::test]
async fn the_event_list_filters_and_no_subscription_hears_nothing() {
    let t = TestServices::new("events-filter");
    let store = t.svc.resources();
    let root = store.root_id().to_owned();
    let only_deletes = Interests {
        resource_events: Some(vec![Event::Delete as i32]),
        ..Interests::default()
    };
    let mut deletes = t.svc.events().subscribe(owner(), only_deletes);
    let mut none = t.svc.events().subscribe(owner(), Interests::default());

    let made = store.create(&root, "client-1", folder("f")).await.unwrap();
    store.touch(&made.id, None).await.unwrap();
    store.delete(&made.id, false).await.unwrap();

    assert_eq!(heard(&mut deletes), vec![(Event::Delete, made.id)]);
    assert_eq!(heard(&mut none), vec![]);
}

#[tokio::test]
async fn a_subscriber_that_never_reads_does_not_hold_up_changes() {
    let t = TestServices::new("events-slow");
    let store = t.svc.resources();
    let root = store.root_id().to_owned();
    let mut slow = t.svc.events().subscribe(owner(), all_events());

    let changes = EVENT_QUEUE + 44;
    let made = store
        .create(&root, "client-1", folder("busy"))
        .await
        .unwrap();
    let writer = async {
        for size in 0..changes {
            store.touch(&made.id, Some(size as u64)).await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("every change was made while nobody read");
    // The queue is full and the rest were dropped.
    assert_eq!(heard(&mut slow).len(), EVENT_QUEUE);
}

/// Runs one SQLite call through the service's dispatch; returns its responses.
async fn sql_call<M: Message>(t: &TestServices, name: &str, request: &M) -> Vec<Bytes> {
    let (tx, inbound) = Inbound::channel();
    let (outbound, mut rx) = Outbound::channel();
    tx.send(Bytes::from(request.encode_to_vec())).await.unwrap();
    drop(tx);
    let result =
        crate::services::sqlite::dispatch(&t.svc, &caller(), name, inbound, &outbound).await;
    drop(outbound);
    result.unwrap();
    let mut out = Vec::new();
    while let Some(bytes) = rx.recv().await {
        out.push(bytes);
    }
    out
}

fn execute(db: &str, sql: &str) -> sql::SqlExecuteRequest {
    sql::SqlExecuteRequest {
        payload: Some(sql::sql_execute_request::Payload::Start(
            sql::SqlExecuteStart {
                database_id: db.to_owned(),
                statement: sql.to_owned(),
                ..Default::default()
            },
        )),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_sql_writes_are_database_write_events() {
    let t = TestServices::new("events-sql");
    let created = sql_call(
        &t,
        "CreateDatabase",
        &sql::CreateDatabaseRequest {
            name: "db".to_owned(),
            ..Default::default()
        },
    )
    .await;
    let db = sql::CreateDatabaseResponse::decode(created[0].as_ref())
        .unwrap()
        .resource
        .unwrap()
        .id;
    let mut sub = t.svc.events().subscribe(owner(), all_events());

    sql_call(&t, "Execute", &execute(&db, "CREATE TABLE t (n INTEGER)")).await;
    sql_call(&t, "Execute", &execute(&db, "SELECT * FROM t")).await;
    sql_call(
        &t,
        "BulkUpdate",
        &sql::SqlBulkUpdateRequest {
            database_id: db.clone(),
            statement: vec!["INSERT INTO t VALUES (1)".to_owned()],
        },
    )
    .await;
    // The read alone makes no event.
    assert_eq!(
        heard(&mut sub),
        vec![
            (Event::DatabaseWrite, db.clone()),
            (Event::DatabaseWrite, db)
        ]
    );
}
