//! GetSessions, SaveSession, GetIdentities, GetIdentity and SaveIdentity through the SDK's
//! client: the Volt owner sees and changes every one, another client only its own.

#[path = "support/sdk.rs"]
mod sdk;
mod support;

use sdk::{ok, refused};
use serde_json::{json, Value};
use support::TestVolt;
use tdx_volt::Transport;

const NOT_FOUND: i32 = 5;
const DENIED: i32 = 7;
const FAILED_PRECONDITION: i32 = 9;

fn ids(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i[field].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_the_clients_own_and_the_owner_sees_all() {
    let volt = TestVolt::start("sessions").await;
    let owner = sdk::owner(&volt, Transport::Grpc).await;
    let bob_config = volt.emulator().issue_client("bob", None).expect("bob");
    let bob_session = bob_config["credential"]["session_id"]
        .as_str()
        .expect("session")
        .to_owned();
    let bob = sdk::client(bob_config, Transport::Websocket).await;
    let owner_session = volt.session().expect("owner session");

    let all = ok(&owner, "GetSessions", json!({})).await;
    let seen = ids(&all["session"], "id");
    assert!(
        seen.contains(&owner_session) && seen.contains(&bob_session),
        "{seen:?}"
    );
    let own = ok(&bob, "GetSessions", json!({})).await;
    assert_eq!(ids(&own["session"], "id"), vec![bob_session.clone()]);
    assert_eq!(own["session"][0]["identity_name"], json!("bob"));
    assert_eq!(own["session"][0]["status"], json!("SESSION_STATUS_LIVE"));

    // Bob revokes his own session; the owner's is not his to touch.
    let revoke = |id: &str| json!({"session": {"id": id, "status": "SESSION_STATUS_REVOKED"}});
    refused(&bob, "SaveSession", revoke(&owner_session), DENIED).await;
    let saved = ok(&bob, "SaveSession", revoke(&bob_session)).await;
    assert_eq!(saved["session"]["status"], json!("SESSION_STATUS_REVOKED"));
    let revoked = ok(
        &owner,
        "GetSessions",
        json!({"status": "SESSION_STATUS_REVOKED"}),
    )
    .await;
    assert_eq!(ids(&revoked["session"], "id"), vec![bob_session.clone()]);
    // The owner may change any session.
    let live = json!({"session": {"id": bob_session, "status": "SESSION_STATUS_LIVE"}});
    ok(&owner, "SaveSession", live).await;
    refused(&owner, "SaveSession", revoke("no-such-session"), NOT_FOUND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_are_read_and_renamed_by_themselves_and_the_owner() {
    let volt = TestVolt::start("identities").await;
    let owner = sdk::owner(&volt, Transport::Grpc).await;
    let bob_config = volt.emulator().issue_client("bob", None).expect("bob");
    let bob_id = bob_config["credential"]["client_id"]
        .as_str()
        .expect("client id")
        .to_owned();
    let bob = sdk::client(bob_config, Transport::Grpc).await;
    let carol = volt.emulator().issue_client("carol", None).expect("carol");
    let carol_id = carol["credential"]["client_id"]
        .as_str()
        .expect("id")
        .to_owned();

    let everyone = ok(&owner, "GetIdentities", json!({})).await;
    let resources: Vec<Value> = everyone["identity"]
        .as_array()
        .expect("identities")
        .iter()
        .map(|i| i["resource"].clone())
        .collect();
    let seen = ids(&Value::Array(resources), "id");
    assert!(
        seen.contains(&bob_id) && seen.contains(&carol_id),
        "{seen:?}"
    );
    let by_name = ok(&owner, "GetIdentities", json!({"name": "car*"})).await;
    assert_eq!(by_name["identity"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        by_name["identity"][0]["resource"]["kind"],
        json!(["volt:identity"])
    );

    // Bob sees himself only, and carol not even by id.
    let own = ok(&bob, "GetIdentities", json!({})).await;
    assert_eq!(own["identity"].as_array().map(Vec::len), Some(1));
    assert_eq!(own["identity"][0]["resource"]["id"], json!(bob_id));
    let fingerprint = own["identity"][0]["alias"][0]["alias"]
        .as_str()
        .expect("fingerprint alias")
        .to_owned();
    let found = ok(&bob, "GetIdentity", json!({"fingerprint": fingerprint})).await;
    assert_eq!(found["identity"]["resource"]["id"], json!(bob_id));
    refused(
        &bob,
        "GetIdentity",
        json!({"identity_did": carol_id}),
        NOT_FOUND,
    )
    .await;
    ok(&owner, "GetIdentity", json!({"identity_did": carol_id})).await;

    // Renaming: bob his own; the owner anyone's; keys are not changed here.
    let rename = |id: &str, name: &str| json!({"identity": {"resource": {"id": id, "name": name}}});
    let saved = ok(&bob, "SaveIdentity", rename(&bob_id, "Robert")).await;
    assert_eq!(saved["identity"]["resource"]["name"], json!("Robert"));
    refused(&bob, "SaveIdentity", rename(&carol_id, "x"), NOT_FOUND).await;
    ok(&owner, "SaveIdentity", rename(&carol_id, "Caroline")).await;
    let carol_now = ok(&owner, "GetIdentity", json!({"identity_did": carol_id})).await;
    assert_eq!(carol_now["identity"]["resource"]["name"], json!("Caroline"));
    refused(
        &bob,
        "SaveIdentity",
        json!({"identity": {"resource": {"id": bob_id}}, "purge_aliases": true}),
        FAILED_PRECONDITION,
    )
    .await;

    // A client that can read carol (a share of her home folder) still may not rename her.
    let homes = ok(
        &owner,
        "GetResources",
        json!({"owner": [carol_id], "kind": ["home"]}),
    )
    .await;
    let carol_home = homes["resource"][0]["id"]
        .as_str()
        .expect("home")
        .to_owned();
    ok(
        &owner,
        "SaveAccess",
        json!({"access": {"resource_id": carol_home, "identity_did": bob_id,
                           "access": "volt:resource-read", "decision": "POLICY_DECISION_PERMIT"}}),
    )
    .await;
    ok(&bob, "GetIdentity", json!({"identity_did": carol_id})).await;
    refused(&bob, "SaveIdentity", rename(&carol_id, "x"), DENIED).await;
}
