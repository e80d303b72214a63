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

/// What the pacing gateway saw of an upload.
#[derive(Debug, Default)]
struct Paced {
    /// Blocks received in all.
    blocks: usize,
    /// Blocks received while the gateway had asked the client to back off.
    while_backing_off: usize,
}

/// A gateway (protocol v1, plain websocket) that serves one UploadFile call as a Volt under
/// load would: it says `back_off` (with `ack: 0`) as soon as the upload starts, lifts it
/// after `pause`, then answers the end with the number of blocks it got.
async fn pacing_gateway(
    pause: std::time::Duration,
) -> (serde_json::Value, tokio::task::JoinHandle<Paced>) {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tdx_volt::protocol::body::Body;
    use tdx_volt::protocol::exchange::server_key_exchange;
    use tdx_volt::protocol::frame::{decode_client_frame, ClientFrame, FrameType};
    use tokio_tungstenite::tungstenite::Message;

    let volt = tdx_volt::PrivateKey::generate_ed25519();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let config = support::scripted::config_for(&format!("http://{address}"), &volt);
    let served = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
        let mut paced = Paced::default();
        let mut key = None;
        let resume = tokio::time::sleep(std::time::Duration::MAX);
        tokio::pin!(resume);
        let mut backing_off = false;
        loop {
            let reply = tokio::select! {
                () = &mut resume, if backing_off => {
                    backing_off = false;
                    json!({"back_off": false})
                }
                message = ws.next() => {
                    let Some(Ok(Message::Binary(bytes))) = message else {
                        return paced;
                    };
                    match decode_client_frame(&bytes).expect("a frame") {
                        ClientFrame::Hello(hello) => {
                            let claims: serde_json::Value =
                                serde_json::from_slice(&hello.claims).expect("claims");
                            let k = claims["k"].as_str().expect("k claim");
                            let (answer, call_key) =
                                server_key_exchange(hello.call_id, k, &volt).expect("exchange");
                            key = Some((hello.call_id, call_key));
                            let answer = answer.encode().expect("encode");
                            ws.send(Message::Binary(answer.into())).await.expect("send");
                            continue;
                        }
                        ClientFrame::Sealed(sealed) => {
                            let (_, call_key) = key.as_ref().expect("a call");
                            match call_key.open_body(&sealed).expect("a body") {
                                Body::Invoke { method_name, .. } => {
                                    assert!(method_name.ends_with("/UploadFile"), "{method_name}");
                                    backing_off = true;
                                    resume.as_mut().reset(tokio::time::Instant::now() + pause);
                                    json!({"ack": 0, "back_off": true})
                                }
                                Body::Payload { .. } => {
                                    paced.blocks += 1;
                                    if backing_off {
                                        paced.while_backing_off += 1;
                                    }
                                    continue;
                                }
                                Body::End { .. } => {
                                    let last = json!({"status": {"code": 0}, "ack": paced.blocks});
                                    let (id, call_key) = key.as_ref().expect("a call");
                                    for body in [
                                        Body::Payload { json_payload: last.to_string() },
                                        Body::End { error: None, error_code: 0 },
                                    ] {
                                        let frame = call_key
                                            .seal(FrameType::Payload, *id, Default::default(), &body.to_json())
                                            .encode()
                                            .expect("encode");
                                        ws.send(Message::Binary(frame.into())).await.expect("send");
                                    }
                                    continue;
                                }
                                _ => continue,
                            }
                        }
                    }
                }
            };
            let (id, call_key) = key.as_ref().expect("a call");
            let body = Body::Payload {
                json_payload: reply.to_string(),
            };
            let frame = call_key
                .seal(FrameType::Payload, *id, Default::default(), &body.to_json())
                .encode()
                .expect("encode");
            ws.send(Message::Binary(frame.into())).await.expect("send");
        }
    });
    (config, served)
}

/// The upload waits while the Volt says `back_off`. The client sends its first blocks without
/// waiting for an answer, so on a loaded machine some can be on their way before `back_off`
/// reaches it (16 of 20 were, once in CI); but once it has arrived the client sends nothing
/// until the pause ends, so some blocks always come after it. A client that ignored it would
/// send every block within the pause.
#[tokio::test(flavor = "multi_thread")]
async fn uploads_wait_while_the_volt_backs_off() {
    let (config, served) = pacing_gateway(std::time::Duration::from_secs(2)).await;
    let client = VoltClient::builder()
        .config(config)
        .transport(Transport::Websocket)
        .connect()
        .await
        .expect("connect");
    let content = vec![5u8; 20 * UPLOAD_BLOCK_BYTES];
    let sent = within(
        "upload",
        client.upload_file_from("file-id", content.as_slice(), |_| {}),
    )
    .await
    .expect("upload");
    assert_eq!(sent.blocks, 20);
    drop(client);
    let paced = within("the gateway", served).await.expect("gateway task");
    assert_eq!(paced.blocks, 20);
    assert!(
        paced.while_backing_off < paced.blocks,
        "every block was sent while the Volt said back_off: {paced:?}"
    );
}
