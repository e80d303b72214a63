//! Tracing of calls: one span per call, target `tdx_volt::call` (the README's "Tracing"
//! section lists every target and field).
//!
//! A call's span (`volt.call`) is made with `debug_span!` when the call starts, with its
//! `method` (the full path) and `transport`; `call_id` is recorded once the transport gives
//! the call one, and `status` (`ok`, the Volt's status code name, the error's kind, or
//! `cancelled` for a call dropped before its end), `code` (the Volt's status code, when there
//! is one) and `elapsed_us` when it ends. When no subscriber wants the span it is disabled,
//! and the guard neither reads the clock nor formats anything. Requests, responses, tokens
//! and keys never go into a field.

use std::time::Instant;

use tracing::field::Empty;
use tracing::Span;

use crate::transport::{elapsed_us, CallIo};
use crate::{Error, ErrorKind};

/// A call's span, recording how the call ended exactly once: at its end, or when it is
/// dropped unfinished (`cancelled`).
pub(crate) struct CallSpan {
    span: Span,
    /// When the call started; `None` once recorded, when the span is disabled, or for a
    /// [`follower`](CallSpan::follower), which records nothing of the end.
    start: Option<Instant>,
    /// An error event was recorded: an end that follows it keeps its status.
    errored: bool,
}

impl CallSpan {
    /// The span of a call of `method` starting now over `transport` (a
    /// [`Link::label`](crate::transport::Link::label)).
    pub(crate) fn start(method: &str, transport: &'static str) -> CallSpan {
        let span = tracing::debug_span!(
            target: "tdx_volt::call",
            "volt.call",
            method,
            transport,
            call_id = Empty,
            status = Empty,
            code = Empty,
            elapsed_us = Empty,
        );
        let start = (!span.is_disabled()).then(Instant::now);
        CallSpan {
            span,
            start,
            errored: false,
        }
    }

    /// The same span for the call's handle, while its owner (a unary call, which outlives
    /// the handle to record its timeout) records the end: it records the call id only.
    pub(crate) fn follower(&self) -> CallSpan {
        CallSpan {
            span: self.span.clone(),
            start: None,
            errored: false,
        }
    }

    /// The transport's id for the call, when it has one.
    pub(crate) fn call_id(&self, io: &dyn CallIo) {
        if self.span.is_disabled() {
            return;
        }
        if let Some(id) = io.call_id() {
            self.span.record("call_id", id);
        }
    }

    /// An error the Volt reported on a call that goes on: its status, kept if the call then
    /// ends normally.
    pub(crate) fn error(&mut self, error: &Error) {
        if self.start.is_some() {
            self.errored = true;
            record_error(&self.span, error);
        }
    }

    /// The call ended normally (`ok`, unless an error was reported on it).
    pub(crate) fn ok(&mut self) {
        if self.errored {
            self.finish(None);
        } else {
            self.finish(Some("ok"));
        }
    }

    /// The call ended with `error`.
    pub(crate) fn failed(&mut self, error: &Error) {
        if self.start.is_some() {
            record_error(&self.span, error);
            self.finish(None);
        }
    }

    /// The outcome of the call, as its owner returns it.
    pub(crate) fn outcome<T>(&mut self, result: &crate::Result<T>) {
        match result {
            Ok(_) => self.ok(),
            Err(e) => self.failed(e),
        }
    }

    /// Records `status` (unless already recorded) and the call's duration, once.
    fn finish(&mut self, status: Option<&'static str>) {
        let Some(start) = self.start.take() else {
            return;
        };
        if let Some(status) = status {
            self.span.record("status", status);
        }
        self.span.record("elapsed_us", elapsed_us(start));
    }
}

impl Drop for CallSpan {
    fn drop(&mut self) {
        // Dropped before its end (a caller that stopped waiting, a timeout around it).
        self.finish(Some("cancelled"));
    }
}

fn record_error(span: &Span, error: &Error) {
    match error.status() {
        Some(status) => {
            // Code 0 with a message is an error too.
            let name = match status.code {
                0 => None,
                code => code_name(code),
            };
            span.record("status", name.unwrap_or("status"));
            span.record("code", i64::from(status.code));
        }
        None => {
            span.record("status", kind_name(error.kind()));
        }
    }
}

/// The name of a status code (the gRPC codes, which the Volt's statuses use).
fn code_name(code: i32) -> Option<&'static str> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i).copied())
}

/// The status of a call that failed without a status from the Volt: its error's kind.
fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Config => "config",
        ErrorKind::Key => "key",
        ErrorKind::Token => "token",
        ErrorKind::Schema => "schema",
        ErrorKind::Protocol => "protocol",
        ErrorKind::KeyExchange => "key_exchange",
        ErrorKind::Tls => "tls",
        ErrorKind::Connect => "connect",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Closed => "closed",
        ErrorKind::Status => "status",
        ErrorKind::SessionInvalid => "session_invalid",
        ErrorKind::Io => "io",
        ErrorKind::Limit => "limit",
        ErrorKind::Denied => "denied",
        ErrorKind::Tunnel => "tunnel",
        ErrorKind::Unsupported => "unsupported",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_named() {
        assert_eq!(code_name(0), Some("OK"));
        assert_eq!(code_name(5), Some("NOT_FOUND"));
        assert_eq!(code_name(16), Some("UNAUTHENTICATED"));
        assert_eq!(code_name(17), None);
        assert_eq!(code_name(-1), None);
    }
}
