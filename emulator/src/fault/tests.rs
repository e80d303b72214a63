//! The fault proxy in front of an echo server: bytes flow, each fault, and the controls taking
//! effect on live connections.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{route_config_through, FaultProxy};

const WAIT: Duration = Duration::from_secs(10);

/// An echo server; reports on `closed` each connection that has ended (after echoing all).
async fn echo() -> (SocketAddr, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = closed_tx.send(()).await;
            });
        }
    });
    (addr, closed)
}

async fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .expect("the bytes arrived in time")
        .expect("read");
    buf
}

/// Whether the peer closed: the next read ends (0 bytes) or fails, in time.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(WAIT, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

async fn round_trip(stream: &mut TcpStream, text: &[u8]) {
    stream.write_all(text).await.unwrap();
    assert_eq!(read_exactly(stream, text.len()).await, text);
}

#[tokio::test]
async fn bytes_flow_both_ways_and_a_half_close_is_passed_on() {
    let (upstream, mut upstream_closed) = echo().await;
    let proxy = FaultProxy::start(upstream).await.unwrap();
    assert!(proxy.addr().ip().is_loopback());
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut client, b"hello through the proxy").await;
    assert_eq!(proxy.connections(), 1);
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    let (mut read, mut write) = client.into_split();
    let sent = big.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.unwrap();
        write.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, read.read_to_end(&mut back))
        .await
        .expect("the echo ended in time")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(back, big);
    upstream_closed.recv().await.unwrap();
    tokio::time::timeout(WAIT, proxy.wait_for_connections(0))
        .await
        .expect("the connection ended");
}

#[tokio::test]
async fn a_pause_holds_the_bytes_and_resume_delivers_them() {
    let (upstream, _closed) = echo().await;
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut client, b"before").await;

    proxy.pause();
    client.write_all(b"held").await.unwrap();
    let mut buf = [0u8; 4];
    // Nothing comes back while paused (and the connection stays open).
    let waited = tokio::time::timeout(Duration::from_millis(300), client.read(&mut buf)).await;
    assert!(waited.is_err(), "nothing while paused: {waited:?}");
    assert_eq!(proxy.connections(), 1);

    proxy.resume();
    assert_eq!(read_exactly(&mut client, 4).await, b"held");
}

#[tokio::test]
async fn cut_all_closes_both_sides_and_new_connections_still_work() {
    let (upstream, mut upstream_closed) = echo().await;
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let mut first = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut second = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut first, b"one").await;
    round_trip(&mut second, b"two").await;
    // Even a paused connection is cut.
    proxy.pause();

    proxy.cut_all();
    assert!(closed(&mut first).await);
    assert!(closed(&mut second).await);
    for _ in 0..2 {
        tokio::time::timeout(WAIT, upstream_closed.recv())
            .await
            .expect("the upstream side closed too");
    }
    tokio::time::timeout(WAIT, proxy.wait_for_connections(0))
        .await
        .expect("no connection left");

    proxy.resume();
    let mut third = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut third, b"three").await;
}

#[tokio::test]
async fn refused_connections_are_closed_without_reaching_the_upstream() {
    let (upstream, _closed) = echo().await;
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let mut live = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut live, b"live").await;

    proxy.refuse_new(true);
    let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(closed(&mut refused).await);
    // The live connection is left alone.
    round_trip(&mut live, b"still").await;
    assert_eq!(proxy.connections(), 1);

    proxy.refuse_new(false);
    let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut again, b"again").await;
}

#[tokio::test]
async fn latency_and_throttle_slow_a_live_connection() {
    let (upstream, _closed) = echo().await;
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut client, b"fast").await;

    // Lower bounds only: each direction adds the latency once.
    proxy.set_latency(Duration::from_millis(150));
    let started = Instant::now();
    round_trip(&mut client, b"slow").await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );

    proxy.set_latency(Duration::ZERO);
    proxy.set_throttle(Some(20_000));
    let started = Instant::now();
    round_trip(&mut client, &[7u8; 10_000]).await;
    // 10,000 bytes at 20,000 bytes a second take half a second in each direction.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_configuration_is_routed_through_the_proxies() {
    let config = json!({
        "client_name": "test",
        "volt": {"id": "did:volt:x", "address": "127.0.0.1:1000",
                 "http_address": "https://127.0.0.1:2000", "ca_pem": "CA"},
        "credential": {"client_id": "c"}
    });
    let grpc: SocketAddr = "127.0.0.1:3000".parse().unwrap();
    let gateway: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let routed = route_config_through(&config, Some(grpc), Some(gateway)).unwrap();
    assert_eq!(routed["volt"]["address"], json!("127.0.0.1:3000"));
    assert_eq!(
        routed["volt"]["http_address"],
        json!("https://127.0.0.1:4000")
    );
    assert_eq!(routed["volt"]["ca_pem"], json!("CA"));
    assert_eq!(routed["credential"], config["credential"]);
    let only_grpc = route_config_through(&config, Some(grpc), None).unwrap();
    assert_eq!(
        only_grpc["volt"]["http_address"],
        config["volt"]["http_address"]
    );
    assert!(route_config_through(&json!({}), Some(grpc), None).is_err());
}
