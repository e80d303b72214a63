//! The gRPC server against a tonic client over TLS: volt-token checks, unimplemented methods,
//! unary answers before the client half-closes, Authenticate and mutual TLS.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::uri::PathAndQuery;
use prost::Message as _;
use support::TestVolt;
use tdx_volt::proto::volt as pb;
use tdx_volt::protocol::token::{unix_now, Claims, IdentityToken};
use tdx_volt::PrivateKey;
use tdx_volt_emulator::transport::grpc::PassThrough;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const GET_RESOURCE: &str = "/tdx.volt_api.volt.v1.VoltAPI/GetResource";
const AUTHENTICATE: &str = "/tdx.volt_api.volt.v1.VoltAPI/Authenticate";

async fn channel(
    volt: &TestVolt,
    ca_pem: &str,
    identity: Option<Identity>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    Channel::from_shared(format!("https://{}", volt.emulator().address()))
        .expect("uri")
        .tls_config(tls)?
        .connect()
        .await
}

fn token(volt: &TestVolt, claims: Claims) -> String {
    IdentityToken::sign(&volt.key, &claims).unwrap().to_jwt()
}

/// A sessionless token signed by `key`, as a client sends with Authenticate.
fn proof(volt: &TestVolt, key: &PrivateKey) -> String {
    IdentityToken::sign(key, &Claims::new(volt.volt_id(), unix_now()))
        .unwrap()
        .to_jwt()
}

fn good_token(volt: &TestVolt) -> String {
    token(
        volt,
        Claims::new(volt.volt_id(), unix_now()).with_subject(volt.session()),
    )
}

async fn unary<M: prost::Message + Default>(
    channel: &Channel,
    path: &'static str,
    request: &impl prost::Message,
    token: Option<&str>,
) -> Result<M, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(Bytes::from(request.encode_to_vec()));
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("volt-token", token.parse().expect("ascii token"));
    }
    let response = grpc
        .unary(request, PathAndQuery::from_static(path), PassThrough)
        .await?;
    Ok(M::decode(response.into_inner()).expect("response decodes"))
}

