//! The async client: [`VoltClient`], its [`VoltClientBuilder`], and [`Call`]s.
//!
//! Every RPC of the Volt API is a method of [`VoltClient`], named as the official clients name
//! it, in snake_case (`get_resource`, `sql_execute`, `subscribe_wire`, ...). Unary methods take
//! and return proto3 JSON ([`serde_json::Value`]); streaming methods return a [`Call`].
//! Any method path can also be called with [`VoltClient::unary`] and
//! [`VoltClient::streaming`].

mod authenticate;
mod builder;
pub(crate) mod call;
mod config_file;
mod files;
mod host;
mod methods;
mod service;
mod session;
mod sql;
mod sql_cells;
mod sql_typed;
mod synapse_path;
#[cfg(feature = "sync")]
mod sync;
mod trace;
mod typed;
mod wire;
mod wire_resume;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::Value;
use tokio::sync::Semaphore;

pub use crate::protocol::service_protos::ServiceProtos;
pub use crate::transport::{
    CallEvent, ConnectionState, ReconnectPolicy, Transport, DEFAULT_RECONNECT_FACTOR,
    DEFAULT_RECONNECT_INITIAL, DEFAULT_RECONNECT_MAX,
};
pub use authenticate::{Authenticated, Authentication, DEFAULT_AUTH_POLL, DEFAULT_AUTH_WAIT};
pub use builder::{
    VoltClientBuilder, DEFAULT_CALL_BUFFER, DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE,
    DEFAULT_MAX_CALLS, DEFAULT_MAX_MESSAGE_LEN, DEFAULT_REQUEST_TIMEOUT, MAX_CALL_BUFFER,
};
pub use call::Call;
pub use files::{Transferred, UPLOAD_BLOCK_BYTES, UPLOAD_WINDOW_BLOCKS};
pub use host::{Host, HostOptions, Invocation, InvocationBody};
pub use service::{ServiceCall, ServiceRef};
pub use session::{
    ResourceEventKind, Session, SessionEvent, SessionEvents, SessionOptions, SessionState,
    DEFAULT_SESSION_CLOSE_WAIT, DEFAULT_SESSION_EVENT_BUFFER, DEFAULT_SESSION_PING_EVERY,
};
pub use sql::{SqlRows, DEFAULT_SQL_PAGE, MAX_SQL_PAGE};
pub use sql_typed::blob as sql_blob;
pub use synapse_path::{PathChange, PathChangeKind, PathWatch};
#[cfg(feature = "sync")]
pub use sync::{SyncOptions, SyncProvider, SyncStatus};
pub use typed::TypedCall;
pub use wire::{WireChunks, WirePublisher};
pub use wire_resume::{ResumableWire, WireItem};

use crate::protocol::schema::methods as method_table;
use crate::transport::{CallSpec, ConnectOptions, Link, Opened, ServiceRoute, Unread};
use crate::{ClientConfig, Error, ErrorKind, PrivateKey, Result};
use trace::CallSpan;

/// A connection to one Volt, shared by all clones.
///
/// Cheap to clone (`Arc` inside); `Send + Sync`; every method takes `&self`, so one client
/// serves any number of tasks. Every call is multiplexed on one connection (owned by one task
/// on the websocket gateway, by tonic's channel on gRPC). If the connection is lost, its live
/// calls fail with the cause and the next call reconnects.
///
/// ```no_run
/// use serde_json::json;
/// use tdx_volt::VoltClient;
///
/// # async fn demo() -> tdx_volt::Result<()> {
/// let client = VoltClient::from_file("client.config.json").await?;
/// let volt = client.get_resource(json!({"resource_id": client.volt_id()})).await?;
/// println!("{}", volt["resource"]["name"]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct VoltClient {
    shared: Arc<Shared>,
    request_timeout: Duration,
}

struct Shared {
    /// The connection; replaced when the client authenticates.
    transport: RwLock<Arc<dyn Link>>,
    /// One permit per open call: bounds the connection's call table.
    calls: Arc<Semaphore>,
    volt_id: String,
    setup: Setup,
}

