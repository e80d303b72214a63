//! File content streamed both ways: `upload_file_from` an `AsyncRead` and `download_file_to`
//! an `AsyncWrite`, over each transport, at the sizes where blocks begin and end.

mod support;

use serde_json::json;
use support::{within, TestVolt};
use tdx_volt::client::UPLOAD_BLOCK_BYTES;
use tdx_volt::{Transport, VoltClient};

async fn new_file(client: &VoltClient, name: &str) -> String {
    let saved = client
        .save_resource(json!({"resource": {"name": name, "kind": ["file"]}, "create": true}))
        .await
        .expect("SaveResource");
    saved["resource"]["id"].as_str().expect("id").to_owned()
}

async fn round_trips(transport: Transport) {
    let volt = TestVolt::start("files").await;
    let client = volt.client_over(transport).await;
    let block = UPLOAD_BLOCK_BYTES;
    for size in [0, 1, block - 1, block, block + 1, 3 * block + 7] {
        let content: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let id = new_file(&client, &format!("f{size}.bin")).await;
        let mut reported = Vec::new();
        let sent = within(
            "upload",
            client.upload_file_from(&id, content.as_slice(), |n| reported.push(n)),
        )
        .await
        .expect("upload");
        assert_eq!(sent.bytes, size as u64);
        assert_eq!(sent.blocks, size.div_ceil(block) as u64, "size {size}");
        assert_eq!(reported.last().copied().unwrap_or(0), size as u64);
        assert!(reported.windows(2).all(|w| w[0] < w[1]));

        let mut back = Vec::new();
        let mut last = 0;
        let got = within(
            "download",
            client.download_file_to(&id, &mut back, |n| last = n),
        )
        .await
        .expect("download");
        assert_eq!(got.bytes, size as u64);
        assert_eq!(last, size as u64);
        assert!(
            back == content,
            "size {size}: the content came back different"
        );
    }
    // An unknown file is the Volt's NOT_FOUND both ways, and nothing is written.
    let err = client
        .upload_file_from("no-such-file", &b"x"[..], |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.code), Some(5), "{err:?}");
    let mut sink = Vec::new();
    let err = client
        .download_file_to("no-such-file", &mut sink, |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.code), Some(5), "{err:?}");
    assert!(sink.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn files_round_trip_over_grpc() {
    round_trips(Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn files_round_trip_over_the_gateway() {
    round_trips(Transport::Websocket).await;
}
