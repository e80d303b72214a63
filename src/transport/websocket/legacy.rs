//! The older protocol on the client's side: JSON text frames, each call keyed at once by an
//! AES key and IV sent RSA-encrypted to the Volt in the RS256 token of its first frame.

use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite::Message;

use super::seal::{CallSeal, Inbound, Sealed};
use super::Settings;
use crate::protocol::body::Body;
use crate::protocol::legacy::{ClientFrame, LegacyKey, ServerFrame};
use crate::{Error, ErrorKind, Result};

/// How old a token may be when its call's first frame is sent; older ones are signed again
/// on the caller's side (they are valid for 60 s after signing, and Volts allow some skew).
pub(super) const TOKEN_FRESH: Duration = Duration::from_secs(30);

/// An older-protocol call's key, and what its first frame still has to carry.
pub(super) struct LegacySeal {
    key: Arc<LegacyKey>,
    /// The token, until the first frame has gone out with it.
    token: Option<String>,
    /// `target_fingerprint` of the first frame: the route through relays.
    hops: Vec<String>,
}

impl LegacySeal {
    pub(super) fn new(key: Arc<LegacyKey>, token: String, hops: Vec<String>) -> LegacySeal {
        LegacySeal {
            key,
            token: Some(token),
            hops,
        }
    }
}

impl CallSeal for LegacySeal {
    fn seal(&mut self, id: u64, body: &Body, client_end: bool) -> Result<Message> {
        // The first frame carries the token and the route; the end says so at the top.
        let frame = ClientFrame {
            id,
            target_fingerprint: self.token.as_ref().map(|_| self.hops.clone()),
            token: self.token.clone(),
            client_end,
            json_payload: self.key.seal(body),
        };
        Ok(Message::Text(frame.to_text().into()))
    }

    fn sent(&mut self) {
        // Later frames go without it.
        self.token = None;
    }

    fn open(&self, sealed: &Sealed) -> Result<Body> {
        match sealed {
            Sealed::Text(payload) => Ok(self.key.open(payload)?),
            Sealed::Frame(_) => Err(Error::new(
                ErrorKind::Protocol,
                "a binary frame on an older-protocol call",
            )),
        }
    }

    fn unannounced(&self) -> bool {
        self.token.is_some()
    }

    fn renew_token(&mut self, token: String) {
        if self.token.is_some() {
            self.token = Some(token);
        }
    }
}

/// A token of the older protocol for a call keyed by `key`: the claims the RSA-era clients
/// send (no `sub`; the call key and IV instead of `k`), RS256.
pub(super) fn token(settings: &Settings, key: &LegacyKey) -> Result<String> {
    let mut claims = settings.signer.bare_claims();
    key.add_to_claims(&mut claims, &settings.volt_key)?;
    Ok(settings.signer.sign(&claims)?.to_jwt())
}

/// What a text frame from the Volt means.
pub(super) fn read(text: &str) -> Inbound {
    let frame = match ServerFrame::parse(text) {
        Ok(frame) => frame,
        Err(e) => {
            let id = e.call_id();
            if id.is_none() {
                tracing::debug!(error = %e, "dropping an unreadable text frame");
            }
            return Inbound::Unreadable {
                id,
                error: Error::from(e),
            };
        }
    };
    match frame {
        // The Volt refused the call: it is over there, so nothing more is sent for it (an end
        // would be a frame for a call it does not know, and draw another error).
        ServerFrame::Error { invoke_id, error } => Inbound::Refused {
            id: invoke_id,
            error,
        },
        ServerFrame::Payload {
            invoke_id,
            json_payload,
        } => Inbound::Body {
            id: invoke_id,
            sealed: Sealed::Text(json_payload),
        },
    }
}
