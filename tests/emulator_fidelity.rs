//! volt-emulator behaves as a real Volt does where applications notice, seen through our
//! client on every transport: `@alias` ids, the vendor's resource kinds, millisecond times.

mod support;

use base64::Engine as _;
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tdx_volt::client::CallEvent;
use tdx_volt::{Transport, VoltClient};

use support::{publish, subscribed, within, TestVolt};

fn id_of(saved: &Value) -> String {
    saved["resource"]["id"].as_str().expect("id").to_owned()
}

/// Every id field takes an `@alias`: reading, querying, publishing, file content; an alias
/// names one resource only.
async fn aliases(client: &VoltClient, tag: &str) {
    let db = client
        .save_resource(
            json!({"resource": {"name": "db", "alias": [format!("db-{tag}")],
                                           "kind": ["volt:database", "volt:sqlite-database"]},
                              "create": true}),
        )
        .await
        .expect("SaveResource");
    let by_alias = client
        .get_resource(json!({"resource_id": format!("@db-{tag}")}))
        .await
        .expect("GetResource by alias");
    assert_eq!(by_alias["resource"]["id"], json!(id_of(&db)));
    let rows = client
        .sql_execute_json(
            json!({"database_id": format!("@db-{tag}"), "statement": "SELECT 7 AS n"}),
        )
        .await
        .expect("a query by alias");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["n"], json!(7));

    let wire = client
        .save_wire(
            json!({"resource": {"name": "w", "alias": [format!("wire-{tag}")]},
                          "create": true}),
        )
        .await
        .expect("SaveWire");
    // Subscribed by id, published to by alias: one wire.
    let mut chunks = subscribed(client, &id_of(&wire)).await;
    publish(client, &format!("@wire-{tag}"), b"by alias").await;
    let chunk = within("the chunk published by alias", chunks.next()).await;
    assert_eq!(chunk.expect("open").expect("chunk"), b"by alias");

    let file = client
        .save_resource(
            json!({"resource": {"name": "f", "alias": [format!("file-{tag}")],
                                           "kind": ["volt:file"]}, "create": true}),
        )
        .await
        .expect("SaveResource");
    client
        .set_file_content(json!({"resource_id": format!("@file-{tag}"), "content": "aGk="}))
        .await
        .expect("SetFileContent by alias");
    let content = client
        .get_file_content(json!({"resource_id": id_of(&file)}))
        .await
        .expect("GetFileContent");
    assert_eq!(content["content"], json!("aGk="));

    let taken = client
        .save_resource(
            json!({"resource": {"name": "again", "alias": [format!("db-{tag}")]},
                              "create": true}),
        )
        .await
        .expect_err("an alias already in use");
    assert!(taken.is_status(), "{taken:?}");
    assert_eq!(taken.status().map(|s| s.code), Some(6), "{taken:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_resolve_in_every_id_field_on_every_transport() {
    let volt = TestVolt::start("fidelity-alias").await;
    for transport in [Transport::Websocket, Transport::Grpc] {
        let client = volt.client_over(transport).await;
        aliases(&client, &format!("{transport:?}").to_lowercase()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_are_milliseconds_and_kinds_the_vendors() {
    let volt = TestVolt::start("fidelity-kinds").await;
    let client = volt.client().await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let created = client
        .create_database(json!({"name": "kinds"}))
        .await
        .expect("CreateDatabase");
    let kinds = &created["resource"]["kind"];
    assert_eq!(kinds, &json!(["volt:database", "volt:sqlite-database"]));
    // uint64 is a string in proto3 JSON.
    let at: u64 = created["resource"]["created"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("created");
    assert!(
        at + 1000 >= before,
        "created {at} is not in milliseconds (now {before})"
    );
    let wire = client
        .save_wire(json!({"resource": {"name": "w"}, "create": true}))
        .await
        .expect("SaveWire");
    assert_eq!(wire["resource"]["kind"], json!(["volt:wire"]));
}

/// GetResources: wildcards in names and kinds, terms combined with AND unless
/// `combine_terms_exclusive`, attribute queries all (or any, with `any_of`) matching.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_resources_follows_the_apis_rules() {
    let volt = TestVolt::start("fidelity-query").await;
    let client = volt.client_over(Transport::Grpc).await;
    let save = |name: &str, kind: &str, colour: &str| {
        json!({"resource": {"name": name, "kind": [kind],
                            "attribute": [{"attribute_id": "colour",
                                           "value": [{"string": colour}]}]},
               "create": true})
    };
    for (name, kind, colour) in [
        ("report-2025.csv", "volt:file", "red"),
        ("report-2026.csv", "volt:file", "blue"),
        ("notes.txt", "volt:file", "red"),
        ("report-wire", "volt:wire", "blue"),
    ] {
        client
            .save_resource(save(name, kind, colour))
            .await
            .expect("SaveResource");
    }
    let names = |response: Value| -> Vec<String> {
        let mut names: Vec<String> = response["resource"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|r| r["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let query = |q: Value| client.get_resources(q);

    let reports = query(json!({"name": ["report-*.csv"]}))
        .await
        .expect("query");
    assert_eq!(names(reports), ["report-2025.csv", "report-2026.csv"]);
    // Terms combine with AND by default...
    let both = query(json!({"name": ["report*"], "kind": ["volt:w?re"]}))
        .await
        .expect("query");
    assert_eq!(names(both), ["report-wire"]);
    // ... and with OR when asked.
    let either = query(json!({"name": ["notes.txt"], "kind": ["*:wire"],
                              "combine_terms_exclusive": true}))
    .await
    .expect("query");
    assert_eq!(names(either), ["notes.txt", "report-wire"]);
    // Attribute queries: every one must match, or any with any_of.
    let red = json!({"attribute_id": "colour", "value": {"string": "red"}});
    let blue = json!({"attribute_id": "colour", "value": {"string": "blue"}});
    let all = query(json!({"kind": ["volt:file"], "attribute": [red, blue]}))
        .await
        .expect("query");
    assert_eq!(names(all), Vec::<String>::new());
    let any = query(json!({"kind": ["volt:file"], "attribute": [red, blue], "any_of": true}))
        .await
        .expect("query");
    assert_eq!(
        names(any),
        ["notes.txt", "report-2025.csv", "report-2026.csv"]
    );
}

/// File content up to the API's 64 MiB works on both transports; a larger one fails its own
/// call only, and the connection carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_content_of_64_mib_on_both_transports() {
    const LIMIT: usize = 64 * 1024 * 1024;
    let volt = TestVolt::start("fidelity-64mib").await;
    let content: Vec<u8> = (0..LIMIT).map(|i| (i % 251) as u8).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&content);
    for transport in [Transport::Websocket, Transport::Grpc] {
        let client = volt.client_over(transport).await;
        let file = client
            .save_resource(
                json!({"resource": {"name": "big.bin", "kind": ["volt:file"]},
                                  "create": true}),
            )
            .await
            .expect("SaveResource");
        let id = id_of(&file);
        client
            .set_file_content(json!({"resource_id": id, "content": encoded}))
            .await
            .unwrap_or_else(|e| panic!("{transport:?}: 64 MiB of content: {e}"));
        let read = client
            .get_file_content(json!({"resource_id": id}))
            .await
            .unwrap_or_else(|e| panic!("{transport:?}: reading 64 MiB back: {e}"));
        assert!(
            read["content"] == json!(encoded),
            "{transport:?}: content differs"
        );

        let mut over = content.clone();
        over.push(0);
        let refused = client
            .set_file_content(json!({"resource_id": id, "content":
                base64::engine::general_purpose::STANDARD.encode(&over)}))
            .await
            .expect_err("over 64 MiB");
        assert!(refused.is_status(), "{transport:?}: {refused:?}");
        client
            .get_resource(json!({"resource_id": client.volt_id()}))
            .await
            .unwrap_or_else(|e| panic!("{transport:?}: the connection after a refusal: {e}"));
    }
}

/// An open transaction whose client goes silent is rolled back after the Volt's idle timeout,
/// and the call ends with DEADLINE_EXCEEDED, instead of holding the database's write lock for
/// as long as the client likes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_transaction_is_rolled_back() {
    let volt = TestVolt::start_with("fidelity-idle", |b| {
        b.execute_idle_timeout(std::time::Duration::from_millis(300))
    })
    .await;
    for transport in [Transport::Websocket, Transport::Grpc] {
        let client = volt.client_over(transport).await;
        let created = client
            .create_database(json!({"name": "idle"}))
            .await
            .expect("CreateDatabase");
        let db = id_of(&created);
        client
            .bulk_update(json!({"database_id": db, "statement": ["CREATE TABLE t (x)"]}))
            .await
            .expect("BulkUpdate");
        let mut call = client
            .sql_execute(json!({"start": {"database_id": db, "transaction": true,
                                          "statement": "INSERT INTO t VALUES (1)"}}))
            .await
            .expect("Execute opens");
        // The insert's result comes; then the client says nothing more.
        let mut deadline = None;
        while let Some(event) = within("the idle transaction's end", call.next()).await {
            match event {
                CallEvent::Error(e) | CallEvent::Failed(e) => {
                    deadline = e.status().map(|s| s.code);
                }
                CallEvent::Data(_) => {}
                CallEvent::End => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(deadline, Some(4), "{transport:?}: DEADLINE_EXCEEDED");
        let rows = client
            .sql_execute_json(
                json!({"database_id": db, "statement": "SELECT count(*) AS n FROM t"}),
            )
            .await
            .expect("count");
        assert_eq!(rows[0]["n"], json!(0), "{transport:?}: rolled back");
    }
}
