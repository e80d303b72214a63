//! Hosting services: this client answers the calls other clients make to a service it
//! implements, which the Volt routes to it over its Connect session.
//!
//! - `invocation`: [`Invocation`], one call to answer;
//! - `dispatch`: the task that keys, opens and routes what callers send;
//! - `outgoing`: the way answers go back, over the session;
//! - `tower`: serving invocations with a tonic-generated server (any tower `Service`);
//! - `wire`: the invocation messages between the session's JSON and prost types.
//!
//! Each caller's messages are end-to-end encrypted with a key agreed with that caller alone:
//! the host signs its half of the key exchange with its own credential key, which is the
//! service's `host_public_key`. The Volt routes; it cannot read.

mod caller_check;
mod dispatch;
mod invocation;
mod outgoing;
mod tower;
mod wire;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::mpsc;

pub use invocation::Invocation;
pub use tower::InvocationBody;

use super::session::{Session, SessionOptions};
use super::VoltClient;
use crate::protocol::service_protos::ServiceProtos;
use crate::Result;

/// Invocation messages the session may hold for the dispatcher.
const INBOX: usize = 4096;

/// How a [`Host`] takes calls. By value, `#[must_use]`.
///
/// | Setting | Default |
/// |---|---|
/// | [`session`](HostOptions::session) | [`SessionOptions::new`] with `online_services` on (`accept_invocation` is always on) |
/// | [`invocation_buffer`](HostOptions::invocation_buffer): calls waiting for the application | 64 |
/// | [`request_buffer`](HostOptions::request_buffer): requests one call may hold unread | 64 |
/// | [`protos`](HostOptions::protos): the services' schema, for JSON callers | none (protobuf callers only) |
/// | [`check_callers`](HostOptions::check_callers): an access each caller needs, asked of the Volt | none (the Volt's own check) |
#[derive(Debug, Clone)]
#[must_use]
pub struct HostOptions {
    session: SessionOptions,
    invocation_buffer: usize,
    request_buffer: usize,
    protos: Option<Arc<ServiceProtos>>,
    check_callers: Option<String>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions::new()
    }
}

impl HostOptions {
    /// The defaults.
    pub fn new() -> HostOptions {
        HostOptions {
            session: SessionOptions::new().online_services(true),
            invocation_buffer: 64,
            request_buffer: 64,
            protos: None,
            check_callers: None,
        }
    }

    /// Asks the Volt about each caller before the application sees its call:
    /// `CanAccessResource` with the caller's own token, on the service it called, for
    /// `access` (`volt:resource-invoke` say). A caller the Volt does not permit, a call that
    /// names no service, or a Volt that does not answer: the call is refused
    /// (`PERMISSION_DENIED`, `UNAVAILABLE`). The Volt checks `volt:resource-invoke` itself
    /// before routing a call that names its service; this checks again, on the host's side,
    /// for any access.
    pub fn check_callers(mut self, access: impl Into<String>) -> HostOptions {
        self.check_callers = Some(access.into());
        self
    }

    /// The hosted services' own proto files, so that callers on the websocket gateway, which
    /// speak proto3 JSON, are served too: their requests reach the application as protobuf
    /// and its responses go back as JSON. Without them such callers are answered
    /// `UNIMPLEMENTED`.
    pub fn protos(mut self, protos: ServiceProtos) -> HostOptions {
        self.protos = Some(Arc::new(protos));
        self
    }

    /// The options of the Connect session that carries the calls (events, pings, ...).
    pub fn session(mut self, options: SessionOptions) -> HostOptions {
        self.session = options;
        self
    }

    /// Calls that may wait for the application to take them (kept between 1 and 65,536);
    /// further callers are refused with `RESOURCE_EXHAUSTED`.
    pub fn invocation_buffer(mut self, calls: usize) -> HostOptions {
        self.invocation_buffer = calls.clamp(1, 65_536);
        self
    }

    /// Requests one call may hold unread (kept between 1 and 65,536); a caller further
    /// ahead fails its call with `RESOURCE_EXHAUSTED` (the session is shared: one slow call
    /// must not hold the others back).
    pub fn request_buffer(mut self, requests: usize) -> HostOptions {
        self.request_buffer = requests.clamp(1, 65_536);
        self
    }
}

/// A client hosting services: a [`Stream`] of the [`Invocation`]s callers make, over a
/// Connect session that told the Volt it takes them. Made by [`VoltClient::host`].
///
/// Dropping it (and the invocations it gave) ends the session.
pub struct Host {
    session: Session,
    invocations: mpsc::Receiver<Invocation>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// The Connect session carrying the calls: its state (a reconnect ends the calls in
    /// flight), its connection id (the service's `host_connection_id`), `close`.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The next call, or `None` once the session is over.
    pub async fn next_invocation(&mut self) -> Option<Invocation> {
        self.invocations.recv().await
    }
}

impl Stream for Host {
    type Item = Invocation;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Invocation>> {
        self.invocations.poll_recv(cx)
    }
}

impl VoltClient {
    /// Hosts services: opens a Connect session that takes invocations
    /// (`accept_invocation`, and by default `online_services`, which brings the services
    /// this client hosts online while it lasts), and returns the calls callers make.
    ///
    /// The service resources say who hosts them: `service_description.host_client_id` is
    /// this client's id and `host_public_key` its public key (it signs each caller's key
    /// exchange). A caller's token must name this client as its audience; its messages
    /// are opened with the key agreed with it, and one that is not sealed ends its call.
    ///
    /// ```no_run
    /// use futures_util::StreamExt as _;
    /// use tdx_volt::client::HostOptions;
    ///
    /// # async fn demo(client: tdx_volt::VoltClient) -> tdx_volt::Result<()> {
    /// let mut host = client.host(HostOptions::new()).await?;
    /// while let Some(mut call) = host.next().await {
    ///     tokio::spawn(async move {
    ///         // An echo: every request back as it came.
    ///         while let Some(request) = call.request_bytes().await {
    ///             call.respond_bytes(request.to_vec()).await?;
    ///         }
    ///         call.finish(Ok(())).await
    ///     });
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn host(&self, options: HostOptions) -> Result<Host> {
        let (inbox, inbox_rx) = mpsc::channel(INBOX);
        let session = self
            .session_hosting(options.session.clone().accept_invocation(true), Some(inbox))
            .await?;
        let (deliver, invocations) = mpsc::channel(options.invocation_buffer);
        let dispatcher = dispatch::Dispatcher::new(
            inbox_rx,
            deliver,
            session.clone(),
            self.key(),
            dispatch::Ids {
                client_id: self.config().credential().client_id.clone(),
                volt_id: self.config().volt().id.clone(),
            },
            &options,
            options
                .check_callers
                .clone()
                .map(|access| caller_check::CallerCheck {
                    client: self.clone(),
                    access,
                }),
        );
        tokio::spawn(dispatcher.run());
        Ok(Host {
            session,
            invocations,
        })
    }
}
