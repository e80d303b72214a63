//! The call table of one connection task: what each command and each frame does to a call.
//!
//! Every call's entry lives from its Open until its handle's drop notice has been applied, so
//! that notice always finds it. A finished call keeps a small tombstone until then. A drop
//! notice that overtakes the call's own commands (they travel on different queues) waits in
//! the entry, or in `early_drops` if the Open itself is still queued, until they have arrived.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

#[cfg(feature = "legacy")]
use super::legacy::LegacySeal;
use super::seal::{CallSeal, Inbound, Sealed};
use super::v1::V1Seal;
#[cfg(feature = "legacy")]
use super::Protocol;
use super::{Command, Dropped, OpenCall, Opening, Phase, Settings};
use crate::protocol::body::Body;
use crate::protocol::error::Reached;
use crate::protocol::exchange::ClientKeyExchange;
use crate::protocol::frame::ServerHello;
use crate::transport::delivery::{fell_behind, Arrival, Delivery, Offer};
use crate::{Error, ErrorKind, PublicKey, Result, Status};

/// How long a call dropped during its key exchange waits for the Volt's half, to end it.
const ABANDONED_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// What ended a connection, re-made as an error for each call that was live on it.
#[derive(Debug, Clone)]
pub(super) struct Lost {
    pub kind: ErrorKind,
    pub message: String,
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Lost {
    pub fn closed(message: impl Into<String>) -> Lost {
        Lost {
            kind: ErrorKind::Closed,
            message: message.into(),
        }
    }

    fn error(&self) -> Error {
        Error::new(self.kind, self.message.clone())
    }
}

impl From<&Error> for Lost {
    fn from(e: &Error) -> Lost {
        Lost {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// One call, from its Open to its handle's drop notice.
struct Entry {
    /// Commands of the call that have arrived, its Open included.
    arrived: u64,
    /// The handle has gone after this many commands; applied once they have all arrived.
    dropped_after: Option<u64>,
    /// `None` once the call is over.
    live: Option<Live>,
}

/// A call that is not over.
struct Live {
    path: Arc<str>,
    stage: Stage,
    /// The request to send once keyed, when given at open.
    first: Option<String>,
    invoked: bool,
    /// End was asked for before the call was keyed.
    end_pending: bool,
    client_ended: bool,
    /// The Volt has sent something for this call.
    answered: bool,
    /// The handle went before the key exchange completed: end the call as soon as it is keyed.
    abandoned: bool,
    deadline: Instant,
    delivery: Delivery,
    phase: watch::Sender<Phase>,
    /// For a call to a hosted service: its id and the host's key.
    service: Option<(String, PublicKey)>,
}

enum Stage {
    Exchanging(ClientKeyExchange),
    Keyed(Box<dyn CallSeal>),
    /// Only while the Volt's half of the key exchange is being checked.
    Checking,
}

/// Whether ending the client side of a never-invoked call sends an empty request first.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Invoke {
    /// `Call::end` on a call opened without a request: the empty request, then the end (as the
    /// official client does).
    Empty,
    /// A cancelled or failed call: only the end, so nothing is invoked.
    Never,
}

pub(super) struct Table {
    settings: Arc<Settings>,
    calls: HashMap<u64, Entry>,
    /// Drop notices whose call's Open has not arrived yet.
    early_drops: HashMap<u64, u64>,
    /// Frames to write.
    pub outbox: VecDeque<Message>,
    /// Set when the outbox holds frames or the sink has unflushed ones.
    pub unflushed: bool,
    /// While set, Opens fail at once with this (the socket is down and reconnecting failed).
    pub refusal: Option<Lost>,
}

impl Table {
    pub fn new(settings: Arc<Settings>) -> Table {
        Table {
            settings,
            calls: HashMap::new(),
            early_drops: HashMap::new(),
            outbox: VecDeque::new(),
            unflushed: false,
            refusal: None,
        }
    }

    fn push(&mut self, message: Message) {
        self.outbox.push_back(message);
        self.unflushed = true;
    }

    pub fn ping(&mut self) {
        self.push(Message::Ping(Vec::new().into()));
    }

    /// Whether the handle of an Open is already gone (it will not be sent at all).
    pub fn dropped_before_open(&self, open: &OpenCall) -> bool {
        self.early_drops.contains_key(&open.id) || open.delivery.is_gone()
    }

    // ---- commands from callers -------------------------------------------------------------

    pub fn on_command(&mut self, command: Command) {
        let id = command.id();
        match command {
            Command::Open(open) => self.open(*open),
            Command::Send { id, json, token } => {
                self.arrived(id);
                self.renew_token(id, token);
                self.send(id, json);
            }
            Command::End { id, token } => {
                self.arrived(id);
                self.renew_token(id, token);
                self.end(id, Invoke::Empty);
            }
        }
        self.apply_drop(id);
    }

    /// A token the caller signed anew for the call's first frame.
    fn renew_token(&mut self, id: u64, token: Option<String>) {
        if let (Some(token), Some(call)) = (token, self.live(id)) {
            if let Stage::Keyed(seal) = &mut call.stage {
                seal.renew_token(token);
            }
        }
    }

    fn arrived(&mut self, id: u64) {
        if let Some(entry) = self.calls.get_mut(&id) {
            entry.arrived += 1;
        }
    }

    fn open(&mut self, open: OpenCall) {
        let OpenCall {
            id,
            path,
            opening,
            first,
            end_after_first,
            exchange_timeout,
            delivery,
            phase,
            service,
        } = open;
        let dropped_after = self.early_drops.remove(&id);
        let mut entry = Entry {
            arrived: 1,
            dropped_after,
            live: None,
        };
        if dropped_after.is_some_and(|after| after <= 1) || delivery.is_gone() {
            // The caller has gone already: nothing is sent.
            if dropped_after.is_none() {
                self.calls.insert(id, entry);
            }
            return;
        }
        let (stage, frame) = match opening {
            Opening::V1 { hello, exchange } => (
                Stage::Exchanging(exchange),
                Some(hello.encode().map_err(Error::from)),
            ),
            #[cfg(feature = "legacy")]
            Opening::Legacy { token, key, .. } => {
                let hops = match &self.settings.protocol {
                    Protocol::Legacy { hops } => hops.clone(),
                    Protocol::V1 => Vec::new(),
                };
                let seal: Box<dyn CallSeal> = Box::new(LegacySeal::new(key, token, hops));
                (Stage::Keyed(seal), None)
            }
        };
        let refused = match (&self.refusal, frame) {
            // Refused before anything was sent: safe to send again.
            (Some(lost), _) => Some(lost.error().with_reached(Reached::No)),
            (None, Some(Err(e))) => Some(e.with_reached(Reached::No)),
            (None, Some(Ok(frame))) => {
                self.push(Message::Binary(frame.into()));
                None
            }
            (None, None) => None,
        };
        if let Some(e) = refused {
            let _ = phase.send(Phase::Closed);
            delivery.finish(Err(e));
            self.calls.insert(id, entry);
            return;
        }
        let now = Instant::now();
        let keyed = matches!(stage, Stage::Keyed(_));
        entry.live = Some(Live {
            path,
            stage,
            first,
            invoked: false,
            end_pending: end_after_first,
            client_ended: false,
            answered: false,
            abandoned: false,
            deadline: deadline_after(now, exchange_timeout),
            delivery,
            phase,
            service,
        });
        self.calls.insert(id, entry);
        if keyed {
            // The older protocol needs no exchange: the call is ready at once.
            self.ready(id);
        }
    }

    fn live(&mut self, id: u64) -> Option<&mut Live> {
        self.calls.get_mut(&id).and_then(|e| e.live.as_mut())
    }

    fn send(&mut self, id: u64, json: String) {
        // A call that is over ignores it: its caller learns why from the call's events.
        let Some(call) = self.live(id) else {
            return;
        };
        if call.client_ended || !matches!(call.stage, Stage::Keyed(_)) {
            return;
        }
        let body = if call.invoked {
            Body::Payload { json_payload: json }
        } else {
            call.invoked = true;
            invoke(call, json)
        };
        if let Err(e) = self.seal_and_push(id, &body, false) {
            self.finish(id, Err(e));
        }
    }

    fn end(&mut self, id: u64, invoke: Invoke) {
        let Some(call) = self.live(id) else {
            return;
        };
        if !matches!(call.stage, Stage::Keyed(_)) {
            call.end_pending = true;
            return;
        }
        if let Err(e) = self.end_client_side(id, invoke) {
            self.finish(id, Err(e));
        }
    }

    /// Sends the client end of a keyed call (after an empty request, if asked and none was
    /// sent).
    fn end_client_side(&mut self, id: u64, invoke_first: Invoke) -> Result<()> {
        let Some(call) = self.live(id) else {
            return Ok(());
        };
        if call.client_ended || !matches!(call.stage, Stage::Keyed(_)) {
            return Ok(());
        }
        call.client_ended = true;
        let unannounced = matches!(&call.stage, Stage::Keyed(seal) if seal.unannounced());
        if invoke_first == Invoke::Never && unannounced {
            // The older protocol opens a call with its invoke: the Volt never heard of it.
            return Ok(());
        }
        if !call.invoked && invoke_first == Invoke::Empty {
            call.invoked = true;
            let body = invoke(call, "{}".to_owned());
            self.seal_and_push(id, &body, false)?;
        }
        self.seal_and_push(id, &Body::end(), true)
    }

    /// A handle went: applied at once if all its commands have arrived, else when they have.
    pub fn on_drop(&mut self, dropped: Dropped) {
        match self.calls.get_mut(&dropped.id) {
            Some(entry) => {
                entry.dropped_after = Some(dropped.commands);
                self.apply_drop(dropped.id);
            }
            None => {
                self.early_drops.insert(dropped.id, dropped.commands);
            }
        }
    }

    fn apply_drop(&mut self, id: u64) {
        let Some(entry) = self.calls.get_mut(&id) else {
            return;
        };
        if entry
            .dropped_after
            .is_none_or(|after| entry.arrived < after)
        {
            return;
        }
        let keyed = match &mut entry.live {
            None => false,
            Some(call) => match call.stage {
                Stage::Keyed(_) => true,
                _ => {
                    // Keep it until the key exchange completes, then end it on the wire; give
                    // the Volt a short while only.
                    call.abandoned = true;
                    let now = Instant::now();
                    call.deadline = call.deadline.min(deadline_after(now, ABANDONED_GRACE));
                    entry.dropped_after = None;
                    return;
                }
            },
        };
        if keyed {
            let _ = self.end_client_side(id, Invoke::Never);
        }
        self.remove(id);
    }

    fn remove(&mut self, id: u64) {
        if let Some(Entry {
            live: Some(call), ..
        }) = self.calls.remove(&id)
        {
            let _ = call.phase.send(Phase::Closed);
        }
    }

    fn seal_and_push(&mut self, id: u64, body: &Body, client_end: bool) -> Result<()> {
        let max_outbound = self.settings.max_outbound;
        let Some(Live {
            stage: Stage::Keyed(seal),
            ..
        }) = self.calls.get_mut(&id).and_then(|e| e.live.as_mut())
        else {
            return Err(Error::new(ErrorKind::Protocol, "the call is not keyed"));
        };
        let message = seal.seal(id, body, client_end)?;
        if message.len() > max_outbound {
            return Err(Error::new(
                ErrorKind::Limit,
                format!(
                    "a frame of {} bytes is over the {max_outbound}-byte limit",
                    message.len(),
                ),
            ));
        }
        seal.sent();
        self.push(message);
        Ok(())
    }

    // ---- frames from the Volt --------------------------------------------------------------

    /// A message from the Volt (other than ping, pong and close).
    pub fn on_message(&mut self, message: &Message) {
        match self.settings.protocol.read(message) {
            Inbound::Hello(hello) => self.on_hello(hello),
            Inbound::Body { id, sealed } => self.on_sealed(id, &sealed),
            Inbound::Failed { id, error } => {
                if let Some(call) = self.live(id) {
                    call.answered = true;
                    self.finish(id, Err(volt_refused(error)));
                }
            }
            Inbound::Refused {
                id: Some(id),
                error,
            } => {
                self.finish_by_volt(id, Err(volt_refused(error)));
            }
            Inbound::Refused { id: None, error } => self.refused_unnamed(&error),
            Inbound::Unreadable {
                id: Some(id),
                error,
            } => self.finish(id, Err(error)),
            Inbound::Unreadable { id: None, .. } | Inbound::Nothing => {}
        }
    }

    fn on_hello(&mut self, hello: ServerHello) {
        let id = hello.call_id;
        let volt_key = &self.settings.volt_key;
        let Some(call) = self.calls.get_mut(&id).and_then(|e| e.live.as_mut()) else {
            return;
        };
        // A hosted service's host signs its key exchanges, not the Volt.
        let signer = call.service.as_ref().map_or(volt_key, |(_, key)| key);
        let keyed = match std::mem::replace(&mut call.stage, Stage::Checking) {
            Stage::Exchanging(exchange) => exchange.complete(&hello, signer),
            other => {
                call.stage = other;
                Err(Error::new(
                    ErrorKind::Protocol,
                    "a second key exchange for one call",
                ))
            }
        };
        match keyed {
            Ok(key) => call.stage = Stage::Keyed(Box::new(V1Seal(key))),
            Err(e) => {
                self.finish(id, Err(e));
                return;
            }
        }
        self.ready(id);
    }

    /// A call has its key: what waited for it is sent, or it is ended if its caller has gone.
    fn ready(&mut self, id: u64) {
        let Some(call) = self.live(id) else {
            return;
        };
        if call.abandoned {
            // Its handle went during the key exchange: end it, and forget it.
            let _ = self.end_client_side(id, Invoke::Never);
            self.calls.remove(&id);
            return;
        }
        if call.delivery.is_gone() {
            // Its handle is going; the drop notice will remove the tombstone.
            let _ = self.end_client_side(id, Invoke::Never);
            self.finish_by_volt(id, Ok(()));
            return;
        }
        let _ = call.phase.send(Phase::Open);
        let first = call.first.take();
        let end_pending = call.end_pending;
        if let Some(json) = first {
            self.send(id, json);
        }
        if end_pending {
            self.end(id, Invoke::Empty);
        }
    }

    fn on_sealed(&mut self, id: u64, sealed: &Sealed) {
        let Some(call) = self.live(id) else {
            return;
        };
        call.answered = true;
        let Stage::Keyed(seal) = &call.stage else {
            let e = Error::new(ErrorKind::Protocol, "a message before the key exchange");
            self.finish(id, Err(e));
            return;
        };
        let opened = seal.open(sealed);
        self.on_body(id, opened);
    }

    /// An error naming no call (older protocol) fails every call sent and still waiting for
    /// its first answer, since any of them may be the one refused.
    fn refused_unnamed(&mut self, error: &str) {
        let waiting: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, e)| e.live.as_ref().is_some_and(|c| c.invoked && !c.answered))
            .map(|(id, _)| *id)
            .collect();
        tracing::debug!(
            calls = waiting.len(),
            "the Volt sent an error naming no call"
        );
        for id in waiting {
            self.finish_by_volt(id, Err(volt_refused(error.to_owned())));
        }
    }

