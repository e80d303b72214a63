//! The websocket gateway transport: protocol v1 (binary frames, a key exchange per call), or
//! the older protocol of RSA-era Volts (JSON text frames, the call key carried in the token).
//!
//! One task ([`task`]) owns the socket and every call on it. Callers reach it through a
//! bounded command queue; each call gets its events back through its own bounded queue, which
//! the task fills without ever waiting (a caller that falls that far behind loses its call,
//! not the connection). The work that can be done away from the socket (signing the identity
//! token, serialising messages) happens on the caller's side.

mod setup;
mod socket;
mod table;
mod task;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};

use super::delivery::{self, Delivery};
use super::link::{CallIo, CallSpec, Link, Opened};
use super::Transport;
use crate::protocol::exchange::ClientKeyExchange;
use crate::protocol::frame::{ClientHello, IV_LEN};
use crate::protocol::legacy::LegacyKey;
use crate::protocol::token::TokenSigner;
use crate::{Error, ErrorKind, PublicKey, Result};

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
    /// Send a message on a call (its request, if none was sent yet).
    Send { id: u64, json: String },
    /// End the client's side of a call.
    End { id: u64 },
}

impl Command {
    /// The call the command is for.
    fn id(&self) -> u64 {
        match self {
            Command::Open(open) => open.id,
            Command::Send { id, .. } | Command::End { id } => *id,
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
}

/// How a call gets its key.
pub(crate) enum Opening {
    /// Protocol v1: the opening frame, and our half of the key exchange it starts.
    V1 {
        hello: ClientHello,
        exchange: ClientKeyExchange,
    },
    /// The older protocol: the call is keyed at once; the token (signed at `signed`) goes in
    /// its first frame.
    Legacy {
        token: String,
        key: LegacyKey,
        signed: tokio::time::Instant,
    },
}

impl Opening {
    /// The length of the token the call's first payload frame carries (older protocol).
    fn token_len(&self) -> usize {
        match self {
            Opening::V1 { .. } => 0,
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
        let socket = socket::open(&settings.target).await?;
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
    async fn open_call(&self, spec: CallSpec) -> Result<Opened> {
        let CallSpec {
            path,
            first,
            end_after_first,
            timeout,
            unread,
        } = spec;
        let first = first.as_ref().map(to_json_text).transpose()?;
        let settings = &self.settings;
        let mut opening = self.opening()?;
        let token_len = opening.token_len();
        if let Some(json) = &first {
            check_size(&path, json, settings, token_len)?;
        }
        // Only a call that is going to be opened takes an id.
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Opening::V1 { hello, .. } = &mut opening {
            hello.call_id = id;
        }
        let open_path = path.clone();
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
            Protocol::Legacy { .. } => Transport::LegacyWebsocket,
        }
    }

    fn holds_back_slow_readers(&self) -> bool {
        false
    }

    fn open(&self, spec: CallSpec) -> BoxFuture<'_, Result<Opened>> {
        Box::pin(self.open_call(spec))
    }
}

/// A message as the JSON text the websocket gateway carries.
fn to_json_text(message: &Value) -> Result<String> {
    serde_json::to_string(message)
        .map_err(|e| Error::new(ErrorKind::Schema, "the message does not serialize").with_source(e))
}

impl Connection {
    /// Signs a fresh token for a call, with what the protocol needs to key the call (the v1
    /// opening frame's call id is set once the call has one).
    fn opening(&self) -> Result<Opening> {
        let settings = &self.settings;
        match settings.protocol {
            Protocol::V1 => {
                let exchange = ClientKeyExchange::new();
                let claims = settings
                    .signer
                    .session_claims()
                    .with_key(exchange.token_claim());
                let token = settings.signer.sign(&claims)?;
                let hello = ClientHello {
                    call_id: 0,
                    meta: settings.meta.clone(),
                    signature: token.signature().to_vec(),
                    claims: token.claims_json().to_vec(),
                };
                Ok(Opening::V1 { hello, exchange })
            }
            Protocol::Legacy { .. } => {
                let key = LegacyKey::generate();
                let token = legacy_token(settings, &key)?;
                Ok(Opening::Legacy {
                    token,
                    key,
                    signed: tokio::time::Instant::now(),
                })
            }
        }
    }
}

/// A token of the older protocol for a call keyed by `key`: the claims the RSA-era clients
/// send (no `sub`; the call key and IV instead of `k`), RS256.
pub(crate) fn legacy_token(settings: &Settings, key: &LegacyKey) -> Result<String> {
    let mut claims = settings.signer.bare_claims();
    key.add_to_claims(&mut claims, &settings.volt_key)?;
    Ok(settings.signer.sign(&claims)?.to_jwt())
}

/// Fails early, with a [`Limit`](ErrorKind::Limit) error, a message whose frame would be over
/// the limit. Every message is sized as an invoke (a payload frame is a few bytes shorter);
/// v1 sealed frames carry no meta of ours; an older-protocol frame is sized as a call's first
/// (with its `token_len`-byte token, when it has one).
fn check_size(path: &str, json: &str, settings: &Settings, token_len: usize) -> Result<()> {
    let len = match &settings.protocol {
        Protocol::V1 => frame_len(path, json, 0),
        Protocol::Legacy { hops } => legacy_frame_len(path, json, token_len, hops),
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

/// The length of the frame carrying `json` as the invoke of `path` (a payload frame for the
/// same message is shorter): header, meta, IV and the padded ciphertext of the body, in which
/// `json` is a JSON string.
fn frame_len(path: &str, json: &str, meta_len: usize) -> usize {
    const WRAPPER: &str = r#"{"method_invoke":{"method_name":"","json_request":""}}"#;
    let body = WRAPPER.len() + escaped_len(path) + escaped_len(json);
    let ciphertext = (body / IV_LEN + 1) * IV_LEN;
    // version, type, call id | meta length, meta | IV length, IV | ciphertext
    10 + 2 + meta_len + 1 + IV_LEN + ciphertext
}

/// At most the length of the older-protocol text frame carrying `json` as the invoke of
/// `path`: a call's first frame, with its `token_len`-byte token and `hops`; it counts a
/// twenty-digit id and a `client_end` too, so it is a few bytes over.
fn legacy_frame_len(path: &str, json: &str, token_len: usize, hops: &[String]) -> usize {
    const WRAPPER: &str = r#"{"method_invoke":{"method_name":"","json_request":""}}"#;
    let body = WRAPPER.len() + escaped_len(path) + escaped_len(json);
    let ciphertext = (body / IV_LEN + 1) * IV_LEN;
    let payload = ciphertext.div_ceil(3) * 4;
    let opening = if token_len == 0 {
        0
    } else {
        let hops_len: usize = hops.iter().map(|h| escaped_len(h) + 3).sum();
        r#","token":"","target_fingerprint":[]"#.len() + token_len + hops_len.saturating_sub(1)
    };
    r#"{"id":,"client_end":true,"json_payload":""}"#.len() + 20 + opening + payload
}

/// The length of `text` once escaped inside a JSON string, as serde_json escapes it.
fn escaped_len(text: &str) -> usize {
    text.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum()
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
    ended: AtomicBool,
    /// Commands queued for this call so far, its Open included.
    queued: AtomicU64,
}

impl CallIo for CallHandle {
    fn send<'a>(&'a self, message: &'a Value) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.send_text(to_json_text(message)?).await })
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
        self.queue(Command::Send { id: self.id, json }).await
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
        self.queue(Command::End { id: self.id }).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::body::Body;
    use crate::protocol::exchange::CallKey;
    use crate::protocol::frame::FrameType;

    #[test]
    fn frame_length_is_computed_exactly() {
        let key = CallKey::from_bytes([7u8; 32]);
        let path = "/tdx.volt_api.volt.v1.FileAPI/UploadFile";
        let samples = [
            String::new(),
            "{}".to_owned(),
            r#"{"chunk":"aGVsbG8="}"#.to_owned(),
            "quote \" back \\ slash \n\r\t \u{1} \u{8} \u{c} \u{1f} é 😀".to_owned(),
            "x".repeat(4095),
        ];
        for json in samples {
            for meta in [Map::new(), {
                let mut m = Map::new();
                m.insert("d".into(), Value::from(vec!["did:volt:abc"]));
                m
            }] {
                let meta_len = if meta.is_empty() {
                    0
                } else {
                    Value::Object(meta.clone()).to_string().len()
                };
                let body = Body::Invoke {
                    method_name: path.to_owned(),
                    service_id: None,
                    json_request: json.clone(),
                };
                let frame = key.seal(FrameType::Invoke, 1, meta, &body.to_json());
                let encoded = frame.encode().expect("encodes");
                assert_eq!(frame_len(path, &json, meta_len), encoded.len(), "{json:?}");
            }
        }
    }

    #[test]
    fn legacy_frame_length_bounds_the_real_frame_closely() {
        use crate::protocol::legacy::{ClientFrame, LegacyKey};
        let key = LegacyKey::generate();
        let path = "/tdx.volt_api.volt.v1.WireAPI/PublishWire";
        let token = "h".repeat(700);
        for hops in [
            vec![],
            vec!["5M1aCpnijWbmibq748AHnyG1qgpHMFmLi5UUeaGBGo8t".to_owned()],
        ] {
            for json in ["{}".to_owned(), "é\"\n".repeat(100), "x".repeat(5000)] {
                let body = Body::Invoke {
                    method_name: path.to_owned(),
                    service_id: None,
                    json_request: json.clone(),
                };
                let frame = ClientFrame {
                    id: u64::MAX,
                    token: Some(token.clone()),
                    target_fingerprint: Some(hops.clone()),
                    client_end: false,
                    json_payload: key.seal(&body),
                };
                let real = frame.to_text().len();
                let bound = legacy_frame_len(path, &json, token.len(), &hops);
                assert!(bound >= real && bound <= real + 20, "{bound} vs {real}");
            }
        }
    }
}