/// What it takes to connect again: the settings, the key, and the configuration (with where
/// it came from, to save what Authenticate grants).
struct Setup {
    options: ConnectOptions,
    key: Arc<PrivateKey>,
    config: Mutex<ClientConfig>,
    path: Option<PathBuf>,
    /// Held while a grant from Authenticate is being kept.
    granting: tokio::sync::Mutex<()>,
    /// Authenticate again when the Volt says the session is invalid (opt-in).
    reauthenticate: Option<Authentication>,
    /// Taken by whoever renews the session, so that calls failing together renew it once.
    renewing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for VoltClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoltClient")
            .field("volt_id", &self.shared.volt_id)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

// The handle is meant to be shared across tasks and threads.
const _: fn() = || {
    fn shared<T: Clone + Send + Sync + 'static>() {}
    fn movable<T: Send + Sync + Unpin + 'static>() {}
    shared::<VoltClient>();
    movable::<Call>();
    movable::<ServiceCall>();
    shared::<ServiceRef>();
};

impl VoltClient {
    /// Settings for a new client.
    pub fn builder() -> VoltClientBuilder {
        VoltClientBuilder::default()
    }

    /// Connects with the configuration file at `path` and default settings.
    pub async fn from_file(path: impl Into<std::path::PathBuf>) -> Result<VoltClient> {
        VoltClient::builder().config_file(path).connect().await
    }

    /// The id of the Volt this client talks to (the configuration's `volt.id`).
    pub fn volt_id(&self) -> &str {
        &self.shared.volt_id
    }

    /// The transport in use: [`Transport::Websocket`], [`Transport::LegacyWebsocket`] or
    /// [`Transport::Grpc`].
    pub fn transport(&self) -> Transport {
        self.connection().transport()
    }

    /// A copy of the configuration, with what [`authenticate`](Self::authenticate) granted.
    pub fn config(&self) -> ClientConfig {
        self.shared
            .setup
            .config
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The connection's state now and as it changes: connecting, connected, disconnected,
    /// backing off until the next attempt, closed for good. Every clone and every connection
    /// the client makes (after Authenticate too) report to the same watch.
    ///
    /// ```no_run
    /// use tdx_volt::{ConnectionState, VoltClient};
    ///
    /// # async fn demo(client: VoltClient) {
    /// let mut state = client.connection_state();
    /// while state.changed().await.is_ok() {
    ///     if let ConnectionState::BackingOff { until, .. } = &*state.borrow() {
    ///         eprintln!("Volt unreachable; next attempt in {:?}", until.saturating_duration_since(std::time::Instant::now()));
    ///     }
    /// }
    /// # }
    /// ```
    pub fn connection_state(&self) -> tokio::sync::watch::Receiver<ConnectionState> {
        self.shared.setup.options.supervisor.watch()
    }

    /// The credential key (a host signs its callers' key exchanges with it).
    pub(crate) fn key(&self) -> std::sync::Arc<PrivateKey> {
        self.shared.setup.key.clone()
    }

    /// The client's reconnect policy (sessions space their own attempts by it).
    pub(crate) fn reconnect_policy(&self) -> &ReconnectPolicy {
        self.shared.setup.options.supervisor.policy()
    }

    /// The client's bound on connecting (a session waits this long for its acknowledge).
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.shared.setup.options.connect_timeout
    }

