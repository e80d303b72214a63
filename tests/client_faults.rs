//! The client under faults, through the emulator's fault proxy and across restarts: a
//! blackholed connection is found dead by the keepalive, and many callers keep calling while
//! the Volt restarts again and again.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::json;
use tdx_volt::{CallEvent, ConnectionState, ReconnectPolicy, Transport, VoltClient};
use tdx_volt_emulator::fault::{route_config_through, FaultProxy};

use support::{new_wire, subscriptions_live, within, TestVolt};

/// A connection that goes silent (the proxy holds every byte, no reset) is declared dead
/// within twice the keepalive, failing the calls live on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_connection_is_found_within_two_keepalives() {
    let volt = TestVolt::start("faults-blackhole").await;
    let (gateway, grpc) = volt.addresses();
    let keepalive = Duration::from_secs(1);
    for transport in [Transport::Websocket, Transport::Grpc] {
        let upstream = if transport == Transport::Grpc {
            grpc
        } else {
            gateway
        };
        let proxy = FaultProxy::start(upstream).await.expect("proxy");
        let routed = if transport == Transport::Grpc {
            route_config_through(&volt.config(), Some(proxy.addr()), None)
        } else {
            route_config_through(&volt.config(), None, Some(proxy.addr()))
        }
        .expect("routed");
        let client: VoltClient = tdx_volt::VoltClient::builder()
            .config(routed)
            .transport(transport)
            .keepalive(keepalive)
            .connect()
            .await
            .expect("through the proxy");
        let direct = volt.client_over(transport).await;
        let wire = new_wire(&direct, "silent").await;
        let mut call = client
            .subscribe_wire(json!({"wire_id": wire}))
            .await
            .expect("SubscribeWire");
        subscriptions_live(volt.emulator(), &wire, 1).await;

        proxy.pause();
        let paused = Instant::now();
        let end = within("the keepalive verdict", call.next()).await;
        let took = paused.elapsed();
        match end {
            Some(CallEvent::Failed(e)) => {
                assert!(e.is_timeout() || e.is_closed(), "{transport:?}: {e:?}")
            }
            other => panic!("{transport:?}: {other:?}"),
        }
        // Twice the keepalive, plus the websocket task's half-second tick.
        assert!(
            took <= keepalive * 2 + Duration::from_millis(900),
            "{transport:?}: found dead after {took:?}"
        );
    }
}

/// 50 callers keep calling while the Volt restarts 5 times: every call succeeds or fails with
/// a typed error, none hangs, and the connection's state is seen going down and up each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_callers_across_five_restarts() {
    const CALLERS: usize = 50;
    const RESTARTS: usize = 5;
    let mut volt = TestVolt::start("faults-restarts").await;
    let policy = ReconnectPolicy::default()
        .with_initial_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_millis(200));
    for transport in [Transport::Websocket, Transport::Grpc] {
        let client = volt
            .client_with(transport, |b| {
                b.reconnect(policy.clone())
                    .request_timeout(Duration::from_secs(3))
            })
            .await;
        let mut states = client.connection_state();
        let downs = tokio::spawn(async move {
            let mut downs = 0usize;
            let mut was_up = true;
            while states.changed().await.is_ok() {
                let up = *states.borrow_and_update() == ConnectionState::Connected;
                if was_up && !up {
                    downs += 1;
                }
                was_up = up;
            }
            downs
        });
        let stop = Arc::new(AtomicBool::new(false));
        // Successful calls so far, for the test to wait on.
        let (succeeded, mut progress) = tokio::sync::watch::channel(0usize);
        let succeeded = Arc::new(succeeded);
        let mut callers = Vec::new();
        for n in 0..CALLERS {
            let client = client.clone();
            let stop = stop.clone();
            let succeeded = succeeded.clone();
            callers.push(tokio::spawn(async move {
                let (mut ok, mut failed) = (0usize, 0usize);
                let mut ids = HashSet::new();
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("caller-{n}-{}", ok + failed);
                    let started = Instant::now();
                    match client
                        .save_resource(json!({"resource": {"name": name}, "create": true}))
                        .await
                    {
                        Ok(saved) => {
                            ok += 1;
                            succeeded.send_modify(|n| *n += 1);
                            // One answer per call: each success is a resource of its own.
                            let id = saved["resource"]["id"].as_str().unwrap_or("").to_owned();
                            assert!(ids.insert(id), "a call answered twice");
                            assert_eq!(saved["resource"]["name"], json!(name));
                        }
                        Err(e) => {
                            failed += 1;
                            assert!(
                                e.is_closed() || e.is_timeout() || e.is_connect() || e.is_tls(),
                                "an untyped failure: {e:?}"
                            );
                        }
                    }
                    // None hangs: the request timeout (3 s) bounds each one. The bound
                    // checked is far looser, as the emulator shares this test's two runtime
                    // threads (and the machine its cores): a late timer is not a hang.
                    assert!(started.elapsed() < support::WAIT, "a call hung");
                }
                (ok, failed)
            }));
        }
        let addresses = volt.addresses();
        // Some calls get through, the Volt goes away and comes back; five times over, then
        // calls get through once more.
        for round in 0..=RESTARTS {
            let before = *progress.borrow_and_update();
            within(
                "calls between restarts",
                progress.wait_for(|n| *n >= before + CALLERS),
            )
            .await
            .expect("callers");
            if round < RESTARTS {
                volt.stop().await;
                volt.start_on(addresses).await;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let (mut ok, mut failed) = (0, 0);
        for caller in callers {
            let (o, f) = within("a caller to finish", caller).await.expect("caller");
            ok += o;
            failed += f;
        }
        drop(client);
        let downs = within("the state log", downs).await.expect("watcher");
        assert!(
            ok > CALLERS,
            "{transport:?}: only {ok} calls succeeded ({failed} failed)"
        );
        assert!(
            downs >= 1,
            "{transport:?}: the state never showed the Volt gone"
        );
        println!("{transport:?}: {ok} calls succeeded, {failed} failed, {downs} losses seen");
    }
}
