//! WireAPI's unit tests: calls made through `dispatch`, as a transport makes them, and what the
//! hub sees of them.

use super::*;
use crate::call::{InboundSender, OutboundReceiver};
use crate::services::test_support::{caller, recv, send, TestServices};
use pb::subscribe_wire_request::Payload as SubIn;
use pb::subscribe_wire_response::Payload as SubOut;
use tokio::task::JoinHandle;

/// The shared fixture, with this module's helpers on top (fields reached through Deref).
struct Fixture(TestServices);

impl std::ops::Deref for Fixture {
    type Target = TestServices;

    fn deref(&self) -> &TestServices {
        &self.0
    }
}

impl Fixture {
    fn new() -> Fixture {
        Fixture(TestServices::new("wires"))
    }

    /// Starts a call; returns the request sender, the response receiver and the handler.
    fn start(
        &self,
        method: &'static str,
    ) -> (
        InboundSender,
        OutboundReceiver,
        JoinHandle<Result<(), Failure>>,
    ) {
        let (tx, inbound) = Inbound::channel();
        let (outbound, rx) = Outbound::channel();
        let svc = Arc::clone(&self.svc);
        let handle =
            tokio::spawn(
                async move { dispatch(&svc, &caller(), method, inbound, &outbound).await },
            );
        (tx, rx, handle)
    }

    async fn save_wire(&self, name: &str) -> String {
        let (tx, mut rx, handle) = self.start("SaveWire");
        send(
            &tx,
            &pb::SaveWireRequest {
                resource: Some(pb::Resource {
                    name: name.into(),
                    ..pb::Resource::default()
                }),
                create: true,
                ..pb::SaveWireRequest::default()
            },
        )
        .await;
        handle.await.unwrap().unwrap();
        let response: pb::SaveWireResponse = recv(&mut rx).await.unwrap();
        let resource = response.resource.unwrap();
        assert!(resource.kind.iter().any(|k| k == kind::WIRE));
        resource.id
    }

    /// Subscribes and waits until the hub has the subscription.
    async fn subscriber(
        &self,
        wire_id: &str,
    ) -> (
        InboundSender,
        OutboundReceiver,
        JoinHandle<Result<(), Failure>>,
    ) {
        let mut changes = self.svc.wires().watch_changes();
        let before = self.svc.wires().subscriber_count(wire_id);
        let call = self.start("SubscribeWire");
        send(&call.0, &subscribe_to(wire_id)).await;
        changes
            .wait_for(|_| self.svc.wires().subscriber_count(wire_id) > before)
            .await
            .unwrap();
        call
    }

    async fn wait_for_subscribers(&self, wire_id: &str, n: usize) {
        let mut changes = self.svc.wires().watch_changes();
        changes
            .wait_for(|_| self.svc.wires().subscriber_count(wire_id) == n)
            .await
            .unwrap();
    }
}

fn subscribe_to(wire_id: &str) -> pb::SubscribeWireRequest {
    pb::SubscribeWireRequest {
        payload: Some(SubIn::WireId(wire_id.into())),
    }
}

fn publish_chunk(wire_id: &str, chunk: Vec<u8>) -> pb::PublishWireRequest {
    pb::PublishWireRequest {
        wire_id: wire_id.into(),
        chunk,
        do_not_persist: false,
    }
}

fn chunk_of(i: u32) -> Vec<u8> {
    i.to_be_bytes().to_vec()
}

async fn next_chunk(rx: &mut OutboundReceiver) -> Vec<u8> {
    match recv::<pb::SubscribeWireResponse>(rx).await.unwrap().payload {
        Some(SubOut::Chunk(c)) => c,
        other => panic!("expected a chunk, got {other:?}"),
    }
}

