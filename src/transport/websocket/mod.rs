//! The websocket gateway transport: protocol v1 (binary frames, a key exchange per call), or
//! the older protocol of RSA-era Volts (JSON text frames, the call key carried in the token).
//!
//! One task ([`task`]) owns the socket and every call on it. Callers reach it through a
//! bounded command queue; each call gets its events back through its own bounded queue, which
//! the task fills without ever waiting (a caller that falls that far behind loses its call,
//! not the connection). The work that can be done away from the socket (signing the identity
//! token, serialising messages) happens on the caller's side.

#[cfg(feature = "legacy")]
mod legacy;
mod seal;
mod setup;
mod socket;
mod table;
mod task;
mod v1;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use prost_reflect::MessageDescriptor;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};

use tokio_tungstenite::tungstenite::Message;

use super::delivery::{self, Delivery};
use super::link::{CallIo, CallSpec, Link, Opened, ServiceRoute};
use super::reconnect::Supervisor;
use super::Transport;
use crate::protocol::body;
use crate::protocol::exchange::ClientKeyExchange;
use crate::protocol::frame::{self, ClientHello};
use crate::protocol::json_text;
#[cfg(feature = "legacy")]
use crate::protocol::legacy::{client_frame_len_bound, LegacyKey};
use crate::protocol::schema;
use crate::protocol::token::TokenSigner;
use crate::{Error, ErrorKind, PublicKey, Result};

use seal::Inbound;
pub(crate) use setup::connect;
use socket::Target;

/// Commands queued to the connection task before callers wait for room.
const COMMAND_QUEUE: usize = 1024;

/// Which generation of the gateway protocol a connection speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// Protocol v1: binary frames, an X25519 key exchange per call.
    V1,
    /// The older protocol: JSON text frames, each call's AES key RSA-encrypted to the Volt in
    /// the token. `hops` is the `target_fingerprint` of every call (the relay's Volt first;
    /// empty when not relaying).
    #[cfg(feature = "legacy")]
    Legacy { hops: Vec<String> },
}

/// Everything the transport needs, fixed at connect time.
pub(crate) struct Settings {
    /// The protocol generation.
    pub protocol: Protocol,
    /// Where to connect, and how.
    pub target: Target,
    /// Signs each call's identity token.
    pub signer: TokenSigner,
    /// Verifies each call's key exchange (v1); encrypts each call's key (older protocol).
    pub volt_key: PublicKey,
    /// Meta of every call's opening frame (`d` when going through a relay; v1 only).
    pub meta: Map<String, Value>,
    /// Ping after this long without traffic; the connection is dead after twice as long.
    pub keepalive: Duration,
    /// Largest frame sent.
    pub max_outbound: usize,
    /// Unread events a call may hold before it is failed as too slow.
    pub call_buffer: usize,
    /// When to connect again; the connection's state.
    pub supervisor: Arc<Supervisor>,
    /// The next older-protocol call's key and token, minted ahead.
    #[cfg(feature = "legacy")]
    spare: legacy::Spare,
}

impl Settings {
    /// How the transport is named in spans.
    fn label(&self) -> &'static str {
        match self.protocol {
            Protocol::V1 => "websocket",
            #[cfg(feature = "legacy")]
            Protocol::Legacy { .. } => "legacy",
        }
    }

    /// The span of a connection attempt starting now (the gateway's `host:port`).
    fn attempt(&self) -> crate::transport::trace::ConnectAttempt {
        let address = crate::transport::trace::url_address(&self.target.url);
        self.supervisor.attempt(self.label(), &address)
    }
}

/// A handle on the connection task; cheap to clone.
#[derive(Clone)]
pub(crate) struct Connection {
    commands: mpsc::Sender<Command>,
    drops: mpsc::UnboundedSender<Dropped>,
    next_id: Arc<AtomicU64>,
    settings: Arc<Settings>,
}

