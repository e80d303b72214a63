//! Connect sessions (`client.session`) against the in-process emulator: the acknowledge, an
//! access request as an event, coming back after the Volt restarts on the same ports, close,
//! dropping every handle, and a client that never reconnects.

mod support;

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::json;
use tdx_volt::{ReconnectPolicy, Session, SessionEvent, SessionOptions, SessionState, Transport};
use tokio::sync::{mpsc, watch};

use support::{connect, home_of, within, TestVolt};

/// Waits until the session's state is one `wanted` accepts, and returns it.
async fn state_becomes(
    session: &Session,
    what: &str,
    wanted: impl FnMut(&SessionState) -> bool,
) -> SessionState {
    let mut state = session.state();
    let seen = within(what, state.wait_for(wanted))
        .await
        .expect("the session's state is kept")
        .clone();
    seen
}

/// Every state the session passes through from now on, in order.
/// Every state the session shows from now on, in order, as they happen.
fn record(mut state: watch::Receiver<SessionState>) -> mpsc::UnboundedReceiver<SessionState> {
    let (log, seen) = mpsc::unbounded_channel();
    let _ = log.send(state.borrow_and_update().clone());
    tokio::spawn(async move {
        while state.changed().await.is_ok() {
            if log.send(state.borrow_and_update().clone()).is_err() {
                break;
            }
        }
    });
    seen
}

/// The recorded states up to and including the first that `last` picks.
async fn states_until(
    seen: &mut mpsc::UnboundedReceiver<SessionState>,
    last: impl Fn(&SessionState) -> bool,
) -> Vec<SessionState> {
    within("the recorded states", async {
        let mut states = Vec::new();
        while let Some(state) = seen.recv().await {
            let done = last(&state);
            states.push(state);
            if done {
                return states;
            }
        }
        panic!("the recorder stopped: {states:?}")
    })
    .await
}

fn connected_id(state: &SessionState) -> Option<&str> {
    match state {
        SessionState::Connected { connection_id } => Some(connection_id),
        _ => None,
    }
}

/// A second client (Bob) asks for read access to `home`; the owner's session must hear it.
async fn bob_asks(volt: &TestVolt, name: &str, home: &str) {
    let config = volt
        .emulator()
        .issue_client(name, None)
        .expect("a second client");
    let bob = connect(config, Transport::Websocket)
        .await
        .expect("bob connects");
    let asked = bob
        .request_access(json!({"resource_id": home, "access": "volt:resource-read"}))
        .await
        .expect("RequestAccess");
    assert_eq!(
        asked["decision"],
        json!("POLICY_DECISION_PROMPT"),
        "{asked}"
    );
}

/// The next event that is not `Lagged` (none is expected; it would show as a failure).
async fn next_event(events: &mut tdx_volt::SessionEvents, what: &str) -> SessionEvent {
    within(what, events.next())
        .await
        .expect("the session is live")
}

