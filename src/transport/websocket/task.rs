//! The connection task: owns the socket and the table of live calls.
//!
//! It reads and writes in one `select!` loop, so neither side waits for the other: frames to
//! send sit in a short outbox that is flushed while reading goes on, and new commands are
//! taken only while the outbox has room. Events go to each call's bounded queue without
//! waiting; a call whose caller has that many events unread is failed on its own. When the
//! socket is lost every live call fails with the cause, and the next call opened reconnects.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::sync::Arc;
use std::task::ready;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};

use super::socket::{self, Socket};
use super::{Command, OpenCall, Phase, Settings};
use crate::client::call::{CallEvent, Delivery, Offer};
use crate::protocol::body::Body;
use crate::protocol::exchange::{CallKey, ClientKeyExchange};
use crate::protocol::frame::{self, FrameType, SealedFrame, ServerFrame, ServerHello};
use crate::{Error, ErrorKind, Result, Status};

/// Frames waiting to be written before new commands are taken.
const OUTBOX_LIMIT: usize = 64;

/// How often deadlines and the keepalive are checked.
const TICK: Duration = Duration::from_millis(500);

/// How long a goodbye (close frame) may take once every handle is gone.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

type Sink = SplitSink<Socket, Message>;
type Source = SplitStream<Socket>;

/// Runs until every handle and call is gone.
pub(super) async fn run(
    settings: Arc<Settings>,
    socket: Socket,
    mut commands: mpsc::Receiver<Command>,
    mut drops: mpsc::UnboundedReceiver<u64>,
) {
    let mut table = Table::new(settings.clone());
    let mut socket = Some(socket);
    loop {
        if let Some(open) = socket.take() {
            match table.serve(open, &mut commands, &mut drops).await {
                Exit::Done => return,
                Exit::Lost(cause) => {
                    tracing::debug!(%cause, "volt websocket lost");
                    table.fail_all(&cause);
                }
            }
        }
        // Disconnected: calls of the old socket are gone; the next call reconnects.
        let Some(command) = commands.recv().await else {
            return;
        };
        while drops.try_recv().is_ok() {}
        if let Command::Open(open) = command {
            match socket::open(&settings.target).await {
                Ok(fresh) => {
                    tracing::debug!(url = %settings.target.url, "volt websocket reconnected");
                    table.open(*open);
                    socket = Some(fresh);
                }
                Err(e) => open.delivery.finish(Err(e)),
            }
        }
    }
}

/// Why [`Table::serve`] returned.
enum Exit {
    /// Every handle is gone; the socket was closed politely.
    Done,
    /// The socket failed or was closed by the Volt.
    Lost(Lost),
}

/// What ended a connection, re-made as an error for each call that was live on it.
#[derive(Debug, Clone)]
struct Lost {
    kind: ErrorKind,
    message: String,
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Lost {
    fn closed(message: impl Into<String>) -> Lost {
        Lost {
            kind: ErrorKind::Closed,
            message: message.into(),
        }
    }

    fn error(&self) -> Error {
        Error::new(self.kind, self.message.clone())
    }
}

/// One live call.
struct Live {
    path: Arc<str>,
    stage: Stage,
    /// The request to send once keyed, when given at open.
    first: Option<String>,
    invoked: bool,
    /// End was asked for before the call was keyed.
    end_pending: bool,
    client_ended: bool,
    deadline: Instant,
    delivery: Delivery,
    phase: watch::Sender<Phase>,
}

enum Stage {
    Exchanging(ClientKeyExchange),
    Keyed(CallKey),
    /// Only while the Volt's half of the key exchange is being checked.
    Checking,
}

struct Table {
    settings: Arc<Settings>,
    calls: HashMap<u64, Live>,
    outbox: VecDeque<Message>,
    unflushed: bool,
}

impl Table {
    fn new(settings: Arc<Settings>) -> Table {
        Table {
            settings,
            calls: HashMap::new(),
            outbox: VecDeque::new(),
            unflushed: false,
        }
    }