/// A call's handle has gone, after `commands` commands (its Open included) were queued for
/// it. Drop notices travel apart from commands, so the task applies one only once that many
/// commands of the call have arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dropped {
    pub id: u64,
    pub commands: u64,
}

/// What callers ask of the connection task.
pub(crate) enum Command {
    /// Open a call (send its key exchange).
    Open(Box<OpenCall>),
    /// Send a message on a call (its request, if none was sent yet), with a token signed
    /// anew for the call's first frame when the one signed at open has grown old.
    Send {
        id: u64,
        json: String,
        token: Option<String>,
    },
    /// End the client's side of a call (with a renewed token, as for `Send`).
    End { id: u64, token: Option<String> },
}

impl Command {
    /// The call the command is for.
    fn id(&self) -> u64 {
        match self {
            Command::Open(open) => open.id,
            Command::Send { id, .. } | Command::End { id, .. } => *id,
        }
    }
}

/// A call to open, prepared on the caller's side.
pub(crate) struct OpenCall {
    pub id: u64,
    pub path: Arc<str>,
    pub opening: Opening,
    /// The request, when given at open.
    pub first: Option<String>,
    /// End the client side right after the request (unary and server-streaming calls).
    pub end_after_first: bool,
    /// Give up if the key exchange has not completed by then.
    pub exchange_timeout: Duration,
    pub delivery: Delivery,
    pub phase: watch::Sender<Phase>,
    /// For a call to a hosted service: its id (the invoke names it) and the host's key (it
    /// signs the key exchange instead of the Volt).
    pub service: Option<(String, PublicKey)>,
}

/// How a call gets its key.
pub(crate) enum Opening {
    /// Protocol v1: the opening frame, and our half of the key exchange it starts.
    V1 {
        hello: ClientHello,
        exchange: ClientKeyExchange,
    },
    /// The older protocol: the call is keyed at once; the token goes in its first frame.
    #[cfg(feature = "legacy")]
    Legacy {
        token: String,
        key: Arc<LegacyKey>,
        /// When the token was signed (a spare may have been signed a little before).
        signed: tokio::time::Instant,
    },
}

impl Opening {
    /// The length of the token the call's first payload frame carries (older protocol).
    fn token_len(&self) -> usize {
        match self {
            Opening::V1 { .. } => 0,
            #[cfg(feature = "legacy")]
            Opening::Legacy { token, .. } => token.len(),
        }
    }
}

/// Where a call stands, as its handle sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for the Volt's half of the key exchange.
    Opening,
    /// Keyed: messages can be sent.
    Open,
    /// Over, one way or another.
    Closed,
}

impl Connection {
    /// Opens the websocket and starts the task that owns it.
    pub(crate) async fn connect(settings: Settings) -> Result<Connection> {
        settings.supervisor.connecting();
        let attempt = settings.attempt();
        let socket = match socket::open(&settings.target).await {
            Ok(socket) => socket,
            Err(e) => {
                attempt.failed(&e);
                settings.supervisor.failed(&e);
                return Err(e);
            }
        };
        attempt.connected();
        settings.supervisor.connected();
        let settings = Arc::new(settings);
        let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let (drops, drops_rx) = mpsc::unbounded_channel();
        tokio::spawn(task::run(settings.clone(), socket, commands_rx, drops_rx));
        Ok(Connection {
            commands,
            drops,
            next_id: Arc::new(AtomicU64::new(1)),
            settings,
        })
    }

