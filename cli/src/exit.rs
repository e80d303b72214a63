//! Exit codes, and the one line a failure prints.

use serde_json::json;
use tdx_volt::{ErrorKind, Status};

/// Success.
pub const OK: u8 = 0;
/// The Volt answered with an error status (session invalid and access denied included).
pub const STATUS: u8 = 1;
/// Usage: bad arguments, request JSON, unknown method, a request the API cannot encode.
pub const USAGE: u8 = 2;
/// The client configuration (or its key) is missing or unusable.
pub const CONFIG: u8 = 3;
/// Could not connect, TLS, key exchange, timeout, connection lost.
pub const CONNECTION: u8 = 4;
/// A local file could not be read or written.
pub const LOCAL_IO: u8 = 5;
/// The Volt sent something unexpected, or a limit was reached.
pub const PROTOCOL: u8 = 6;

/// Why a command failed: its exit code and what to tell the user.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: u8,
    /// One line, without the `volt: ` prefix.
    pub message: String,
    /// The Volt's status, when it sent one.
    pub status: Option<Status>,
}

impl Failure {
    /// A failure with this exit code and message.
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            status: None,
        }
    }

    /// A usage failure.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(USAGE, message)
    }

    /// Not a failure: stdout was closed by its reader (`volt ... | head`); exit quietly.
    pub fn quiet() -> Failure {
        Failure::new(OK, "")
    }

    /// A local I/O failure on `path`.
    pub fn io(what: &str, path: &std::path::Path, e: &std::io::Error) -> Failure {
        Failure::new(LOCAL_IO, format!("{what} {}: {e}", path.display()))
    }

    /// The line printed on stderr (with `--json`, a JSON object on one line).
    pub fn line(&self, json: bool) -> String {
        if json {
            let mut error = json!({"exit_code": self.code, "message": self.message});
            if let Some(status) = &self.status {
                error["status"] = json!({
                    "code": status.code,
                    "name": code_name(status.code),
                    "message": status.message,
                    "description": status.description,
                });
            }
            json!({ "error": error }).to_string()
        } else {
            format!("volt: {}", self.message)
        }
    }
}

impl From<tdx_volt::Error> for Failure {
    fn from(e: tdx_volt::Error) -> Failure {
        if e.kind() == ErrorKind::Io && broken_pipe(&e) {
            return Failure::quiet();
        }
        let code = match e.kind() {
            ErrorKind::Status | ErrorKind::SessionInvalid | ErrorKind::Denied => STATUS,
            ErrorKind::Schema => USAGE,
            ErrorKind::Config | ErrorKind::Key | ErrorKind::Unsupported => CONFIG,
            ErrorKind::Connect
            | ErrorKind::Tls
            | ErrorKind::KeyExchange
            | ErrorKind::Timeout
            | ErrorKind::Closed
            | ErrorKind::Tunnel => CONNECTION,
            ErrorKind::Io => LOCAL_IO,
            _ => PROTOCOL,
        };
        let message = match e.status() {
            Some(status) => {
                let mut line = format!(
                    "{} ({}, code {}): {}",
                    e.kind(),
                    code_name(status.code),
                    status.code,
                    status.message
                );
                if !status.description.is_empty() {
                    line.push_str(&format!(" ({})", status.description));
                }
                line
            }
            None => with_causes(&e),
        };
        Failure {
            code,
            message: one_line(&message),
            status: e.status().cloned(),
        }
    }
}

/// Whether a write failed because its reader went away (`volt file get ID - | head`).
fn broken_pipe(e: &tdx_volt::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// The error's text followed by its causes'.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

/// Newlines (from a Volt's message, say) would break the one-line promise.
fn one_line(text: &str) -> String {
    text.split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The gRPC name of a status code (the Volt uses gRPC's codes).
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN_CODE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn a_status_error_is_one_line_with_its_code() {
        let e = tdx_volt::Error::from_status(Status::new(5, "resource not found:\nx", ""));
        let failure = Failure::from(e);
        assert_eq!(failure.code, STATUS);
        assert_eq!(
            failure.line(false),
            "volt: Volt status error (NOT_FOUND, code 5): resource not found: x"
        );
        let json: Value = serde_json::from_str(&failure.line(true)).unwrap();
        assert_eq!(json["error"]["status"]["name"], "NOT_FOUND");
        assert_eq!(json["error"]["exit_code"], 1);
    }

    #[test]
    fn kinds_map_to_codes() {
        let code = |kind| Failure::from(tdx_volt::Error::new(kind, "x")).code;
        assert_eq!(code(ErrorKind::Config), CONFIG);
        assert_eq!(code(ErrorKind::Connect), CONNECTION);
        assert_eq!(code(ErrorKind::Schema), USAGE);
        assert_eq!(code(ErrorKind::Io), LOCAL_IO);
        assert_eq!(code(ErrorKind::Protocol), PROTOCOL);
    }
}
