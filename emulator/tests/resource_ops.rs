//! MoveResource, CopyResource, SaveSymbolicLink, SaveDatabase and SaveSyncDatabase through the
//! SDK's client, the Volt owner against a second client.

#[path = "support/sdk.rs"]
mod sdk;
mod support;

use sdk::{id_of, ok, refused};
use serde_json::{json, Value};
use support::TestVolt;
use tdx_volt::{Transport, VoltClient};

const INVALID: i32 = 3;
const NOT_FOUND: i32 = 5;
const DENIED: i32 = 7;
const FAILED_PRECONDITION: i32 = 9;
const UNIMPLEMENTED: i32 = 12;

async fn create(client: &VoltClient, parent: &str, name: &str, kinds: Value) -> String {
    let mut request = json!({"resource": {"name": name, "kind": kinds}, "create": true});
    if !parent.is_empty() {
        request["create_in_parent_id"] = json!(parent);
    }
    id_of(&ok(client, "SaveResource", request).await)
}

async fn parent_of(client: &VoltClient, id: &str) -> String {
    let up = ok(client, "GetResourceAncestors", json!({"resource_id": id})).await;
    up["ancestor"][0]["id"].as_str().expect("parent").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_need_delete_and_create_and_never_into_themselves() {
    let volt = TestVolt::start("ops-move").await;
    let owner = sdk::owner(&volt, Transport::Grpc).await;
    let bob = sdk::other(&volt, "bob", Transport::Grpc).await;
    let a = create(&owner, "", "a", json!(["volt:folder"])).await;
    let b = create(&owner, "", "b", json!(["volt:folder"])).await;
    let inner = create(&owner, &a, "inner", json!(["volt:folder"])).await;
    let file = create(&owner, &inner, "f", json!(["volt:file"])).await;

    let request = |id: &str, to: &str| json!({"resource_id": id, "to_resource_id": to});
    ok(&owner, "MoveResource", request(&inner, &b)).await;
    assert_eq!(parent_of(&owner, &inner).await, b);
    assert_eq!(
        parent_of(&owner, &file).await,
        inner,
        "the content moves along"
    );

    refused(&owner, "MoveResource", request(&b, &inner), INVALID).await;
    refused(&owner, "MoveResource", request(&b, &b), INVALID).await;
    refused(
        &owner,
        "MoveResource",
        request(&volt.volt_id(), &a),
        INVALID,
    )
    .await;
    let wrong_from = json!({"resource_id": inner, "from_resource_id": a, "to_resource_id": a});
    refused(&owner, "MoveResource", wrong_from, FAILED_PRECONDITION).await;
    refused(&owner, "MoveResource", request("no-such-id", &a), NOT_FOUND).await;
    refused(&owner, "MoveResource", request(&inner, &file), INVALID).await;

    // Bob may neither take the owner's resources nor put his own in the owner's folders.
    let bobs = create(&bob, "", "bob's", json!(["volt:folder"])).await;
    let bob_home = parent_of(&bob, &bobs).await;
    refused(&bob, "MoveResource", request(&file, &bob_home), DENIED).await;
    refused(&bob, "MoveResource", request(&bobs, &a), DENIED).await;
    assert_eq!(parent_of(&owner, &file).await, inner);
    assert_eq!(parent_of(&bob, &bobs).await, bob_home);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_carry_metadata_and_content_to_new_ids() {
    let volt = TestVolt::start("ops-copy").await;
    let owner = sdk::owner(&volt, Transport::Grpc).await;
    let bob = sdk::other(&volt, "bob", Transport::Websocket).await;
    let src = create(&owner, "", "src", json!(["volt:folder"])).await;
    let dst = create(&owner, "", "dst", json!(["volt:folder"])).await;
    let db = ok(
        &owner,
        "SaveDatabase",
        json!({"resource": {"name": "db", "alias": ["copied-db"],
                            "attribute": [{"attribute_id": "colour",
                                           "value": [{"string": "blue"}]}]},
               "create": true, "create_in_parent_id": src}),
    )
    .await;
    let db = id_of(&db);
    owner
        .sql_execute_json(json!({"database_id": db, "statement": "CREATE TABLE t(x)"}))
        .await
        .expect("create table");
    owner
        .sql_execute_json(json!({"database_id": db, "statement": "INSERT INTO t VALUES (42)"}))
        .await
        .expect("insert");
    let file = create(&owner, &src, "f", json!(["volt:file"])).await;
    owner
        .set_file_content(json!({"resource_id": file, "content": "aGVsbG8="}))
        .await
        .expect("content");

    let copy = json!({"resource_id": src, "to_resource_id": dst, "recursive": true,
                      "mode": "COPY_RESOURCE_MODE_COPY"});
    ok(&owner, "CopyResource", copy).await;
    let below = ok(
        &owner,
        "GetResourceDescendants",
        json!({"resource_id": dst}),
    )
    .await;
    let copies = below["descendant"].as_array().expect("descendants").clone();
    assert_eq!(copies.len(), 3, "{copies:?}");
    let named = |name: &str| {
        copies
            .iter()
            .find(|c| c["name"] == json!(name))
            .unwrap_or_else(|| panic!("no copy named {name}"))
            .clone()
    };
    let db_copy = named("db");
    assert_ne!(db_copy["id"], json!(db));
    assert_eq!(db_copy["attribute"][0]["attribute_id"], json!("colour"));
    assert_eq!(
        db_copy["alias"],
        Value::Null,
        "aliases stay with the source"
    );
    let rows = owner
        .sql_execute_json(json!({"database_id": db_copy["id"], "statement": "SELECT x FROM t"}))
        .await
        .expect("the copy is a database");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["x"], json!(42));
    let content = owner
        .get_file_content(json!({"resource_id": named("f")["id"]}))
        .await
        .expect("the copy has content");
    assert_eq!(content["content"], json!("aGVsbG8="));
    assert_eq!(
        parent_of(&owner, named("f")["id"].as_str().unwrap()).await,
        named("src")["id"].as_str().unwrap()
    );

    // Without `recursive` only the resource itself; LINK is not implemented.
    ok(
        &owner,
        "CopyResource",
        json!({"resource_id": src, "to_resource_id": dst}),
    )
    .await;
    let link =
        json!({"resource_id": src, "to_resource_id": dst, "mode": "COPY_RESOURCE_MODE_LINK"});
    refused(&owner, "CopyResource", link, UNIMPLEMENTED).await;
    refused(
        &owner,
        "CopyResource",
        json!({"resource_id": src, "to_resource_id": file}),
        INVALID,
    )
    .await;
    let after = ok(
        &owner,
        "GetResourceDescendants",
        json!({"resource_id": dst}),
    )
    .await;
    assert_eq!(after["descendant"].as_array().map(Vec::len), Some(4));

    // Bob can read none of it.
    let bobs = create(&bob, "", "bob's", json!(["volt:folder"])).await;
    refused(
        &bob,
        "CopyResource",
        json!({"resource_id": db, "to_resource_id": bobs}),
        DENIED,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symbolic_links_keep_metadata_and_serve_no_host_file() {
    let volt = TestVolt::start("ops-link").await;
    let owner = sdk::owner(&volt, Transport::Grpc).await;
    let bob = sdk::other(&volt, "bob", Transport::Grpc).await;
    let target = json!([{"attribute_id": "target", "value": [{"string": "/etc/passwd"}]}]);
    let link = ok(
        &owner,
        "SaveSymbolicLink",
        json!({"resource": {"name": "passwd", "attribute": target}, "create": true}),
    )
    .await;
    assert!(link["resource"]["kind"]
        .as_array()
        .expect("kinds")
        .contains(&json!("volt:symbolic-link")));
    let id = id_of(&link);
    // Whatever FileAPI makes of it, it never reads the file the link names.
    let read = owner.get_file_content(json!({"resource_id": id})).await;
    if let Ok(read) = &read {
        assert_eq!(read["content"], Value::Null, "a link serves no content");
    }
    let renamed = ok(
        &owner,
        "SaveSymbolicLink",
        json!({"resource": {"id": id, "name": "renamed"}}),
    )
    .await;
    assert_eq!(renamed["resource"]["name"], json!("renamed"));
    let folder = create(&owner, "", "plain", json!(["volt:folder"])).await;
    refused(
        &owner,
        "SaveSymbolicLink",
        json!({"resource": {"id": folder, "name": "x"}}),
        INVALID,
    )
    .await;
    refused(
        &bob,
        "SaveSymbolicLink",
        json!({"resource": {"name": "mine"}, "create": true}),
        DENIED,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_database_creates_and_updates_databases() {
    let volt = TestVolt::start("ops-savedb").await;
    let owner = sdk::owner(&volt, Transport::Grpc).await;
    let bob = sdk::other(&volt, "bob", Transport::Websocket).await;
    let created = ok(
        &bob,
        "SaveDatabase",
        json!({"resource": {"name": "bobs-db"}, "create": true}),
    )
    .await;
    assert_eq!(
        created["resource"]["kind"],
        json!(["volt:database", "volt:sqlite-database"])
    );
    let db = id_of(&created);
    let rows = bob
        .sql_execute_json(json!({"database_id": db, "statement": "SELECT 1 AS one"}))
        .await
        .expect("a real database");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["one"], json!(1));
    let updated = ok(
        &bob,
        "SaveDatabase",
        json!({"resource": {"id": db, "name": "renamed", "kind": ["mine"]}}),
    )
    .await;
    assert_eq!(updated["resource"]["name"], json!("renamed"));
    assert_eq!(
        updated["resource"]["kind"],
        json!(["mine", "volt:database", "volt:sqlite-database"])
    );

    // Bob may not change the owner's database nor create in the owner's folders.
    let owners = ok(
        &owner,
        "SaveDatabase",
        json!({"resource": {"name": "owners"}, "create": true}),
    )
    .await;
    let owners = id_of(&owners);
    refused(
        &bob,
        "SaveDatabase",
        json!({"resource": {"id": owners, "name": "bob was here"}}),
        DENIED,
    )
    .await;
    let folder = create(&owner, "", "folder", json!(["volt:folder"])).await;
    refused(
        &bob,
        "SaveDatabase",
        json!({"resource": {"name": "x"}, "create": true, "create_in_parent_id": folder}),
        DENIED,
    )
    .await;
    refused(
        &owner,
        "SaveDatabase",
        json!({"resource": {"id": folder, "name": "not a db"}}),
        INVALID,
    )
    .await;

    // SaveSyncDatabase, of SyncAPI: a database with the sync kind.
    let sync = owner
        .unary(
            "/tdx.volt_api.volt.v1.SyncAPI/SaveSyncDatabase",
            json!({"resource": {"name": "sync"}, "create": true}),
        )
        .await
        .expect("SaveSyncDatabase");
    assert!(sync["resource"]["kind"]
        .as_array()
        .expect("kinds")
        .contains(&json!("volt:sync-database")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_concurrent_saves_survives_a_restart() {
    const BURST: usize = 200;
    let mut volt = TestVolt::start("ops-burst").await;
    let owner = sdk::owner(&volt, Transport::Grpc).await;
    let folder = create(&owner, "", "burst", json!(["volt:folder"])).await;

    let creates: Vec<_> = (0..BURST)
        .map(|i| {
            let (owner, folder) = (owner.clone(), folder.clone());
            tokio::spawn(async move {
                create(&owner, &folder, &format!("r{i}"), json!(["volt:file"])).await
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(BURST);
    for task in creates {
        ids.push(task.await.expect("create task"));
    }
    // Then every one of them updated at once, the last change each sees.
    let updates: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let owner = owner.clone();
            let request = json!({"resource": {"id": id, "description": format!("updated {i}")}});
            tokio::spawn(async move { ok(&owner, "SaveResource", request).await })
        })
        .collect();
    for task in updates {
        task.await.expect("update task");
    }
    drop(owner);

    let emulator = volt.emulator.take().expect("running");
    emulator.shutdown().await;
    let restarted = tdx_volt_emulator::Emulator::builder(&volt.dir)
        .start()
        .await
        .expect("restarts on the same directory");
    volt.emulator = Some(restarted);
    let owner = sdk::owner(&volt, Transport::Grpc).await;

    let listed = ok(
        &owner,
        "GetResourceDescendants",
        json!({"resource_id": folder}),
    )
    .await;
    let listed = listed["descendant"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), BURST, "every created resource is back");
    for (i, id) in ids.iter().enumerate() {
        let got = ok(&owner, "GetResource", json!({"resource_id": id})).await;
        assert_eq!(got["resource"]["name"], format!("r{i}"));
        assert_eq!(got["resource"]["description"], format!("updated {i}"));
        assert_eq!(parent_of(&owner, id).await, folder);
    }
}
