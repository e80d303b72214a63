//! Access control on volt-emulator as our client sees it, on every transport: a second client
//! is denied the first client's home folder (an `is_status()` error carrying the Volt's code
//! and message) until the owner grants a request for it.

mod support;

use serde_json::{json, Value};
use tdx_volt::{Transport, VoltClient};

use support::{connect, home_of, within, TestVolt};

const PERMISSION_DENIED: i32 = 7;

/// `result` is a PERMISSION_DENIED status from the Volt naming `access`.
fn assert_denied(result: tdx_volt::Result<Value>, access: &str, what: &str) {
    let error = result.expect_err(what);
    assert!(error.is_status(), "{what}: {error:?}");
    let status = error.status().expect("a status");
    assert_eq!(status.code, PERMISSION_DENIED, "{what}: {status:?}");
    assert_eq!(error.reached_volt(), tdx_volt::Reached::Yes, "{what}");
    assert!(
        status.message.contains("permission denied") && status.message.contains(access),
        "{what}: {status:?}"
    );
}

async fn second_client(volt: &TestVolt, name: &str, transport: Transport) -> VoltClient {
    let config = volt
        .emulator()
        .issue_client(name, None)
        .expect("a second client");
    connect(config, transport).await.expect("bob connects")
}

/// Bob is refused Alice's home folder, asks for it, Alice (told over her Connect stream)
/// permits it, and Bob reads it; writing stays refused.
async fn denied_until_granted(volt: &TestVolt, transport: Transport, tag: &str) {
    let alice = volt.client_over(transport).await;
    let bob = second_client(volt, &format!("bob-{tag}"), transport).await;
    let home = home_of(&alice, tag).await;

    assert_denied(
        bob.get_resource(json!({"resource_id": home})).await,
        "volt:resource-read",
        "Bob reads Alice's home",
    );
    let listed = bob
        .get_resources(json!({"id": [home]}))
        .await
        .expect("GetResources");
    assert_eq!(listed["resource"], json!(null), "listings leave it out");
    let check = bob
        .can_access_resource(json!({"resource_id": home, "access": "volt:resource-read"}))
        .await
        .expect("CanAccessResource");
    assert_eq!(check["decision"], json!("POLICY_DECISION_DENY"));

    // Alice listens for requests on a Connect stream.
    let mut session = alice
        .connect(json!({"hello": {"subscribe_auth_requests": true, "ping_interval": 10000}}))
        .await
        .expect("Connect");
    let ack = within("the acknowledge", session.message()).await;
    assert!(ack.expect("ack").expect("open")["acknowledge"].is_object());

    let asked = bob
        .request_access(json!({"resource_id": home, "access": "volt:resource-read"}))
        .await
        .expect("RequestAccess");
    assert_eq!(
        asked["decision"],
        json!("POLICY_DECISION_PROMPT"),
        "{asked}"
    );
    let event = within("the auth request event", session.message())
        .await
        .expect("event")
        .expect("open");
    let context: Value = serde_json::from_str(
        event["evt"]["connect_auth_request"]["context"]
            .as_str()
            .expect("context"),
    )
    .expect("context JSON");
    let request_id = context["access_request"]["id"]
        .as_str()
        .expect("request id");

    // The request shows in GetAccess as pending, for Alice and for Bob.
    let pending = alice
        .get_access(json!({"resource_id": home, "decision": "POLICY_DECISION_PENDING"}))
        .await
        .expect("GetAccess");
    assert_eq!(pending["access"][0]["id"], json!(request_id), "{pending}");
    // Bob may not decide his own request.
    assert_denied(
        bob.set_access_request_decision(
            json!({"id": request_id, "decision": "POLICY_DECISION_PERMIT"}),
        )
        .await,
        "volt:set-access-request-decision",
        "Bob decides",
    );
    alice
        .set_access_request_decision(
            json!({"id": request_id, "decision": "POLICY_DECISION_PERMIT"}),
        )
        .await
        .expect("SetAccessRequestDecision");

    let read = bob
        .get_resource(json!({"resource_id": home}))
        .await
        .expect("granted");
    assert_eq!(read["resource"]["id"], json!(home));
    let again = bob
        .request_access(json!({"resource_id": home, "access": "volt:resource-read"}))
        .await
        .expect("RequestAccess");
    assert_eq!(again["decision"], json!("POLICY_DECISION_PERMIT"));
    assert_denied(
        bob.save_resource(json!({"resource": {"id": home, "description": "mine now"}}))
            .await,
        "volt:resource-write",
        "Bob writes Alice's home",
    );
    session.end().await.expect("goodbye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_until_granted_on_the_websocket_and_grpc() {
    let volt = TestVolt::start("access-grant").await;
    for transport in [Transport::Websocket, Transport::Grpc] {
        denied_until_granted(&volt, transport, &format!("{transport:?}").to_lowercase()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_until_granted_on_the_older_protocol() {
    let volt = TestVolt::start_with("access-grant-legacy", |b| b.legacy(true)).await;
    denied_until_granted(&volt, Transport::Websocket, "legacy").await;
}

/// Data calls check their own access: SQL reads and writes, wires, files; a rule saved by the
/// owner opens exactly what it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_checks_its_access() {
    let volt = TestVolt::start("access-calls").await;
    let alice = volt.client_over(Transport::Grpc).await;
    let bob = second_client(&volt, "bob", Transport::Grpc).await;

    let db = alice
        .create_database(json!({"name": "ledger"}))
        .await
        .expect("CreateDatabase");
    let db_id = db["resource"]["id"].as_str().expect("id").to_owned();
    alice
        .sql_execute_json(json!({"database_id": db_id,
            "statement": "CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1)"}))
        .await
        .expect("Alice writes");
    let select = json!({"database_id": db_id, "statement": "SELECT n FROM t"});
    let insert = json!({"database_id": db_id, "statement": "INSERT INTO t VALUES (2)"});
    let first = bob.sql_execute_json(select.clone()).await.map(Value::from);
    assert_denied(first, "volt:database-read", "Bob queries");

    // Bob's identity, as the Volt names him, from his own CanAccessResource answer.
    let me = bob
        .can_access_resource(json!({"resource_id": db_id}))
        .await
        .expect("CanAccessResource");
    let bob_did = me["identity_did"].as_str().expect("identity").to_owned();
    alice
        .save_access(
            json!({"access": {"resource_id": db_id, "identity_did": bob_did,
                                       "access": "volt:database-read"}}),
        )
        .await
        .expect("SaveAccess");
    let rows = bob.sql_execute_json(select).await.expect("Bob reads now");
    assert_eq!(rows.len(), 1);
    let write = bob.sql_execute_json(insert.clone()).await.map(Value::from);
    assert_denied(write, "volt:database-write", "Bob inserts with read access");
    let bulk = bob
        .bulk_update(json!({"database_id": db_id, "statement": ["DELETE FROM t"]}))
        .await;
    assert_denied(bulk, "volt:database-write", "Bob bulk-updates");
    assert_denied(
        bob.delete_resource(json!({"resource_id": db_id})).await,
        "volt:resource-delete",
        "Bob deletes",
    );
    assert_denied(
        bob.create_database(json!({"name": "squat", "create_in_parent_id": db_id}))
            .await,
        "volt:resource-create",
        "Bob creates inside",
    );

    let file = alice
        .save_resource(json!({"resource": {"name": "f", "kind": ["volt:file"]}, "create": true}))
        .await
        .expect("SaveResource");
    let file_id = file["resource"]["id"].as_str().expect("id");
    assert_denied(
        bob.get_file_content(json!({"resource_id": file_id})).await,
        "volt:resource-read",
        "Bob reads a file",
    );
    assert_denied(
        bob.set_file_content(json!({"resource_id": file_id, "content": "aGk="}))
            .await,
        "volt:resource-write",
        "Bob writes a file",
    );

    // Privileged calls are the Volt owner's.
    assert_denied(
        bob.get_policy(json!({})).await,
        "volt:api-call",
        "Bob reads the policy",
    );
    let policy = alice.get_policy(json!({})).await.expect("GetPolicy");
    assert!(policy["policy"].as_str().expect("text").contains(&bob_did));

    // Removing the rule closes the database again.
    let rules = alice
        .get_access(json!({"resource_id": db_id}))
        .await
        .expect("GetAccess");
    let rule_id = rules["access"][0]["id"].clone();
    alice
        .delete_access(json!({"id": rule_id}))
        .await
        .expect("DeleteAccess");
    let after = bob
        .sql_execute_json(json!({"database_id": db_id, "statement": "SELECT 1"}))
        .await
        .map(Value::from);
    assert_denied(
        after,
        "volt:database-read",
        "Bob queries after the rule is gone",
    );
}