    async fn serve(
        &mut self,
        socket: Socket,
        commands: &mut mpsc::Receiver<Command>,
        drops: &mut mpsc::UnboundedReceiver<u64>,
    ) -> Exit {
        let (mut sink, mut source) = socket.split();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let mut pinged = false;
        let mut drops_open = true;
        loop {
            tokio::select! {
                incoming = source.next() => {
                    last_heard = Instant::now();
                    pinged = false;
                    match incoming {
                        Some(Ok(message)) => {
                            if let Err(lost) = self.on_message(message) {
                                return Exit::Lost(lost);
                            }
                        }
                        Some(Err(e)) => return Exit::Lost(socket_error(&e)),
                        None => return Exit::Lost(Lost::closed("the Volt closed the connection")),
                    }
                }
                written = flush(&mut sink, &mut self.outbox), if self.unflushed => {
                    match written {
                        Ok(()) => self.unflushed = !self.outbox.is_empty(),
                        Err(e) => return Exit::Lost(socket_error(&e)),
                    }
                }
                command = commands.recv(), if self.outbox.len() < OUTBOX_LIMIT => {
                    match command {
                        Some(command) => self.on_command(command),
                        None => {
                            // Every handle and call is gone.
                            goodbye(&mut sink, &mut self.outbox, &mut source).await;
                            return Exit::Done;
                        }
                    }
                }
                dropped = drops.recv(), if drops_open => {
                    match dropped {
                        Some(id) => self.cancel(id),
                        None => drops_open = false,
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    self.expire(now);
                    let quiet = now.saturating_duration_since(last_heard);
                    if quiet >= self.settings.keepalive * 2 {
                        return Exit::Lost(Lost {
                            kind: ErrorKind::Timeout,
                            message: format!(
                                "the Volt sent nothing for {quiet:?}, not even a pong; \
                                 the connection is considered dead"
                            ),
                        });
                    }
                    if quiet >= self.settings.keepalive && !pinged {
                        pinged = true;
                        self.push(Message::Ping(Vec::new().into()));
                    }
                }
            }
        }
    }

    fn push(&mut self, message: Message) {
        self.outbox.push_back(message);
        self.unflushed = true;
    }

    // ---- commands from callers -------------------------------------------------------------

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Open(open) => self.open(*open),
            Command::Send { id, json } => self.send(id, json),
            Command::End { id } => self.end(id),
        }
    }

    fn open(&mut self, open: OpenCall) {
        let OpenCall {
            id,
            path,
            hello,
            exchange,
            first,
            end_after_first,
            exchange_timeout,
            delivery,
            phase,
        } = open;
        let frame = match hello.encode() {
            Ok(frame) => frame,
            Err(e) => {
                let _ = phase.send(Phase::Closed);
                delivery.finish(Err(Error::from(e)));
                return;
            }
        };
        self.push(Message::Binary(frame.into()));
        self.calls.insert(
            id,
            Live {
                path,
                stage: Stage::Exchanging(exchange),
                first,
                invoked: false,
                end_pending: end_after_first,
                client_ended: false,
                deadline: Instant::now() + exchange_timeout,
                delivery,
                phase,
            },
        );
    }

    fn send(&mut self, id: u64, json: String) {
        // A call that has already gone (ended, failed, lost with an old socket) ignores it:
        // its caller learns why from the call's events.
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.client_ended {
            return;
        }
        let body = if call.invoked {
            Body::Payload { json_payload: json }
        } else {
            call.invoked = true;
            invoke(&call.path, json)
        };
        if let Err(e) = self.seal_and_push(id, &body, Map::new()) {
            self.finish(id, Err(e), true);
        }
    }