/// The access request's id in an `AuthRequest` event.
fn access_request_id(event: &SessionEvent) -> String {
    match event {
        SessionEvent::AuthRequest { context, .. } => context["access_request"]["id"]
            .as_str()
            .expect("an access request id")
            .to_owned(),
        other => panic!("expected an auth request, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_connected_then_closed() {
    let volt = TestVolt::start("session-ack").await;
    for transport in [Transport::Websocket, Transport::Grpc] {
        let client = volt.client_over(transport).await;
        let session = within("the session", client.session(SessionOptions::new()))
            .await
            .expect("acknowledged");
        let state = session.state().borrow().clone();
        let id = connected_id(&state).expect("connected").to_owned();
        assert!(!id.is_empty(), "{transport:?}: a connection id");
        assert_eq!(session.connection_id().as_deref(), Some(id.as_str()));
        let mut events = session.events().expect("the events stream");
        assert!(session.events().is_none(), "taken once");

        within("close", session.close()).await;
        assert_eq!(*session.state().borrow(), SessionState::Closed);
        assert_eq!(within("the end of the events", events.next()).await, None);
        // Again, from a clone: nothing left to do.
        within("close again", session.clone().close()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_request_arrives_as_an_auth_request_event() {
    let volt = TestVolt::start("session-auth").await;
    let alice = volt.client().await;
    let home = home_of(&alice, "session").await;
    let session = alice
        .session(SessionOptions::new().auth_requests(true))
        .await
        .expect("session");
    let mut events = session.events().expect("events");

    bob_asks(&volt, "bob", &home).await;
    let event = next_event(&mut events, "the auth request").await;
    let request_id = access_request_id(&event);
    // What the event carries is enough to decide the request.
    alice
        .set_access_request_decision(
            json!({"id": request_id, "decision": "POLICY_DECISION_PERMIT"}),
        )
        .await
        .expect("SetAccessRequestDecision");
    session.close().await;
}

/// The Volt stops; the session backs off and tries again until the Volt is back on the same
/// ports, then says hello again (its subscriptions with it) on a new connection.
async fn comes_back_after_a_restart(transport: Transport) {
    let mut volt = TestVolt::start(&format!("session-restart-{transport:?}")).await;
    let client = volt
        .client_with(transport, |b| {
            b.request_timeout(Duration::from_secs(2)).reconnect(
                ReconnectPolicy::default()
                    .with_initial_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_millis(400)),
            )
        })
        .await;
    let home = home_of(&client, "restart").await;
    let session = client
        .session(SessionOptions::new().auth_requests(true))
        .await
        .expect("session");
    let mut events = session.events().expect("events");
    let first = session.connection_id().expect("connected");
    let mut states = record(session.state());

    let addresses = volt.addresses();
    volt.stop().await;
    state_becomes(&session, "backing off", |s| {
        matches!(s, SessionState::BackingOff { .. })
    })
    .await;
    volt.start_on(addresses).await;

    let back = state_becomes(&session, "connected again", |s| connected_id(s).is_some()).await;
    let second = connected_id(&back).expect("connected").to_owned();
    assert_ne!(second, first, "{transport:?}: a new connection");
    assert_eq!(
        next_event(&mut events, "reconnected").await,
        SessionEvent::Reconnected {
            connection_id: second.clone()
        }
    );
    // Connected, lost (connecting), backing off, trying again, connected: in that order.
    let seen = states_until(&mut states, |s| connected_id(s) == Some(second.as_str())).await;
    let backing_off = seen
        .iter()
        .position(|s| matches!(s, SessionState::BackingOff { .. }))
        .expect("backed off");
    // (A watch may skip a passing state, so the attempt after the wait need not show.)
    assert!(
        matches!(seen[0], SessionState::Connected { .. }),
        "{seen:?}"
    );
    // Lost: trying again at once, or already waiting (a watch may skip a passing state).
    assert!(
        matches!(
            seen[1],
            SessionState::Connecting | SessionState::BackingOff { .. }
        ),
        "{seen:?}"
    );
    assert_eq!(connected_id(&seen[seen.len() - 1]), Some(second.as_str()));
    assert!(backing_off < seen.len() - 1, "{seen:?}");
    assert!(
        !seen.contains(&SessionState::Closed),
        "{transport:?}: {seen:?}"
    );

    // The hello was said again: access requests still arrive.
    bob_asks(&volt, &format!("bob-{transport:?}"), &home).await;
    let event = next_event(&mut events, "an auth request after the restart").await;
    access_request_id(&event);
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_comes_back_after_a_restart_on_the_websocket() {
    comes_back_after_a_restart(Transport::Websocket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_comes_back_after_a_restart_over_grpc() {
    comes_back_after_a_restart(Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_reconnecting_closes_after_the_volt_stops() {
    let mut volt = TestVolt::start("session-never").await;
    let client = volt
        .client_with(Transport::Websocket, |b| {
            b.reconnect(ReconnectPolicy::never())
        })
        .await;
    let session = client
        .session(SessionOptions::new())
        .await
        .expect("session");
    let mut events = session.events().expect("events");
    volt.stop().await;
    state_becomes(&session, "closed", |s| *s == SessionState::Closed).await;
    assert_eq!(within("the end of the events", events.next()).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_ends_the_session() {
    let volt = TestVolt::start("session-drop").await;
    let client = volt.client().await;
    let session = client
        .session(SessionOptions::new())
        .await
        .expect("session");
    let mut state = session.state();
    let events = session.events().expect("events");
    let clone = session.clone();
    drop(session);
    drop(clone);
    drop(events);
    within("closed", state.wait_for(|s| *s == SessionState::Closed))
        .await
        .expect("the task says Closed before it ends");
}
