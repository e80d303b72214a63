//! The older protocol on the client's side: JSON text frames, each call keyed at once by an
//! AES key and IV sent RSA-encrypted to the Volt in the RS256 token of its first frame.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

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

/// How long a call key and token minted ahead may wait for a call to take them.
const SPARE_FRESH: Duration = Duration::from_secs(5);

/// One call key and token minted ahead. A call opening takes it if it is fresh, and the next
/// one is minted on tokio's blocking pool while that call is on its way: a caller making one
/// call after another waits for the RSA work (an RS256 signature, two RSA-OAEP encryptions)
/// of its first call only. One is minted at a time, so this never does more RSA work than
/// the calls need, bar a spare left unused (dropped once stale, its key zeroized).
#[derive(Default)]
pub(super) struct Spare {
    slot: Mutex<Option<Minted>>,
    minting: AtomicBool,
}

struct Minted {
    key: Arc<LegacyKey>,
    token: String,
    at: Instant,
}

impl Spare {
    /// The key and token of a call opening now, and when the token was signed: the spare
    /// when it is fresh, else minted here. Either way a spare for the next call is then
    /// minted in the background.
    pub(super) fn opening(settings: &Arc<Settings>) -> Result<(Arc<LegacyKey>, String, Instant)> {
        let spare = &settings.spare;
        let taken = spare.slot.lock().ok().and_then(|mut slot| slot.take());
        let opening = match taken.filter(|m| m.at.elapsed() <= SPARE_FRESH) {
            Some(Minted { key, token, at }) => (key, token, at),
            None => {
                let key = LegacyKey::generate();
                let token = token(settings, &key)?;
                (Arc::new(key), token, Instant::now())
            }
        };
        // Detached: the spare is there or not when the next call opens.
        drop(Spare::refill(settings));
        Ok(opening)
    }

    /// Mints the next spare on the blocking pool, unless one is being minted already (or
    /// there is no runtime to mint it on).
    fn refill(settings: &Arc<Settings>) -> Option<JoinHandle<()>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        if settings.spare.minting.swap(true, Ordering::AcqRel) {
            return None;
        }
        // Lowers the flag however the minting ends: done, panicked, or never run (the
        // runtime shut down first, dropping the closure).
        let minting = MintingFlag(settings.clone());
        Some(runtime.spawn_blocking(move || {
            let settings = &minting.0;
            let key = LegacyKey::generate();
            // A spare that cannot be minted is not there: the next call mints its own, and
            // meets the error itself.
            if let Ok(token) = token(settings, &key) {
                if let Ok(mut slot) = settings.spare.slot.lock() {
                    *slot = Some(Minted {
                        key: Arc::new(key),
                        token,
                        at: Instant::now(),
                    });
                }
            }
        }))
    }
}

/// Owned by a minting of the spare; lowers `minting` when dropped.
struct MintingFlag(Arc<Settings>);

impl Drop for MintingFlag {
    fn drop(&mut self) {
        self.0.spare.minting.store(false, Ordering::Release);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::token::IdentityToken;
    use crate::transport::websocket::table::tests::legacy_settings;

    /// Mints a spare and returns its token.
    async fn minted_spare(settings: &Arc<Settings>) -> String {
        Spare::refill(settings)
            .expect("refill")
            .await
            .expect("minted");
        let slot = settings.spare.slot.lock().expect("slot");
        slot.as_ref().map(|m| m.token.clone()).expect("a spare")
    }

    fn sealed_key(token: &str) -> String {
        let claims = IdentityToken::parse(token)
            .and_then(|t| t.claims_unverified())
            .expect("token");
        claims.extra["sk"].as_str().expect("sk").to_owned()
    }

    #[tokio::test]
    async fn a_spare_goes_to_one_call_only() {
        let (settings, _volt) = legacy_settings();
        let spare = minted_spare(&settings).await;
        let minted_by = Instant::now();
        let (first_key, first, signed) = Spare::opening(&settings).expect("first");
        assert_eq!(first, spare);
        // Its age counts from its minting, not from the call's opening.
        assert!(signed <= minted_by);
        // The next spare is still being minted (or just was): either way the second call
        // gets a key and token of its own.
        let (second_key, second, _) = Spare::opening(&settings).expect("second");
        assert_ne!(second, first);
        assert_ne!(sealed_key(&second), sealed_key(&first));
        assert!(!Arc::ptr_eq(&first_key, &second_key));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_spare_is_never_sent() {
        let (settings, _volt) = legacy_settings();
        let stale = minted_spare(&settings).await;
        tokio::time::advance(SPARE_FRESH + Duration::from_secs(1)).await;
        let (_, token, signed) = Spare::opening(&settings).expect("opening");
        assert_ne!(token, stale);
        assert_eq!(signed, Instant::now());
    }
}