    /// Opens a call: signs a fresh token with a fresh key-exchange key and queues the opening
    /// frame. Returns once the task has the call; the key exchange completes in the
    /// background.
    ///
    /// A call to a hosted service (`route`) names it in its opening frame's meta (`d`, the
    /// hops, ending with the host unless the Volt hosts it; `s`, the service), its token is
    /// for the host, and the host's key must sign the key exchange. `input`, for such a call,
    /// is the method's input message from the service's own protos, when known.
    async fn open_call(
        &self,
        spec: CallSpec,
        route: Option<ServiceRoute>,
        input: Option<MessageDescriptor>,
    ) -> Result<Opened> {
        let CallSpec {
            path,
            first,
            end_after_first,
            timeout,
            unread,
        } = spec;
        // The Volt checks a request against the method's schema too; checking it here makes a
        // request that does not fit the same Schema error as on gRPC, where encoding checks it.
        let input = match &route {
            Some(_) => input,
            None => schema::methods().get(&path).map(|m| m.input().clone()),
        };
        if let (Some(input), Some(request)) = (&input, &first) {
            schema::json_to_protobuf(input, request)?;
        }
        let first = first.as_ref().map(json_text::to_string);
        let settings = &self.settings;
        let mut opening = self.opening(route.as_ref())?;
        let token_len = opening.token_len();
        if let Some(json) = &first {
            check_size(&path, json, settings, token_len)?;
        }
        // Only a call that is going to be opened takes an id.
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        #[allow(irrefutable_let_patterns)] // without the older protocol
        if let Opening::V1 { hello, .. } = &mut opening {
            hello.call_id = id;
        }
        let open_path = path.clone();
        #[cfg(feature = "legacy")]
        let first_frame = match &opening {
            Opening::Legacy { key, signed, .. } if first.is_none() => Some(FirstFrame {
                key: key.clone(),
                signed: *signed,
                pending: AtomicBool::new(true),
            }),
            _ => None,
        };
        #[cfg(not(feature = "legacy"))]
        let first_frame = None;
        let (delivery, receivers) = delivery::channels(settings.call_buffer, unread);
        let (phase, phase_rx) = watch::channel(Phase::Opening);
        let open = OpenCall {
            id,
            path,
            opening,
            first,
            end_after_first,
            exchange_timeout: timeout,
            delivery,
            phase,
            service: route.map(|r| (r.service_id, r.host_key)),
        };
        self.commands
            .send(Command::Open(Box::new(open)))
            .await
            .map_err(|_| connection_gone())?;
        let handle = CallHandle {
            id,
            path: open_path,
            commands: self.commands.clone(),
            drops: self.drops.clone(),
            phase: phase_rx,
            timeout,
            settings: self.settings.clone(),
            token_len,
            input,
            first_frame,
            ended: AtomicBool::new(end_after_first),
            queued: AtomicU64::new(1),
        };
        Ok(Opened {
            io: Box::new(handle),
            receivers,
        })
    }
}

impl Link for Connection {
    fn transport(&self) -> Transport {
        match self.settings.protocol {
            Protocol::V1 => Transport::Websocket,
            #[cfg(feature = "legacy")]
            Protocol::Legacy { .. } => Transport::LegacyWebsocket,
        }
    }

    fn holds_back_slow_readers(&self) -> bool {
        false
    }

    fn open(&self, spec: CallSpec) -> BoxFuture<'_, Result<Opened>> {
        Box::pin(self.open_call(spec, None, None))
    }

    fn open_routed(
        &self,
        spec: CallSpec,
        route: ServiceRoute,
        input: Option<MessageDescriptor>,
    ) -> BoxFuture<'_, Result<Opened>> {
        Box::pin(self.open_call(spec, Some(route), input))
    }
}

impl Protocol {
    /// What `message` means in this protocol.
    fn read(&self, message: &Message) -> Inbound {
        match (self, message) {
            (Protocol::V1, Message::Binary(bytes)) => v1::read(bytes),
            #[cfg(feature = "legacy")]
            (Protocol::Legacy { .. }, Message::Text(text)) => legacy::read(text),
            (Protocol::V1, Message::Text(_)) => {
                tracing::debug!("ignoring a text frame from the Volt (protocol v1 has none)");
                Inbound::Nothing
            }
            #[cfg(feature = "legacy")]
            (Protocol::Legacy { .. }, Message::Binary(_)) => {
                tracing::debug!(
                    "ignoring a binary frame from the Volt (the older protocol has none)"
                );
                Inbound::Nothing
            }
            _ => Inbound::Nothing,
        }
    }
}

