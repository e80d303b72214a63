//! Sessions and calls when things go wrong, on both transports: resource events as other
//! clients change things, a revoked session (its own error kind and session event), and a
//! connection cut by the fault-injection proxy (every live call fails at once).

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tdx_volt::client::{ResourceEventKind, SessionEvent, SessionOptions, SessionState};
use tdx_volt::{CallEvent, Transport, VoltClient};
use tdx_volt_emulator::fault::{route_config_through, FaultProxy};

use support::{connect, subscriptions_live, within, TestVolt};

/// The next resource event of `kind` for `id`, skipping others.
async fn resource_event(
    events: &mut tdx_volt::client::SessionEvents,
    kind: ResourceEventKind,
    id: &str,
) -> Value {
    within(&format!("{kind:?} of {id}"), async {
        loop {
            match events.next().await {
                Some(SessionEvent::Resource { kind: k, resource })
                    if k == kind && resource["id"] == json!(id) =>
                {
                    return resource
                }
                Some(_) => continue,
                None => panic!("the session ended"),
            }
        }
    })
    .await
}

/// The owner's session hears of what a second client creates, changes and deletes; the second
/// client's session hears nothing of the owner's private resources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_hear_resource_events_they_may_read() {
    let volt = TestVolt::start("session-events").await;
    for transport in [Transport::Websocket, Transport::Grpc] {
        let alice = volt.client_over(transport).await;
        let bob_config = volt
            .emulator()
            .issue_client(&format!("bob-{transport:?}"), None)
            .expect("bob");
        let bob = connect(bob_config, transport).await.expect("bob connects");
        let options = SessionOptions::new().resource_events(true);
        let alice_session = alice
            .session(options.clone())
            .await
            .expect("alice's session");
        let bob_session = bob.session(options).await.expect("bob's session");
        let mut heard = alice_session.events().expect("events");
        let mut bob_heard = bob_session.events().expect("events");

        let made = bob
            .save_resource(json!({"resource": {"name": "bob's"}, "create": true}))
            .await
            .expect("SaveResource");
        let id = made["resource"]["id"].as_str().expect("id").to_owned();
        resource_event(&mut heard, ResourceEventKind::Created, &id).await;
        bob.save_resource(json!({"resource": {"id": id, "description": "changed"}}))
            .await
            .expect("update");
        let updated = resource_event(&mut heard, ResourceEventKind::Updated, &id).await;
        assert_eq!(updated["description"], json!("changed"));

        // Alice's private database: Bob hears nothing of it (but of his own resource, yes).
        let db = alice
            .create_database(json!({"name": "private"}))
            .await
            .expect("CreateDatabase");
        let db_id = db["resource"]["id"].as_str().expect("id").to_owned();
        alice
            .sql_execute_json(json!({"database_id": db_id, "statement": "CREATE TABLE t (n)"}))
            .await
            .expect("SQL");
        resource_event(&mut heard, ResourceEventKind::DatabaseWrite, &db_id).await;
        bob.delete_resource(json!({"resource_id": id}))
            .await
            .expect("delete");
        resource_event(&mut heard, ResourceEventKind::Deleted, &id).await;
        // Bob's own stream: his resource's events, and none of Alice's database.
        let mut seen = Vec::new();
        within("bob's events up to his delete", async {
            while let Some(event) = bob_heard.next().await {
                if let SessionEvent::Resource { kind, resource } = event {
                    let rid = resource["id"].as_str().unwrap_or_default().to_owned();
                    seen.push(rid.clone());
                    if kind == ResourceEventKind::Deleted && rid == id {
                        break;
                    }
                }
            }
        })
        .await;
        assert!(seen.contains(&id), "{seen:?}");
        assert!(
            !seen.contains(&db_id),
            "Bob heard of Alice's private database: {seen:?}"
        );
        alice_session.close().await;
        bob_session.close().await;
    }
}

/// A revoked session: calls fail with the session-invalid kind (still a status with the
/// Volt's message), and a live session ends with `SessionInvalid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_is_its_own_error_and_event() {
    let volt = TestVolt::start("session-revoked").await;
    for transport in [Transport::Websocket, Transport::Grpc] {
        let config = volt
            .emulator()
            .issue_client(&format!("carol-{transport:?}"), None)
            .expect("carol");
        let session_id = config["credential"]["session_id"]
            .as_str()
            .expect("session id")
            .to_owned();
        let carol = connect(config, transport).await.expect("carol connects");
        let session = carol.session(SessionOptions::new()).await.expect("session");
        let mut events = session.events().expect("events");
        assert!(volt.emulator().revoke_session(&session_id).expect("revoke"));

        let ended = within("the session's end", async {
            loop {
                match events.next().await {
                    Some(SessionEvent::SessionInvalid { message }) => return message,
                    Some(_) => continue,
                    None => panic!("ended without SessionInvalid"),
                }
            }
        })
        .await;
        assert!(ended.ends_with("session invalid"), "{ended}");
        let mut state = session.state();
        within("closed", state.wait_for(|s| *s == SessionState::Closed))
            .await
            .expect("state");

        let refused = carol
            .get_resource(json!({"resource_id": carol.volt_id()}))
            .await
            .expect_err("revoked");
        assert!(
            refused.is_session_invalid() && refused.is_status(),
            "{transport:?}: {refused:?}"
        );
    }
}

