//! SyncAPI against an in-process emulator, driven over gRPC with yrs as a provider would:
//! convergence, updates held until DONE, awareness, read-only, persistence across a restart,
//! chunking, and the synapse path calls.

mod support;
#[path = "support/sync_client.rs"]
mod sync_client;

use std::time::Instant;

use support::TestVolt;
use sync_client::{sync_database, text, Party, Start, SyncClient};
use tdx_volt::proto::volt as pb;
use tdx_volt::protocol::config::ClientConfig;
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, Map, ReadTxn, Text, Transact, WriteTxn};

async fn owner(volt: &TestVolt) -> Party {
    Party::connect(
        volt.emulator().address(),
        volt.emulator().ca_pem(),
        &volt.config,
    )
    .await
}

async fn other(volt: &TestVolt, name: &str) -> Party {
    let config = volt.emulator().issue_client(name, None).expect("issued");
    let config = ClientConfig::from_value(config).expect("config");
    Party::connect(volt.emulator().address(), volt.emulator().ca_pem(), &config).await
}

fn insert_text(
    name: &'static str,
    at_end: &'static str,
) -> impl FnOnce(&mut yrs::TransactionMut<'_>) {
    move |txn| {
        let text = txn.get_or_insert_text(name);
        let len = text.len(txn);
        text.insert(txn, len, at_end);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_converge_and_updates_wait_for_done() {
    let volt = TestVolt::start("sync-converge").await;
    let party = owner(&volt).await;
    let db = sync_database(&party, "notes").await;

    let mut a = SyncClient::join(&party, &db, "doc-1", Doc::new()).await;
    a.edit(insert_text("content", "hello")).await;
    // B joins by alias, and makes an edit of its own before joining.
    let b_doc = Doc::new();
    {
        let mut txn = b_doc.transact_mut();
        txn.get_or_insert_map("meta")
            .insert(&mut txn, "title", "draft");
    }
    let mut watcher = SyncClient::join(&party, "@notes", "doc-1", Doc::new()).await;
    let mut b = SyncClient::start(&party, "@notes", "doc-1", b_doc, Start::default())
        .await
        .expect("B's handshake");
    assert_eq!(text(&b.doc, "content"), "hello", "B's SYNCING diff");
    // A edits while B is between SYNCING and DONE; the watcher seeing it means it is applied.
    a.edit(insert_text("content", " world")).await;
    watcher.receive_update().await;
    assert_eq!(text(&watcher.doc, "content"), "hello world");
    b.send_done().await;
    let done = b.next().await.expect("DONE");
    assert_eq!(
        done.sync_state,
        pb::SyncState::Done as i32,
        "DONE comes first: {done:?}"
    );
    b.receive_update().await;
    assert_eq!(
        text(&b.doc, "content"),
        "hello world",
        "the held update follows DONE"
    );
    // B's offline edit reached A and the watcher.
    a.receive_update().await;
    watcher.receive_update().await;
    for doc in [&a.doc, &watcher.doc] {
        let txn = doc.transact();
        let meta = txn.get_map("meta").expect("meta");
        assert_eq!(
            meta.get(&txn, "title").map(|v| v.to_string(&txn)),
            Some("draft".into())
        );
    }
    // Concurrent edits converge.
    a.edit(insert_text("content", "!")).await;
    b.edit(insert_text("content", "?")).await;
    a.receive_update().await;
    b.receive_update().await;
    assert_eq!(text(&a.doc, "content"), text(&b.doc, "content"));
    assert_eq!(text(&a.doc, "content").len(), "hello world!?".len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awareness_is_fanned_out_and_never_stored() {
    let volt = TestVolt::start("sync-awareness").await;
    let party = owner(&volt).await;
    let db = sync_database(&party, "presence").await;
    let mut a = SyncClient::join(&party, &db, "doc", Doc::new()).await;
    let mut b = SyncClient::join(&party, &db, "doc", Doc::new()).await;
    let awareness = AwarenessUpdate {
        clients: [(
            ClientID::new(7),
            AwarenessUpdateEntry {
                clock: 1,
                json: "{\"cursor\":1}".into(),
            },
        )]
        .into_iter()
        .collect(),
    }
    .encode_v1();
    a.send_chunked(pb::SyncState::Awareness, &awareness).await;
    assert_eq!(b.next_payload(pb::SyncState::Awareness).await, awareness);
    // A later client is not told of it, and A itself is not echoed: the next thing both see is
    // a document update.
    let mut c = SyncClient::join(&party, &db, "doc", Doc::new()).await;
    b.edit(insert_text("t", "x")).await;
    a.receive_update().await;
    c.receive_update().await;
    assert_eq!(text(&c.doc, "t"), "x");
    // Only the document update is stored.
    let file = volt.dir.join("databases").join(format!("{db}.sqlite"));
    let conn = rusqlite::Connection::open(file).expect("database file");
    let blobs: Vec<Vec<u8>> = conn
        .prepare("SELECT update_v2 FROM volt_sync_document_updates")
        .expect("the sync table")
        .query_map([], |row| row.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(blobs.len(), 1, "one stored update");
    assert!(!blobs
        .iter()
        .any(|b| b.windows(8).any(|w| w == b"{\"cursor")));
    // When A leaves, the others hear that its awareness state is gone.
    drop(a);
    for peer in [&mut b, &mut c] {
        let removal = peer.next_payload(pb::SyncState::Awareness).await;
        let removal = AwarenessUpdate::decode_v1(&removal).expect("an awareness update");
        let entry = &removal.clients[&ClientID::new(7)];
        assert_eq!((entry.clock, &*entry.json), (2, "null"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_is_reported_and_enforced() {
    let volt = TestVolt::start("sync-read-only").await;
    let party = owner(&volt).await;
    let db = sync_database(&party, "shared").await;
    let mut writer = SyncClient::join(&party, &db, "doc", Doc::new()).await;
    let written: pb::WriteSynapsePathResponse = party
        .unary(
            "/tdx.volt_api.volt.v1.SyncAPI/WriteSynapsePath",
            &pb::WriteSynapsePathRequest {
                database_id: db.clone(),
                document_id: "doc".into(),
                path: "$.t".into(),
                json: "\"base\"".into(),
                ..Default::default()
            },
        )
        .await
        .expect("WriteSynapsePath");
    assert_eq!(written.status, None);
    writer.receive_update().await;

    // Asked for: reported, and an update that changes the document ends the stream.
    let mut reader = SyncClient::start(
        &party,
        &db,
        "doc",
        Doc::new(),
        Start {
            read_only: true,
            ..Start::default()
        },
    )
    .await
    .expect("read-only handshake");
    assert!(reader.is_read_only());
    reader.finish().await;
    reader.edit(insert_text("t", "!")).await;
    let refused = reader.next().await.expect("a refusal");
    let status = refused.status.expect("status");
    assert_eq!(status.code, 7, "PERMISSION_DENIED: {status:?}");
    assert!(status.message.contains("read-only"), "{}", status.message);

    // A client with only volt:database-read: refused, unless it falls back to read-only.
    let bob = other(&volt, "bob").await;
    let _: pb::SaveAccessResponse = party
        .unary(
            "/tdx.volt_api.volt.v1.VoltAPI/SaveAccess",
            &pb::SaveAccessRequest {
                access: Some(pb::Access {
                    resource_id: db.clone(),
                    access: "volt:database-read".into(),
                    decision: pb::PolicyDecision::Permit as i32,
                    subject: Some(pb::access::Subject::IdentityDid(bob.client_id.clone())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .expect("SaveAccess");
    let status = SyncClient::start(&bob, &db, "doc", Doc::new(), Start::default())
        .await
        .err()
        .expect("refused without the fallback");
    assert_eq!(status.code, 7, "{status:?}");
    let mut bob_reader = SyncClient::start(
        &bob,
        &db,
        "doc",
        Doc::new(),
        Start {
            read_only_fallback: true,
            ..Start::default()
        },
    )
    .await
    .expect("falls back");
    assert!(bob_reader.is_read_only());
    assert_eq!(text(&bob_reader.doc, "t"), "base");
    bob_reader.finish().await;
    // It still hears the writer's changes.
    writer.edit(insert_text("t", "+")).await;
    bob_reader.receive_update().await;
    assert_eq!(text(&bob_reader.doc, "t"), "base+");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_acknowledged_edits() {
    let mut volt = TestVolt::start("sync-restart").await;
    let party = owner(&volt).await;
    let db = sync_database(&party, "durable").await;
    let a = SyncClient::join(&party, &db, "doc", Doc::new()).await;
    let mut b = SyncClient::join(&party, &db, "doc", Doc::new()).await;
    for word in ["one ", "two ", "three"] {
        a.edit(insert_text("content", word)).await;
        b.receive_update().await;
    }
    let _: pb::WriteSynapsePathResponse = party
        .unary(
            "/tdx.volt_api.volt.v1.SyncAPI/WriteSynapsePath",
            &pb::WriteSynapsePathRequest {
                database_id: "@durable".into(),
                document_id: "doc".into(),
                path: "$.meta.owner".into(),
                json: "\"alice\"".into(),
                ..Default::default()
            },
        )
        .await
        .expect("WriteSynapsePath");
    drop((a, b));
    let emulator = volt.emulator.take().expect("running");
    emulator.shutdown().await;
    let restarted = tdx_volt_emulator::Emulator::builder(&volt.dir)
        .start()
        .await
        .expect("restarts");
    volt.emulator = Some(restarted);
    let party = owner(&volt).await;
    let c = SyncClient::join(&party, "@durable", "doc", Doc::new()).await;
    assert_eq!(text(&c.doc, "content"), "one two three");
    let txn = c.doc.transact();
    let meta = txn.get_map("meta").expect("meta");
    assert_eq!(
        meta.get(&txn, "owner").map(|v| v.to_string(&txn)),
        Some("alice".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_document_arrives_in_chunks() {
    const SIZE: usize = 10 * 1024 * 1024;
    let volt = TestVolt::start("sync-large").await;
    let party = owner(&volt).await;
    let db = sync_database(&party, "big").await;
    let a = SyncClient::join(&party, &db, "doc", Doc::new()).await;
    let mut watcher = SyncClient::join(&party, &db, "doc", Doc::new()).await;
    let body: String = (0..SIZE)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    let began = Instant::now();
    a.edit(|txn| {
        let text = txn.get_or_insert_text("content");
        text.insert(txn, 0, &body);
    })
    .await;
    watcher.receive_update().await;
    let live = began.elapsed();
    let began = Instant::now();
    let b = SyncClient::join(&party, &db, "doc", Doc::new()).await;
    let joined = began.elapsed();
    eprintln!("10 MiB document: live update {live:?}, new client's handshake {joined:?}");
    assert_eq!(text(&b.doc, "content").len(), SIZE);
    assert!(
        b.syncing.len() >= 10,
        "{} SYNCING messages",
        b.syncing.len()
    );
    for (i, m) in b.syncing.iter().enumerate() {
        let update = m.update.as_ref().expect("update");
        assert!(update.chunk.len() <= sync_client::CHUNK);
        assert_eq!(update.complete, i + 1 == b.syncing.len());
    }
    assert_eq!(text(&watcher.doc, "content"), text(&b.doc, "content"));
}

async fn next_watch(
    watch: &mut tonic::codec::Streaming<bytes::Bytes>,
) -> pb::watch_synapse_path_response::Result {
    let bytes = tokio::time::timeout(support::WAIT, watch.message())
        .await
        .expect("in time")
        .expect("no error")
        .expect("a response");
    let response: pb::WatchSynapsePathResponse = prost::Message::decode(bytes).expect("decodes");
    response.result.expect("result")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_paths_write_and_watch_the_json_view() {
    let volt = TestVolt::start("sync-paths").await;
    let party = owner(&volt).await;
    let db = sync_database(&party, "synapse").await;
    let mut client = SyncClient::join(&party, "@synapse", "doc", Doc::new()).await;
    let (tx, mut watch) = party
        .streaming("/tdx.volt_api.volt.v1.SyncAPI/WatchSynapsePath")
        .await;
    let start = pb::WatchSynapsePathRequest {
        payload: Some(pb::watch_synapse_path_request::Payload::Start(
            pb::WatchSynapsePathStart {
                synapse_id: db.clone(),
                document_id: "doc".into(),
                path: vec!["$.map".into()],
            },
        )),
    };
    tx.send(prost::Message::encode_to_vec(&start).into())
        .await
        .expect("start");
    assert!(matches!(
        next_watch(&mut watch).await,
        pb::watch_synapse_path_response::Result::Status(s) if s.code == 0
    ));
    let write = |path: &str, json: &str| pb::WriteSynapsePathRequest {
        database_id: "@synapse".into(),
        document_id: "doc".into(),
        path: path.into(),
        json: json.into(),
        ..Default::default()
    };
    let _: pb::WriteSynapsePathResponse = party
        .unary(
            "/tdx.volt_api.volt.v1.SyncAPI/WriteSynapsePath",
            &write("$.map.key", r#"{"a":1,"list":[true,"x"]}"#),
        )
        .await
        .expect("write");
    let pb::watch_synapse_path_response::Result::Update(added) = next_watch(&mut watch).await
    else {
        panic!("an update");
    };
    assert_eq!(added.update_type, pb::SynapsePathUpdateType::Add as i32);
    assert_eq!(added.event_path, "$.map");
    // The provider sees it as Y types.
    client.receive_update().await;
    {
        let txn = client.doc.transact();
        let map = txn.get_map("map").expect("map");
        let Some(yrs::Out::YMap(key)) = map.get(&txn, "key") else {
            panic!("a nested map");
        };
        assert_eq!(
            key.get(&txn, "a").map(|v| v.to_string(&txn)),
            Some("1".into())
        );
    }
    // A provider's edit is seen by the watch, member by member.
    client
        .edit(|txn| {
            txn.get_or_insert_map("map").insert(txn, "other", 2);
        })
        .await;
    let pb::watch_synapse_path_response::Result::Update(member) = next_watch(&mut watch).await
    else {
        panic!("an update");
    };
    assert_eq!(member.event_path, "$.map.other");
    assert_eq!(member.value, "2");
    assert_eq!((member.index, member.total), (0, 1));
    // Bad paths and shapes are refused.
    let refused: pb::WriteSynapsePathResponse = party
        .unary(
            "/tdx.volt_api.volt.v1.SyncAPI/WriteSynapsePath",
            &write("$.map.key.a.deeper", "1"),
        )
        .await
        .expect("answered");
    assert_eq!(refused.status.expect("status").code, 9);
    let refused: pb::WriteSynapsePathResponse = party
        .unary(
            "/tdx.volt_api.volt.v1.SyncAPI/WriteSynapsePath",
            &write("$.map[", "1"),
        )
        .await
        .expect("answered");
    assert_eq!(refused.status.expect("status").code, 3);
}

/// Grants `party`'s client `access` on the database, narrowed by `extra`.
async fn grant(owner: &Party, database: &str, to: &Party, access: &str, extra: &str) {
    let response: pb::SaveAccessResponse = owner
        .unary(
            "/tdx.volt_api.volt.v1.VoltAPI/SaveAccess",
            &pb::SaveAccessRequest {
                access: Some(pb::Access {
                    resource_id: database.to_owned(),
                    access: access.into(),
                    extra: extra.into(),
                    decision: pb::PolicyDecision::Permit as i32,
                    subject: Some(pb::access::Subject::IdentityDid(to.client_id.clone())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .expect("SaveAccess");
    assert_eq!(response.status, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_narrowed_to_documents_covers_only_those() {
    let volt = TestVolt::start("sync-doc-access").await;
    let party = owner(&volt).await;
    let db = sync_database(&party, "scoped").await;
    let carol = other(&volt, "carol").await;
    let scope = "volt:resource-sync-document-id|team-*,volt:resource-sync-document-id|shared";
    grant(&party, &db, &carol, "volt:database-read", scope).await;
    grant(
        &party,
        &db,
        &carol,
        "volt:database-write",
        "volt:resource-sync-document-id|team-*",
    )
    .await;

    let mut watcher = SyncClient::join(&party, &db, "team-1", Doc::new()).await;
    let team = SyncClient::join(&carol, &db, "team-1", Doc::new()).await;
    team.edit(insert_text("t", "ours")).await;
    watcher.receive_update().await;
    assert_eq!(text(&watcher.doc, "t"), "ours", "carol may write team-1");
    let refused = SyncClient::start(&carol, &db, "shared", Doc::new(), Start::default())
        .await
        .err()
        .expect("no write on `shared`, and no fallback asked");
    assert_eq!(refused.code, 7, "{refused:?}");
    let reader = SyncClient::start(
        &carol,
        &db,
        "shared",
        Doc::new(),
        Start {
            read_only_fallback: true,
            ..Start::default()
        },
    )
    .await
    .expect("`shared` is readable");
    assert!(reader.is_read_only());
    let secret = SyncClient::start(&carol, &db, "secret", Doc::new(), Start::default())
        .await
        .err()
        .expect("refused");
    assert_eq!(secret.code, 7, "{secret:?}");
    assert!(secret.message.contains("secret"), "{}", secret.message);
    // Nor does a rule narrowed to documents open the database to SQL.
    let sql: Result<tdx_volt::proto::data::SqlExecuteResponse, _> = carol
        .unary(
            "/tdx.volt_api.data.v1.SqliteDatabaseAPI/Execute",
            &tdx_volt::proto::data::SqlExecuteRequest {
                payload: Some(tdx_volt::proto::data::sql_execute_request::Payload::Start(
                    tdx_volt::proto::data::SqlExecuteStart {
                        database_id: db.clone(),
                        statement: "SELECT 1".into(),
                        ..Default::default()
                    },
                )),
            },
        )
        .await;
    let Some(tdx_volt::proto::data::sql_execute_response::Payload::Status(status)) =
        sql.expect("answered").payload
    else {
        panic!("a refusal");
    };
    assert_eq!(status.code, 7, "{status:?}");
}

/// One client sends many small updates, one per message, as fast as it can; the other receives
/// every one and ends with the same text. Prints the rate (debug build).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_updates_all_arrive_in_order() {
    const UPDATES: usize = 1000;
    let volt = TestVolt::start("sync-rate").await;
    let party = owner(&volt).await;
    let db = sync_database(&party, "rate").await;
    let a = SyncClient::join(&party, &db, "doc", Doc::new()).await;
    let mut b = SyncClient::join(&party, &db, "doc", Doc::new()).await;
    let began = Instant::now();
    let sender = tokio::spawn(async move {
        for i in 0..UPDATES {
            let letter: &'static str = ["a", "b", "c", "d"][i % 4];
            a.edit(insert_text("content", letter)).await;
        }
        a
    });
    for _ in 0..UPDATES {
        b.receive_update().await;
    }
    let elapsed = began.elapsed();
    let a = sender.await.expect("sender");
    eprintln!(
        "{UPDATES} updates in {elapsed:?}: {:.0} updates/s",
        UPDATES as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(text(&b.doc, "content"), text(&a.doc, "content"));
    assert_eq!(text(&b.doc, "content").len(), UPDATES);
}

/// Malformed state vectors and updates, unknown databases and a missing start are refused with
/// a status (never a panic or a silent end), and the document stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_with_a_status() {
    let volt = TestVolt::start("sync-malformed").await;
    let party = owner(&volt).await;
    let db = sync_database(&party, "strict").await;
    let refusal = |code: i32| move |status: pb::Status| assert_eq!(status.code, code, "{status:?}");

    let (tx, mut responses) = party.streaming(sync_client::SYNC_DOCUMENT).await;
    let bad_sv = pb::SyncDocumentRequest {
        payload: Some(pb::sync_document_request::Payload::SyncStart(
            pb::SyncDocumentStart {
                database_id: db.clone(),
                document_id: "doc".into(),
                state_vector: vec![0xff, 0xff, 0xff],
                ..Default::default()
            },
        )),
        sync_state: pb::SyncState::Syncing as i32,
    };
    tx.send(prost::Message::encode_to_vec(&bad_sv).into())
        .await
        .expect("sent");
    let first = tokio::time::timeout(support::WAIT, responses.message())
        .await
        .expect("in time")
        .expect("no stream error")
        .expect("a response");
    let first: pb::SyncDocumentResponse = prost::Message::decode(first).expect("decodes");
    refusal(3)(first.status.expect("status"));

    for (database, document, code) in [("@nowhere", "doc", 5), (db.as_str(), "", 3)] {
        let status = SyncClient::start(&party, database, document, Doc::new(), Start::default())
            .await
            .err()
            .expect("refused");
        refusal(code)(status);
    }

    let mut client = SyncClient::join(&party, &db, "doc", Doc::new()).await;
    client
        .send_chunked(pb::SyncState::Update, b"not a yjs update")
        .await;
    let refused = client.next().await.expect("a refusal");
    refusal(3)(refused.status.expect("status"));

    let fine = SyncClient::join(&party, &db, "doc", Doc::new()).await;
    fine.edit(insert_text("t", "still fine")).await;
    let mut check = SyncClient::join(&party, &db, "doc", Doc::new()).await;
    if text(&check.doc, "t").is_empty() {
        check.receive_update().await;
    }
    assert_eq!(text(&check.doc, "t"), "still fine");
}

/// A sync database made the way the vendor's Rust helpers make one (SaveResource with the three
/// database kinds and an alias) is synced by `@alias`, its file made on first use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_saved_as_a_resource_with_the_sync_kinds_syncs_by_alias() {
    let volt = TestVolt::start("sync-resource-kinds").await;
    let party = owner(&volt).await;
    let saved: pb::SaveResourceResponse = party
        .unary(
            "/tdx.volt_api.volt.v1.VoltAPI/SaveResource",
            &pb::SaveResourceRequest {
                resource: Some(pb::Resource {
                    name: "agent synapse".into(),
                    alias: vec!["agent-synapse-1".into()],
                    kind: vec![
                        "volt:database".into(),
                        "volt:sqlite-database".into(),
                        "volt:sync-database".into(),
                    ],
                    ..Default::default()
                }),
                create: true,
                ..Default::default()
            },
        )
        .await
        .expect("SaveResource");
    assert_eq!(saved.status, None);
    let a = SyncClient::join(&party, "@agent-synapse-1", "doc", Doc::new()).await;
    let mut b = SyncClient::join(&party, "@agent-synapse-1", "doc", Doc::new()).await;
    a.edit(insert_text("t", "by alias")).await;
    b.receive_update().await;
    assert_eq!(text(&b.doc, "t"), "by alias");
}