/// Adds a hosted service's route to an opening frame's meta: the host as the last hop of `d`
/// (unless the Volt, `volt_id`, hosts it) and the service as `s`.
fn route_meta(meta: &mut Map<String, Value>, route: &ServiceRoute, volt_id: &str) {
    let mut hops: Vec<Value> = match meta.remove("d") {
        Some(Value::Array(hops)) => hops,
        _ => Vec::new(),
    };
    if route.host_client_id != volt_id {
        hops.push(Value::from(route.host_client_id.as_str()));
    }
    if !hops.is_empty() {
        meta.insert("d".into(), Value::Array(hops));
    }
    meta.insert("s".into(), Value::from(route.service_id.as_str()));
}

impl Connection {
    /// Signs a fresh token for a call, with what the protocol needs to key the call (the v1
    /// opening frame's call id is set once the call has one).
    fn opening(&self, route: Option<&ServiceRoute>) -> Result<Opening> {
        let settings = &self.settings;
        match settings.protocol {
            Protocol::V1 => {
                let exchange = ClientKeyExchange::new();
                let mut claims = settings
                    .signer
                    .session_claims()
                    .with_key(exchange.token_claim());
                let mut meta = settings.meta.clone();
                if let Some(route) = route {
                    route_meta(&mut meta, route, &claims.aud);
                    claims.aud = route.host_client_id.clone();
                }
                let token = settings.signer.sign(&claims)?;
                let hello = ClientHello {
                    call_id: 0,
                    meta,
                    signature: token.signature().to_vec(),
                    claims: token.claims_json().to_vec(),
                };
                Ok(Opening::V1 { hello, exchange })
            }
            #[cfg(feature = "legacy")]
            Protocol::Legacy { .. } if route.is_some() => Err(Error::new(
                ErrorKind::Config,
                "calls to hosted services need the websocket gateway's protocol v1",
            )),
            #[cfg(feature = "legacy")]
            Protocol::Legacy { .. } => {
                let (key, token, signed) = legacy::Spare::opening(&self.settings)?;
                Ok(Opening::Legacy { token, key, signed })
            }
        }
    }
}

/// Fails early, with a [`Limit`](ErrorKind::Limit) error, a message whose frame would be over
/// the limit. Every message is sized as an invoke (a payload frame is a few bytes shorter);
/// v1 sealed frames carry no meta of ours; an older-protocol frame is sized as a call's first
/// (with its `token_len`-byte token, when it has one).
fn check_size(path: &str, json: &str, settings: &Settings, token_len: usize) -> Result<()> {
    #[cfg(not(feature = "legacy"))]
    let _ = token_len;
    let body = body::invoke_len(path, json);
    let len = match &settings.protocol {
        Protocol::V1 => frame::sealed_frame_len(body, 0),
        #[cfg(feature = "legacy")]
        Protocol::Legacy { hops } => client_frame_len_bound(body, token_len, hops),
    };
    if len > settings.max_outbound {
        return Err(Error::new(
            ErrorKind::Limit,
            format!(
                "a message of {} bytes needs a frame of {len} bytes, over the {}-byte limit",
                json.len(),
                settings.max_outbound
            ),
        ));
    }
    Ok(())
}

fn connection_gone() -> Error {
    Error::new(ErrorKind::Closed, "the connection task has stopped")
}

/// The caller's side of one call: `send`, `end`, and cancel on drop.
pub(crate) struct CallHandle {
    id: u64,
    path: Arc<str>,
    commands: mpsc::Sender<Command>,
    drops: mpsc::UnboundedSender<Dropped>,
    phase: watch::Receiver<Phase>,
    timeout: Duration,
    settings: Arc<Settings>,
    /// The length of the token an older-protocol call's first frame carries; messages are
    /// sized as if they were that frame (0 for v1).
    token_len: usize,
    /// The method's input message, when the method is in the schema: requests are checked
    /// against it.
    input: Option<MessageDescriptor>,
    /// An older-protocol call opened without its request, until its first frame is queued.
    first_frame: Option<FirstFrame>,
    ended: AtomicBool,
    /// Commands queued for this call so far, its Open included.
    queued: AtomicU64,
}

