//! Starting and stopping an emulator: listeners, TLS, the written client configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tdx_volt::{Error, ErrorKind, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

use crate::identity::{Era, VoltIdentity};
use crate::issue::{issue_client, write_config, write_default_config, Endpoints};
use crate::services::{AuthenticatePolicy, ConnectionCounts, Services};
use crate::transport::outgoing::OutgoingLimits;
use crate::transport::{grpc, legacy_websocket, preface, websocket};

/// How long a TLS handshake may take before the connection is dropped, by default.
pub const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = crate::services::DEFAULT_HANDSHAKE_TIMEOUT;

/// Settings for an [`Emulator`]; [`EmulatorBuilder::start`] starts it.
#[derive(Clone, Debug)]
#[must_use]
pub struct EmulatorBuilder {
    dir: PathBuf,
    ws_listen: SocketAddr,
    grpc_listen: SocketAddr,
    plain: bool,
    legacy: bool,
    clock_offset: i64,
    authenticate_policy: AuthenticatePolicy,
    handshake_timeout: std::time::Duration,
    execute_idle_timeout: std::time::Duration,
    max_connections: usize,
    outgoing: OutgoingLimits,
    tunnel_fault: crate::services::invoke::TunnelFault,
    host_key_exchange_wait: std::time::Duration,
}

/// Connections each listener serves at once, by default; further ones are closed at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

impl EmulatorBuilder {
    /// The websocket gateway's listen address (default `127.0.0.1:0`).
    pub fn ws_listen(mut self, addr: SocketAddr) -> Self {
        self.ws_listen = addr;
        self
    }

    /// The gRPC listen address (default `127.0.0.1:0`).
    pub fn grpc_listen(mut self, addr: SocketAddr) -> Self {
        self.grpc_listen = addr;
        self
    }

    /// Serve without TLS (`http://` and h2c). Only for debugging with tools that cannot
    /// trust a CA; clients then skip TLS verification entirely.
    pub fn plain(mut self, plain: bool) -> Self {
        self.plain = plain;
        self
    }

    /// Plays an RSA-era Volt (`serve --legacy`): RSA-2048 Volt and client keys, a CA signed
    /// with the RSA key, client configurations carrying `volt.fingerprint`, and a websocket
    /// gateway speaking the older JSON text protocol (the Python client `volt_client_web`
    /// 0.1.x) instead of protocol v1. gRPC is served as usual. The data directory keeps the
    /// era it was created with: starting it in the other one fails with a configuration error.
    pub fn legacy(mut self, legacy: bool) -> Self {
        self.legacy = legacy;
        self
    }

    /// Runs the Volt's clock `secs` seconds ahead of the host's (behind, when negative) for
    /// token checks, to test clients against clock skew and expired tokens. 0 by default.
    pub fn clock_offset(mut self, secs: i64) -> Self {
        self.clock_offset = secs;
        self
    }

    /// How long a new connection may take to become usable: the TLS handshake, then the
    /// websocket upgrade or the HTTP/2 preface, each within it. A connection that takes longer
    /// is dropped. 10 s by default.
    pub fn handshake_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long an Execute call with a page sent or a transaction open waits for its client's
    /// next request; a client silent longer gets `DEADLINE_EXCEEDED` and its transaction is
    /// rolled back. 5 minutes by default.
    pub fn execute_idle_timeout(mut self, idle: std::time::Duration) -> Self {
        self.execute_idle_timeout = idle;
        self
    }