/// A client going through the fault proxy: when every connection is cut, each live call
/// (streaming and unary) fails as closed within a second; the client then connects again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_fails_every_live_call_at_once() {
    let volt = TestVolt::start("session-cut").await;
    let (gateway, grpc) = volt.addresses();
    for transport in [Transport::Websocket, Transport::Grpc] {
        let upstream = match transport {
            Transport::Grpc => grpc,
            _ => gateway,
        };
        let proxy = FaultProxy::start(upstream).await.expect("proxy");
        let routed = match transport {
            Transport::Grpc => route_config_through(&volt.config(), Some(proxy.addr()), None),
            _ => route_config_through(&volt.config(), None, Some(proxy.addr())),
        }
        .expect("routed configuration");
        let client: VoltClient = connect(routed, transport).await.expect("through the proxy");
        let wire = client
            .save_wire(json!({"resource": {"name": "w"}, "create": true}))
            .await
            .expect("SaveWire");
        let wire_id = wire["resource"]["id"].as_str().expect("id").to_owned();
        let mut calls = Vec::new();
        for _ in 0..5 {
            let call = client
                .subscribe_wire(json!({"wire_id": wire_id}))
                .await
                .expect("SubscribeWire");
            calls.push(call);
        }
        // The subscriptions are live on the Volt before the cut.
        subscriptions_live(volt.emulator(), &wire_id, calls.len()).await;

        let cut = Instant::now();
        proxy.cut_all();
        for mut call in calls {
            let end = tokio::time::timeout(Duration::from_secs(1), call.next())
                .await
                .unwrap_or_else(|_| panic!("{transport:?}: a live call outlived the cut by 1 s"));
            match end {
                Some(CallEvent::Failed(e)) => assert!(e.is_closed(), "{transport:?}: {e:?}"),
                other => panic!("{transport:?}: {other:?}"),
            }
        }
        assert!(cut.elapsed() < Duration::from_secs(1));
        // Connected again by the next call.
        within(
            "a call after the cut",
            client.get_resource(json!({"resource_id": client.volt_id()})),
        )
        .await
        .expect("reconnected through the proxy");
    }
}

/// With `reauthenticate`, a revoked session is renewed: the failed call is answered in the new
/// session, and a live session reconnects in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_is_renewed_when_asked() {
    use tdx_volt::client::Authentication;

    let volt = TestVolt::start("session-renewed").await;
    for transport in [Transport::Websocket, Transport::Grpc] {
        let config = volt
            .emulator()
            .issue_client(&format!("dave-{transport:?}"), None)
            .expect("dave");
        let old = config["credential"]["session_id"]
            .as_str()
            .expect("session id")
            .to_owned();
        let dave = tdx_volt::VoltClient::builder()
            .config(config)
            .transport(transport)
            .reauthenticate(Authentication::session_only())
            .connect()
            .await
            .expect("dave connects");
        let session = dave.session(SessionOptions::new()).await.expect("session");
        let mut events = session.events().expect("events");
        assert!(volt.emulator().revoke_session(&old).expect("revoke"));

        let root = json!({"resource_id": dave.volt_id()});
        let answered = within("the call in a new session", dave.get_resource(root))
            .await
            .expect("renewed and answered");
        assert_eq!(answered["resource"]["id"], json!(dave.volt_id()));
        let new = dave
            .config()
            .credential()
            .session_id
            .clone()
            .expect("a session");
        assert_ne!(new, old, "{transport:?}: a new session");
        within("the session back in the new one", async {
            loop {
                match events.next().await {
                    Some(SessionEvent::Reconnected { .. }) => return,
                    Some(SessionEvent::SessionInvalid { message }) => {
                        panic!("{transport:?}: ended as invalid: {message}")
                    }
                    Some(_) => continue,
                    None => panic!("{transport:?}: the session ended"),
                }
            }
        })
        .await;
        session.close().await;
    }
}