#[tokio::test]
async fn two_subscribers_receive_every_chunk_in_order() {
    let f = Fixture::new();
    let wire = f.save_wire("sensor").await;
    let (_a_tx, mut a_rx, _a) = f.subscriber(&wire).await;
    let (_b_tx, mut b_rx, _b) = f.subscriber(&wire).await;

    let (p_tx, mut p_rx, publisher) = f.start("PublishWire");
    // The fail-fast opening the official clients recommend: wire id, no chunk.
    send(&p_tx, &publish_chunk(&wire, Vec::new())).await;
    for i in 0..100u32 {
        let id = if i % 2 == 0 { wire.as_str() } else { "" };
        send(&p_tx, &publish_chunk(id, chunk_of(i))).await;
    }
    drop(p_tx);
    publisher.await.unwrap().unwrap();
    let done: pb::PublishWireResponse = recv(&mut p_rx).await.unwrap();
    let status = done.status.unwrap();
    assert_eq!((status.code, status.message.as_str()), (0, ""));
    assert!(recv::<pb::PublishWireResponse>(&mut p_rx).await.is_none());

    for i in 0..100u32 {
        assert_eq!(next_chunk(&mut a_rx).await, chunk_of(i));
        assert_eq!(next_chunk(&mut b_rx).await, chunk_of(i));
    }
}

#[tokio::test]
async fn stop_ends_the_subscription_and_unregisters_it() {
    let f = Fixture::new();
    let wire = f.save_wire("w").await;
    let (tx, mut rx, handle) = f.subscriber(&wire).await;
    assert_eq!(f.svc.wires().publish(&wire, b"hello".to_vec()), 1);
    assert_eq!(next_chunk(&mut rx).await, b"hello");

    send(
        &tx,
        &pb::SubscribeWireRequest {
            payload: Some(SubIn::Stop(true)),
        },
    )
    .await;
    handle.await.unwrap().unwrap();
    assert!(rx.recv().await.is_none(), "no response after stop");
    assert_eq!(f.svc.wires().subscriber_count(&wire), 0);
    assert_eq!(f.svc.wires().active_wires(), 0);
    assert_eq!(f.svc.wires().publish(&wire, b"late".to_vec()), 0);
}

#[tokio::test]
async fn subscriber_is_removed_when_its_call_ends() {
    let f = Fixture::new();
    let wire = f.save_wire("w").await;

    // The client ends its side.
    let (tx, _rx, handle) = f.subscriber(&wire).await;
    drop(tx);
    handle.await.unwrap().unwrap();
    assert_eq!(f.svc.wires().subscriber_count(&wire), 0);

    // The client goes away without ending its side.
    let (_tx, rx, handle) = f.subscriber(&wire).await;
    drop(rx);
    assert_eq!(handle.await.unwrap().unwrap_err().code(), Code::Cancelled);
    assert_eq!(f.svc.wires().subscriber_count(&wire), 0);

    // The handler itself is dropped mid-call.
    let (_tx, _rx, handle) = f.subscriber(&wire).await;
    handle.abort();
    assert!(handle.await.unwrap_err().is_cancelled());
    f.wait_for_subscribers(&wire, 0).await;
    assert_eq!(f.svc.wires().active_wires(), 0);
}

#[tokio::test]
async fn slow_subscriber_is_cut_off_without_stalling_others() {
    let f = Fixture::new();
    let wire = f.save_wire("firehose").await;
    // Never reads its responses.
    let (_slow_tx, mut slow_rx, slow) = f.subscriber(&wire).await;
    let (_fast_tx, mut fast_rx, _fast) = f.subscriber(&wire).await;

    let (p_tx, mut p_rx, publisher) = f.start("PublishWire");
    // More than the slow subscriber can hold: its queue plus the transport's buffer plus
    // one chunk in hand.
    let total = (SUBSCRIBER_QUEUE + crate::call::OUTBOUND_CAPACITY) as u32 * 2;
    for i in 0..total {
        send(&p_tx, &publish_chunk(&wire, chunk_of(i))).await;
        // Lock-step with the fast subscriber: it is never behind by more than one chunk.
        assert_eq!(next_chunk(&mut fast_rx).await, chunk_of(i));
    }
    drop(p_tx);
    publisher.await.unwrap().unwrap();
    let done: pb::PublishWireResponse = recv(&mut p_rx).await.unwrap();
    assert_eq!(done.status.unwrap().message, "");

    let failure = slow.await.unwrap().unwrap_err();
    assert_eq!(failure.code(), Code::ResourceExhausted);
    assert!(!failure.is_abort());
    assert_eq!(
        failure.message(),
        format!("subscriber too slow: {SUBSCRIBER_QUEUE} chunks behind, subscription ended")
    );
    assert_eq!(f.svc.wires().subscriber_count(&wire), 1);

    // What the slow subscriber did get is an in-order prefix.
    let mut got = 0u32;
    while let Ok(bytes) = slow_rx.try_recv() {
        let r = pb::SubscribeWireResponse::decode(bytes.as_ref()).unwrap();
        assert_eq!(r.payload, Some(SubOut::Chunk(chunk_of(got))));
        got += 1;
    }
    assert!(got > 0 && got < total);
}

