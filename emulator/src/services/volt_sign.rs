//! SignVerify and GetOneTimeToken.
//!
//! **SignVerify** signs `message` with the Volt key (Ed25519, or RSA-2048 with SHA-256 for an
//! RSA-era Volt), answering the raw signature in `digest`, or base64 (standard alphabet) in
//! `digest_encoded` with `encode`. The Volt key also signs the CA and every key exchange, so
//! signing with it is privileged here: `volt:api-call` / `volt:sign` (the Volt owner has it).
//! The emulator holds no private key of any client, so signing for another `identity_did` is
//! refused: NOT_FOUND for an identity it does not know, PERMISSION_DENIED without `volt:sign`
//! on that identity's home folder, FAILED_PRECONDITION otherwise. Verifying (`verify`) is open
//! to every client: `message` and the signature (`digest_raw` or `digest_encoded`) are checked
//! against the Volt key, or against the key of the client `identity_did` names; a signature
//! that holds answers an empty response, one that does not INVALID_ARGUMENT.
//!
//! **GetOneTimeToken** answers a random token (256 bits, base64url) that expires after `ttl`
//! seconds: 10 by default (as the API says), at most [`MAX_TOKEN_TTL_SECS`]. The emulator keeps
//! the live tokens (at most [`MAX_LIVE_TOKENS`]) with their client and `context`, and
//! [`OneTimeTokens::redeem`] takes one once; no method accepts them as credentials yet (the
//! emulator serves no download links, what the Volt makes them for).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tdx_volt::proto::volt as pb;

use crate::call::{Caller, Code, Failure};

use super::Services;

/// The longest life a one-time token may be asked for, in seconds (one hour).
pub const MAX_TOKEN_TTL_SECS: i32 = 3600;
/// A token's life when the request names none, in seconds.
pub const DEFAULT_TOKEN_TTL_SECS: i32 = 10;
/// One-time tokens alive at once; one more is refused with RESOURCE_EXHAUSTED.
pub const MAX_LIVE_TOKENS: usize = 1024;
/// The longest `context` a token may carry, in bytes.
const MAX_CONTEXT_BYTES: usize = 4096;

/// A one-time token as issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The client it was issued to.
    pub client_id: String,
    /// The request's `context`.
    pub context: String,
}

/// The live one-time tokens.
#[derive(Default)]
pub struct OneTimeTokens {
    live: Mutex<HashMap<String, (Instant, Issued)>>,
}

impl OneTimeTokens {
    fn issue(&self, issued: Issued, ttl: Duration) -> Result<String, Failure> {
        let mut raw = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, (expires, _)| *expires > now);
        if live.len() >= MAX_LIVE_TOKENS {
            return Err(Failure::reply(
                Code::ResourceExhausted,
                format!("{MAX_LIVE_TOKENS} one-time tokens are alive already"),
            ));
        }
        live.insert(token.clone(), (now + ttl, issued));
        Ok(token)
    }

    /// Takes a token once: what it was issued with, or `None` when it is unknown, used or
    /// expired.
    pub fn redeem(&self, token: &str) -> Option<Issued> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let (expires, issued) = live.remove(token)?;
        (expires > Instant::now()).then_some(issued)
    }
}

pub(super) async fn one_time_token(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::GetOneTimeTokenRequest,
) -> Result<pb::GetOneTimeTokenResponse, Failure> {
    let ttl = match r.ttl {
        0 => DEFAULT_TOKEN_TTL_SECS,
        t if (1..=MAX_TOKEN_TTL_SECS).contains(&t) => t,
        t => {
            return Err(Failure::invalid(format!(
                "ttl {t} is out of range: 1 to {MAX_TOKEN_TTL_SECS} seconds"
            )))
        }
    };
    if r.context.len() > MAX_CONTEXT_BYTES {
        return Err(Failure::invalid(format!(
            "context is longer than {MAX_CONTEXT_BYTES} bytes"
        )));
    }
    let issued = Issued {
        client_id: caller.client_id.clone(),
        context: r.context,
    };
    let secs = u64::try_from(ttl).unwrap_or(0);
    let token = svc
        .admin()
        .tokens
        .issue(issued, Duration::from_secs(secs))?;
    Ok(pb::GetOneTimeTokenResponse {
        status: None,
        token,
    })
}

pub(super) async fn sign_verify(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::SignVerifyRequest,
) -> Result<pb::SignVerifyResponse, Failure> {
    let volt_id = svc.identity().id();
    let other = (!r.identity_did.is_empty() && r.identity_did != volt_id)
        .then(|| {
            super::identities::find(svc, &r.identity_did).ok_or_else(|| {
                Failure::not_found(format!("identity not found: {}", r.identity_did))
            })
        })
        .transpose()?;
    if r.verify {
        let signature = match &r.digest {
            Some(pb::sign_verify_request::Digest::DigestRaw(raw)) => raw.clone(),
            Some(pb::sign_verify_request::Digest::DigestEncoded(text)) => {
                base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|_| Failure::invalid("digest_encoded is not base64"))?
            }
            None => {
                return Err(Failure::invalid(
                    "verify needs digest_raw or digest_encoded",
                ))
            }
        };
        let key = match &other {
            None => svc.identity().signing_key().public_key(),
            Some(identity) => identity.public_key()?,
        };
        return match key.verify(r.message.as_bytes(), &signature) {
            Ok(()) => Ok(pb::SignVerifyResponse::default()),
            Err(_) => Err(Failure::invalid("the signature does not verify")),
        };
    }
    if let Some(identity) = other {
        if !identity.is(caller) && !identity.home_id.is_empty() {
            svc.authorize(caller, &identity.home_id, "volt:sign")?;
        }
        return Err(Failure::reply(
            Code::FailedPrecondition,
            format!(
                "volt-emulator holds no private key for {}: only the Volt key signs",
                identity.did
            ),
        ));
    }
    svc.authorize_api(caller, "volt:sign")?;
    if r.message.is_empty() {
        return Err(Failure::invalid("SignVerify needs a message to sign"));
    }
    let signature = svc
        .identity()
        .signing_key()
        .sign(r.message.as_bytes())
        .map_err(|e| Failure::internal("signing", e))?;
    let payload = if r.encode {
        pb::sign_verify_response::Payload::DigestEncoded(
            base64::engine::general_purpose::STANDARD.encode(signature),
        )
    } else {
        pb::sign_verify_response::Payload::Digest(signature)
    };
    Ok(pb::SignVerifyResponse {
        status: None,
        payload: Some(payload),
    })
}

#[cfg(test)]
mod tests;
