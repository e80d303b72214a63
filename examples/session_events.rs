//! Opens a Connect session with resource events (and access requests) and prints one JSON
//! line per event on stdout until Ctrl-C, across Volt restarts:
//!
//! ```text
//! {"event": "created", "resource_id": "..."}
//! {"event": "auth_request", "request_type": "...", "challenge": "..."}
//! {"event": "reconnected"}
//! ```
//!
//! `cargo run --example session_events -- CONFIG`, where CONFIG is the client configuration
//! JSON the Volt issued (for volt-emulator: `DIR/client.config.json`). The session's state
//! goes to stderr.

use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tdx_volt::{SessionEvent, SessionOptions, SessionState, VoltClient};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(config) = std::env::args().nth(1) else {
        eprintln!("usage: session_events CONFIG");
        std::process::exit(2);
    };
    let client = VoltClient::from_file(config).await?;
    let session = client
        .session(
            SessionOptions::new()
                .resource_events(true)
                .auth_requests(true),
        )
        .await?;
    let Some(mut events) = session.events() else {
        return Err("the events stream was already taken".into());
    };

    let mut state = session.state();
    tokio::spawn(async move {
        while state.changed().await.is_ok() {
            let now = state.borrow_and_update().clone();
            eprintln!("session: {now:?}");
            if now == SessionState::Closed {
                break;
            }
        }
    });

    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                eprintln!("closing");
                session.close().await;
                return Ok(());
            }
            event = events.next() => {
                let Some(event) = event else {
                    eprintln!("the session is over");
                    return Ok(());
                };
                if let Some(line) = line_for(&event) {
                    println!("{}", spaced(&line));
                }
            }
        }
    }
}

/// The JSON line for one event (`None` for kinds this example does not know).
fn line_for(event: &SessionEvent) -> Option<Value> {
    Some(match event {
        SessionEvent::Resource { kind, resource } => json!({
            "event": kind.as_str(),
            "resource_id": resource.get("id").and_then(Value::as_str).unwrap_or_default(),
        }),
        SessionEvent::AuthRequest {
            request_type,
            challenge,
            ..
        } => json!({
            "event": "auth_request",
            "request_type": request_type,
            "challenge": challenge,
        }),
        SessionEvent::DidRegistryUpdate(_) => json!({"event": "did_registry_update"}),
        SessionEvent::Reconnected { .. } => json!({"event": "reconnected"}),
        SessionEvent::Lagged { missed } => json!({"event": "lagged", "missed": missed}),
        SessionEvent::SessionInvalid { message } => {
            json!({"event": "session_invalid", "message": message})
        }
        _ => return None,
    })
}

/// A flat JSON object written as `{"event": "created", "resource_id": "..."}`: one space after
/// each colon and comma, the fields in the order they were made.
fn spaced(line: &Value) -> String {
    let Some(fields) = line.as_object() else {
        return line.to_string();
    };
    let fields: Vec<String> = fields
        .iter()
        .map(|(key, value)| format!("{}: {value}", Value::from(key.as_str())))
        .collect();
    format!("{{{}}}", fields.join(", "))
}
