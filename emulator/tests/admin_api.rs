//! The Volt's own methods through the SDK's client: GetParameters, SaveParameters,
//! CheckCompatibility, SignVerify, GetOneTimeToken and Shutdown (in process, and the
//! `volt-emulator serve` process exiting 0), each refused to a client that is not the owner
//! where the API makes it privileged.

#[path = "support/sdk.rs"]
mod sdk;
mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use base64::Engine as _;
use sdk::{ok, refused};
use serde_json::{json, Value};
use support::{TestVolt, WAIT};
use tdx_volt::Transport;

const DENIED: i32 = 7;
const INVALID: i32 = 3;
const FAILED_PRECONDITION: i32 = 9;
const NOT_FOUND: i32 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_are_the_owners_to_read_and_rename() {
    let volt = TestVolt::start("admin-params").await;
    let owner = sdk::owner(&volt, Transport::Grpc).await;
    let bob = sdk::other(&volt, "bob", Transport::Grpc).await;

    let got = ok(&owner, "GetParameters", json!({})).await;
    let params = &got["parameters"];
    assert_eq!(params["id"], json!(volt.volt_id()));
    assert_eq!(params["ca_pem"], json!(volt.emulator().ca_pem()));
    assert_eq!(params["address"], json!(volt.emulator().address()));
    assert_eq!(params["version"]["version_minor"], json!(20));
    refused(&bob, "GetParameters", json!({}), DENIED).await;

    // The name and description change, and stay in volt.json.
    let mut edited = params.clone();
    edited["name"] = json!("renamed volt");
    edited["description"] = json!("for tests");
    let saved = ok(&owner, "SaveParameters", json!({"parameters": edited})).await;
    assert_eq!(saved["parameters"]["name"], json!("renamed volt"));
    let again = ok(&owner, "GetParameters", json!({})).await;
    assert_eq!(again["parameters"]["description"], json!("for tests"));
    let root = ok(
        &owner,
        "GetResource",
        json!({"resource_id": volt.volt_id()}),
    )
    .await;
    assert_eq!(root["resource"]["name"], json!("renamed volt"));
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(volt.dir.join("volt.json")).expect("volt.json"),
    )
    .expect("JSON");
    assert_eq!(file["display_name"], json!("renamed volt"));
    assert_eq!(file["id"], json!(volt.volt_id()));

    // What the emulator cannot honour is refused, and changes nothing.
    let mut port = params.clone();
    port["grpc_port"] = json!(1);
    port["name"] = json!("not applied");
    let message = refused(
        &owner,
        "SaveParameters",
        json!({"parameters": port}),
        FAILED_PRECONDITION,
    )
    .await;
    assert!(message.contains("grpc_port"), "{message}");
    refused(
        &owner,
        "SaveParameters",
        json!({"parameters": {"name": "x"}, "key_passphrase": "secret"}),
        FAILED_PRECONDITION,
    )
    .await;
    refused(
        &owner,
        "SaveParameters",
        json!({"parameters": {"id": "did:volt:other", "name": "x"}}),
        INVALID,
    )
    .await;
    let unchanged = ok(&owner, "GetParameters", json!({})).await;
    assert_eq!(unchanged["parameters"]["name"], json!("renamed volt"));
    refused(
        &bob,
        "SaveParameters",
        json!({"parameters": {"name": "bob's"}}),
        DENIED,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compatibility_is_answered_with_the_volts_version() {
    let volt = TestVolt::start("admin-compat").await;
    let bob = sdk::other(&volt, "bob", Transport::Websocket).await;
    let version = |major: u32, minor: u32| json!({"version": {"version_major": major, "version_minor": minor, "version_patch": 1}});
    let same = ok(&bob, "CheckCompatibility", version(0, 20)).await;
    assert_eq!(
        same["version"],
        json!({"version_minor": 20, "version_patch": 34}),
        "0.20.34, the major 0 left out as proto3 JSON does"
    );
    let message = refused(
        &bob,
        "CheckCompatibility",
        version(0, 19),
        FAILED_PRECONDITION,
    )
    .await;
    assert!(message.contains("0.20.34"), "{message}");
    refused(
        &bob,
        "CheckCompatibility",
        version(1, 20),
        FAILED_PRECONDITION,
    )
    .await;
    refused(&bob, "CheckCompatibility", json!({}), INVALID).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_volt_key_signs_for_the_owner_and_verifies_for_anyone() {
    let volt = TestVolt::start("admin-sign").await;
    let owner = sdk::owner(&volt, Transport::Grpc).await;
    let bob = sdk::other(&volt, "bob", Transport::Grpc).await;
    let b64 = base64::engine::general_purpose::STANDARD;

    let signed = ok(
        &owner,
        "SignVerify",
        json!({"message": "hello", "encode": true}),
    )
    .await;
    let encoded = signed["digest_encoded"].as_str().expect("base64 signature");
    let signature = b64.decode(encoded).expect("base64");
    let volt_key = volt.config.volt_public_key().expect("volt key");
    volt_key
        .verify(b"hello", &signature)
        .expect("signed with the Volt key");
    let raw = ok(&owner, "SignVerify", json!({"message": "hello"})).await;
    assert_eq!(
        raw["digest"],
        json!(encoded),
        "raw bytes are base64 in JSON"
    );

    // Anyone verifies; a wrong message or signature does not hold.
    ok(
        &bob,
        "SignVerify",
        json!({"verify": true, "message": "hello", "digest_encoded": encoded}),
    )
    .await;
    refused(
        &bob,
        "SignVerify",
        json!({"verify": true, "message": "hullo", "digest_encoded": encoded}),
        INVALID,
    )
    .await;
    // Signing with the Volt key is the owner's; no client's key is held.
    refused(&bob, "SignVerify", json!({"message": "hello"}), DENIED).await;
    let carol = volt_issued_client_id(&volt, "carol");
    refused(
        &bob,
        "SignVerify",
        json!({"message": "m", "identity_did": carol}),
        DENIED,
    )
    .await;
    refused(
        &owner,
        "SignVerify",
        json!({"message": "m", "identity_did": carol}),
        FAILED_PRECONDITION,
    )
    .await;
    refused(
        &owner,
        "SignVerify",
        json!({"message": "m", "identity_did": "did:volt:nobody"}),
        NOT_FOUND,
    )
    .await;
}

/// Issues a client and answers its client id.
fn volt_issued_client_id(volt: &TestVolt, name: &str) -> String {
    let config = volt.emulator().issue_client(name, None).expect("issued");
    config["credential"]["client_id"]
        .as_str()
        .expect("client id")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_tokens_are_unique_and_bounded() {
    let volt = TestVolt::start("admin-token").await;
    let bob = sdk::other(&volt, "bob", Transport::Grpc).await;
    let a = ok(&bob, "GetOneTimeToken", json!({"context": "download"})).await;
    let b = ok(&bob, "GetOneTimeToken", json!({"ttl": 3600})).await;
    let (a, b) = (a["token"].as_str().unwrap(), b["token"].as_str().unwrap());
    assert!(a.len() >= 40, "{a}");
    assert_ne!(a, b);
    refused(&bob, "GetOneTimeToken", json!({"ttl": 3601}), INVALID).await;
    refused(&bob, "GetOneTimeToken", json!({"ttl": -1}), INVALID).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_the_owners_and_stops_the_emulator() {
    let volt = TestVolt::start("admin-shutdown").await;
    let owner = sdk::owner(&volt, Transport::Grpc).await;
    let bob = sdk::other(&volt, "bob", Transport::Websocket).await;
    refused(&bob, "Shutdown", json!({}), DENIED).await;
    ok(&bob, "GetResource", json!({"resource_id": volt.volt_id()})).await;

    ok(&owner, "Shutdown", json!({})).await;
    tokio::time::timeout(WAIT, volt.emulator().stopped())
        .await
        .expect("the emulator stops after Shutdown");
    // The listeners are closed: a new connection is refused.
    let address = volt.emulator().address().to_owned();
    let refused_connect = tokio::time::timeout(WAIT, async {
        loop {
            if tokio::net::TcpStream::connect(&address).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(refused_connect.is_ok(), "the gRPC listener still accepts");
    let after = bob
        .unary(
            &sdk::path("GetResource"),
            json!({"resource_id": volt.volt_id()}),
        )
        .await;
    assert!(after.is_err(), "{after:?}");
}

#[test]
fn shutdown_ends_the_serve_process_with_status_zero() {
    let dir = support::temp_dir("admin-serve");
    let mut child = Command::new(env!("CARGO_BIN_EXE_volt-emulator"))
        .args(["serve", "--dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("volt-emulator starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(WAIT).expect("ready line");
    let ready: Value = serde_json::from_str(line.trim()).expect("ready JSON");
    let config_path = ready["config"].as_str().expect("config path").to_owned();

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let text = std::fs::read_to_string(&config_path).expect("config");
        let owner = sdk::client(serde_json::from_str(&text).expect("JSON"), Transport::Grpc).await;
        ok(&owner, "Shutdown", json!({})).await;
    });
    // Wait for the exit on a thread, so that a process that stays fails the test.
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(WAIT) {
        Ok(status) => status.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("volt-emulator did not exit after Shutdown");
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "exit status {status:?}");
}
