//! Reconnecting, on each transport: the connection's state as the Volt goes away and comes
//! back on the same ports, calls made meanwhile (waiting within their own timeout, or failing
//! at once when asked to), the policy's backoff, and never reconnecting.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use tdx_volt::{ConnectionState, ReconnectPolicy, Transport, VoltClient};
use tokio::sync::watch;

use support::{within, TestVolt};

/// Every state the watch shows from now on, in order, until `stop` is dropped.
fn record(
    mut states: watch::Receiver<ConnectionState>,
) -> tokio::task::JoinHandle<Vec<ConnectionState>> {
    tokio::spawn(async move {
        let mut seen = vec![states.borrow_and_update().clone()];
        while states.changed().await.is_ok() {
            seen.push(states.borrow_and_update().clone());
            if seen.len() > 10_000 {
                break;
            }
        }
        seen
    })
}

async fn until_state(
    client: &VoltClient,
    what: &str,
    wanted: impl Fn(&ConnectionState) -> bool,
) -> ConnectionState {
    let mut states = client.connection_state();
    let seen = within(what, states.wait_for(|s| wanted(s)))
        .await
        .expect("the client is alive")
        .clone();
    seen
}

async fn client_with(volt: &TestVolt, transport: Transport, policy: ReconnectPolicy) -> VoltClient {
    volt.client_with(transport, |b| b.reconnect(policy)).await
}

fn quick() -> ReconnectPolicy {
    ReconnectPolicy::default()
        .with_initial_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_millis(400))
}

