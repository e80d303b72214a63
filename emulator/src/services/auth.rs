//! Who is calling: identity tokens checked against the sessions this Volt issued.

use prost::Message as _;
use tdx_volt::proto::volt::AuthenticateRequest;
use tdx_volt::protocol::token::{Claims, IdentityToken, Validation};
use tdx_volt::PublicKey;

use super::authenticate::request_key;
use super::Services;
use crate::call::{Caller, Code, Failure};
use crate::clients::Session;

/// Clock skew tolerated on `iat` / `exp`, in seconds (the protocol core's default).
pub const TOKEN_LEEWAY_SECS: i64 = tdx_volt::protocol::token::DEFAULT_LEEWAY_SECS;
/// The longest token lifetime accepted, in seconds (the protocol core's default).
pub const TOKEN_MAX_LIFETIME_SECS: i64 = tdx_volt::protocol::token::DEFAULT_MAX_LIFETIME_SECS;

fn unauthenticated(message: impl Into<String>) -> Failure {
    Failure::abort(Code::Unauthenticated, message)
}

/// How a refusal of a session that is unknown or revoked ends: the official clients look for
/// exactly this ending, and then drop the session and certificate they hold.
pub const SESSION_INVALID: &str = "session invalid";

/// The refusal of a revoked session: UNAUTHENTICATED, ending with [`SESSION_INVALID`].
pub fn revoked(session_id: &str) -> Failure {
    unauthenticated(format!(
        "session {session_id} is revoked: {SESSION_INVALID}"
    ))
}

/// Checks that a session (of a caller identified earlier, e.g. by its certificate) is not
/// revoked.
pub fn check_not_revoked(svc: &Services, session_id: &str) -> Result<(), Failure> {
    if svc.clients().is_revoked(session_id) {
        return Err(revoked(session_id));
    }
    Ok(())
}

/// Checks a token against the session its `sub` names: the signature (over the header the
/// token carries, which on the websocket gateway is the rebuilt constant EdDSA header) by that
/// session's key, `aud` = this Volt, and the time window. Returns the caller and the claims.
pub fn verify_token(svc: &Services, token: &IdentityToken) -> Result<(Caller, Claims), Failure> {
    verify_token_for(svc, token, svc.identity().id())
}

/// [`verify_token`] with `aud` = `audience`: a tunnel routed to a client hosting a service
/// carries a token for that client (its id), not for this Volt. Only for such tunnels, and
/// for that client asking (CanAccessResource) what the caller of such a tunnel may do.
pub fn verify_token_for(
    svc: &Services,
    token: &IdentityToken,
    audience: &str,
) -> Result<(Caller, Claims), Failure> {
    let unverified = token
        .claims_unverified()
        .map_err(|e| unauthenticated(format!("bad identity token: {e}")))?;
    let session_id = unverified
        .sub
        .filter(|s| !s.is_empty())
        .ok_or_else(|| unauthenticated("the identity token names no session (sub)"))?;
    let session = svc.clients().by_session(&session_id).ok_or_else(|| {
        unauthenticated(format!("unknown session {session_id}: {SESSION_INVALID}"))
    })?;
    verify_for_session(svc, token, session, audience)
}

/// The `volt-token` metadata of an Invoke stream: the official clients send the tunnel's own
/// token there, whose `aud` is the host's client id for a tunnel to a hosted service. So it may
/// be for this Volt or for one of its clients; the opening message's token is then checked
/// against the route itself.
pub fn verify_tunnel_metadata(
    svc: &Services,
    token: &IdentityToken,
) -> Result<(Caller, Claims), Failure> {
    let aud = token
        .claims_unverified()
        .map_err(|e| unauthenticated(format!("bad identity token: {e}")))?
        .aud;
    if aud != svc.identity().id() && svc.clients().by_client(&aud).is_some() {
        verify_token_for(svc, token, &aud)
    } else {
        verify_token(svc, token)
    }
}

/// Checks a token of the older websocket protocol (RS256, header `kid`): against the session
/// its `sub` names when it has one (as [`verify_token`]), else against the session whose client
/// key has the fingerprint `kid` (the Python client sends no `sub`). Returns the caller and the
/// claims.
pub fn verify_legacy_token(
    svc: &Services,
    token: &IdentityToken,
) -> Result<(Caller, Claims), Failure> {
    let unverified = token
        .claims_unverified()
        .map_err(|e| unauthenticated(format!("bad identity token: {e}")))?;
    if unverified.sub.as_deref().is_some_and(|s| !s.is_empty()) {
        return verify_token(svc, token);
    }
    let header: serde_json::Value = serde_json::from_str(token.header())
        .map_err(|_| unauthenticated("bad identity token: the JWT header is not JSON"))?;
    let kid = header
        .get("kid")
        .and_then(serde_json::Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            unauthenticated("the identity token names no session (sub) and no key (kid)")
        })?;
    let session = svc
        .clients()
        .by_fingerprint(kid)
        .ok_or_else(|| unauthenticated(format!("unknown client key (kid): {kid}")))?;
    verify_for_session(svc, token, session, svc.identity().id())
}

fn verify_for_session(
    svc: &Services,
    token: &IdentityToken,
    session: Session,
    audience: &str,
) -> Result<(Caller, Claims), Failure> {
    if session.revoked {
        return Err(revoked(&session.session_id));
    }
    let key = PublicKey::from_pem(&session.public_key_pem)
        .map_err(|e| Failure::abort(Code::Internal, format!("stored session key: {e}")))?;
    let claims = token
        .verify(&key, &validation_for(svc, audience))
        .map_err(|e| unauthenticated(format!("identity token refused: {e}")))?;
    Ok((
        Caller {
            client_id: session.client_id,
            session_id: session.session_id,
        },
        claims,
    ))
}

/// Checks a token signed by a key that has no session yet (Authenticate): signature by `key`,
/// audience and time window.
pub fn verify_token_with_key(
    svc: &Services,
    token: &IdentityToken,
    key: &PublicKey,
) -> Result<Claims, Failure> {
    token
        .verify(key, &validation(svc))
        .map_err(|e| unauthenticated(format!("identity token refused: {e}")))
}

/// Checks the token of a caller that has no session yet, which may call Authenticate only: it
/// must be signed by the key the request speaks for ([`request_key`]), for this Volt, within
/// its time window. `request` is the encoded `AuthenticateRequest`. The one check of both the
/// gRPC server and the websocket gateways.
pub fn verify_sessionless_proof(
    svc: &Services,
    token: &IdentityToken,
    request: &[u8],
) -> Result<(), Failure> {
    let request = AuthenticateRequest::decode(request)
        .map_err(|e| Failure::abort(Code::InvalidArgument, format!("bad request: {e}")))?;
    let key = request_key(svc, &request).map_err(|f| Failure::abort(f.code(), f.message()))?;
    verify_token_with_key(svc, token, &key).map(|_| ())
}

fn validation(svc: &Services) -> Validation {
    validation_for(svc, svc.identity().id())
}

fn validation_for(svc: &Services, audience: &str) -> Validation {
    Validation::new(audience, svc.now())
        .leeway(TOKEN_LEEWAY_SECS)
        .max_lifetime(TOKEN_MAX_LIFETIME_SECS)
}
