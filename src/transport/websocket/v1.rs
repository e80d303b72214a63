//! Protocol v1 on the client's side: binary frames, each call keyed by its own X25519 key
//! exchange and sealed with AES-256-CBC under a fresh IV per frame.

use serde_json::{Map, Value};
use tokio_tungstenite::tungstenite::Message;

use super::seal::{CallSeal, Inbound, Sealed};
use crate::protocol::body::Body;
use crate::protocol::exchange::CallKey;
use crate::protocol::frame::{self, FrameType, ServerFrame};
use crate::{Error, ErrorKind, Result};

/// A v1 call's key.
pub(super) struct V1Seal(pub CallKey);

impl CallSeal for V1Seal {
    fn seal(&mut self, id: u64, body: &Body, client_end: bool) -> Result<Message> {
        let mut meta = Map::new();
        if client_end {
            meta.insert("client_end".into(), Value::Bool(true));
        }
        let bytes = self
            .0
            .seal(body.frame_type(), id, meta, &body.to_json())
            .encode()?;
        Ok(Message::Binary(bytes.into()))
    }

    fn open(&self, sealed: &Sealed) -> Result<Body> {
        match sealed {
            Sealed::Frame(frame) => Ok(self.0.open_body(frame)?),
            Sealed::Text(_) => Err(Error::new(
                ErrorKind::Protocol,
                "a text frame on a protocol v1 call",
            )),
        }
    }
}

/// What a binary frame from the Volt means.
pub(super) fn read(bytes: &[u8]) -> Inbound {
    let frame = match frame::decode_server_frame(bytes) {
        Ok(frame) => frame,
        Err(e) => {
            // Only the call the frame names is harmed; a frame naming none is dropped.
            let id = frame::peek_call_id(bytes);
            if id.is_none() {
                tracing::debug!(error = %e, "dropping an unreadable frame");
            }
            return Inbound::Unreadable {
                id,
                error: Error::from(e),
            };
        }
    };
    match frame {
        ServerFrame::Hello(hello) => Inbound::Hello(hello),
        ServerFrame::Sealed(sealed) => {
            let id = sealed.call_id;
            if let Some(error) = sealed.meta_error() {
                Inbound::Failed { id, error }
            } else if sealed.frame_type != FrameType::Payload {
                Inbound::Unreadable {
                    id: Some(id),
                    error: Error::new(ErrorKind::Protocol, "the Volt sent an invoke frame"),
                }
            } else {
                Inbound::Body {
                    id,
                    sealed: Sealed::Frame(sealed),
                }
            }
        }
    }
}
