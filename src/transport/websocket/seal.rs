//! What differs between the gateway's two protocols, behind one interface: how a keyed call's
//! bodies are sealed into websocket messages and opened again ([`CallSeal`]), and what a
//! message from the Volt means for the calls ([`Inbound`]). The call table keeps each call's
//! lifecycle and never looks inside either.

use tokio_tungstenite::tungstenite::Message;

use crate::protocol::body::Body;
use crate::protocol::frame::{SealedFrame, ServerHello};
use crate::{Error, Result};

/// A keyed call's sealing, in one protocol or the other.
pub(super) trait CallSeal: Send {
    /// Seals `body` for call `id` as one message; `client_end` marks the client's last.
    fn seal(&mut self, id: u64, body: &Body, client_end: bool) -> Result<Message>;

    /// The message sealed last has gone out (the older protocol's first carried the token).
    fn sent(&mut self) {}

    /// Opens a body sealed under this call's key.
    fn open(&self, sealed: &Sealed) -> Result<Body>;

    /// Whether the Volt has not heard of the call yet (the older protocol opens a call with
    /// its first frame), so that cancelling it sends nothing.
    fn unannounced(&self) -> bool {
        false
    }

    /// A token signed anew (on the caller's side) for the call's first frame.
    fn renew_token(&mut self, _token: String) {}
}

/// A body as it arrived, still sealed.
pub(super) enum Sealed {
    /// Protocol v1: a binary payload frame.
    Frame(SealedFrame),
    /// The older protocol: the base64 `json_payload` of a text frame.
    #[cfg_attr(not(feature = "legacy"), allow(dead_code))] // the older protocol only
    Text(String),
}

/// What a message from the Volt means for the calls.
pub(super) enum Inbound {
    /// The Volt's half of a call's key exchange (protocol v1).
    Hello(ServerHello),
    /// A sealed body for call `id`.
    Body { id: u64, sealed: Sealed },
    /// The Volt reported an error for call `id`: the call is over, and is ended on our side.
    Failed { id: u64, error: String },
    /// The Volt refused call `id` and forgot it: nothing more is sent for it. Without an id,
    /// it may be any call still waiting for its first answer.
    #[cfg_attr(not(feature = "legacy"), allow(dead_code))] // the older protocol only
    Refused { id: Option<u64>, error: String },
    /// A message that does not parse; only the call it names (if any) is harmed.
    Unreadable { id: Option<u64>, error: Error },
    /// Nothing for the calls (logged where it is read).
    Nothing,
}
