//! Opening calls away from the socket's task.
//!
//! A call's opening is the costly part of it: the identity token's signature, and the call
//! key (an X25519 agreement signed with Ed25519 in protocol v1, two RSA-OAEP decryptions in the
//! older protocol). Done on the socket's task, the openings of one socket take turns on one
//! core, and every other call on the socket waits behind them. So while other calls are open
//! they run on tokio's blocking pool, and the socket's task goes on reading. A message for a
//! call still opening is held, and read once the call has opened, so a call's own messages
//! keep their order.

use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;

use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use super::{CallState, Connection, Protocol};

/// Bytes held for calls still opening, across one socket, beyond which the socket is not read
/// until openings finish.
const MAX_HELD_BYTES: usize = 16 * 1024 * 1024;
/// Messages held for one call still opening, beyond which the socket is not read until it
/// opens. They are all read at once then, into the call's inbound queue: half of it leaves
/// room for the first request and more.
const MAX_HELD_MESSAGES: usize = crate::call::INBOUND_CAPACITY / 2;

/// Turns on the blocking pool for openings, across the emulator: four per core (fewer left
/// cores idle between one opening's end and the next one's start, measured with `peers`). An
/// opening waiting for one holds no thread, so openings never fill the pool that handlers
/// share, and no socket's task waits for them.
fn opening_turns() -> &'static Semaphore {
    static TURNS: OnceLock<Semaphore> = OnceLock::new();
    TURNS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Semaphore::new(4 * cores)
    })
}

/// The error of a call whose opening panicked.
const OPENING_FAILED: &str = "the call could not be opened (internal error)";

impl<P: Protocol> Connection<P> {
    /// Opens an admitted call: `work` checks it, and [`Protocol::on_opened`] gets what it
    /// returns, on the socket's task. With no other call open on the socket, `work` runs
    /// here: there is nothing to overlap it with, and a hop to another thread and back would
    /// only add to the call's time. Otherwise it runs on the blocking pool, when its turn
    /// comes ([`opening_turns`]).
    pub(crate) fn open_call<F>(&mut self, call_id: u64, work: F)
    where
        F: FnOnce() -> P::Opening + Send + 'static,
    {
        // A panic fails this call alone.
        let checked = move || std::panic::catch_unwind(AssertUnwindSafe(work)).ok();
        if self.calls.is_empty() {
            match checked() {
                Some(opening) => P::on_opened(self, call_id, opening),
                None => self.fail_call(call_id, OPENING_FAILED),
            }
            return;
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        self.calls.insert(
            call_id,
            CallState::Opening {
                serial,
                held: Vec::new(),
            },
        );
        self.openings.spawn(async move {
            // The semaphore is never closed; without a turn the opening fails its call.
            let turn = opening_turns().acquire().await;
            let opening = match turn {
                Ok(_turn) => tokio::task::spawn_blocking(checked).await.ok().flatten(),
                Err(_) => None,
            };
            (call_id, serial, opening)
        });
    }

    /// Whether the call under this id is still opening: its messages are to be held.
    pub(crate) fn is_opening(&self, call_id: u64) -> bool {
        matches!(self.calls.get(&call_id), Some(CallState::Opening { .. }))
    }

    /// Holds a message for a call still opening (nothing for any other call).
    pub(crate) fn hold(&mut self, call_id: u64, message: Message) {
        if let Some(CallState::Opening { held, .. }) = self.calls.get_mut(&call_id) {
            self.held_bytes += message.len();
            held.push(message);
            if held.len() == MAX_HELD_MESSAGES {
                self.calls_held_full += 1;
            }
        }
    }

    /// Whether so much is held, for calls opening or for a full call queue, that the socket
    /// should not be read for now.
    pub(super) fn reading_paused(&self) -> bool {
        self.held_bytes > MAX_HELD_BYTES || self.calls_held_full > 0 || self.backlog.is_some()
    }

    /// Forgets messages that were held.
    pub(super) fn release(&mut self, held: &[Message]) {
        let bytes: usize = held.iter().map(Message::len).sum();
        self.held_bytes = self.held_bytes.saturating_sub(bytes);
        if held.len() >= MAX_HELD_MESSAGES {
            self.calls_held_full = self.calls_held_full.saturating_sub(1);
        }
    }

    /// An opening has finished: hands it to the protocol and returns the messages held for
    /// the call, to be read now. Nothing, if the call was failed meanwhile (its id may even
    /// have been reused).
    pub(super) fn opened(
        &mut self,
        call_id: u64,
        serial: u64,
        opening: Option<P::Opening>,
    ) -> Vec<Message> {
        if !matches!(
            self.calls.get(&call_id),
            Some(CallState::Opening { serial: s, .. }) if *s == serial
        ) {
            return Vec::new();
        }
        let Some(CallState::Opening { held, .. }) = self.calls.remove(&call_id) else {
            return Vec::new();
        };
        self.release(&held);
        match opening {
            Some(opening) => P::on_opened(self, call_id, opening),
            None => self.fail_call(call_id, OPENING_FAILED),
        }
        held
    }
}
