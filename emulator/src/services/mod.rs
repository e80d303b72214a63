//! The Volt API as the emulator implements it: one handler per method, shared by both
//! transports. [`Services::call`] routes a call by its method path.

pub mod access;
pub mod auth;
pub mod authenticate;
pub mod connect;
pub mod events;
pub mod files;
pub mod hosting;
pub mod identities;
pub mod invoke;
pub mod resource_events;
pub mod resource_ops;
pub mod resources;
pub mod sessions;
pub mod sqlite;
pub mod sync;
#[cfg(test)]
mod test_support;
pub mod volt_admin;
pub mod volt_api;
pub mod volt_sign;
pub mod wires;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DynamicMessage, Kind, Value as PValue};
use tdx_volt::protocol::schema::Method;

use crate::call::{Caller, Code, Failure, Inbound, Outbound};
use crate::clients::ClientRegistry;
use crate::identity::VoltIdentity;

/// Everything a handler can reach: the Volt's identity, its clients and its data.
pub struct Services {
    identity: VoltIdentity,
    clients: ClientRegistry,
    resources: resources::ResourceStore,
    access: Arc<access::AccessStore>,
    events: Arc<events::EventHub>,
    sqlite: sqlite::SqliteService,
    wires: wires::WireHub,
    /// Synced documents loaded so far.
    sync: sync::SyncHub,
    files: files::FileStore,
    clock_offset: i64,
    connections: Connections,
    authenticate_policy: AuthenticatePolicy,
    handshake_timeout: std::time::Duration,
    execute_idle_timeout: std::time::Duration,
    discovery: String,
    /// Authenticate requests seen per client key, for [`AuthenticatePolicy::PendingThenPermit`].
    authenticate_requests: Mutex<HashMap<String, u32>>,
    /// The Volt's editable parameters, one-time tokens and the shutdown signal.
    admin: volt_admin::AdminState,
    /// Session statuses and identity names saved with SaveSession / SaveIdentity.
    session_states: sessions::SessionStates,
    /// What the emulator breaks in the tunnels it ends (for testing clients).
    tunnel_fault: invoke::TunnelFault,
    /// The clients hosting services now, and the invocations routed to them.
    hosts: Arc<hosting::HostRegistry>,
    /// How long a routed invocation waits for its host's key exchange.
    host_key_exchange_wait: std::time::Duration,
}

/// How long a new connection may take to become usable, by default: 10 s for the TLS
/// handshake, then 10 s for the websocket upgrade or the HTTP/2 preface.
pub const DEFAULT_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a paused Execute (a page sent, or a transaction open) waits for its client's next
/// request by default: 5 minutes. A transaction holds the database's write lock meanwhile.
pub const DEFAULT_EXECUTE_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// How the emulator decides Authenticate requests (it has no administrator to ask).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthenticatePolicy {
    /// Every request is granted at once (the default).
    #[default]
    Permit,
    /// Every request is refused (decision DENY).
    Deny,
    /// The first `n` requests for each client key are answered PENDING and later ones are
    /// granted: an administrator who takes a while to approve.
    PendingThenPermit(u32),
}

/// Connections accepted since start, by kind (for tests and diagnostics).
#[derive(Debug, Default)]
pub struct Connections {
    websocket: AtomicU64,
    grpc: AtomicU64,
    grpc_client_certificate: AtomicU64,
    tunnels: AtomicU64,
    tunnel_messages: AtomicU64,
    routed_invocations: AtomicU64,
    cloud_method_names: AtomicU64,
}

/// A snapshot of [`Connections`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionCounts {
    /// Websocket gateway connections (TLS completed, when TLS is on).
    pub websocket: u64,
    /// gRPC connections (TLS completed, when TLS is on).
    pub grpc: u64,
    /// Of the gRPC connections, those whose client presented a certificate (mutual TLS).
    pub grpc_client_certificate: u64,
    /// Relay tunnels (`VoltAPI/Invoke` streams) whose opening message arrived.
    pub tunnels: u64,
    /// Sealed messages (a method's start, requests, ends) that callers sent through tunnels:
    /// none may arrive before a tunnel's key exchange has verified.
    pub tunnel_messages: u64,
    /// Of the tunnels, those routed to a client hosting a service (forwarded to its host).
    pub routed_invocations: u64,
    /// Tunnelled methods ended here whose name came with a cloud relay's `/<volt id>` prefix.
    pub cloud_method_names: u64,
}

