//! One attempt at a session: open Connect, say hello, wait for the acknowledge.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::Value;

use super::options::SessionOptions;
use crate::client::{Call, CallEvent, VoltClient};
use crate::{Error, ErrorKind};

/// The Connect method.
pub(super) const CONNECT: &str = "/tdx.volt_api.volt.v1.VoltAPI/Connect";

/// What ends a Volt error that means the client's session is no longer accepted.
const SESSION_INVALID: &str = "session invalid";

/// A Connect call the Volt acknowledged.
pub(super) struct Established {
    pub call: Call,
    pub connection_id: String,
    /// How long the Volt may take to answer a ping.
    pub ping_timeout: Duration,
}

/// Why an attempt (or a live session) ended.
#[derive(Debug)]
pub(super) enum Refused {
    /// Anything a new attempt may cure: the connection, a timeout, an error from the Volt.
    Failed(Error),
    /// The Volt no longer accepts the client's session: no new attempt will do.
    Invalid(Error),
}

impl Refused {
    /// Sorts an error from the Volt or the connection.
    pub(super) fn from_error(error: Error) -> Refused {
        if session_invalid(&error).is_some() {
            Refused::Invalid(error)
        } else {
            Refused::Failed(error)
        }
    }
}

/// The Volt's message when `error` says the session is invalid (a message ending in
/// `session invalid`, as the official client tests it).
pub(super) fn session_invalid(error: &Error) -> Option<String> {
    let message = match error.status() {
        Some(status) if !status.message.is_empty() => status.message.clone(),
        _ => error.to_string(),
    };
    message
        .trim_end()
        .ends_with(SESSION_INVALID)
        .then_some(message)
}

/// Opens Connect with the hello of `options` and waits (within the client's connect timeout)
/// for the acknowledge.
pub(super) async fn establish(
    client: &VoltClient,
    options: &SessionOptions,
) -> Result<Established, Refused> {
    let mut call = client
        .streaming(CONNECT, Some(options.hello()))
        .await
        .map_err(Refused::from_error)?;
    let wait = client.connect_timeout();
    let (connection_id, ping_ms) = match tokio::time::timeout(wait, acknowledged(&mut call)).await {
        Ok(acknowledged) => acknowledged?,
        Err(_) => {
            return Err(Refused::Failed(Error::new(
                ErrorKind::Timeout,
                format!("Connect: no acknowledge from the Volt within {wait:?}"),
            )))
        }
    };
    // An acknowledge without a ping interval (0) leaves the wait to the client.
    let ping_timeout = if ping_ms == 0 {
        options.fallback_ping_timeout()
    } else {
        Duration::from_millis(ping_ms)
    };
    tracing::debug!(%connection_id, ?ping_timeout, "volt session acknowledged");
    Ok(Established {
        call,
        connection_id,
        ping_timeout,
    })
}

/// Reads up to the acknowledge: its connection id and ping interval (ms).
async fn acknowledged(call: &mut Call) -> Result<(String, u64), Refused> {
    loop {
        match call.next().await {
            Some(CallEvent::Data(message)) => {
                if let Some(ack) = message.get("acknowledge") {
                    return parse_acknowledge(ack).map_err(Refused::Failed);
                }
                // Nothing is expected before the acknowledge; what comes is not for us yet.
                tracing::debug!("volt session: a message before the acknowledge, skipped");
            }
            Some(CallEvent::Error(e) | CallEvent::Failed(e)) => return Err(Refused::from_error(e)),
            Some(CallEvent::End) | None => {
                return Err(Refused::Failed(Error::new(
                    ErrorKind::Closed,
                    "Connect: the Volt ended the call before acknowledging the hello",
                )))
            }
        }
    }
}

/// The connection id and ping interval (ms) of a `ConnectAcknowledge` (proto3 JSON: absent
/// fields are empty or 0).
pub(super) fn parse_acknowledge(ack: &Value) -> Result<(String, u64), Error> {
    let malformed = |what: &str| {
        Error::new(
            ErrorKind::Protocol,
            format!("Connect: the acknowledge's {what}"),
        )
    };
    if !ack.is_object() {
        return Err(malformed("body is not an object"));
    }
    let connection_id = match ack.get("connection_id") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(id)) => id.clone(),
        Some(_) => return Err(malformed("connection_id is not a string")),
    };
    let ping_ms = match ack.get("ping_interval") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| malformed("ping_interval is not a whole number"))?,
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| malformed("ping_interval is not a whole number"))?,
        Some(_) => return Err(malformed("ping_interval is not a number")),
    };
    Ok((connection_id, ping_ms))
}