    /// Connections each listener (the gateway, gRPC) serves at once; one more is closed as soon
    /// as it is accepted. [`DEFAULT_MAX_CONNECTIONS`] by default; at least 1.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections.max(1);
        self
    }

    /// The most bytes of frames a websocket connection's calls may have queued toward its
    /// client ([`DEFAULT_MAX_QUEUED_BYTES`](crate::transport::outgoing::DEFAULT_MAX_QUEUED_BYTES)
    /// by default: 64 MiB plus the largest frame). Calls wait while it is reached; a response
    /// frame larger than it fails its call with `RESOURCE_EXHAUSTED`.
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.outgoing.max_queued_bytes = bytes.max(1);
        self
    }

    /// How long a frame may wait for room under [`EmulatorBuilder::max_queued_bytes`] while the
    /// websocket client reads nothing; then that socket is closed (logged) and its calls end.
    /// 30 s by default.
    pub fn write_stall_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.outgoing.stall_timeout = timeout;
        self
    }

    /// How Authenticate requests are decided; [`AuthenticatePolicy::Permit`] by default.
    pub fn authenticate_policy(mut self, policy: AuthenticatePolicy) -> Self {
        self.authenticate_policy = policy;
        self
    }

    /// Breaks the relay tunnels this Volt ends as `fault` says, so that a test can check a
    /// client fails closed (say, on a key exchange whose signature does not verify). Only
    /// for tests: such an emulator is broken on purpose.
    pub fn dangerous_tunnel_fault(mut self, fault: crate::services::invoke::TunnelFault) -> Self {
        self.tunnel_fault = fault;
        self
    }

    /// How long a tunnel routed to a client hosting a service waits for the host's key
    /// exchange; past it the caller gets `DEADLINE_EXCEEDED` and the host `client_end`.
    /// [`DEFAULT_HOST_KEY_EXCHANGE_WAIT`](crate::services::hosting::DEFAULT_HOST_KEY_EXCHANGE_WAIT)
    /// (10 s) by default.
    pub fn host_key_exchange_wait(mut self, wait: std::time::Duration) -> Self {
        self.host_key_exchange_wait = wait;
        self
    }

    /// Loads (or creates) the identity and data in the directory, binds both listeners,
    /// writes `DIR/client.config.json` and starts serving.
    pub async fn start(self) -> Result<Emulator> {
        let era = if self.legacy {
            Era::Legacy
        } else {
            Era::Current
        };
        let identity = VoltIdentity::load_or_create_as(&self.dir, era)?;
        let tls = if self.plain {
            None
        } else {
            Some((
                TlsAcceptor::from(crate::tls::gateway_config(&identity)?),
                TlsAcceptor::from(crate::tls::grpc_config(&identity)?),
            ))
        };
        let ws_listener = bind(self.ws_listen).await?;
        let grpc_listener = bind(self.grpc_listen).await?;
        let ws_addr = local_addr(&ws_listener)?;
        let grpc_addr = local_addr(&grpc_listener)?;
        let scheme = if self.plain { "http" } else { "https" };
        let endpoints = Endpoints {
            address: grpc_addr.to_string(),
            http_address: format!("{scheme}://{ws_addr}"),
        };
        // What `GET /discover` answers: the configuration's `volt` section.
        let discovery = crate::issue::volt_section(&identity, &endpoints)?.to_string();
        let svc = Arc::new(
            Services::open(identity)?
                .with_clock_offset(self.clock_offset)
                .with_authenticate_policy(self.authenticate_policy)
                .with_handshake_timeout(self.handshake_timeout)
                .with_execute_idle_timeout(self.execute_idle_timeout)
                .with_discovery(discovery)
                .with_tunnel_fault(self.tunnel_fault)
                .with_host_key_exchange_wait(self.host_key_exchange_wait),
        );
        endpoints.save(svc.dir())?;
        let config_path = write_default_config(&svc, &endpoints)?;

        let mut tasks = JoinSet::new();
        let (ws_tls, grpc_tls) = match tls {
            Some((ws, grpc)) => (Some(ws), Some(grpc)),
            None => (None, None),
        };
        tasks.spawn(accept_loop(
            svc.clone(),
            ws_listener,
            ws_tls,
            Kind::Websocket,
            self.max_connections,
            self.outgoing,
        ));
        tasks.spawn(watch_revocations(svc.clone()));
        tasks.spawn(accept_loop(
            svc.clone(),
            grpc_listener,
            grpc_tls,
            Kind::Grpc,
            self.max_connections,
            self.outgoing,
        ));
        info!(
            websocket = %endpoints.http_address,
            grpc = %endpoints.address,
            "volt-emulator serving {}",
            svc.identity().id()
        );
        Ok(Emulator {
            svc,
            endpoints,
            config_path,
            tasks,
        })
    }
}

/// A running emulator. Dropping it (or [`Emulator::shutdown`]) stops the listeners and closes
/// every connection.
pub struct Emulator {
    svc: Arc<Services>,
    endpoints: Endpoints,
    config_path: PathBuf,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("volt_id", &self.svc.identity().id())
            .field("endpoints", &self.endpoints)
            .field("config_path", &self.config_path)
            .finish()
    }
}

impl Emulator {
    /// Settings for an emulator keeping its state in `dir`.
    pub fn builder(dir: impl Into<PathBuf>) -> EmulatorBuilder {
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        EmulatorBuilder {
            dir: dir.into(),
            ws_listen: local,
            grpc_listen: local,
            plain: false,
            legacy: false,
            clock_offset: 0,
            authenticate_policy: AuthenticatePolicy::Permit,
            handshake_timeout: crate::services::DEFAULT_HANDSHAKE_TIMEOUT,
            execute_idle_timeout: crate::services::DEFAULT_EXECUTE_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            outgoing: OutgoingLimits::default(),
            tunnel_fault: Default::default(),
            host_key_exchange_wait: crate::services::hosting::DEFAULT_HOST_KEY_EXCHANGE_WAIT,
        }
    }