fn get_root(volt: &TestVolt) -> pb::GetResourceRequest {
    pb::GetResourceRequest {
        resource_id: volt.volt_id(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volt_token_is_required_and_checked() {
    let volt = TestVolt::start("grpc-token").await;
    let ch = channel(&volt, volt.emulator().ca_pem(), None)
        .await
        .unwrap();
    let response: pb::GetResourceResponse = unary(
        &ch,
        GET_RESOURCE,
        &get_root(&volt),
        Some(&good_token(&volt)),
    )
    .await
    .unwrap();
    assert_eq!(response.resource.unwrap().id, volt.volt_id());

    let err = unary::<pb::GetResourceResponse>(&ch, GET_RESOURCE, &get_root(&volt), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let wrong_aud = token(
        &volt,
        Claims::new("did:volt:other", unix_now()).with_subject(volt.session()),
    );
    let err =
        unary::<pb::GetResourceResponse>(&ch, GET_RESOURCE, &get_root(&volt), Some(&wrong_aud))
            .await
            .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(err.message().contains("audience"), "{}", err.message());

    let mut expired = Claims::new(volt.volt_id(), unix_now() - 7200).with_subject(volt.session());
    expired.exp = unix_now() - 3600;
    let err = unary::<pb::GetResourceResponse>(
        &ch,
        GET_RESOURCE,
        &get_root(&volt),
        Some(&token(&volt, expired)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let stranger = IdentityToken::sign(
        &PrivateKey::generate_ed25519(),
        &Claims::new(volt.volt_id(), unix_now()).with_subject(volt.session()),
    )
    .unwrap()
    .to_jwt();
    let err =
        unary::<pb::GetResourceResponse>(&ch, GET_RESOURCE, &get_root(&volt), Some(&stranger))
            .await
            .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // An application error is a response status, not a gRPC error.
    let missing = pb::GetResourceRequest {
        resource_id: "nope".into(),
        ..Default::default()
    };
    let response: pb::GetResourceResponse =
        unary(&ch, GET_RESOURCE, &missing, Some(&good_token(&volt)))
            .await
            .unwrap();
    assert_eq!(response.status.unwrap().code, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_unimplemented_methods_answer_promptly() {
    let volt = TestVolt::start("grpc-unimpl").await;
    let ch = channel(&volt, volt.emulator().ca_pem(), None)
        .await
        .unwrap();
    let err = unary::<pb::GetResourceResponse>(
        &ch,
        "/tdx.volt_api.volt.v1.VoltAPI/Nope",
        &get_root(&volt),
        Some(&good_token(&volt)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    let err = unary::<pb::SendEmailResponse>(
        &ch,
        "/tdx.volt_api.volt.v1.VoltAPI/SendEmail",
        &pb::SendEmailRequest::default(),
        Some(&good_token(&volt)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(err.message().contains("SendEmail"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_methods_answer_before_the_client_half_closes() {
    let volt = TestVolt::start("grpc-bidi").await;
    let ch = channel(&volt, volt.emulator().ca_pem(), None)
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(ch);
    // The request stream sends one message and then stays open, as the official JS client
    // does for every method: answered all the same.
    let (response, requests) = tokio::time::timeout(
        support::WAIT,
        get_root_then_half_close(&mut grpc, &volt, &good_token(&volt)),
    )
    .await
    .expect("answered without a half-close")
    .unwrap();
    assert_eq!(response.resource.unwrap().id, volt.volt_id());
    drop(requests);
}

/// One call as the official JS client makes it: the request, and the half-close only later
/// (when the returned sender is dropped), once the answer is in.
async fn get_root_then_half_close(
    grpc: &mut tonic::client::Grpc<Channel>,
    volt: &TestVolt,
    token: &str,
) -> Result<(pb::GetResourceResponse, tokio::sync::mpsc::Sender<Bytes>), tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tx.send(Bytes::from(get_root(volt).encode_to_vec()))
        .await
        .unwrap();
    let requests =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    let mut request = tonic::Request::new(requests);
    request
        .metadata_mut()
        .insert("volt-token", token.parse().unwrap());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut responses = grpc
        .streaming(
            request,
            PathAndQuery::from_static(GET_RESOURCE),
            PassThrough,
        )
        .await?
        .into_inner();
    let first = responses.message().await?.expect("a response");
    assert!(responses.message().await?.is_none(), "one response");
    Ok((pb::GetResourceResponse::decode(first).unwrap(), tx))
}

/// hyper closes a connection after 1,024 streams it had to reset itself, so a call answered
/// before the client half-closes must wait for the half-close, not reset the stream: the
/// client's request stream stays open (tonic drops it once the stream is reset) until the
/// client ends it, and the next calls share the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_answered_before_the_half_close_waits_for_it_instead_of_resetting() {
    let volt = TestVolt::start("grpc-resets").await;
    let ch = channel(&volt, volt.emulator().ca_pem(), None)
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(ch);
    let token = good_token(&volt);
    let mut open = Vec::new();
    for _ in 0..3 {
        let (response, requests) = get_root_then_half_close(&mut grpc, &volt, &token)
            .await
            .unwrap();
        assert_eq!(response.resource.unwrap().id, volt.volt_id());
        open.push(requests);
    }
    // A reset arrives within milliseconds; none comes.
    for requests in &open {
        let reset = tokio::time::timeout(Duration::from_millis(500), requests.closed()).await;
        assert!(reset.is_err(), "the Volt reset a stream it had answered");
    }
    drop(open);
    let counts = volt.emulator().connections();
    assert_eq!(counts.grpc, 1, "one connection: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticate_then_mutual_tls_without_a_token() {
    let volt = TestVolt::start("grpc-auth").await;
    let ch = channel(&volt, volt.emulator().ca_pem(), None)
        .await
        .unwrap();
    let key = PrivateKey::generate_ed25519();
    let key_pem = key.public_key().to_spki_pem().unwrap();
    let request = pb::AuthenticateRequest {
        client_name: "auth-test".into(),
        host: "127.0.0.1".into(),
        client_identifier: Some(pb::authenticate_request::ClientIdentifier::DidPublicKey(
            key_pem,
        )),
        ..Default::default()
    };
    // Without a token, or with one signed by another key: refused.
    let err = unary::<pb::AuthenticateResponse>(&ch, AUTHENTICATE, &request, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let other = proof(&volt, &PrivateKey::generate_ed25519());
    let err = unary::<pb::AuthenticateResponse>(&ch, AUTHENTICATE, &request, Some(&other))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let response: pb::AuthenticateResponse =
        unary(&ch, AUTHENTICATE, &request, Some(&proof(&volt, &key)))
            .await
            .unwrap();
    assert_eq!(response.decision, pb::PolicyDecision::Permit as i32);
    assert!(response.identity_did.starts_with("did:volt:"));
    assert!(!response.session_id.is_empty());
    assert!(response.cert.contains("BEGIN CERTIFICATE"));
    assert_eq!(response.chain, volt.emulator().ca_pem());

    // The certificate alone (with its key) identifies the caller.
    let identity = Identity::from_pem(&response.cert, key.to_pkcs8_pem().unwrap().as_str());
    let mtls = channel(&volt, &response.chain, Some(identity))
        .await
        .unwrap();
    let answer: pb::GetResourceResponse = unary(&mtls, GET_RESOURCE, &get_root(&volt), None)
        .await
        .unwrap();
    assert_eq!(answer.resource.unwrap().id, volt.volt_id());

    // A token for the new session works too.
    let claims =
        Claims::new(volt.volt_id(), unix_now()).with_subject(Some(response.session_id.clone()));
    let jwt = IdentityToken::sign(&key, &claims).unwrap().to_jwt();
    let answer: pb::GetResourceResponse = unary(&ch, GET_RESOURCE, &get_root(&volt), Some(&jwt))
        .await
        .unwrap();
    assert!(answer.resource.is_some());

    // The known DID authenticates again.
    let again = pb::AuthenticateRequest {
        client_identifier: Some(pb::authenticate_request::ClientIdentifier::Did(
            response.identity_did.clone(),
        )),
        ..Default::default()
    };
    let second: pb::AuthenticateResponse =
        unary(&ch, AUTHENTICATE, &again, Some(&proof(&volt, &key)))
            .await
            .unwrap();
    assert_eq!(second.identity_did, response.identity_did);
    assert_ne!(second.session_id, response.session_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_did_documents_must_be_signed_by_their_key() {
    use base64::Engine as _;
    let volt = TestVolt::start("grpc-did").await;
    let ch = channel(&volt, volt.emulator().ca_pem(), None)
        .await
        .unwrap();
    let key = PrivateKey::generate_ed25519();
    let did = "did:volt:0123456789abcdef";
    let document = serde_json::to_string_pretty(&serde_json::json!({
        "id": did,
        "verificationMethod": [{"id": format!("{did}#key-1"), "publicKeyPem": key.public_key().to_spki_pem().unwrap()}],
    }))
    .unwrap();
    let sign = |k: &PrivateKey| {
        base64::engine::general_purpose::STANDARD.encode(k.sign(document.as_bytes()).unwrap())
    };
    let mut request = pb::AuthenticateRequest {
        client_identifier: Some(pb::authenticate_request::ClientIdentifier::DidDocument(
            document.clone(),
        )),
        did_document_signature: sign(&key),
        ..Default::default()
    };
    let response: pb::AuthenticateResponse =
        unary(&ch, AUTHENTICATE, &request, Some(&proof(&volt, &key)))
            .await
            .unwrap();
    assert_eq!(response.identity_did, did);
    request.did_document_signature = sign(&PrivateKey::generate_ed25519());
    let err =
        unary::<pb::AuthenticateResponse>(&ch, AUTHENTICATE, &request, Some(&proof(&volt, &key)))
            .await
            .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trusting_another_ca_fails_tls() {
    let volt = TestVolt::start("grpc-ca").await;
    let other = TestVolt::start("grpc-ca-other").await;
    let ch = channel(&volt, other.emulator().ca_pem(), None).await;
    let result = match ch {
        Err(e) => Err(e.to_string()),
        Ok(ch) => unary::<pb::GetResourceResponse>(
            &ch,
            GET_RESOURCE,
            &get_root(&volt),
            Some(&good_token(&volt)),
        )
        .await
        .map_err(|s| s.to_string()),
    };
    assert!(result.is_err(), "TLS with the wrong CA must fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_request_stream_fails_the_call_instead_of_ending_it() {
    let volt = TestVolt::start("grpc-broken").await;
    let ch = channel(&volt, volt.emulator().ca_pem(), None)
        .await
        .unwrap();
    let token = good_token(&volt);
    let save: pb::SaveResourceResponse = unary(
        &ch,
        "/tdx.volt_api.volt.v1.VoltAPI/SaveResource",
        &pb::SaveResourceRequest {
            resource: Some(pb::Resource {
                name: "upload.bin".into(),
                kind: vec!["file".into()],
                ..Default::default()
            }),
            create: true,
            ..Default::default()
        },
        Some(&token),
    )
    .await
    .unwrap();
    let id = save.resource.unwrap().id;
    // start, a small block, then a block above the 16 MiB message limit.
    let start = pb::UploadFileRequest {
        payload: Some(pb::upload_file_request::Payload::Start(
            pb::UploadFileStart {
                resource_id: id.clone(),
                ..Default::default()
            },
        )),
    };
    let small = pb::UploadFileRequest {
        payload: Some(pb::upload_file_request::Payload::Block(vec![1; 1000])),
    };
    let huge = pb::UploadFileRequest {
        // Over the emulator's gRPC message limit.
        payload: Some(pb::upload_file_request::Payload::Block(vec![
            2;
            tdx_volt_emulator::transport::grpc::MAX_MESSAGE_LEN
                + 1
        ])),
    };
    let messages: Vec<Bytes> = [
        start.encode_to_vec(),
        small.encode_to_vec(),
        huge.encode_to_vec(),
    ]
    .into_iter()
    .map(Bytes::from)
    .collect();
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(futures_util::stream::iter(messages));
    request
        .metadata_mut()
        .insert("volt-token", token.parse().unwrap());
    let result = grpc
        .streaming(
            request,
            PathAndQuery::from_static("/tdx.volt_api.volt.v1.FileAPI/UploadFile"),
            PassThrough,
        )
        .await;
    let outcome = match result {
        Err(status) => Err(status),
        Ok(response) => {
            let mut stream = response.into_inner();
            let mut last = Ok(());
            while let Some(item) = tokio::time::timeout(support::WAIT, stream.next())
                .await
                .unwrap()
            {
                if let Err(status) = item {
                    last = Err(status);
                }
            }
            last
        }
    };
    assert!(outcome.is_err(), "an oversize request must fail the upload");
    // Nothing was stored.
    let file: pb::GetFileContentResponse = unary(
        &ch,
        "/tdx.volt_api.volt.v1.FileAPI/GetFileContent",
        &pb::GetFileContentRequest {
            resource_id: id,
            ..Default::default()
        },
        Some(&token),
    )
    .await
    .unwrap();
    assert!(file.content.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_is_refused_by_token_and_certificate_and_its_connect_ends() {
    let volt = TestVolt::start("grpc-revoke").await;
    let ch = channel(&volt, volt.emulator().ca_pem(), None)
        .await
        .unwrap();
    let key = PrivateKey::generate_ed25519();
    let request = pb::AuthenticateRequest {
        client_name: "to-revoke".into(),
        client_identifier: Some(pb::authenticate_request::ClientIdentifier::DidPublicKey(
            key.public_key().to_spki_pem().unwrap(),
        )),
        ..Default::default()
    };
    let auth: pb::AuthenticateResponse =
        unary(&ch, AUTHENTICATE, &request, Some(&proof(&volt, &key)))
            .await
            .unwrap();
    let identity = Identity::from_pem(&auth.cert, key.to_pkcs8_pem().unwrap().as_str());
    let mtls = channel(&volt, &auth.chain, Some(identity)).await.unwrap();

    // A Connect stream over mutual TLS, acknowledged.
    let (hello_tx, hello_rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let hello = pb::ConnectRequest {
        payload: Some(pb::connect_request::Payload::Hello(pb::ConnectHello {
            ping_interval: 10_000,
            ..Default::default()
        })),
    };
    hello_tx
        .send(Bytes::from(hello.encode_to_vec()))
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(mtls.clone());
    grpc.ready().await.expect("ready");
    let requests = futures_util::stream::unfold(hello_rx, |mut rx| async move {
        rx.recv().await.map(|bytes| (bytes, rx))
    });
    let mut responses = grpc
        .streaming(
            tonic::Request::new(requests),
            PathAndQuery::from_static("/tdx.volt_api.volt.v1.VoltAPI/Connect"),
            PassThrough,
        )
        .await
        .unwrap()
        .into_inner();
    let ack = tokio::time::timeout(support::WAIT, responses.next())
        .await
        .expect("the acknowledge in time")
        .expect("a response")
        .unwrap();
    let ack = pb::ConnectResponse::decode(ack).unwrap();
    assert!(matches!(
        ack.payload,
        Some(pb::connect_response::Payload::Acknowledge(_))
    ));

    assert!(volt.emulator().revoke_session(&auth.session_id).unwrap());
    let ended = tokio::time::timeout(support::WAIT, responses.next())
        .await
        .expect("the stream ends in time")
        .expect("a status");
    let status = ended.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(status.message().ends_with("session invalid"), "{status:?}");
    drop(hello_tx);

    // New calls: by certificate, and by token.
    let err = unary::<pb::GetResourceResponse>(&mtls, GET_RESOURCE, &get_root(&volt), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(err.message().ends_with("session invalid"), "{err:?}");
    let claims = Claims::new(volt.volt_id(), unix_now()).with_subject(Some(auth.session_id));
    let jwt = IdentityToken::sign(&key, &claims).unwrap().to_jwt();
    let err = unary::<pb::GetResourceResponse>(&ch, GET_RESOURCE, &get_root(&volt), Some(&jwt))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(err.message().ends_with("session invalid"), "{err:?}");
    // The client may authenticate afresh, even over the connection with the old certificate.
    let again: pb::AuthenticateResponse =
        unary(&mtls, AUTHENTICATE, &request, Some(&proof(&volt, &key)))
            .await
            .unwrap();
    assert_eq!(again.decision, pb::PolicyDecision::Permit as i32);
}
