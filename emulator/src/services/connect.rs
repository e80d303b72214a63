//! VoltAPI Connect: the long-lived stream a client keeps open to stay in touch with the
//! Volt. Hello is acknowledged, pings answered, goodbye returned, and the events the hello
//! subscribed to are sent as they happen. A hello with `accept_invocation` makes the stream a
//! host's (`super::hosting`): invocations routed to its client go down it as
//! `invoke_request`s, and its `invoke_response`s go to the invocations they name.

use std::sync::Arc;
use std::time::Duration;

use tdx_volt::proto::volt as pb;
use tracing::debug;

use crate::call::{Caller, Failure, Inbound, Outbound};

use super::auth::check_not_revoked;
use super::events::{Interests, Subscription};
use super::hosting::registry::{Delivery, HostRequests};
use super::hosting::Hosted;
use super::resources::{new_id, now_millis};
use super::Services;

/// Connect intervals travel in milliseconds (the official gRPC client uses them as timer
/// delays). The least the acknowledge's `ping_interval` is: how long a client waits for the
/// answer to each of its pings before it drops the connection.
pub const CONNECT_PING_TIMEOUT_MS: u32 = 30_000;
/// The ping interval assumed for a hello without one (the official gRPC client's default).
pub const CONNECT_DEFAULT_CLIENT_PING_MS: u32 = 10_000;
/// How long a Connect stream may stay silent before its hello, and the floor of the idle
/// timeout after it.
pub const CONNECT_HELLO_WAIT: Duration = Duration::from_secs(30);
const CONNECT_MIN_IDLE: Duration = Duration::from_secs(3);

/// Connect: hello is acknowledged with a connection id, the time and a ping interval (all in
/// milliseconds); pings are answered; goodbye (or the client's end) ends the stream with a
/// goodbye. A client silent for three of its own ping intervals is taken to be gone. However
/// the stream ends, a host's registration ends with it.
pub async fn connect(
    svc: &Arc<Services>,
    caller: &Caller,
    inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    let mut hosted = None;
    let result = session(svc, caller, inbound, outbound, &mut hosted).await;
    if let Some(hosted) = hosted {
        hosted.end().await;
    }
    result
}

async fn session(
    svc: &Arc<Services>,
    caller: &Caller,
    mut inbound: Inbound,
    outbound: &Outbound,
    hosted: &mut Option<Hosted>,
) -> Result<(), Failure> {
    use pb::connect_request::Payload as In;
    use pb::connect_response::Payload as Out;
    let reply = |payload: Out| pb::ConnectResponse {
        status: None,
        payload: Some(payload),
    };
    let mut idle = CONNECT_HELLO_WAIT;
    // Only what the client sends keeps the stream alive; events going out do not.
    let mut deadline = tokio::time::Instant::now() + idle;
    let mut subscription: Option<Subscription> = None;
    let mut host_requests: Option<HostRequests> = None;
    // A revocation ends the stream at once (not at the client's next call).
    let mut revocations = svc.clients().revocations();
    check_not_revoked(svc, &caller.session_id)?;
    loop {
        let revoked = async {
            if revocations.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let event = async {
            match subscription.as_mut() {
                Some(s) => s.events.recv().await,
                None => std::future::pending().await,
            }
        };
        let invocation = async {
            match host_requests.as_mut() {
                Some(r) => r.recv().await,
                None => std::future::pending().await,
            }
        };
        let request = tokio::select! {
            heard = tokio::time::timeout_at(deadline, inbound.next::<pb::ConnectRequest>()) => {
                match heard {
                    Err(_) => return Ok(()),
                    Ok(r) => r?,
                }
            }
            Some(event) = event => {
                outbound.send(&reply(Out::Evt(event))).await?;
                continue;
            }
            Some(invocation) = invocation => {
                outbound.send(&reply(Out::InvokeRequest(invocation))).await?;
                continue;
            }
            () = revoked => {
                check_not_revoked(svc, &caller.session_id)?;
                continue;
            }
        };
        let request = request.and_then(|r| r.payload);
        if let Some(In::Hello(hello)) = &request {
            if subscription.is_none() {
                idle = connect_intervals(hello.ping_interval).1;
            }
        }
        deadline = tokio::time::Instant::now() + idle;
        match request {
            Some(In::Hello(hello)) if subscription.is_none() => {
                let (ping_timeout, _) = connect_intervals(hello.ping_interval);
                let interests = Interests {
                    auth_requests: hello.subscribe_auth_requests,
                    resource_events: hello
                        .subscribe_resource_events
                        .then(|| hello.resource_event_list.clone()),
                };
                subscription = Some(svc.events().subscribe(svc.subject(caller), interests));
                let connection_id = new_id();
                if hello.accept_invocation {
                    // Registered, and its services online, before the client hears it is.
                    let (host, requests) =
                        Hosted::start(svc, caller, &connection_id, hello.online_services).await?;
                    *hosted = Some(host);
                    host_requests = Some(requests);
                }
                outbound
                    .send(&reply(Out::Acknowledge(pb::ConnectAcknowledge {
                        connection_id,
                        timestamp: now_millis(),
                        ping_interval: ping_timeout,
                    })))
                    .await?;
            }
            Some(In::Hello(_)) => return Err(Failure::invalid("Connect: hello sent twice")),
            Some(In::Ping(_)) => {
                outbound.send(&reply(Out::Ping(pb::ConnectPing {}))).await?;
            }
            Some(In::InvokeResponse(answer)) => {
                let id = answer.invoke_id;
                match hosted.as_ref().and_then(Hosted::registration) {
                    Some(host) => {
                        if host.deliver(answer) == Delivery::Overflow {
                            debug!(invoke_id = id, "a caller fell behind its host: ended");
                        }
                    }
                    None => debug!(
                        invoke_id = id,
                        "invoke_response on a stream that hosts nothing"
                    ),
                }
            }
            Some(In::Goodbye(_)) | None => {
                // Its services are offline before the client hears the goodbye.
                if let Some(host) = hosted.take() {
                    host.end().await;
                }
                outbound
                    .send(&reply(Out::Goodbye(pb::ConnectGoodbye {
                        status: None,
                        ended: true,
                    })))
                    .await?;
                return Ok(());
            }
            Some(_) => {}
        }
    }
}

/// For a hello's `ping_interval` (ms; 0 for the default): the acknowledge's `ping_interval`
/// (ms the client may wait for each ping's answer: three of its intervals, at least
/// [`CONNECT_PING_TIMEOUT_MS`]) and how long the client may be silent (three of its intervals,
/// at least 3 s, so that a client that wrote its interval in seconds is not dropped at once).
pub fn connect_intervals(client_ping_ms: u32) -> (u32, Duration) {
    let client = if client_ping_ms == 0 {
        CONNECT_DEFAULT_CLIENT_PING_MS
    } else {
        client_ping_ms
    };
    let three = client.saturating_mul(3);
    (
        three.max(CONNECT_PING_TIMEOUT_MS),
        Duration::from_millis(u64::from(three)).max(CONNECT_MIN_IDLE),
    )
}