    /// The websocket gateway's base address (`https://127.0.0.1:P`).
    pub fn http_address(&self) -> &str {
        &self.endpoints.http_address
    }

    /// The gRPC address (`127.0.0.1:Q`).
    pub fn address(&self) -> &str {
        &self.endpoints.address
    }

    /// The path of the client configuration written at start.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The Volt's id.
    pub fn volt_id(&self) -> &str {
        self.svc.identity().id()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.svc.dir()
    }

    /// Which generation of Volt this is ([`EmulatorBuilder::legacy`]).
    pub fn era(&self) -> Era {
        self.svc.identity().era()
    }

    /// The Volt CA certificate (PEM), which clients must trust.
    pub fn ca_pem(&self) -> &str {
        self.svc.identity().ca_pem()
    }

    /// The line `serve` prints once ready.
    pub fn ready_line(&self) -> String {
        serde_json::json!({
            "http_address": self.endpoints.http_address,
            "address": self.endpoints.address,
            "config": self.config_path.display().to_string(),
        })
        .to_string()
    }

    /// Connections accepted since start, by kind.
    pub fn connections(&self) -> ConnectionCounts {
        self.svc.connections().counts()
    }

    /// How many subscribers the wire `wire_id` has right now.
    pub fn wire_subscribers(&self, wire_id: &str) -> usize {
        self.svc.wires().subscriber_count(wire_id)
    }

    /// Issues another client configuration (fresh key and session); with a passphrase the
    /// key is encrypted. Returns the configuration JSON.
    pub fn issue_client(&self, name: &str, passphrase: Option<&str>) -> Result<serde_json::Value> {
        issue_client(&self.svc, &self.endpoints, name, passphrase, true)
    }

    /// [`Emulator::issue_client`] for a configuration that reaches this Volt through its own
    /// relay endpoint (`volt.relay`): calls are tunnelled over gRPC (`VoltAPI/Invoke`) or
    /// routed on the gateway (meta `d`), as through a real relay.
    pub fn issue_relayed_client(
        &self,
        name: &str,
        passphrase: Option<&str>,
    ) -> Result<serde_json::Value> {
        let mut config = issue_client(&self.svc, &self.endpoints, name, passphrase, true)?;
        crate::issue::make_relayed(&mut config, self.svc.identity(), &self.endpoints);
        Ok(config)
    }

    /// Issues a client configuration for a key the caller already has (say, a key from a
    /// configuration a real Volt issued): `public_key` gets a new client id and session, and
    /// the configuration carries `key_pem` exactly as given (encrypted or not).
    pub fn issue_client_for_key(
        &self,
        name: &str,
        public_key: &tdx_volt::PublicKey,
        key_pem: &str,
    ) -> Result<serde_json::Value> {
        crate::issue::issue_client_for_key(
            &self.svc,
            &self.endpoints,
            name,
            public_key,
            key_pem,
            true,
        )
    }

    /// Resolves once a client has asked this Volt to stop (the Shutdown method, for the Volt's
    /// owner). The listeners have closed by then, and the connections are being dropped;
    /// [`Emulator::shutdown`] completes the stop.
    pub async fn stopped(&self) {
        self.svc.admin().shutdown_requested().await
    }

    /// Revokes a session: from now on every call with it (identity token or client
    /// certificate, on every transport) fails with UNAUTHENTICATED and a message ending
    /// `session invalid`, and its open Connect streams end so. `Ok(false)` when there is no
    /// such session. `volt-emulator revoke` does the same from another process.
    pub fn revoke_session(&self, session_id: &str) -> Result<bool> {
        self.svc.clients().revoke(session_id)
    }