    fn connection(&self) -> Arc<dyn Link> {
        self.shared
            .transport
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The bound on each unary call (and, on the websocket gateway, on each call's key
    /// exchange) for this handle.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// A handle on the same connection with another request timeout.
    #[must_use]
    pub fn with_request_timeout(&self, timeout: Duration) -> VoltClient {
        VoltClient {
            shared: self.shared.clone(),
            request_timeout: timeout,
        }
    }

    /// Calls a unary method by its path (`/package.Service/Method`) and returns its response.
    ///
    /// A response whose `status` has a non-empty message is an error
    /// ([`ErrorKind::Status`]) carrying the Volt's code, message and description; so is a
    /// call the Volt fails. The whole call is bounded by the request timeout. Over gRPC the
    /// call also waits for its trailers, so a call the Volt fails after responding is an error.
    pub async fn unary(&self, path: &str, request: Value) -> Result<Value> {
        if self.shared.setup.reauthenticate.is_none() {
            return self.unary_once(path, request).await;
        }
        let session = self.session_id();
        match self.unary_once(path, request.clone()).await {
            // The Volt refused the session, not the request: renew it and ask once more.
            Err(e) if e.is_session_invalid() && self.renew_session(session.as_deref()).await? => {
                self.unary_once(path, request).await
            }
            other => other,
        }
    }

    /// The session the client calls in now.
    pub(crate) fn session_id(&self) -> Option<String> {
        self.shared
            .setup
            .config
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .credential()
            .session_id
            .clone()
    }

    /// With [`reauthenticate`](VoltClientBuilder::reauthenticate) set, after the Volt said
    /// session `seen` is invalid: authenticates again (unless another caller already renewed
    /// it), and returns whether to try again. Without it, `false`.
    pub(crate) async fn renew_session(&self, seen: Option<&str>) -> Result<bool> {
        let Some(authentication) = self.shared.setup.reauthenticate.clone() else {
            return Ok(false);
        };
        let _one_at_a_time = self.shared.setup.renewing.lock().await;
        if self.session_id().as_deref() != seen {
            return Ok(true);
        }
        tracing::debug!("the Volt says the session is invalid; authenticating again");
        // As the official clients do: the refused session (and its certificate) are
        // forgotten, and Authenticate goes out on a connection that names no session.
        let setup = &self.shared.setup;
        let mut sessionless = self.config();
        let credential = sessionless.credential_mut();
        credential.session_id = None;
        credential.cert = None;
        // That connection stays private to this renewal: the other calls keep the refused
        // session (and are refused, then wait here) until the new one is granted, rather than
        // going out with no session at all.
        let transport = crate::transport::open(&setup.options, &sessionless, &setup.key).await?;
        self.authenticate_via(authentication, Some((sessionless, transport)))
            .await?;
        Ok(true)
    }

    /// One unary call, in its span (which records its end: its response, its error, or its
    /// timeout).
    async fn unary_once(&self, path: &str, request: Value) -> Result<Value> {
        self.unary_once_on(self.connection(), path, request).await
    }

    /// [`unary_once`](Self::unary_once) on `connection`.
    async fn unary_once_on(
        &self,
        connection: Arc<dyn Link>,
        path: &str,
        request: Value,
    ) -> Result<Value> {
        let mut trace = CallSpan::start(path, connection.label());
        let result = self.unary_on(connection, path, request, &trace).await;
        trace.outcome(&result);
        result
    }

    async fn unary_on(
        &self,
        connection: Arc<dyn Link>,
        path: &str,
        request: Value,
        trace: &CallSpan,
    ) -> Result<Value> {
        let timeout = self.request_timeout;
        let exchange = async {
            let mut call = self
                .open_on(
                    connection,
                    path,
                    Some(request),
                    true,
                    Unread::Bounded,
                    None,
                    trace.follower(),
                )
                .await?;
            let response = match call.next().await {
                Some(CallEvent::Data(response)) => response,
                Some(CallEvent::Error(e) | CallEvent::Failed(e)) => return Err(e),
                Some(CallEvent::End) | None => {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!("{path}: the call ended without a response"),
                    ))
                }
            };
            if call.waits_for_trailers() {
                match call.next().await {
                    Some(CallEvent::End) | None => {}
                    Some(CallEvent::Error(e) | CallEvent::Failed(e)) => return Err(e),
                    Some(CallEvent::Data(_)) => {
                        return Err(Error::new(
                            ErrorKind::Protocol,
                            format!("{path}: a unary call with more than one response"),
                        ))
                    }
                }
            }
            Ok(response)
        };
        let supervisor = &self.shared.setup.options.supervisor;
        let at_start = supervisor.connection_seen();
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => {
                let error = Error::new(
                    ErrorKind::Timeout,
                    format!("{path}: no response within {timeout:?}"),
                );
                // No connection was live from the call's start to now (none was made in
                // between): the request never left.
                let at_end = supervisor.connection_seen();
                if !at_start.1 && !at_end.1 && at_start.0 == at_end.0 {
                    Err(error.with_reached(crate::Reached::No))
                } else {
                    Err(error)
                }
            }
        }
    }

    /// Opens a streaming call by its path. `request`, when given, is the first message (it
    /// carries the method invocation); otherwise the first [`Call::send`] does. For a
    /// server-streaming method the client side ends after the request, as in the official
    /// clients.
    ///
    /// Returns once the call is queued; on the websocket gateway its key exchange completes in
    /// the background within the request timeout (gRPC has none). Waits (within the request
    /// timeout) while the client has its maximum of calls open.
    pub async fn streaming(&self, path: &str, request: Option<Value>) -> Result<Call> {
        let ends_after_request = request.is_some()
            && method_table()
                .get(path)
                .is_some_and(|m| !m.kind().client_streams());
        self.open(path, request, ends_after_request, Unread::Bounded)
            .await
    }

