//! A connection that never becomes usable is dropped after the handshake timeout, in each of
//! its phases: TLS done but no websocket upgrade, TLS done but no HTTP/2 preface. The Volt
//! serves other connections meanwhile and after.

mod support;

use std::time::Duration;

use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

use support::{tls_connector, RawSocket, TestVolt, WAIT};

/// Completes TLS with the Volt, then says nothing: the Volt hangs up within the wait.
async fn silent_after_tls(address: &str, ca_pem: &str) {
    let tcp = TcpStream::connect(address).await.expect("connect");
    let mut tls = tls_connector(ca_pem)
        .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp)
        .await
        .expect("TLS");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, tls.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{address}: a silent connection was kept for {WAIT:?}"));
    assert!(matches!(read, Ok(0) | Err(_)), "{address}: {read:?}");
}

/// GetResource of the Volt root over a fresh websocket; its responses, none an error.
async fn get_root(volt: &TestVolt) -> Vec<serde_json::Value> {
    let emulator = volt.emulator();
    let mut socket = RawSocket::connect(emulator.http_address(), emulator.ca_pem()).await;
    let bodies = socket
        .unary(
            volt,
            1,
            "/tdx.volt_api.volt.v1.VoltAPI/GetResource",
            &json!({"resource_id": volt.volt_id()}),
        )
        .await;
    let (values, error) = support::payloads(&bodies);
    assert_eq!(error, None);
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_dropped_after_the_handshake_timeout() {
    let volt = TestVolt::start_with("handshake", |b| {
        b.handshake_timeout(Duration::from_millis(300))
    })
    .await;
    let emulator = volt.emulator();
    let gateway = emulator.http_address().trim_start_matches("https://");
    silent_after_tls(gateway, emulator.ca_pem()).await;
    silent_after_tls(emulator.address(), emulator.ca_pem()).await;

    // A connection that does its part is served.
    let values = get_root(&volt).await;
    assert_eq!(values[0]["resource"]["id"], json!(volt.volt_id()));
}

/// Each listener serves at most its connection cap at once: one more is closed as soon as it
/// is accepted, and once a connection ends a new one is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed() {
    let volt = TestVolt::start_with("conn-cap", |b| b.max_connections(2)).await;
    let emulator = volt.emulator();
    let first = RawSocket::connect(emulator.http_address(), emulator.ca_pem()).await;
    let _second = RawSocket::connect(emulator.http_address(), emulator.ca_pem()).await;

    let gateway = emulator.http_address().trim_start_matches("https://");
    let tcp = TcpStream::connect(gateway).await.expect("connect");
    let third = tokio::time::timeout(
        WAIT,
        tls_connector(emulator.ca_pem())
            .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp),
    )
    .await
    .expect("the third connection was answered");
    assert!(third.is_err(), "a third connection was served");

    // One ends; a new connection is served once the Volt has seen it go.
    drop(first);
    let served = tokio::time::timeout(WAIT, async {
        loop {
            let tcp = TcpStream::connect(gateway).await.expect("connect");
            let name = ServerName::try_from("127.0.0.1").expect("name");
            if tls_connector(emulator.ca_pem())
                .connect(name, tcp)
                .await
                .is_ok()
            {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        served.is_ok(),
        "no connection was served again after one ended"
    );
}

/// `GET /discover` on the gateway answers the Volt's discovery document, as the vendor's
/// helpers fetch it to resolve a configuration: the `volt` section of the configurations it
/// issues. The websocket upgrade on the same port is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_answers_discover() {
    use tokio::io::AsyncWriteExt as _;
    let volt = TestVolt::start("discover").await;
    let emulator = volt.emulator();
    let gateway = emulator.http_address().trim_start_matches("https://");
    let tcp = TcpStream::connect(gateway).await.expect("connect");
    let mut tls = tls_connector(emulator.ca_pem())
        .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp)
        .await
        .expect("TLS");
    tls.write_all(b"GET /discover HTTP/1.1\r\nHost: volt\r\nAccept: application/json\r\n\r\n")
        .await
        .expect("request");
    let mut response = Vec::new();
    let read = tokio::time::timeout(WAIT, tls.read_to_end(&mut response))
        .await
        .expect("the response within the wait");
    // A close without close_notify is fine: the whole response came first.
    let _ = read;
    let text = String::from_utf8(response).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/json"), "{head}");
    let document: serde_json::Value = serde_json::from_str(body).expect("JSON");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(emulator.config_path()).expect("config"))
            .expect("config JSON");
    assert_eq!(document, config["volt"]);
    assert_eq!(document["id"], json!(volt.volt_id()));

    // The upgrade still works beside it.
    get_root(&volt).await;
}
