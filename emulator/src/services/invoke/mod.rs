//! `VoltAPI/Invoke`: relay tunnels, ended here or routed to a client hosting a service.
//!
//! The opening message carries the caller's token (its `k` claim is the caller's key) and the
//! route: `target_did` (the hops; the last one is where the tunnel ends) and
//! `target_service_id`.
//! - A route to this Volt (no `target_did`, or the last one its id, and no service) is ended
//!   here ([`local`]); the token's `aud` must be this Volt.
//! - Any other route goes to a host ([`routed`]): the last `target_did` that is not this Volt,
//!   else the named service's host. The token's `aud` must be that host's client id. With a
//!   `target_service_id`, the service must exist, be hosted by that client (NOT_FOUND
//!   otherwise), and the caller must be allowed `volt:resource-invoke` on it
//!   (PERMISSION_DENIED otherwise). A host with no live Connect stream that accepts
//!   invocations answers UNAVAILABLE.
//!
//! Failures of the tunnel itself answer `InvokeResponse.status` and end the stream with OK.

pub mod local;
pub mod routed;

use std::sync::Arc;

use tdx_volt::proto::volt::{invoke_response, InvokeRequest, InvokeResponse, Status};
use tdx_volt::protocol::token::IdentityToken;

use super::access::names;
use super::auth::verify_token_for;
use super::hosting::{host_of, is_service};
use super::Services;
use crate::call::{Caller, Code, Failure, Inbound, Outbound};

/// What the emulator breaks in the tunnels it ends, for testing that clients fail closed.
/// Never set outside tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TunnelFault {
    /// Nothing: tunnels work.
    #[default]
    None,
    /// The key exchange's signature has one bit flipped, as if tampered with on the way.
    CorruptSignature,
}

/// The method that carries tunnels.
pub const METHOD: &str = "Invoke";

/// Serves one `Invoke` stream.
pub async fn serve(
    svc: &Arc<Services>,
    mut inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    let Some(opening) = inbound.next::<InvokeRequest>().await? else {
        return Ok(());
    };
    let opened = match open_tunnel(svc, &opening) {
        Ok(opened) => opened,
        Err(TunnelFailure(code, message)) => return fail(outbound, code, message).await,
    };
    svc.connections().tunnel_opened();
    match opened {
        Opened::Here { caller, key } => local::serve(svc, caller, &key, inbound, outbound).await,
        Opened::ToHost {
            host,
            service_connection,
        } => {
            let Some(invocation) = svc.hosts().start(&host, &service_connection) else {
                return fail(outbound, Code::Unavailable, format!("{host} is not online")).await;
            };
            svc.connections().invocation_routed();
            routed::relay(svc, invocation, opening, inbound, outbound).await
        }
    }
}

/// Why a tunnel failed: what `InvokeResponse.status` says.
pub struct TunnelFailure(pub Code, pub String);

impl From<Failure> for TunnelFailure {
    fn from(f: Failure) -> TunnelFailure {
        TunnelFailure(f.code(), f.message().to_owned())
    }
}

/// Answers a tunnel failure as a status, then ends the stream normally.
pub async fn fail(outbound: &Outbound, code: Code, message: String) -> Result<(), Failure> {
    send_status(
        outbound,
        Status {
            code: code.as_i32(),
            message,
            description: String::new(),
        },
    )
    .await
}

/// Sends `InvokeResponse.status`.
pub async fn send_status(outbound: &Outbound, status: Status) -> Result<(), Failure> {
    outbound
        .send(&InvokeResponse {
            response_payload: Some(invoke_response::ResponsePayload::Status(status)),
            ..InvokeResponse::default()
        })
        .await
}

/// Where an accepted tunnel goes.
pub(crate) enum Opened {
    /// It ends here; `key` is the caller's `k` claim.
    Here { caller: Caller, key: String },
    /// It goes to the client `host`; `service_connection` is the host connection the named
    /// service is online on (empty without a service).
    ToHost {
        host: String,
        service_connection: String,
    },
}

/// Checks the opening message: the route, then a valid token for where it ends (with a key),
/// then for a hosted service that the caller may invoke it.
pub(crate) fn open_tunnel(
    svc: &Services,
    opening: &InvokeRequest,
) -> Result<Opened, TunnelFailure> {
    let token = IdentityToken::parse(&opening.token).map_err(|e| {
        TunnelFailure(
            Code::Unauthenticated,
            format!("the tunnel's first message needs a valid token: {e}"),
        )
    })?;
    let own = svc.identity().id();
    let hop = opening
        .target_did
        .last()
        .filter(|did| !did.is_empty() && did.as_str() != own);
    let service_id = &opening.target_service_id;
    if hop.is_none() && service_id.is_empty() {
        let (caller, claims) = verify_token_for(svc, &token, own)?;
        return Ok(Opened::Here {
            caller,
            key: key_claim(claims.k)?,
        });
    }
    let service = (!service_id.is_empty())
        .then(|| svc.resources().get(service_id))
        .flatten()
        .filter(is_service);
    // The host: the last hop, else the service's (a route naming the service alone).
    let host = match (hop, &service) {
        (Some(hop), _) => hop.clone(),
        (None, Some(service)) => host_of(service).to_owned(),
        (None, None) => own.to_owned(),
    };
    let (caller, claims) = verify_token_for(svc, &token, &host)?;
    key_claim(claims.k)?;
    let mut service_connection = String::new();
    if !service_id.is_empty() {
        let service = service.ok_or_else(|| {
            TunnelFailure(Code::NotFound, format!("service not found: {service_id}"))
        })?;
        if host_of(&service) != host {
            return Err(TunnelFailure(
                Code::NotFound,
                format!("service {service_id} is not hosted by {host}"),
            ));
        }
        svc.authorize(&caller, &service.id, names::INVOKE)?;
        if let Some(d) = service.service_description {
            service_connection = d.host_connection_id;
        }
    }
    if svc.clients().by_client(&host).is_none() {
        return Err(TunnelFailure(
            Code::NotFound,
            format!("no route to {host}: not a client of this Volt"),
        ));
    }
    Ok(Opened::ToHost {
        host,
        service_connection,
    })
}

fn key_claim(k: Option<String>) -> Result<String, TunnelFailure> {
    k.filter(|k| !k.is_empty()).ok_or_else(|| {
        TunnelFailure(
            Code::Unauthenticated,
            "the tunnel's token has no key (claim k)".into(),
        )
    })
}