    async fn open(
        &self,
        path: &str,
        request: Option<Value>,
        end_after: bool,
        unread: Unread,
    ) -> Result<Call> {
        let connection = self.connection();
        let trace = CallSpan::start(path, connection.label());
        self.open_on(connection, path, request, end_after, unread, None, trace)
            .await
    }

    /// Opens a call of JSON messages routed to a hosted service (`input` checks its
    /// requests), on `connection`, in span `trace`.
    pub(crate) async fn open_routed(
        &self,
        connection: Arc<dyn Link>,
        path: &str,
        route: ServiceRoute,
        input: Option<prost_reflect::MessageDescriptor>,
        trace: CallSpan,
    ) -> Result<Call> {
        let route = Some((route, input));
        self.open_on(connection, path, None, false, Unread::Bounded, route, trace)
            .await
    }

    /// Opens a call on `connection` (a caller that chose its settings by the transport opens
    /// it on the connection it looked at, whatever Authenticate replaced meanwhile), in span
    /// `trace` (which the call keeps, and records a failure to open).
    #[allow(clippy::too_many_arguments)]
    async fn open_on(
        &self,
        connection: Arc<dyn Link>,
        path: &str,
        request: Option<Value>,
        end_after: bool,
        unread: Unread,
        route: Option<(ServiceRoute, Option<prost_reflect::MessageDescriptor>)>,
        mut trace: CallSpan,
    ) -> Result<Call> {
        let opening = self.open_parts(connection, path, request, end_after, unread, route);
        match opening.await {
            Ok((path, opened, permit)) => {
                trace.call_id(&*opened.io);
                Ok(Call::new(path, opened, permit, trace))
            }
            Err(e) => {
                trace.failed(&e);
                Err(e)
            }
        }
    }

    /// What [`open_on`](Self::open_on) makes a call of: its path, the transport's side of
    /// it, and its slot.
    async fn open_parts(
        &self,
        connection: Arc<dyn Link>,
        path: &str,
        request: Option<Value>,
        end_after: bool,
        unread: Unread,
        route: Option<(ServiceRoute, Option<prost_reflect::MessageDescriptor>)>,
    ) -> Result<(Arc<str>, Opened, tokio::sync::OwnedSemaphorePermit)> {
        check_path(path)?;
        let supervisor = &self.shared.setup.options.supervisor;
        match supervisor.state() {
            ConnectionState::Closed => {
                supervisor.next_attempt()?;
                return Err(Error::new(ErrorKind::Closed, "the connection is closed"));
            }
            // Between attempts (one is due when the wait is over, and the call makes it).
            ConnectionState::BackingOff { until, .. }
                if !supervisor.waits_for_connection() && until > std::time::Instant::now() =>
            {
                return Err(Error::new(
                    ErrorKind::Connect,
                    format!("{path}: not connected to the Volt (the call was not sent)"),
                ));
            }
            _ => {}
        }
        let timeout = self.request_timeout;
        let permit =
            match tokio::time::timeout(timeout, self.shared.calls.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err(Error::new(ErrorKind::Closed, "the client is closed")),
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!("{path}: no call slot came free within {timeout:?}"),
                    )
                    .with_reached(crate::Reached::No))
                }
            };
        let path: Arc<str> = Arc::from(path);
        let spec = CallSpec {
            path: path.clone(),
            first: request,
            end_after_first: end_after,
            timeout,
            unread,
        };
        let opening = match route {
            None => connection.open(spec),
            Some((route, input)) => connection.open_routed(spec, route, input),
        };
        // Opening waits for the connection when it is down; within the call's timeout.
        let opened = match tokio::time::timeout(timeout, opening).await {
            Ok(opened) => opened?,
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("{path}: no connection to the Volt within {timeout:?}"),
                )
                .with_reached(crate::Reached::No))
            }
        };
        Ok((path, opened, permit))
    }
}

/// A method path is `/package.Service/Method`.
pub(crate) fn check_path(path: &str) -> Result<()> {
    let well_formed = path
        .strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(service, method)| {
            !service.is_empty() && !method.is_empty() && !method.contains('/')
        });
    if well_formed {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Schema,
            format!("{path:?} is not a method path (/package.Service/Method)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_paths_are_checked() {
        assert!(check_path("/tdx.volt_api.volt.v1.VoltAPI/GetResource").is_ok());
        for bad in [
            "",
            "/",
            "GetResource",
            "/VoltAPI/",
            "//GetResource",
            "/a/b/c",
        ] {
            assert!(check_path(bad).unwrap_err().is_schema(), "{bad}");
        }
    }
}