    /// A decrypted body (or the failure to decrypt one) for call `id`.
    fn on_body(&mut self, id: u64, opened: Result<Body>) {
        let body = match opened {
            Ok(body) => body,
            Err(e) => {
                self.finish(id, Err(e));
                return;
            }
        };
        match body {
            Body::Payload { json_payload } => self.on_payload(id, json_payload),
            Body::End { error: None, .. } => self.finish_by_volt(id, Ok(())),
            Body::End {
                error: Some(message),
                error_code,
            } => {
                let status = Status {
                    code: error_code,
                    message,
                    description: String::new(),
                };
                self.finish_by_volt(id, Err(Error::from_status(status)));
            }
            Body::Invoke { .. } => {
                let e = Error::new(ErrorKind::Protocol, "the Volt sent a method invocation");
                self.finish(id, Err(e));
            }
        }
    }

    /// A response: handed to the caller as its JSON text, parsed on the caller's side.
    fn on_payload(&mut self, id: u64, json: String) {
        let Some(call) = self.calls.get(&id).and_then(|e| e.live.as_ref()) else {
            return;
        };
        let len = json.len();
        match call.delivery.offer(Arrival::Json(json), len) {
            Offer::Queued | Offer::Gone => {}
            Offer::Full => {
                let e = fell_behind(&call.path, &call.delivery);
                self.finish(id, Err(e));
            }
        }
    }

