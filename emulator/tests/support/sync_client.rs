//! A SyncDocument client for tests, driving the protocol by hand with yrs over tonic, as a
//! provider would. Included with `#[path = "support/sync_client.rs"] mod sync_client;` next to
//! `mod support;`.

#![allow(dead_code)]

use bytes::Bytes;
use http::uri::PathAndQuery;
use prost::Message as _;
use tdx_volt::proto::volt as pb;
use tdx_volt::protocol::config::ClientConfig;
use tdx_volt::protocol::token::{unix_now, Claims, IdentityToken};
use tdx_volt_emulator::transport::grpc::PassThrough;
use tokio::sync::mpsc;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use super::support::WAIT;

pub const SYNC_DOCUMENT: &str = "/tdx.volt_api.volt.v1.SyncAPI/SyncDocument";
pub const CHUNK: usize = 1024 * 1024;

/// Who calls: a channel to the Volt and an identity token.
#[derive(Clone)]
pub struct Party {
    pub channel: Channel,
    pub token: String,
    pub client_id: String,
}

impl Party {
    /// Connects as the client `config` describes to the emulator at `address`.
    pub async fn connect(address: &str, ca_pem: &str, config: &ClientConfig) -> Party {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .domain_name("localhost");
        let channel = Channel::from_shared(format!("https://{address}"))
            .expect("uri")
            .tls_config(tls)
            .expect("tls")
            .connect()
            .await
            .expect("connect");
        let key = config.private_key(None).expect("key");
        let claims = Claims::new(config.volt().id.clone(), unix_now())
            .with_subject(config.credential().session_id.clone());
        let token = IdentityToken::sign(&key, &claims).expect("sign").to_jwt();
        Party {
            channel,
            token,
            client_id: config.credential().client_id.clone(),
        }
    }

    /// A unary call; `Err` is the status code and message of a refusal (in the response's
    /// `status` or as the call's status).
    pub async fn unary<M: prost::Message + Default>(
        &self,
        path: &'static str,
        request: &impl prost::Message,
    ) -> Result<M, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.expect("ready");
        let mut request = tonic::Request::new(Bytes::from(request.encode_to_vec()));
        request
            .metadata_mut()
            .insert("volt-token", self.token.parse().expect("ascii"));
        let response = grpc
            .unary(request, PathAndQuery::from_static(path), PassThrough)
            .await?;
        Ok(M::decode(response.into_inner()).expect("response decodes"))
    }

    /// Opens a bidi stream: the request sender and the responses.
    pub async fn streaming(
        &self,
        path: &'static str,
    ) -> (mpsc::Sender<Bytes>, tonic::codec::Streaming<Bytes>) {
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        let requests =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|b| (b, rx)) },
            );
        let mut request = tonic::Request::new(requests);
        request
            .metadata_mut()
            .insert("volt-token", self.token.parse().expect("ascii"));
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.expect("ready");
        let responses = grpc
            .streaming(request, PathAndQuery::from_static(path), PassThrough)
            .await
            .expect("stream opens")
            .into_inner();
        (tx, responses)
    }
}

/// Creates a sync database with `alias` (given without its `@`); returns its id.
pub async fn sync_database(party: &Party, alias: &str) -> String {
    let response: pb::SaveSyncDatabaseResponse = party
        .unary(
            "/tdx.volt_api.volt.v1.SyncAPI/SaveSyncDatabase",
            &pb::SaveSyncDatabaseRequest {
                resource: Some(pb::Resource {
                    name: format!("{alias} database"),
                    alias: vec![alias.to_owned()],
                    ..Default::default()
                }),
                create: true,
                ..Default::default()
            },
        )
        .await
        .expect("SaveSyncDatabase");
    assert_eq!(response.status, None, "SaveSyncDatabase refused");
    response.resource.expect("resource").id
}

/// One SyncDocument stream with its yrs document.
pub struct SyncClient {
    pub doc: Doc,
    tx: mpsc::Sender<Bytes>,
    responses: tonic::codec::Streaming<Bytes>,
    /// The SYNCING messages of the handshake.
    pub syncing: Vec<pb::SyncDocumentResponse>,
    /// The server's state vector from the handshake.
    pub server_sv: StateVector,
}

/// What the handshake start asks for.
#[derive(Clone, Copy, Default)]
pub struct Start {
    pub read_only: bool,
    pub read_only_fallback: bool,
}

