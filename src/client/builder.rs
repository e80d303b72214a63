//! [`VoltClientBuilder`]: where the configuration comes from, which transport, and the bounds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::sync::{Mutex, RwLock};

use serde_json::Value;
use zeroize::Zeroizing;

use super::{Setup, Shared, VoltClient};
use crate::protocol::frame::MAX_FRAME_LEN;
use crate::transport::{self, ConnectOptions, ReconnectPolicy, Supervisor, Transport};
use crate::{ClientConfig, Error, ErrorKind, Result};

/// How long connecting may take: TCP and TLS together, then the websocket upgrade or the
/// HTTP/2 handshake: 10 s each.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a unary call may take from start to response, and how long a streaming call on the
/// websocket gateway may wait for its key exchange: 30 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// After this long without hearing from the Volt the client pings; after twice as long the
/// connection is considered dead and its calls fail (on gRPC: an HTTP/2 ping this often, and
/// dead when one goes unanswered as long): 30 s.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);
/// The largest message sent, in bytes: 96 MiB on the websocket gateway (a frame holding 64 MiB
/// of file content, the API's limit, as base64 JSON); over gRPC, messages are also kept within
/// [`MAX_MESSAGE_LEN`](crate::protocol::limits::MAX_MESSAGE_LEN) (64 MiB and 64 KiB).
pub const DEFAULT_MAX_MESSAGE_LEN: usize = MAX_FRAME_LEN;
/// Responses a call may hold unread: 1,024 (see [`VoltClientBuilder::call_buffer`]).
pub const DEFAULT_CALL_BUFFER: usize = 1024;
/// The most [`call_buffer`](VoltClientBuilder::call_buffer) takes: 1,048,576 responses.
pub const MAX_CALL_BUFFER: usize = 1 << 20;
/// Calls that may be open at once on a client (and its clones); more wait for a slot: 10,000.
pub const DEFAULT_MAX_CALLS: usize = 10_000;

enum Source {
    File(PathBuf),
    Json(Zeroizing<String>),
    Value(Value),
    Config(Box<ClientConfig>),
}

/// Settings for a [`VoltClient`]. Start with [`VoltClient::builder`], finish with
/// [`VoltClientBuilder::connect`].
///
/// ```no_run
/// use std::time::Duration;
/// use tdx_volt::{Transport, VoltClient};
///
/// # async fn demo() -> tdx_volt::Result<()> {
/// let client = VoltClient::builder()
///     .config_file("client.config.json")
///     .transport(Transport::Websocket)
///     .request_timeout(Duration::from_secs(10))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct VoltClientBuilder {
    source: Option<Source>,
    transport: Transport,
    passphrase: Option<Zeroizing<String>>,
    connect_timeout: Duration,
    request_timeout: Duration,
    keepalive: Duration,
    max_message_len: usize,
    call_buffer: usize,
    max_calls: usize,
    public_roots: bool,
    reconnect: ReconnectPolicy,
    wait_for_connection: bool,
    reauthenticate: Option<super::Authentication>,
}

impl std::fmt::Debug for VoltClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            None => "none".to_owned(),
            Some(Source::File(p)) => format!("file {}", p.display()),
            Some(Source::Json(_)) => "JSON text".to_owned(),
            Some(Source::Value(_)) => "JSON value".to_owned(),
            Some(Source::Config(_)) => "ClientConfig".to_owned(),
        };
        f.debug_struct("VoltClientBuilder")
            .field("source", &source)
            .field("transport", &self.transport)
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("keepalive", &self.keepalive)
            .field("max_message_len", &self.max_message_len)
            .field("call_buffer", &self.call_buffer)
            .field("max_calls", &self.max_calls)
            .field("public_roots", &self.public_roots)
            .field("reconnect", &self.reconnect)
            .field("wait_for_connection", &self.wait_for_connection)
            .field("reauthenticate", &self.reauthenticate.is_some())
            .finish()
    }
}