    // ---- ending calls ----------------------------------------------------------------------

    /// The call failed on our side: it is ended on the wire too (when keyed), so the Volt
    /// stops sending, and its caller gets `outcome`.
    fn finish(&mut self, id: u64, outcome: Result<()>) {
        let _ = self.end_client_side(id, Invoke::Never);
        self.finish_by_volt(id, outcome);
    }

    /// The call is over (the Volt ended it, or it cannot go on): its caller gets `outcome`.
    fn finish_by_volt(&mut self, id: u64, outcome: Result<()>) {
        let Some(entry) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some(call) = entry.live.take() {
            let abandoned = call.abandoned;
            let _ = call.phase.send(Phase::Closed);
            call.delivery.finish(outcome);
            if abandoned {
                // Its handle is gone: no drop notice will come for the tombstone.
                self.calls.remove(&id);
            }
        }
    }

    /// Fails calls whose key exchange is overdue.
    pub fn expire(&mut self, now: Instant) {
        let overdue: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, e)| {
                e.live
                    .as_ref()
                    .is_some_and(|c| matches!(c.stage, Stage::Exchanging(_)) && c.deadline <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            let e = Error::new(
                ErrorKind::Timeout,
                "the Volt did not answer the call's key exchange in time",
            );
            self.finish_by_volt(id, Err(e));
        }
    }

    /// The socket is gone: every live call fails with `cause`.
    pub fn fail_all(&mut self, cause: &Lost) {
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            self.finish_by_volt(id, Err(cause.error()));
        }
        self.outbox.clear();
        self.unflushed = false;
    }
}

/// The body invoking `call` (naming its service, for a hosted one).
fn invoke(call: &Live, json_request: String) -> Body {
    Body::Invoke {
        method_name: call.path.to_string(),
        service_id: call.service.as_ref().map(|(id, _)| id.clone()),
        json_request,
    }
}

/// `now + timeout`, or a deadline that never comes for a timeout too large to add.
fn deadline_after(now: Instant, timeout: std::time::Duration) -> Instant {
    const YEARS_30: std::time::Duration = std::time::Duration::from_secs(30 * 365 * 86_400);
    now.checked_add(timeout)
        .or_else(|| now.checked_add(YEARS_30))
        .unwrap_or(now)
}

/// An error the Volt reported for a call outside its bodies: a status with its message.
fn volt_refused(message: String) -> Error {
    Error::from_status(Status {
        code: 0,
        message,
        description: String::new(),
    })
}

#[cfg(test)]
pub(in crate::transport::websocket) mod tests;
