//! Deadlines on streaming calls, on both transports: an idle timeout that each message
//! restarts, and a deadline; either ends the call with a timeout error and cancels it on the
//! Volt.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::json;
use tdx_volt::{CallEvent, Transport};

use support::{new_wire, publish, subscriptions_gone, subscriptions_live, within, TestVolt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_subscription_ends_after_its_idle_timeout() {
    let volt = TestVolt::start("deadline-idle").await;
    for transport in [Transport::Websocket, Transport::Grpc] {
        let client = volt.client_over(transport).await;
        let wire = new_wire(&client, "quiet").await;
        let idle = Duration::from_millis(400);
        let mut call = client
            .subscribe_wire(json!({"wire_id": wire}))
            .await
            .expect("SubscribeWire")
            .with_idle_timeout(idle);
        subscriptions_live(volt.emulator(), &wire, 1).await;
        // Messages keep it open: each restarts the wait.
        for n in 0..3 {
            publish(&client, &wire, format!("chunk {n}").as_bytes()).await;
            match within("a chunk", call.next()).await {
                Some(CallEvent::Data(_)) => {}
                other => panic!("{transport:?}: {other:?}"),
            }
        }
        let quiet_from = Instant::now();
        match within("the idle timeout", call.next()).await {
            Some(CallEvent::Failed(e)) => {
                assert!(e.is_timeout(), "{transport:?}: {e:?}");
                assert!(e.to_string().contains("no message for"), "{e}");
            }
            other => panic!("{transport:?}: {other:?}"),
        }
        assert!(quiet_from.elapsed() >= idle - Duration::from_millis(50));
        assert!(call.next().await.is_none(), "the stream is over");
        // Cancelled on the wire too.
        subscriptions_gone(volt.emulator(), &wire).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_call_ends_at_its_deadline() {
    let volt = TestVolt::start("deadline-at").await;
    for transport in [Transport::Websocket, Transport::Grpc] {
        let client = volt.client_over(transport).await;
        let wire = new_wire(&client, "bounded").await;
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut call = client
            .subscribe_wire(json!({"wire_id": wire}))
            .await
            .expect("SubscribeWire")
            .with_deadline(deadline);
        subscriptions_live(volt.emulator(), &wire, 1).await;
        publish(&client, &wire, b"before the deadline").await;
        match within("a chunk", call.next()).await {
            Some(CallEvent::Data(_)) => {}
            other => panic!("{transport:?}: {other:?}"),
        }
        match within("the deadline", call.next()).await {
            Some(CallEvent::Failed(e)) => {
                assert!(
                    e.is_timeout() && e.to_string().contains("deadline"),
                    "{e:?}"
                );
            }
            other => panic!("{transport:?}: {other:?}"),
        }
        assert!(Instant::now() >= deadline);
        subscriptions_gone(volt.emulator(), &wire).await;
    }
}