impl Default for VoltClientBuilder {
    fn default() -> Self {
        VoltClientBuilder {
            source: None,
            transport: Transport::Auto,
            passphrase: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            keepalive: DEFAULT_KEEPALIVE,
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
            call_buffer: DEFAULT_CALL_BUFFER,
            max_calls: DEFAULT_MAX_CALLS,
            public_roots: false,
            reconnect: ReconnectPolicy::default(),
            wait_for_connection: true,
            reauthenticate: None,
        }
    }
}

impl VoltClientBuilder {
    /// Reads the client configuration from a file (read at [`connect`](Self::connect)).
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.source = Some(Source::File(path.into()));
        self
    }

    /// Takes the client configuration as JSON text.
    pub fn config_json(mut self, json: &str) -> Self {
        self.source = Some(Source::Json(Zeroizing::new(json.to_owned())));
        self
    }

    /// Takes the client configuration as a JSON value.
    pub fn config(mut self, config: Value) -> Self {
        self.source = Some(Source::Value(config));
        self
    }

    /// Takes an already loaded configuration.
    pub fn client_config(mut self, config: ClientConfig) -> Self {
        self.source = Some(Source::Config(Box::new(config)));
        self
    }

    /// Which protocol to use; [`Transport::Auto`] by default.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The passphrase of an encrypted key. Without it, the configuration's `p` field or the
    /// `VOLT_KEY_PASSPHRASE` environment variable is used.
    pub fn passphrase(mut self, passphrase: impl Into<String>) -> Self {
        self.passphrase = Some(Zeroizing::new(passphrase.into()));
        self
    }

    /// Bound on connecting (and reconnecting); [`DEFAULT_CONNECT_TIMEOUT`] by default.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bound on each unary call and on each call's key exchange (websocket gateway);
    /// [`DEFAULT_REQUEST_TIMEOUT`] by default. [`VoltClient::with_request_timeout`] changes it
    /// for one handle.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Ping interval of an idle connection; [`DEFAULT_KEEPALIVE`] by default (kept between
    /// 1 s and 1 day).
    pub fn keepalive(mut self, interval: Duration) -> Self {
        self.keepalive = interval.clamp(Duration::from_secs(1), Duration::from_secs(86_400));
        self
    }

    /// Largest message sent; [`DEFAULT_MAX_MESSAGE_LEN`] by default, and at most that (over
    /// gRPC, at most [`MAX_MESSAGE_LEN`](crate::protocol::limits::MAX_MESSAGE_LEN)). Responses
    /// are accepted up to the frame codec's limit of 96 MiB.
    pub fn max_message_len(mut self, bytes: usize) -> Self {
        self.max_message_len = bytes.min(MAX_FRAME_LEN);
        self
    }

    /// Responses a call may hold unread (besides at most 64 MiB); [`DEFAULT_CALL_BUFFER`] by
    /// default, kept between 1 and [`MAX_CALL_BUFFER`]. Over gRPC a call that is full stops
    /// reading until its caller reads on (flow control holds the Volt back). On the websocket
    /// gateway, which must never wait for one slow reader, a caller that falls further behind
    /// loses that call (a [`limit`](crate::ErrorKind::Limit) error); see [`Call`](crate::Call) for the ways
    /// out. [`sql_rows`](VoltClient::sql_rows) pages by half of it there.
    pub fn call_buffer(mut self, responses: usize) -> Self {
        self.call_buffer = responses.clamp(1, MAX_CALL_BUFFER);
        self
    }

    /// Calls open at once; [`DEFAULT_MAX_CALLS`] by default. Further calls wait for a slot,
    /// within their request timeout.
    pub fn max_calls(mut self, calls: usize) -> Self {
        self.max_calls = calls.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        self
    }

    /// Also trust the public web PKI, for a Volt whose gateway has a public certificate.
    /// Off by default (only the Volt CA of the configuration is trusted); on by itself when
    /// the configuration names a cloud relay.
    pub fn public_roots(mut self, enabled: bool) -> Self {
        self.public_roots = enabled;
        self
    }

    /// When to connect again after the connection is lost or an attempt fails:
    /// [`ReconnectPolicy::default`] (capped exponential backoff with jitter) unless told
    /// otherwise; [`ReconnectPolicy::never`] turns it off. Every call, session and clone
    /// shares it, and one attempt is made at a time however many callers wait.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Whether a call made while the client is backing off between connection attempts waits
    /// for the connection (within its own timeout; the default) or fails at once with a
    /// [`connect`](crate::ErrorKind::Connect) error saying it was not sent. Either way a call
    /// made once the connection is lost, or once the wait is over, makes the next attempt
    /// (reconnecting is lazy: calls and sessions drive it).
    pub fn wait_for_connection(mut self, wait: bool) -> Self {
        self.wait_for_connection = wait;
        self
    }

    /// Authenticates again, as `authentication` says, when the Volt answers a call (or a
    /// session) that the client's session is invalid (revoked, expired or unknown), then
    /// tries that call once more in the new session; sessions reconnect in it. Off by
    /// default: such a call fails with [`ErrorKind::SessionInvalid`](crate::ErrorKind) and a
    /// session ends. Calls failing together renew the session once. Renewing is a new
    /// Authenticate: the Volt may ask an administrator, and a client loaded from a file saves
    /// what it grants there (see [`VoltClient::authenticate`]).
    pub fn reauthenticate(mut self, authentication: super::Authentication) -> Self {
        self.reauthenticate = Some(authentication);
        self
    }

    /// Loads the configuration and key, and connects. Reading the file and decrypting the key
    /// (PBKDF2, up to millions of iterations) run on tokio's blocking pool, so the runtime's
    /// other tasks carry on meanwhile.
    pub async fn connect(self) -> Result<VoltClient> {
        let Some(source) = self.source else {
            return Err(Error::new(
                ErrorKind::Config,
                "no client configuration: use config_file, config_json or config",
            ));
        };
        let passphrase = self.passphrase;
        let (config, path, key) = tokio::task::spawn_blocking(move || {
            let (config, path) = load(source)?;
            let key = config.private_key(passphrase.as_ref().map(|p| p.as_str()))?;
            Ok::<_, Error>((config, path, Arc::new(key)))
        })
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::Config,
                "loading the configuration did not finish",
            )
            .with_source(e)
        })??;
        let options = ConnectOptions {
            transport: self.transport,
            connect_timeout: self.connect_timeout,
            keepalive: self.keepalive,
            max_message_len: self.max_message_len,
            call_buffer: self.call_buffer,
            public_roots: self.public_roots,
            supervisor: Arc::new(Supervisor::new(self.reconnect, self.wait_for_connection)),
        };
        let transport = transport::open(&options, &config, &key).await?;
        Ok(VoltClient {
            shared: Arc::new(Shared {
                transport: RwLock::new(transport),
                calls: Arc::new(tokio::sync::Semaphore::new(self.max_calls)),
                volt_id: config.volt().id.clone(),
                setup: Setup {
                    options,
                    key,
                    config: Mutex::new(config),
                    path,
                    granting: tokio::sync::Mutex::new(()),
                    reauthenticate: self.reauthenticate,
                    renewing: tokio::sync::Mutex::new(()),
                },
            }),
            request_timeout: self.request_timeout,
        })
    }
}

/// Reads the configuration from where the builder was told, with the canonical path of its
/// file (to save what Authenticate grants). Blocking: file I/O.
fn load(source: Source) -> Result<(ClientConfig, Option<PathBuf>)> {
    Ok(match source {
        Source::File(path) => {
            let config = ClientConfig::from_file(&path)?;
            // Saved later to the file itself (not a symlink to it), wherever the working
            // directory is by then.
            (config, Some(std::fs::canonicalize(&path).unwrap_or(path)))
        }
        Source::Json(text) => (ClientConfig::from_json_str(&text)?, None),
        Source::Value(value) => (ClientConfig::from_value(value)?, None),
        Source::Config(config) => (*config, None),
    })
}