impl Connections {
    /// Counts a websocket gateway connection.
    pub fn websocket_accepted(&self) {
        self.websocket.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a gRPC connection, and whether its client presented a certificate.
    pub fn grpc_accepted(&self, client_certificate: bool) {
        self.grpc.fetch_add(1, Ordering::Relaxed);
        if client_certificate {
            self.grpc_client_certificate.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a tunnel opened.
    pub fn tunnel_opened(&self) {
        self.tunnels.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a tunnel forwarded to a host.
    pub fn invocation_routed(&self) {
        self.routed_invocations.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a message a caller sent through a tunnel after its opening.
    pub fn tunnel_message(&self) {
        self.tunnel_messages.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a tunnelled method name that came with the cloud prefix.
    pub fn cloud_method_name(&self) {
        self.cloud_method_names.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn counts(&self) -> ConnectionCounts {
        ConnectionCounts {
            websocket: self.websocket.load(Ordering::Relaxed),
            grpc: self.grpc.load(Ordering::Relaxed),
            grpc_client_certificate: self.grpc_client_certificate.load(Ordering::Relaxed),
            tunnels: self.tunnels.load(Ordering::Relaxed),
            tunnel_messages: self.tunnel_messages.load(Ordering::Relaxed),
            routed_invocations: self.routed_invocations.load(Ordering::Relaxed),
            cloud_method_names: self.cloud_method_names.load(Ordering::Relaxed),
        }
    }
}

impl Services {
    /// Opens (or creates) every store in the identity's data directory.
    pub fn open(identity: VoltIdentity) -> tdx_volt::Result<Services> {
        let dir = identity.dir().to_path_buf();
        let resources =
            resources::ResourceStore::open(&dir, identity.id(), identity.display_name())?;
        let access = Arc::new(access::AccessStore::open(&dir, identity.id())?);
        let events = Arc::new(events::EventHub::default());
        // No host is connected yet, whatever a previous run left.
        resources
            .services_offline_at_start()
            .map_err(|f| tdx_volt::Error::new(tdx_volt::ErrorKind::Io, f.to_string()))?;
        // A fresh store: no listener is set yet.
        resources.set_listener(resource_events::listener(
            Arc::clone(&access),
            Arc::clone(&events),
        ));
        Ok(Services {
            admin: volt_admin::AdminState::open(&dir, identity.display_name())?,
            session_states: sessions::SessionStates::open(&dir)?,
            tunnel_fault: invoke::TunnelFault::default(),
            hosts: Arc::new(hosting::HostRegistry::default()),
            host_key_exchange_wait: hosting::DEFAULT_HOST_KEY_EXCHANGE_WAIT,
            access,
            events,
            clients: ClientRegistry::open(&dir)?,
            sqlite: sqlite::SqliteService::open(&dir)?,
            wires: wires::WireHub::new(),
            sync: sync::SyncHub::default(),
            files: files::FileStore::open(&dir)?,
            resources,
            identity,
            clock_offset: 0,
            connections: Connections::default(),
            authenticate_policy: AuthenticatePolicy::default(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            execute_idle_timeout: DEFAULT_EXECUTE_IDLE_TIMEOUT,
            discovery: "{}".to_owned(),
            authenticate_requests: Mutex::new(HashMap::new()),
        })
    }

    /// Bounds how long a new connection may take to become usable.
    pub fn with_handshake_timeout(mut self, timeout: std::time::Duration) -> Services {
        self.handshake_timeout = timeout;
        self
    }

    /// How long a new connection may take to become usable: the TLS handshake, then the
    /// websocket upgrade or the HTTP/2 preface, each.
    pub fn handshake_timeout(&self) -> std::time::Duration {
        self.handshake_timeout
    }

    /// Bounds how long a paused Execute waits for its client.
    pub fn with_execute_idle_timeout(mut self, idle: std::time::Duration) -> Services {
        self.execute_idle_timeout = idle;
        self
    }

    /// How long an Execute call with a page sent or a transaction open waits for its client's
    /// next request before it is ended (the transaction rolled back).
    pub fn execute_idle_timeout(&self) -> std::time::Duration {
        self.execute_idle_timeout
    }

    /// Breaks the tunnels this Volt ends as `fault` says (for testing that clients fail
    /// closed).
    pub fn with_tunnel_fault(mut self, fault: invoke::TunnelFault) -> Services {
        self.tunnel_fault = fault;
        self
    }

    /// What is broken in the tunnels this Volt ends.
    pub fn tunnel_fault(&self) -> invoke::TunnelFault {
        self.tunnel_fault
    }

    /// Bounds how long a routed invocation waits for its host's key exchange.
    pub fn with_host_key_exchange_wait(mut self, wait: std::time::Duration) -> Services {
        self.host_key_exchange_wait = wait;
        self
    }

    /// How long a routed invocation waits for its host's key exchange.
    pub fn host_key_exchange_wait(&self) -> std::time::Duration {
        self.host_key_exchange_wait
    }

    /// The clients hosting services now.
    pub fn hosts(&self) -> &Arc<hosting::HostRegistry> {
        &self.hosts
    }

    /// The discovery document (JSON) the gateway answers `GET /discover` with.
    pub fn with_discovery(mut self, document: String) -> Services {
        self.discovery = document;
        self
    }

    /// The discovery document: the Volt's id, name, keys, CA and addresses, as JSON.
    pub fn discovery(&self) -> &str {
        &self.discovery
    }

    /// Decides Authenticate requests by `policy`.
    pub fn with_authenticate_policy(mut self, policy: AuthenticatePolicy) -> Services {
        self.authenticate_policy = policy;
        self
    }

    /// The policy for Authenticate requests.
    pub fn authenticate_policy(&self) -> AuthenticatePolicy {
        self.authenticate_policy
    }

    /// Counts an Authenticate request for the client key `key_pem`; returns how many there
    /// have been, this one included.
    pub fn count_authenticate_request(&self, key_pem: &str) -> u32 {
        let mut seen = self
            .authenticate_requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = seen.entry(key_pem.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    /// Runs this Volt's clock `secs` seconds ahead of the host's (behind, when negative), as
    /// seen by token checks: for testing clients against clock skew and expired tokens.
    pub fn with_clock_offset(mut self, secs: i64) -> Services {
        self.clock_offset = secs;
        self
    }

    /// This Volt's time, in Unix seconds.
    pub fn now(&self) -> i64 {
        tdx_volt::protocol::token::unix_now().saturating_add(self.clock_offset)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// The Volt's identity.
    pub fn identity(&self) -> &VoltIdentity {
        &self.identity
    }

    /// The clients this Volt has issued.
    pub fn clients(&self) -> &ClientRegistry {
        &self.clients
    }

    /// The resource tree.
    pub fn resources(&self) -> &resources::ResourceStore {
        &self.resources
    }

    /// Access rules and requests.
    pub fn access(&self) -> &access::AccessStore {
        &self.access
    }

    /// The Connect streams listening for events.
    pub fn events(&self) -> &events::EventHub {
        &self.events
    }

    /// SQLite databases.
    pub fn sqlite(&self) -> &sqlite::SqliteService {
        &self.sqlite
    }

    /// Wires.
    pub fn wires(&self) -> &wires::WireHub {
        &self.wires
    }

    /// Synced documents.
    pub fn sync(&self) -> &sync::SyncHub {
        &self.sync
    }

    /// File contents.
    pub fn files(&self) -> &files::FileStore {
        &self.files
    }

    /// The Volt's editable parameters, one-time tokens and the shutdown signal.
    pub fn admin(&self) -> &volt_admin::AdminState {
        &self.admin
    }

    /// Session statuses and identity names saved by clients.
    pub fn session_states(&self) -> &sessions::SessionStates {
        &self.session_states
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.identity.dir()
    }

    /// A path inside the data directory.
    pub fn data_path(&self, name: &str) -> PathBuf {
        self.identity.dir().join(name)
    }

    /// The caller's home folder (created on first use), or the Volt root when it has none:
    /// where a resource saved without a parent goes.
    pub async fn home_folder(&self, caller: &Caller) -> String {
        volt_api::home_of(self, caller).await
    }

    /// Runs one call to completion. A reply failure becomes the method's response carrying
    /// only `status`, followed by a normal end; only abort failures reach the transport.
    pub async fn call(
        self: Arc<Self>,
        caller: Caller,
        method: &'static Method,
        inbound: Inbound,
        outbound: Outbound,
    ) -> Result<(), Failure> {
        let result = self.route(&caller, method, inbound, &outbound).await;
        match result {
            Err(failure) if !failure.is_abort() => match status_only(method, &failure) {
                Some(bytes) => outbound.send_encoded(bytes).await,
                None => Err(Failure::abort(failure.code(), failure.message())),
            },
            other => other,
        }
    }

    /// [`Services::call`] as a boxed `Send` future, for calls started from inside a call (a
    /// tunnel runs the method it carries): its declared type ends the recursion of the
    /// futures' types.
    pub fn call_boxed(
        self: Arc<Self>,
        caller: Caller,
        method: &'static Method,
        inbound: Inbound,
        outbound: Outbound,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), Failure>> + Send>> {
        Box::pin(self.call(caller, method, inbound, outbound))
    }

    async fn route(
        self: &Arc<Self>,
        caller: &Caller,
        method: &'static Method,
        inbound: Inbound,
        outbound: &Outbound,
    ) -> Result<(), Failure> {
        let name = method.name();
        match method.service() {
            // VoltAPI methods kept in files of their own, then the rest in volt_api.rs.
            "tdx.volt_api.volt.v1.VoltAPI" if resource_ops::METHODS.contains(&name) => {
                resource_ops::dispatch(self, caller, name, inbound, outbound).await
            }
            "tdx.volt_api.volt.v1.VoltAPI" if sessions::METHODS.contains(&name) => {
                sessions::dispatch(self, caller, name, inbound, outbound).await
            }
            "tdx.volt_api.volt.v1.VoltAPI" if identities::METHODS.contains(&name) => {
                identities::dispatch(self, caller, name, inbound, outbound).await
            }
            "tdx.volt_api.volt.v1.VoltAPI" if hosting::rpc::METHODS.contains(&name) => {
                hosting::rpc::dispatch(self, caller, name, inbound, outbound).await
            }
            "tdx.volt_api.volt.v1.VoltAPI" if name == invoke::METHOD => {
                invoke::serve(self, inbound, outbound).await
            }
            "tdx.volt_api.volt.v1.VoltAPI" if volt_admin::METHODS.contains(&name) => {
                volt_admin::dispatch(self, caller, name, inbound, outbound).await
            }
            "tdx.volt_api.volt.v1.VoltAPI" if sqlite::save_database::METHODS.contains(&name) => {
                sqlite::save_database::dispatch(self, caller, name, inbound, outbound).await
            }
            "tdx.volt_api.volt.v1.VoltAPI" => {
                volt_api::dispatch(self, caller, name, inbound, outbound).await
            }
            "tdx.volt_api.data.v1.SqliteServerAPI" | "tdx.volt_api.data.v1.SqliteDatabaseAPI" => {
                sqlite::dispatch(self, caller, name, inbound, outbound).await
            }
            "tdx.volt_api.volt.v1.WireAPI" => {
                wires::dispatch(self, caller, name, inbound, outbound).await
            }
            "tdx.volt_api.volt.v1.FileAPI" => {
                files::dispatch(self, caller, name, inbound, outbound).await
            }
            "tdx.volt_api.volt.v1.SyncAPI" if name == "SaveSyncDatabase" => {
                sqlite::save_database::dispatch(self, caller, name, inbound, outbound).await
            }
            "tdx.volt_api.volt.v1.SyncAPI" if sync::METHODS.contains(&name) => {
                sync::dispatch(self, caller, name, inbound, outbound).await
            }
            _ => Err(Failure::unimplemented(method.path())),
        }
    }
}

/// Runs a unary handler: takes the first request (later ones are ignored, as a unary method
/// has only one), and sends the one response.
pub async fn unary<Req, Resp, F, Fut>(
    mut inbound: Inbound,
    outbound: &Outbound,
    handler: F,
) -> Result<(), Failure>
where
    Req: Message + Default,
    Resp: Message,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<Resp, Failure>>,
{
    let request = inbound
        .next::<Req>()
        .await?
        .ok_or_else(|| Failure::abort(Code::InvalidArgument, "the call ended without a request"))?;
    let response = handler(request).await?;
    outbound.send(&response).await
}

/// The method's response message with only `status {code, message}` set, or `None` when the
/// response type has no `status` field.
fn status_only(method: &Method, failure: &Failure) -> Option<Bytes> {
    let output = method.output();
    let field = output.get_field_by_name("status")?;
    let Kind::Message(status_desc) = field.kind() else {
        return None;
    };
    let mut status = DynamicMessage::new(status_desc);
    status.set_field_by_name("code", PValue::I32(failure.code().as_i32()));
    status.set_field_by_name("message", PValue::String(failure.message().to_owned()));
    let mut response = DynamicMessage::new(output.clone());
    response.set_field(&field, PValue::Message(status));
    Some(Bytes::from(response.encode_to_vec()))
}
