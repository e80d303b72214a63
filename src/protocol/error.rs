//! The one error type of the crate, at the bottom of every layer.
//!
//! [`Error`] keeps its representation private. Callers branch on [`Error::kind`] or the `is_*`
//! predicates, read a Volt [`Status`] with [`Error::status`], and walk the cause through
//! [`std::error::Error::source`]. `Display` prints a single layer. No error ever carries key
//! material or passphrases.

use std::borrow::Cow;
use std::fmt;

use super::status::Status;

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
    /// The Volt answered with an error status saying the client's session is no longer valid
    /// (its message ends with `session invalid`): revoked, expired, or unknown to the Volt.
    /// Retrying will not help; authenticate again (a new session) or stop.
    /// [`Error::is_status`] is true for it too.
    SessionInvalid,
    /// A local file could not be read or written.
    Io,
    /// A bound was reached: a message over the frame limit, or a caller so far behind on a
    /// call's responses that the call was ended.
    Limit,
    /// The Volt refused the client's request to authenticate (decision DENY).
    Denied,
    /// A relay tunnel failed: the relay, or the Volt at its far end, reported a failure of
    /// the tunnel itself (an unknown target, a host gone offline, a message it could not
    /// read), not an answer of the method called. [`Error::status`] has its code and message.
    Tunnel,
    /// What was asked for is left out of this build by its cargo features: a transport
    /// (`grpc`, `websocket`) or the RSA-era protocol and RSA keys (`legacy`). The message names
    /// the feature to turn on.
    Unsupported,
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
            ErrorKind::SessionInvalid => "session invalid",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Closed => "closed",
            ErrorKind::Status => "Volt status error",
            ErrorKind::Io => "I/O error",
            ErrorKind::Limit => "limit reached",
            ErrorKind::Denied => "denied",
            ErrorKind::Tunnel => "relay tunnel failed",
            ErrorKind::Unsupported => "not in this build",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a failed call's request may have reached the Volt: what decides if retrying it is
/// safe (a request that never left can always be sent again; one that may have arrived is
/// safe to retry only when the method is idempotent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reached {
    /// The request was never sent: it failed before it left (configuration, key, schema, no
    /// connection, a message over the size limit, or no slot or connection within its
    /// timeout).
    No,
    /// The request may or may not have reached the Volt (the connection failed or the call
    /// timed out while it was out).
    Maybe,
    /// The Volt received the request and answered (an error status, a refusal).
    Yes,
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
    /// Set where the kind alone cannot tell (see [`Error::reached_volt`]).
    reached: Option<Reached>,
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
                reached: None,
            }),
        }
    }

    /// Marks the error as one whose request never left (or, with another value, says what
    /// is known of it).
    #[must_use]
    pub fn with_reached(mut self, reached: Reached) -> Error {
        self.inner.reached = Some(reached);
        self
    }

    /// Whether the failed call's request may have reached the Volt. Errors that come before
    /// sending (configuration, key, token, schema, TLS, connecting, outgoing size limits) are
    /// [`Reached::No`]; the Volt's own answers ([`ErrorKind::Status`],
    /// [`ErrorKind::SessionInvalid`], [`ErrorKind::Denied`]) are [`Reached::Yes`]; a call
    /// whose connection failed or that timed out while out is [`Reached::Maybe`].
    pub fn reached_volt(&self) -> Reached {
        if let Some(reached) = self.inner.reached {
            return reached;
        }
        match self.kind() {
            ErrorKind::Config
            | ErrorKind::Key
            | ErrorKind::Token
            | ErrorKind::Schema
            | ErrorKind::Tls
            | ErrorKind::Connect
            | ErrorKind::Io
            | ErrorKind::Unsupported => Reached::No,
            ErrorKind::Status | ErrorKind::SessionInvalid | ErrorKind::Denied => Reached::Yes,
            _ => Reached::Maybe,
        }
    }

    /// Whether sending the same request again cannot do anything twice: it never reached the
    /// Volt ([`Reached::No`]).
    pub fn is_retry_safe(&self) -> bool {
        self.reached_volt() == Reached::No
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
        // The official clients recognise an invalid session by this ending of the message.
        let invalid = status
            .message
            .trim_end()
            .to_ascii_lowercase()
            .ends_with("session invalid");
        let kind = if invalid {
            ErrorKind::SessionInvalid
        } else {
            ErrorKind::Status
        };
        let mut e = Error::new(kind, status.message.clone());
        e.inner.status = Some(status);
        e
    }

    /// A failure of a relay tunnel, as the relay (or the Volt at its far end) reported it:
    /// [`ErrorKind::Tunnel`] with its code and message kept in [`Error::status`]. A message
    /// ending `session invalid` is [`ErrorKind::SessionInvalid`], as from the Volt itself.
    pub fn from_tunnel_status(status: Status) -> Error {
        let mut e = Error::from_status(status);
        if e.kind() == ErrorKind::Status {
            e.inner.kind = ErrorKind::Tunnel;
            e.inner.message = format!("relay tunnel: {}", e.inner.message).into();
        }
        e
    }

    pub(crate) fn config(message: impl Into<Cow<'static, str>>) -> Error {
        Error::new(ErrorKind::Config, message)
    }

    /// Something this build's cargo features leave out ([`ErrorKind::Unsupported`]).
    #[allow(dead_code)] // every build that leaves nothing out
    pub(crate) fn unsupported(message: impl Into<Cow<'static, str>>) -> Error {
        Error::new(ErrorKind::Unsupported, message)
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
    /// The Volt answered with an error status ([`ErrorKind::Status`], or
    /// [`ErrorKind::SessionInvalid`]); [`Error::status`] has its code and message.
    pub fn is_status(&self) -> bool {
        matches!(self.kind(), ErrorKind::Status | ErrorKind::SessionInvalid)
    }
    /// The Volt says the client's session is no longer valid (revoked, expired or unknown).
    pub fn is_session_invalid(&self) -> bool {
        self.kind() == ErrorKind::SessionInvalid
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
    /// A relay tunnel failed ([`ErrorKind::Tunnel`]); [`Error::status`] has what the relay
    /// said.
    pub fn is_tunnel(&self) -> bool {
        self.kind() == ErrorKind::Tunnel
    }
    /// This build's cargo features leave out what was asked for ([`ErrorKind::Unsupported`]).
    pub fn is_unsupported(&self) -> bool {
        self.kind() == ErrorKind::Unsupported
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_reached_the_volt_and_invalid_sessions() {
        assert_eq!(Error::config("x").reached_volt(), Reached::No);
        assert!(Error::new(ErrorKind::Connect, "refused").is_retry_safe());
        assert_eq!(
            Error::new(ErrorKind::Closed, "cut").reached_volt(),
            Reached::Maybe
        );
        let timed_out = Error::new(ErrorKind::Timeout, "no slot").with_reached(Reached::No);
        assert!(timed_out.is_retry_safe());
        let denied = Error::from_status(Status::new(7, "permission denied", ""));
        assert_eq!(
            (denied.reached_volt(), denied.is_session_invalid()),
            (Reached::Yes, false)
        );
        let invalid =
            Error::from_status(Status::new(16, "unknown session s1: session invalid", ""));
        assert!(
            invalid.is_session_invalid() && invalid.is_status(),
            "{invalid:?}"
        );
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
