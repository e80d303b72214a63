//! Tracing of connections: one span per connection attempt, target `tdx_volt::connect`
//! (the README's "Tracing" section lists every target and field).
//!
//! Spans are made with `debug_span!`: when no subscriber wants them they are disabled, and
//! nothing is formatted, timed or allocated. No field ever holds a token, a key or a URL's
//! user information: an address is `host:port`.

use std::fmt;
use std::time::Instant;

use tracing::field::Empty;
use tracing::Span;

use super::Transport;
use crate::Error;

/// How a transport is named in spans: `grpc`, `websocket`, `legacy` (`tunnel`, gRPC through
/// a relay, is the gRPC link's own).
pub(crate) fn transport_label(transport: Transport) -> &'static str {
    match transport {
        Transport::Grpc => "grpc",
        Transport::Websocket => "websocket",
        Transport::LegacyWebsocket => "legacy",
        Transport::Auto => "auto",
    }
}

/// `host:port` (a v6 host in brackets), shown without allocating.
#[cfg_attr(not(feature = "grpc"), allow(dead_code))] // gRPC only
pub(crate) struct HostPort<'a>(pub &'a str, pub u16);

impl fmt::Display for HostPort<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.contains(':') {
            write!(f, "[{}]:{}", self.0, self.1)
        } else {
            write!(f, "{}:{}", self.0, self.1)
        }
    }
}

/// The `host:port` of a URL (`ws://user:secret@host:port/api` gives `host:port`): never
/// its user information, path or query.
#[cfg_attr(not(feature = "websocket"), allow(dead_code))] // websocket only
pub(crate) fn url_address(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// One connection attempt's span (`volt.connect`): made when the attempt starts, its
/// `outcome` (`connected`, `failed`, or `cancelled` when it is dropped unfinished) and
/// `elapsed_us` recorded when it ends.
pub(crate) struct ConnectAttempt {
    span: Span,
    /// When the attempt started; `None` once recorded, or when the span is disabled.
    start: Option<Instant>,
}

impl ConnectAttempt {
    /// Attempt number `attempt` (1 for the first after a success or at start) of `transport`
    /// to `address`; `reconnect` when a connection was made before.
    pub(crate) fn start(
        transport: &'static str,
        address: &dyn fmt::Display,
        attempt: u32,
        reconnect: bool,
    ) -> ConnectAttempt {
        let span = tracing::debug_span!(
            target: "tdx_volt::connect",
            "volt.connect",
            transport,
            address = %address,
            attempt,
            reconnect,
            outcome = Empty,
            error = Empty,
            elapsed_us = Empty,
        );
        let start = (!span.is_disabled()).then(Instant::now);
        ConnectAttempt { span, start }
    }

    /// The attempt made a connection.
    pub(crate) fn connected(mut self) {
        self.finish("connected", None);
    }

    /// The attempt failed with `error` (its message: no error holds key material).
    pub(crate) fn failed(mut self, error: &Error) {
        self.finish("failed", Some(error));
    }

    fn finish(&mut self, outcome: &'static str, error: Option<&Error>) {
        let Some(start) = self.start.take() else {
            return;
        };
        self.span.record("outcome", outcome);
        if let Some(error) = error {
            self.span.record("error", tracing::field::display(error));
        }
        self.span.record("elapsed_us", elapsed_us(start));
    }
}

impl Drop for ConnectAttempt {
    fn drop(&mut self) {
        self.finish("cancelled", None);
    }
}

/// Microseconds since `start`, saturating.
pub(crate) fn elapsed_us(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_carry_no_user_information() {
        assert_eq!(
            url_address("wss://volt.example:9443/api"),
            "volt.example:9443"
        );
        assert_eq!(url_address("ws://user:secret@relay:80/api?t=1"), "relay:80");
        assert_eq!(url_address("ws://[::1]:80"), "[::1]:80");
        assert_eq!(HostPort("::1", 9).to_string(), "[::1]:9");
        assert_eq!(HostPort("volt", 443).to_string(), "volt:443");
    }
}