#[tokio::test]
async fn unknown_wire_is_not_found() {
    let f = Fixture::new();
    let (tx, _rx, handle) = f.start("SubscribeWire");
    send(&tx, &subscribe_to("no-such-wire")).await;
    assert_eq!(handle.await.unwrap().unwrap_err().code(), Code::NotFound);

    let (tx, _rx, handle) = f.start("PublishWire");
    send(&tx, &publish_chunk("no-such-wire", b"x".to_vec())).await;
    let failure = handle.await.unwrap().unwrap_err();
    assert_eq!(failure.code(), Code::NotFound);
    assert!(!failure.is_abort());

    // An existing resource that is not a wire.
    let root = f.svc.resources().root_id().to_owned();
    let (tx, _rx, handle) = f.start("SubscribeWire");
    send(&tx, &subscribe_to(&root)).await;
    assert_eq!(
        handle.await.unwrap().unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(f.svc.wires().active_wires(), 0);
}

#[tokio::test]
async fn oversize_chunk_is_rejected() {
    let f = Fixture::new();
    let wire = f.save_wire("w").await;
    let (_s_tx, mut s_rx, _s) = f.subscriber(&wire).await;
    let (tx, _rx, handle) = f.start("PublishWire");
    send(&tx, &publish_chunk(&wire, b"ok".to_vec())).await;
    send(&tx, &publish_chunk("", vec![0u8; MAX_CHUNK_BYTES + 1])).await;
    let failure = handle.await.unwrap().unwrap_err();
    assert_eq!(failure.code(), Code::InvalidArgument);
    assert_eq!(next_chunk(&mut s_rx).await, b"ok");
}

#[tokio::test]
async fn publishing_to_another_wire_mid_call_is_rejected() {
    let f = Fixture::new();
    let a = f.save_wire("a").await;
    let b = f.save_wire("b").await;
    let (tx, _rx, handle) = f.start("PublishWire");
    send(&tx, &publish_chunk(&a, Vec::new())).await;
    send(&tx, &publish_chunk(&b, b"x".to_vec())).await;
    assert_eq!(
        handle.await.unwrap().unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn save_wire_updates_and_unknown_methods_are_unimplemented() {
    let f = Fixture::new();
    let wire = f.save_wire("before").await;
    let (tx, mut rx, handle) = f.start("SaveWire");
    send(
        &tx,
        &pb::SaveWireRequest {
            resource: Some(pb::Resource {
                id: wire.clone(),
                name: "after".into(),
                ..pb::Resource::default()
            }),
            ..pb::SaveWireRequest::default()
        },
    )
    .await;
    handle.await.unwrap().unwrap();
    let saved = recv::<pb::SaveWireResponse>(&mut rx)
        .await
        .unwrap()
        .resource
        .unwrap();
    assert_eq!(
        (saved.id.as_str(), saved.name.as_str()),
        (wire.as_str(), "after")
    );
    assert!(saved.kind.iter().any(|k| k == kind::WIRE));

    let (_tx, _rx, handle) = f.start("Nope");
    let failure = handle.await.unwrap().unwrap_err();
    assert_eq!(failure.code(), Code::Unimplemented);
    assert!(failure.is_abort());
    assert!(failure
        .message()
        .starts_with("/tdx.volt_api.volt.v1.WireAPI/Nope"));
}