/// The token an older-protocol call's first frame will carry was signed at open; a call whose
/// first message comes long after gets one signed anew here, away from the connection task.
#[cfg(feature = "legacy")]
struct FirstFrame {
    key: Arc<LegacyKey>,
    signed: tokio::time::Instant,
    /// Nothing has been queued for the call yet.
    pending: AtomicBool,
}

#[cfg(feature = "legacy")]
impl FirstFrame {
    /// For the call's first command only: a token signed now, if the one signed at open is
    /// too old to send.
    fn renewed_token(&self, settings: &Settings) -> Result<Option<String>> {
        if !self.pending.swap(false, Ordering::AcqRel)
            || self.signed.elapsed() <= legacy::TOKEN_FRESH
        {
            return Ok(None);
        }
        legacy::token(settings, &self.key).map(Some)
    }
}

/// Without the older protocol no call has a first frame to renew.
#[cfg(not(feature = "legacy"))]
enum FirstFrame {}

#[cfg(not(feature = "legacy"))]
impl FirstFrame {
    fn renewed_token(&self, _: &Settings) -> Result<Option<String>> {
        match *self {}
    }
}

impl CallIo for CallHandle {
    fn send<'a>(&'a self, message: &'a Value) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if let Some(input) = &self.input {
                schema::json_to_protobuf(input, message)?;
            }
            self.send_text(json_text::to_string(message)).await
        })
    }

    fn send_json_text(&self, json: String) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.send_text(json))
    }

    fn end(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.end_client_side())
    }

    fn cancel(&self) {
        CallHandle::cancel(self);
    }

    fn outcome_follows_response(&self) -> bool {
        false
    }

    fn call_id(&self) -> Option<u64> {
        Some(self.id)
    }
}

impl CallHandle {
    async fn send_text(&self, json: String) -> Result<()> {
        if self.ended.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::Closed,
                "the client side of this call has ended",
            ));
        }
        check_size(&self.path, &json, &self.settings, self.token_len)?;
        self.wait_open().await?;
        let token = self.renewed_token()?;
        self.queue(Command::Send {
            id: self.id,
            json,
            token,
        })
        .await
    }

    async fn queue(&self, command: Command) -> Result<()> {
        self.commands
            .send(command)
            .await
            .map_err(|_| connection_gone())?;
        self.queued.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    async fn end_client_side(&self) -> Result<()> {
        if self.ended.swap(true, Ordering::AcqRel) || *self.phase.borrow() == Phase::Closed {
            return Ok(());
        }
        let token = self.renewed_token()?;
        self.queue(Command::End { id: self.id, token }).await
    }

    /// For the first command of an older-protocol call opened without its request: a token
    /// signed now, when the one signed at open is too old to send.
    fn renewed_token(&self) -> Result<Option<String>> {
        match &self.first_frame {
            Some(first) => first.renewed_token(&self.settings),
            None => Ok(None),
        }
    }

    /// Tells the task the caller has gone. The drop queue is unbounded, but holds at most one
    /// notice per call handle, and handles are bounded by the client's call limit.
    fn cancel(&self) {
        let _ = self.drops.send(Dropped {
            id: self.id,
            commands: self.queued.load(Ordering::Acquire),
        });
    }

    async fn wait_open(&self) -> Result<()> {
        let mut phase = self.phase.clone();
        let waited = tokio::time::timeout(self.timeout, async {
            phase
                .wait_for(|p| *p != Phase::Opening)
                .await
                .map(|p| *p)
                .unwrap_or(Phase::Closed)
        })
        .await;
        match waited {
            Ok(Phase::Open) => Ok(()),
            Ok(_) => Err(Error::new(ErrorKind::Closed, "the call has ended")),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "the Volt did not complete the key exchange within {:?}",
                    self.timeout
                ),
            )),
        }
    }
}