    fn end(&mut self, id: u64) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if !matches!(call.stage, Stage::Keyed(_)) {
            call.end_pending = true;
            return;
        }
        if let Err(e) = self.end_client_side(id) {
            self.finish(id, Err(e), true);
        }
    }

    /// Sends the request if it was never sent (an empty one), then the client end.
    fn end_client_side(&mut self, id: u64) -> Result<()> {
        let Some(call) = self.calls.get_mut(&id) else {
            return Ok(());
        };
        if call.client_ended {
            return Ok(());
        }
        call.client_ended = true;
        if !call.invoked {
            call.invoked = true;
            let body = invoke(&call.path, "{}".to_owned());
            self.seal_and_push(id, &body, Map::new())?;
        }
        let mut meta = Map::new();
        meta.insert("client_end".into(), Value::Bool(true));
        self.seal_and_push(id, &Body::end(), meta)
    }

    /// The caller dropped a live call: end it on the wire (when keyed) and forget it.
    fn cancel(&mut self, id: u64) {
        if let Some(call) = self.calls.get(&id) {
            if matches!(call.stage, Stage::Keyed(_)) && !call.client_ended {
                let _ = self.end_client_side(id);
            }
            if let Some(call) = self.calls.remove(&id) {
                let _ = call.phase.send(Phase::Closed);
            }
        }
    }

    fn seal_and_push(&mut self, id: u64, body: &Body, meta: Map<String, Value>) -> Result<()> {
        let Some(Live {
            stage: Stage::Keyed(key),
            ..
        }) = self.calls.get(&id)
        else {
            return Err(Error::new(ErrorKind::Protocol, "the call is not keyed"));
        };
        let sealed = key.seal(body.frame_type(), id, meta, &body.to_json());
        let bytes = sealed.encode()?;
        if bytes.len() > self.settings.max_outbound {
            return Err(Error::new(
                ErrorKind::Limit,
                format!(
                    "a frame of {} bytes is over the {}-byte limit",
                    bytes.len(),
                    self.settings.max_outbound
                ),
            ));
        }
        self.push(Message::Binary(bytes.into()));
        Ok(())
    }

    // ---- frames from the Volt --------------------------------------------------------------

    fn on_message(&mut self, message: Message) -> Result<(), Lost> {
        match message {
            Message::Binary(bytes) => self.on_frame(&bytes),
            Message::Close(frame) => {
                let why = frame
                    .map(|f| format!(" (code {}, {:?})", u16::from(f.code), f.reason.as_str()))
                    .unwrap_or_default();
                return Err(Lost::closed(format!("the Volt closed the connection{why}")));
            }
            // Pongs are answered by the websocket layer; protocol v1 has no text frames.
            Message::Text(_) => tracing::debug!("ignoring a text frame from the Volt"),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
        Ok(())
    }

    fn on_frame(&mut self, bytes: &[u8]) {
        let frame = match frame::decode_server_frame(bytes) {
            Ok(frame) => frame,
            Err(e) => {
                // Only the call the frame names is harmed; a frame naming none is dropped.
                match frame::peek_call_id(bytes) {
                    Some(id) => self.finish(id, Err(Error::from(e)), true),
                    None => tracing::debug!(error = %e, "dropping an unreadable frame"),
                }
                return;
            }
        };
        match frame {
            ServerFrame::Hello(hello) => self.on_hello(hello),
            ServerFrame::Sealed(sealed) => self.on_sealed(sealed),
        }
    }

    fn on_hello(&mut self, hello: ServerHello) {
        let id = hello.call_id;
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let keyed = match std::mem::replace(&mut call.stage, Stage::Checking) {
            Stage::Exchanging(exchange) => exchange.complete(&hello, &self.settings.volt_key),
            other => {
                call.stage = other;
                Err(Error::new(
                    ErrorKind::Protocol,
                    "a second key exchange for one call",
                ))
            }
        };
        let key = match keyed {
            Ok(key) => key,
            Err(e) => {
                // A call that never got a key cannot be ended on the wire; it is dropped here.
                self.finish(id, Err(e), true);
                return;
            }
        };
        call.stage = Stage::Keyed(key);
        let _ = call.phase.send(Phase::Open);
        let first = call.first.take();
        let end_pending = call.end_pending;
        if let Some(json) = first {
            self.send(id, json);
        }
        if end_pending {
            self.end(id);
        }
    }

    fn on_sealed(&mut self, sealed: SealedFrame) {
        let id = sealed.call_id;
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if let Some(text) = sealed.meta_error() {
            let status = Status {
                code: 0,
                message: text,
                description: String::new(),
            };
            self.finish(id, Err(Error::from_status(status)), false);
            return;
        }
        let Stage::Keyed(key) = &call.stage else {
            let e = Error::new(ErrorKind::Protocol, "a message before the key exchange");
            self.finish(id, Err(e), false);
            return;
        };
        if sealed.frame_type != FrameType::Payload {
            let e = Error::new(ErrorKind::Protocol, "the Volt sent an invoke frame");
            self.finish(id, Err(e), true);
            return;
        }
        let body = match key.open_body(&sealed) {
            Ok(body) => body,
            Err(e) => {
                self.finish(id, Err(Error::from(e)), true);
                return;
            }
        };
        match body {
            Body::Payload { json_payload } => self.on_payload(id, &json_payload),
            Body::End {
                error: None,
                error_code: _,
            } => self.finish(id, Ok(()), false),
            Body::End {
                error: Some(message),
                error_code,
            } => {
                let status = Status {
                    code: error_code,
                    message,
                    description: String::new(),
                };
                self.finish(id, Err(Error::from_status(status)), false);
            }
            Body::Invoke { .. } => {
                let e = Error::new(ErrorKind::Protocol, "the Volt sent a method invocation");
                self.finish(id, Err(e), true);
            }
        }
    }

    fn on_payload(&mut self, id: u64, json: &str) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let event = match serde_json::from_str::<Value>(json) {
            Ok(value) => match value.get("status").and_then(Status::from_json) {
                Some(status) if status.is_error() => CallEvent::Error(Error::from_status(status)),
                _ => CallEvent::Data(value),
            },
            Err(e) => {
                let e =
                    Error::new(ErrorKind::Protocol, "a response that is not JSON").with_source(e);
                self.finish(id, Err(e), true);
                return;
            }
        };
        match call.delivery.offer(event) {
            Offer::Queued | Offer::Gone => {}
            Offer::Full => {
                let e = Error::new(
                    ErrorKind::Limit,
                    format!(
                        "{}: the caller fell behind ({} responses unread); the call was ended",
                        call.path,
                        call.delivery.capacity()
                    ),
                );
                self.finish(id, Err(e), true);
            }
        }
    }

    // ---- ending calls ----------------------------------------------------------------------

    /// Ends a call with `outcome`. With `tell_volt`, a keyed call whose client side is still
    /// open is ended on the wire too, so the Volt stops sending.
    fn finish(&mut self, id: u64, outcome: Result<()>, tell_volt: bool) {
        if tell_volt {
            let _ = self.end_client_side(id);
        }
        if let Some(call) = self.calls.remove(&id) {
            let _ = call.phase.send(Phase::Closed);
            call.delivery.finish(outcome);
        }
    }

    /// Fails calls whose key exchange is overdue.
    fn expire(&mut self, now: Instant) {
        let overdue: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| matches!(c.stage, Stage::Exchanging(_)) && c.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            let e = Error::new(
                ErrorKind::Timeout,
                "the Volt did not answer the call's key exchange in time",
            );
            self.finish(id, Err(e), false);
        }
    }

    fn fail_all(&mut self, cause: &Lost) {
        for (_, call) in self.calls.drain() {
            let _ = call.phase.send(Phase::Closed);
            call.delivery.finish(Err(cause.error()));
        }
        self.outbox.clear();
        self.unflushed = false;
    }
}

fn invoke(path: &str, json_request: String) -> Body {
    Body::Invoke {
        method_name: path.to_owned(),
        service_id: None,
        json_request,
    }
}

fn socket_error(e: &tungstenite::Error) -> Lost {
    Lost::closed(format!("the connection failed: {e}"))
}

/// Writes what the outbox holds and flushes. Messages leave the outbox only into the sink, so
/// the future can be dropped at any point without losing one.
async fn flush(sink: &mut Sink, outbox: &mut VecDeque<Message>) -> Result<(), tungstenite::Error> {
    poll_fn(|cx| {
        while !outbox.is_empty() {
            ready!(sink.poll_ready_unpin(cx))?;
            if let Some(message) = outbox.pop_front() {
                sink.start_send_unpin(message)?;
            }
        }
        sink.poll_flush_unpin(cx)
    })
    .await
}

/// Flushes what is queued and closes the socket, within [`CLOSE_TIMEOUT`].
async fn goodbye(sink: &mut Sink, outbox: &mut VecDeque<Message>, source: &mut Source) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if flush(sink, outbox).await.is_ok() && sink.close().await.is_ok() {
            // Read until the Volt answers the close (or goes).
            while let Some(Ok(_)) = source.next().await {}
        }
    })
    .await;
}