async fn survives_a_restart(transport: Transport) {
    let mut volt = TestVolt::start(&format!("reconnect-{transport:?}")).await;
    let client = client_with(&volt, transport, quick()).await;
    assert_eq!(
        *client.connection_state().borrow(),
        ConnectionState::Connected
    );
    let history = record(client.connection_state());
    let root = json!({"resource_id": client.volt_id()});
    client
        .get_resource(root.clone())
        .await
        .expect("a first call");

    let addresses = volt.addresses();
    volt.stop().await;
    // The loss is noticed (at once on the websocket; by the next call on gRPC, whose idle
    // connection is not watched).
    let lost = client
        .with_request_timeout(Duration::from_millis(500))
        .get_resource(root.clone())
        .await;
    assert!(lost.is_err(), "a call with the Volt gone: {lost:?}");
    until_state(&client, "the loss", |s| {
        !matches!(s, ConnectionState::Connected | ConnectionState::Connecting)
    })
    .await;

    // While it is down a call waits within its own timeout, then fails. (On gRPC a call may
    // first meet the closing connection, before HTTP/2 has noticed, and fail as closed.)
    let short = client.with_request_timeout(Duration::from_millis(700));
    let mut waited = None;
    for _ in 0..3 {
        let started = Instant::now();
        let error = short
            .get_resource(root.clone())
            .await
            .expect_err("nobody there");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "bounded by its timeout"
        );
        if error.is_timeout() || error.is_connect() {
            waited = Some(error);
            break;
        }
        assert!(error.is_closed(), "a call while down: {error:?}");
    }
    let waited = waited.expect("a call waited for the connection");
    assert!(waited.is_retry_safe(), "never sent: {waited:?}");
    let backing_off = until_state(&client, "backing off", |s| {
        matches!(s, ConnectionState::BackingOff { .. })
    })
    .await;
    let ConnectionState::BackingOff { failures, .. } = backing_off else {
        unreachable!()
    };
    assert!(failures >= 1);

    volt.start_on(addresses).await;
    let back = within(
        "a call once the Volt is back",
        client.get_resource(root.clone()),
    )
    .await
    .expect("the client reconnects");
    assert_eq!(back["resource"]["id"], json!(client.volt_id()));
    assert_eq!(
        *client.connection_state().borrow(),
        ConnectionState::Connected
    );

    drop(client);
    drop(short);
    let seen = within("the recorded states", history)
        .await
        .expect("recorder");
    // In order: connected, then not, then backing off, then connected again.
    let position = |from: usize, what: fn(&ConnectionState) -> bool| {
        seen[from..]
            .iter()
            .position(what)
            .map(|i| i + from)
            .unwrap_or_else(|| panic!("state sequence {seen:?}"))
    };
    let down = position(0, |s| !matches!(s, ConnectionState::Connected));
    let waiting = position(down, |s| matches!(s, ConnectionState::BackingOff { .. }));
    position(waiting, |s| matches!(s, ConnectionState::Connected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_client_survives_a_restart() {
    survives_a_restart(Transport::Websocket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_client_survives_a_restart() {
    survives_a_restart(Transport::Grpc).await;
}

/// With `wait_for_connection(false)` a call made while the client is down fails at once,
/// saying it was not sent; the wait between attempts follows the policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_can_fail_fast_and_attempts_back_off() {
    let mut volt = TestVolt::start("reconnect-fast").await;
    let policy = ReconnectPolicy::default()
        .with_initial_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_millis(800));
    let client = volt
        .client_with(Transport::Websocket, |b| {
            b.reconnect(policy).wait_for_connection(false)
        })
        .await;
    let root = json!({"resource_id": client.volt_id()});
    volt.stop().await;
    until_state(&client, "the loss", |s| *s == ConnectionState::Disconnected).await;
    // The first call after the loss tries at once (and fails); the next ones fail fast.
    let tried = client.get_resource(root.clone()).await.expect_err("down");
    assert!(!tried.is_status(), "{tried:?}");
    let backing_off = until_state(&client, "backing off", |s| {
        matches!(s, ConnectionState::BackingOff { .. })
    })
    .await;
    let started = Instant::now();
    let fast = client
        .get_resource(root.clone())
        .await
        .expect_err("fail fast");
    assert!(fast.is_connect(), "{fast:?}");
    assert!(fast.to_string().contains("not sent"), "{fast}");
    assert!(fast.is_retry_safe(), "never sent: {fast:?}");
    assert!(started.elapsed() < Duration::from_millis(150), "at once");
    // The wait before the next attempt is the first delay, within the jitter: [d, 2d).
    if let ConnectionState::BackingOff { until, failures } = backing_off {
        assert_eq!(failures, 1);
        let wait = until.saturating_duration_since(Instant::now());
        assert!(wait <= Duration::from_millis(400), "{wait:?}");
    }
}

/// With reconnecting off, the first loss closes the client for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_reconnecting_closes_for_good() {
    for transport in [Transport::Websocket, Transport::Grpc] {
        let mut volt = TestVolt::start(&format!("reconnect-never-{transport:?}")).await;
        let client = client_with(&volt, transport, ReconnectPolicy::never()).await;
        let root = json!({"resource_id": client.volt_id()});
        let addresses = volt.addresses();
        volt.stop().await;
        let _ = client.get_resource(root.clone()).await;
        until_state(&client, "closed", |s| *s == ConnectionState::Closed).await;
        volt.start_on(addresses).await;
        let closed = client
            .get_resource(root)
            .await
            .expect_err("closed for good");
        assert!(closed.is_closed(), "{transport:?}: {closed:?}");
    }
}

/// A resumable wire subscription comes back after a restart, marking the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumable_subscription_marks_the_gap() {
    use futures_util::StreamExt as _;
    use tdx_volt::client::WireItem;

    for transport in [Transport::Websocket, Transport::Grpc] {
        let mut volt = TestVolt::start(&format!("reconnect-wire-{transport:?}")).await;
        let client = client_with(&volt, transport, quick()).await;
        let wire = support::new_wire(&client, "resumed").await;
        let mut items = client
            .subscribe_wire_resumable(&wire)
            .await
            .expect("subscribe");
        support::subscriptions_live(volt.emulator(), &wire, 1).await;
        support::publish(&client, &wire, b"before").await;
        match within("the first chunk", items.next()).await {
            Some(Ok(WireItem::Chunk(bytes))) => assert_eq!(bytes, b"before"),
            other => panic!("{transport:?}: {other:?}"),
        }

        let addresses = volt.addresses();
        volt.stop().await;
        volt.start_on(addresses).await;
        match within("the gap", items.next()).await {
            Some(Ok(WireItem::Gap(cause))) => assert!(!cause.is_status(), "{cause:?}"),
            other => panic!("{transport:?}: {other:?}"),
        }
        support::subscriptions_live(volt.emulator(), &wire, 1).await;
        support::publish(&client, &wire, b"after").await;
        match within("a chunk after the gap", items.next()).await {
            Some(Ok(WireItem::Chunk(bytes))) => assert_eq!(bytes, b"after"),
            other => panic!("{transport:?}: {other:?}"),
        }
    }
}