impl SyncClient {
    /// Sends `sync_start` and reads the SYNCING messages; the first response with a status
    /// (a refusal) is answered as `Err`.
    pub async fn start(
        party: &Party,
        database: &str,
        document: &str,
        doc: Doc,
        start: Start,
    ) -> Result<SyncClient, pb::Status> {
        let (tx, responses) = party.streaming(SYNC_DOCUMENT).await;
        let sv = doc.transact().state_vector().encode_v1();
        let mut client = SyncClient {
            doc,
            tx,
            responses,
            syncing: Vec::new(),
            server_sv: StateVector::default(),
        };
        client
            .send(pb::SyncDocumentRequest {
                payload: Some(pb::sync_document_request::Payload::SyncStart(
                    pb::SyncDocumentStart {
                        database_id: database.to_owned(),
                        document_id: document.to_owned(),
                        state_vector: sv,
                        read_only: start.read_only,
                        read_only_fallback: start.read_only_fallback,
                    },
                )),
                sync_state: pb::SyncState::Syncing as i32,
            })
            .await;
        let mut diff = Vec::new();
        loop {
            let message = client.next().await.expect("a SYNCING message");
            if let Some(status) = message.status.clone().filter(|s| s.code != 0) {
                return Err(status);
            }
            assert_eq!(message.sync_state, pb::SyncState::Syncing as i32);
            let update = message
                .update
                .clone()
                .expect("every SYNCING message has update");
            diff.extend_from_slice(&update.chunk);
            client.syncing.push(message.clone());
            if update.complete {
                assert!(
                    !message.state_vector.is_empty(),
                    "the complete one has the SV"
                );
                client.server_sv = StateVector::decode_v1(&message.state_vector).expect("SV v1");
                break;
            }
        }
        apply(&client.doc, &diff);
        Ok(client)
    }

    /// Whether the server said the stream is read-only.
    pub fn is_read_only(&self) -> bool {
        self.syncing.iter().any(|m| m.is_read_only)
    }

    /// Sends the DONE update (what the server lacks) without waiting for the answer.
    pub async fn send_done(&self) {
        let update = self
            .doc
            .transact()
            .encode_state_as_update_v2(&self.server_sv);
        self.send_chunked(pb::SyncState::Done, &update).await;
    }

    /// Sends DONE and reads the server's DONE.
    pub async fn finish(&mut self) {
        self.send_done().await;
        let done = self.next().await.expect("the server's DONE");
        assert_eq!(done.sync_state, pb::SyncState::Done as i32, "{done:?}");
    }

    /// The full handshake.
    pub async fn join(party: &Party, database: &str, document: &str, doc: Doc) -> SyncClient {
        let mut client = SyncClient::start(party, database, document, doc, Start::default())
            .await
            .expect("handshake");
        client.finish().await;
        client
    }

    pub async fn send(&self, request: pb::SyncDocumentRequest) {
        self.tx
            .send(Bytes::from(request.encode_to_vec()))
            .await
            .expect("request sent");
    }

    /// Sends `payload` in 1 MiB chunks as `state`.
    pub async fn send_chunked(&self, state: pb::SyncState, payload: &[u8]) {
        let mut offset = 0;
        loop {
            let end = (offset + CHUNK).min(payload.len());
            self.send(pb::SyncDocumentRequest {
                payload: Some(pb::sync_document_request::Payload::Update(
                    pb::SyncDocumentUpdate {
                        chunk: payload[offset..end].to_vec(),
                        complete: end == payload.len(),
                    },
                )),
                sync_state: state as i32,
            })
            .await;
            offset = end;
            if offset >= payload.len() {
                break;
            }
        }
    }

    /// Edits the document with `edit` and sends the update it made.
    pub async fn edit(&self, edit: impl FnOnce(&mut yrs::TransactionMut<'_>)) {
        let update = {
            let mut txn = self.doc.transact_mut();
            edit(&mut txn);
            txn.encode_update_v2()
        };
        self.send_chunked(pb::SyncState::Update, &update).await;
    }

    /// The next response, `None` once the stream ended normally; fails the test after WAIT.
    pub async fn next(&mut self) -> Option<pb::SyncDocumentResponse> {
        let next = tokio::time::timeout(WAIT, self.responses.message())
            .await
            .expect("the emulator answered in time")
            .expect("no stream error");
        next.map(|b| pb::SyncDocumentResponse::decode(b).expect("response decodes"))
    }

    /// The next complete payload of `state` (chunks joined); other states fail the test.
    pub async fn next_payload(&mut self, state: pb::SyncState) -> Vec<u8> {
        let mut payload = Vec::new();
        loop {
            let message = self.next().await.expect("a message");
            assert_eq!(message.sync_state, state as i32, "{message:?}");
            let update = message.update.expect("update");
            payload.extend_from_slice(&update.chunk);
            if update.complete {
                return payload;
            }
        }
    }

    /// Waits for the next UPDATE and applies it.
    pub async fn receive_update(&mut self) {
        let update = self.next_payload(pb::SyncState::Update).await;
        apply(&self.doc, &update);
    }

    /// Ends the client's side.
    pub fn close(self) -> tonic::codec::Streaming<Bytes> {
        self.responses
    }
}

/// Applies a v2 update to `doc`.
pub fn apply(doc: &Doc, update: &[u8]) {
    doc.transact_mut()
        .apply_update(Update::decode_v2(update).expect("a v2 update"))
        .expect("applies");
}

/// The text root `name` of `doc`.
pub fn text(doc: &Doc, name: &str) -> String {
    use yrs::GetString as _;
    let text = doc.get_or_insert_text(name);
    let txn = doc.transact();
    text.get_string(&txn)
}