    /// Stops serving: the listeners close and every open connection is dropped.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Issues a client configuration for the emulator whose data is in `dir` (running or not; the
/// addresses are those of its last start) and writes it to `out`. The client's key is of the
/// directory's era: RSA for an RSA-era Volt.
pub fn issue_client_file(
    dir: &Path,
    name: &str,
    passphrase: Option<&str>,
    out: &Path,
) -> Result<()> {
    issue_client_file_as(dir, name, passphrase, false, out)
}

/// [`issue_client_file`], and with `relayed` a configuration that reaches the Volt through
/// its own relay endpoint (`volt.relay`, see [`crate::issue::make_relayed`]).
pub fn issue_client_file_as(
    dir: &Path,
    name: &str,
    passphrase: Option<&str>,
    relayed: bool,
    out: &Path,
) -> Result<()> {
    let endpoints = Endpoints::load(dir)?;
    let identity = VoltIdentity::load_or_create(dir)?;
    let svc = Services::open(identity)?;
    let mut config = issue_client(&svc, &endpoints, name, passphrase, false)?;
    if relayed {
        crate::issue::make_relayed(&mut config, svc.identity(), &endpoints);
    }
    write_config(out, &config)
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Websocket,
    Grpc,
}

/// How often a running emulator looks at `clients.json` (a `stat`) for revocations another
/// process made, so that the revoked session's Connect streams end without waiting for a call.
pub const REVOCATION_POLL: std::time::Duration = std::time::Duration::from_millis(250);

async fn watch_revocations(svc: Arc<Services>) {
    let mut tick = tokio::time::interval(REVOCATION_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let svc = svc.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || svc.clients().refresh()).await {
            tracing::debug!("looking for revocations: {e}");
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("binding {addr}")).with_source(e))
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr> {
    listener
        .local_addr()
        .map_err(|e| Error::new(ErrorKind::Io, "reading the bound address").with_source(e))
}

/// Accepts connections until aborted; dropping it drops every connection it started.
async fn accept_loop(
    svc: Arc<Services>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    kind: Kind,
    max_connections: usize,
    outgoing: OutgoingLimits,
) {
    let mut connections = JoinSet::new();
    // A Shutdown call stops the listener; dropping `connections` then drops every connection.
    let stop = svc.admin().shutdown_requested();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => {
                debug!(?kind, "listener stopped: shutdown requested");
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Connections that ended count no more.
                    while connections.try_join_next().is_some() {}
                    if connections.len() >= max_connections {
                        debug!(%peer, ?kind, "connection refused: {max_connections} served already");
                        drop(stream);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(svc.clone(), stream, tls.clone(), kind, peer, outgoing));
                }
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the others.
                    debug!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

async fn serve_connection(
    svc: Arc<Services>,
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    kind: Kind,
    peer: SocketAddr,
    outgoing: OutgoingLimits,
) {
    debug!(%peer, ?kind, "connection");
    match tls {
        None => match kind {
            Kind::Websocket => serve_gateway(svc, stream, outgoing).await,
            Kind::Grpc => {
                svc.connections().grpc_accepted(false);
                grpc::serve_stream(svc, stream, None).await
            }
        },
        Some(acceptor) => {
            let handshake = tokio::time::timeout(svc.handshake_timeout(), acceptor.accept(stream));
            let stream = match handshake.await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => return debug!(%peer, "TLS handshake timed out"),
            };
            match kind {
                Kind::Websocket => serve_gateway(svc, stream, outgoing).await,
                Kind::Grpc => {
                    let cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.to_vec());
                    svc.connections().grpc_accepted(cert.is_some());
                    grpc::serve_stream(svc, stream, cert).await
                }
            }
        }
    }
}

/// Serves the websocket gateway of the Volt's era on an established stream.
async fn serve_gateway<S>(svc: Arc<Services>, stream: S, outgoing: OutgoingLimits)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    svc.connections().websocket_accepted();
    // The request head first: `GET /discover` is answered here; anything else goes on to the
    // websocket upgrade, which reads the head again.
    let (head, mut stream) = match preface::read_head(stream, svc.handshake_timeout()).await {
        Ok(read) => read,
        Err(why) => return debug!("gateway connection dropped: {why}"),
    };
    if let Some(document) = http_document(&svc, &head) {
        return answer_document(&document, stream.get_mut()).await;
    }
    match svc.identity().era() {
        Era::Current => websocket::serve_stream(svc, stream, outgoing).await,
        Era::Legacy => legacy_websocket::serve_stream(svc, stream, outgoing).await,
    }
}

/// The JSON document a plain HTTP request head asks for, if it is one the gateway answers:
/// `GET /discover` (the Volt's discovery document, what the vendor's helpers fetch to resolve
/// a configuration) and `GET /relay` (the Volts reachable through this one as a relay: only
/// itself, `{"clients": [<its discovery document>]}`), with or without a query.
fn http_document(svc: &Services, head: &[u8]) -> Option<String> {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return None;
    };
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    match (method, path) {
        (b"GET", b"/discover") => Some(svc.discovery().to_owned()),
        (b"GET", b"/relay") => Some(format!("{{\"clients\":[{}]}}", svc.discovery())),
        _ => None,
    }
}

/// Answers a plain HTTP request with a JSON document, then closes.
async fn answer_document<S>(body: &str, stream: &mut S)
where
    S: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt as _;
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Access-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = stream.write_all(response.as_bytes()).await {
        return debug!("answering a discovery request: {e}");
    }
    let _ = stream.shutdown().await;
}
