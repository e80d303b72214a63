//! The one error type of the crate.
//!
//! [`Error`] keeps its representation private. Callers branch on [`Error::kind`] or the `is_*`
//! predicates, read a Volt [`Status`] with [`Error::status`], and walk the cause through
//! [`std::error::Error::source`]. `Display` prints a single layer. No error ever carries key
//! material or passphrases.

use std::borrow::Cow;
use std::fmt;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, in broad strokes. New kinds may be added in minor releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The client configuration is missing a field or has one of the wrong form.
    Config,
    /// A key could not be read, decrypted, or used.
    Key,
    /// An identity token could not be made or did not verify.
    Token,
    /// A message or method did not match the Volt API schema.
    Schema,
    /// The peer sent something that breaks the wire protocol.
    Protocol,
    /// The per-call key exchange failed (for example, a bad Volt signature).
    KeyExchange,
    /// TLS could not be set up or the peer's certificate was not trusted.
    Tls,
    /// The connection could not be made.
    Connect,
    /// A bounded wait ran out.
    Timeout,
    /// The connection or call is closed.
    Closed,
    /// The Volt answered with an error status.
    Status,
    /// A local file could not be read or written.
    Io,
    /// A bound was reached: a message over the frame limit, or a caller so far behind on a
    /// call's responses that the call was ended.
    Limit,
    /// The Volt refused the client's request to authenticate (decision DENY).
    Denied,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "configuration error",
            ErrorKind::Key => "key error",
            ErrorKind::Token => "identity token error",
            ErrorKind::Schema => "schema error",
            ErrorKind::Protocol => "protocol error",
            ErrorKind::KeyExchange => "key exchange failed",
            ErrorKind::Tls => "TLS error",
            ErrorKind::Connect => "connection failed",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Closed => "closed",
            ErrorKind::Status => "Volt status error",
            ErrorKind::Io => "I/O error",
            ErrorKind::Limit => "limit reached",
            ErrorKind::Denied => "denied",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status a Volt attaches to every response (`tdx.volt_api.volt.v1.Status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Numeric code, kept as the Volt sent it.
    pub code: i32,
    /// Short message; a non-empty message marks an error.
    pub message: String,
    /// Longer description, possibly empty.
    pub description: String,
}

impl Status {
    /// A status is an error when its message is non-empty, whatever the code: the rule every
    /// official client applies (a non-zero code with no message is not treated as an error).
    pub fn is_error(&self) -> bool {
        !self.message.is_empty()
    }

    /// Reads a `status` object in proto3 JSON form; missing fields take their defaults.
    pub fn from_json(value: &serde_json::Value) -> Option<Status> {
        let obj = value.as_object()?;
        let code = match obj.get("code") {
            Some(serde_json::Value::Number(n)) => n.as_i64().and_then(|c| i32::try_from(c).ok()),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            None | Some(serde_json::Value::Null) => Some(0),
            _ => None,
        }
        .unwrap_or(0);
        let text = |k: &str| obj.get(k).and_then(error_text).unwrap_or_default();
        Some(Status {
            code,
            message: text("message"),
            description: text("description"),
        })
    }
}

/// Whether a JSON value counts as set, by JavaScript's rules (the official clients test
/// `if (x.error)`): not null, false, 0, or "".
pub(crate) fn is_truthy(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => false,
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        serde_json::Value::String(s) => !s.is_empty(),
        serde_json::Value::Array(_) | serde_json::Value::Object(_) => true,
    }
}

/// The text of an error value: strings as they are, anything else as its JSON.
pub(crate) fn error_text(value: &serde_json::Value) -> Option<String> {
    if !is_truthy(value) {
        return None;
    }
    Some(match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)?;
        if !self.description.is_empty() {
            write!(f, ": {}", self.description)?;
        }
        Ok(())
    }
}

/// The error type of every fallible operation in this crate.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: Cow<'static, str>,
    status: Option<Status>,
    source: Option<BoxError>,
}

/// Shorthand for `Result<T, tdx_volt::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with a one-line message (transports and the emulator build
    /// their errors with this). The message must not contain secrets.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                status: None,
                source: None,
            }),
        }
    }

    /// Attaches the underlying cause, reported by [`std::error::Error::source`].
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.inner.source = Some(Box::new(source));
        self
    }

    /// Prefixes the message with the field it concerns (`volt.public_key: ...`).
    pub(crate) fn in_field(mut self, field: &str) -> Error {
        self.inner.message = format!("{field}: {}", self.inner.message).into();
        self
    }

    /// An error built from a Volt status.
    pub fn from_status(status: Status) -> Error {
        let mut e = Error::new(ErrorKind::Status, status.message.clone());
        e.inner.status = Some(status);
        e
    }

    pub(crate) fn config(message: impl Into<Cow<'static, str>>) -> Error {
        Error::new(ErrorKind::Config, message)
    }

    pub(crate) fn key(message: impl Into<Cow<'static, str>>) -> Error {
        Error::new(ErrorKind::Key, message)
    }

    pub(crate) fn token(message: impl Into<Cow<'static, str>>) -> Error {
        Error::new(ErrorKind::Token, message)
    }

    pub(crate) fn schema(message: impl Into<Cow<'static, str>>) -> Error {
        Error::new(ErrorKind::Schema, message)
    }

    pub(crate) fn key_exchange(message: impl Into<Cow<'static, str>>) -> Error {
        Error::new(ErrorKind::KeyExchange, message)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The Volt status, when the Volt reported one.
    pub fn status(&self) -> Option<&Status> {
        self.inner.status.as_ref()
    }

    /// The configuration was missing or malformed.
    pub fn is_config(&self) -> bool {
        self.kind() == ErrorKind::Config
    }
    /// A key could not be read, decrypted or used.
    pub fn is_key(&self) -> bool {
        self.kind() == ErrorKind::Key
    }
    /// An identity token was bad.
    pub fn is_token(&self) -> bool {
        self.kind() == ErrorKind::Token
    }
    /// A message or method did not match the API schema.
    pub fn is_schema(&self) -> bool {
        self.kind() == ErrorKind::Schema
    }
    /// The peer broke the wire protocol.
    pub fn is_protocol(&self) -> bool {
        self.kind() == ErrorKind::Protocol
    }
    /// The key exchange failed.
    pub fn is_key_exchange(&self) -> bool {
        self.kind() == ErrorKind::KeyExchange
    }
    /// TLS failed.
    pub fn is_tls(&self) -> bool {
        self.kind() == ErrorKind::Tls
    }
    /// Connecting failed.
    pub fn is_connect(&self) -> bool {
        self.kind() == ErrorKind::Connect
    }
    /// A bounded wait ran out.
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::Timeout
    }
    /// The connection or call is closed.
    pub fn is_closed(&self) -> bool {
        self.kind() == ErrorKind::Closed
    }
    /// The Volt answered with an error status.
    pub fn is_status(&self) -> bool {
        self.kind() == ErrorKind::Status
    }
    /// A local file could not be read or written.
    pub fn is_io(&self) -> bool {
        self.kind() == ErrorKind::Io
    }
    /// A size or backlog bound was reached.
    pub fn is_limit(&self) -> bool {
        self.kind() == ErrorKind::Limit
    }
    /// The Volt denied authentication.
    pub fn is_denied(&self) -> bool {
        self.kind() == ErrorKind::Denied
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        d.field("message", &self.inner.message);
        if let Some(status) = &self.inner.status {
            d.field("status", status);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.status {
            Some(status) => write!(f, "{}: {status}", self.inner.kind),
            None if self.inner.message.is_empty() => write!(f, "{}", self.inner.kind),
            None => write!(f, "{}: {}", self.inner.kind, self.inner.message),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<crate::protocol::frame::FrameError> for Error {
    fn from(e: crate::protocol::frame::FrameError) -> Error {
        Error::new(ErrorKind::Protocol, "malformed frame").with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_with_message_and_zero_code_is_error() {
        let s = Status::from_json(&serde_json::json!({"message": "nope"})).unwrap();
        assert!(s.is_error());
        assert_eq!(s.code, 0);
        let ok = Status::from_json(&serde_json::json!({})).unwrap();
        assert!(!ok.is_error());
    }

    #[test]
    fn display_is_one_layer_and_source_is_kept() {
        let io = std::io::Error::other("disk gone");
        let e = Error::new(ErrorKind::Io, "reading config.json").with_source(io);
        assert_eq!(e.to_string(), "I/O error: reading config.json");
        assert_eq!(
            std::error::Error::source(&e).unwrap().to_string(),
            "disk gone"
        );
    }

    #[test]
    fn status_errors_keep_code_message_description() {
        let e = Error::from_status(Status {
            code: 5,
            message: "not found".into(),
            description: "no resource x".into(),
        });
        assert!(e.is_status());
        assert_eq!(e.status().unwrap().code, 5);
        assert_eq!(
            e.to_string(),
            "Volt status error: not found (code 5): no resource x"
        );
    }

    #[test]
    fn error_is_send_sync() {
        fn assert_traits<T: Send + Sync + 'static>() {}
        assert_traits::<Error>();
    }
}
