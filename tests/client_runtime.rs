//! The client never blocks the runtime it runs on: reading the configuration and decrypting
//! the key happen off the async threads, so other tasks keep running meanwhile, even on a
//! single-threaded runtime.

mod support;

use serde_json::json;
use tdx_volt::{PrivateKey, Transport, VoltClient};
use tokio::net::{TcpListener, TcpStream};

use support::{within, TestVolt};

/// The passphrase and PBKDF2 iterations of the encrypted key: a key saved by a careful tool.
const PASSPHRASE: &str = "a long passphrase";
const ITERATIONS: u32 = 600_000;

#[tokio::test(flavor = "current_thread")]
async fn other_tasks_run_while_an_encrypted_key_is_decrypted() {
    let volt = TestVolt::start("runtime-pbkdf2").await;
    let mut config = volt.config();
    let key = PrivateKey::from_pem(
        config["credential"]["key"]
            .as_str()
            .expect("credential key"),
        None,
    )
    .expect("key");
    config["credential"]["key"] = json!(key
        .to_encrypted_pkcs8_pem(PASSPHRASE, ITERATIONS)
        .expect("encrypts"));
    // The client dials a port of the test's, which then carries the connection to the Volt:
    // the moment it is dialled marks the end of the key's decryption.
    let volt_address = config["volt"]["address"]
        .as_str()
        .expect("gRPC address")
        .to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    config["volt"]["address"] = json!(listener.local_addr().expect("address").to_string());

    let connecting = tokio::spawn(
        VoltClient::builder()
            .config(config)
            .passphrase(PASSPHRASE)
            .transport(Transport::Grpc)
            .connect(),
    );
    // This task takes turns until the client dials. A client that decrypted on the runtime's
    // only thread would hold it for the whole derivation and dial before this task's second
    // turn; one that decrypts on the blocking pool leaves it turn after turn.
    let mut turns = 0u64;
    let dialled = within("the client dials", async {
        loop {
            tokio::select! {
                biased;
                accepted = listener.accept() => break accepted.expect("accept").0,
                () = tokio::task::yield_now() => turns += 1,
            }
        }
    })
    .await;
    assert!(
        turns >= 100,
        "only {turns} turns of another task while the key was decrypted"
    );

    // The connection goes on to the Volt, and the client works.
    tokio::spawn(async move {
        let mut dialled = dialled;
        if let Ok(mut upstream) = TcpStream::connect(&volt_address).await {
            let _ = tokio::io::copy_bidirectional(&mut dialled, &mut upstream).await;
        }
    });
    let client = within("connect", connecting)
        .await
        .expect("task")
        .expect("connects with the encrypted key");
    let volt_resource = within(
        "GetResource",
        client.get_resource(json!({"resource_id": client.volt_id()})),
    )
    .await
    .expect("GetResource");
    assert_eq!(volt_resource["resource"]["id"], json!(client.volt_id()));
}
