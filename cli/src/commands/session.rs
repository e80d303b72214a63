//! `volt session`: a Connect session's events, one JSON object per line.

use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tdx_volt::{SessionEvent, SessionOptions};

use super::{interrupted, Context};
use crate::exit::{Failure, PROTOCOL, STATUS};

/// Opens a session with resource events, access requests and DID registry updates, prints
/// `{"event": "connected", ...}` once the Volt has acknowledged it, then one line per event
/// until Ctrl-C (then says goodbye) or until the Volt ends the session.
pub async fn run(cx: &Context) -> Result<(), Failure> {
    let client = cx.connect().await?;
    let options = SessionOptions::new()
        .resource_events(true)
        .auth_requests(true)
        .did_registry_updates(true);
    let session = client.session(options).await?;
    let mut events = session
        .events()
        .ok_or_else(|| Failure::new(PROTOCOL, "the session's events were already taken"))?;
    cx.out.json_line(&json!({
        "event": "connected",
        "connection_id": session.connection_id(),
    }))?;
    let stop = interrupted();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => {
                session.close().await;
                return Ok(());
            }
            event = events.next() => {
                let Some(event) = event else {
                    return Ok(());
                };
                cx.out.json_line(&line_for(&event))?;
                if let SessionEvent::SessionInvalid { message } = event {
                    return Err(Failure::new(STATUS, format!("session invalid: {message}")));
                }
            }
        }
    }
}

/// The JSON line for one event.
fn line_for(event: &SessionEvent) -> Value {
    match event {
        SessionEvent::Resource { kind, resource } => json!({
            "event": kind.as_str(),
            "resource": resource,
        }),
        SessionEvent::AuthRequest {
            request_type,
            session,
            context,
            challenge,
            timestamp_ms,
        } => json!({
            "event": "auth_request",
            "request_type": request_type,
            "session": session,
            "context": context,
            "challenge": challenge,
            "timestamp_ms": timestamp_ms,
        }),
        SessionEvent::DidRegistryUpdate(update) => json!({
            "event": "did_registry_update",
            "update": update,
        }),
        SessionEvent::Reconnected { connection_id } => json!({
            "event": "reconnected",
            "connection_id": connection_id,
        }),
        SessionEvent::Lagged { missed } => json!({"event": "lagged", "missed": missed}),
        SessionEvent::SessionInvalid { message } => {
            json!({"event": "session_invalid", "message": message})
        }
        other => json!({"event": "other", "detail": format!("{other:?}")}),
    }
}
