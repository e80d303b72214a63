//! The VoltAPI methods of access control: GetAccess, SaveAccess, DeleteAccess, RequestAccess,
//! SetAccessRequestDecision, CanAccessResource, GetPolicy and SetPolicy.

use std::sync::Arc;

use base64::Engine as _;
use tdx_volt::proto::volt::{self as pb, PolicyDecision};
use tdx_volt::protocol::token::IdentityToken;

use crate::call::{Caller, Failure, Inbound, Outbound};
use crate::services::resources::now_millis;
use crate::services::{unary, Services};

use super::{names, rule_subject, Lineage, Subject};

/// The methods [`dispatch`] routes.
pub const METHODS: [&str; 8] = [
    "GetAccess",
    "SaveAccess",
    "DeleteAccess",
    "RequestAccess",
    "SetAccessRequestDecision",
    "CanAccessResource",
    "GetPolicy",
    "SetPolicy",
];

/// Routes one of the [`METHODS`].
pub async fn dispatch(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    match name {
        "GetAccess" => unary(inbound, outbound, |r| get_access(svc, caller, r)).await,
        "SaveAccess" => unary(inbound, outbound, |r| save_access(svc, caller, r)).await,
        "DeleteAccess" => unary(inbound, outbound, |r| delete_access(svc, caller, r)).await,
        "RequestAccess" => unary(inbound, outbound, |r| request_access(svc, caller, r)).await,
        "SetAccessRequestDecision" => {
            unary(inbound, outbound, |r| set_decision(svc, caller, r)).await
        }
        "CanAccessResource" => unary(inbound, outbound, |r| can_access(svc, caller, r)).await,
        "GetPolicy" => unary(inbound, outbound, |r| get_policy(svc, caller, r)).await,
        "SetPolicy" => unary(inbound, outbound, |r| set_policy(svc, caller, r)).await,
        _ => Err(Failure::unimplemented(&format!(
            "/tdx.volt_api.volt.v1.VoltAPI/{name}"
        ))),
    }
}

/// The access a request names, in the emulator's spelling; reading when it names none.
fn requested(access: &str) -> String {
    match names::canonical(access) {
        a if a.is_empty() => names::READ.to_owned(),
        a => a,
    }
}

fn now_ms() -> i64 {
    i64::try_from(now_millis()).unwrap_or(i64::MAX)
}

/// A rule with the resource's current name, owner and kinds filled in.
fn described(svc: &Services, mut rule: pb::Access) -> pb::Access {
    if let Some(resource) = svc.resources().get(&rule.resource_id) {
        rule.resource_name = resource.name;
        rule.resource_owner = resource.owner;
        rule.resource_kind = resource.kind;
    }
    rule
}

/// The rules the caller takes part in, or decides on; every rule for the Volt's owner.
async fn get_access(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::GetAccessRequest,
) -> Result<pb::GetAccessResponse, Failure> {
    let subject = svc.subject(caller);
    let resource_id = match r.resource_id.as_str() {
        "" => String::new(),
        named => svc.resources().require(named)?.id,
    };
    let access = names::canonical(&r.access);
    let rules = svc.access().rules(|rule| {
        (resource_id.is_empty() || rule.resource_id == resource_id)
            && (r.identity_did.is_empty() || rule_subject(rule) == r.identity_did)
            && (access.is_empty() || rule.access == access)
            && (r.decision == 0 || rule.decision == r.decision)
    });
    let visible = rules
        .into_iter()
        .filter(|rule| {
            subject.is(rule_subject(rule))
                || Lineage::of(svc.resources(), &rule.resource_id)
                    .is_ok_and(|l| svc.may_decide(caller, &l, "volt:get-access"))
        })
        .map(|rule| described(svc, rule))
        .collect();
    Ok(pb::GetAccessResponse {
        status: None,
        access: visible,
    })
}

/// Creates or replaces rules on resources the caller decides on.
async fn save_access(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::SaveAccessRequest,
) -> Result<pb::SaveAccessResponse, Failure> {
    let mut rules = Vec::new();
    for mut rule in r.access.into_iter().chain(r.access_list) {
        let lineage = Lineage::of(svc.resources(), &rule.resource_id)?;
        if !svc.may_decide(caller, &lineage, "volt:save-access") {
            return Err(super::denied("volt:save-access", lineage.id()));
        }
        if let Some(old) = svc.access().rule(&rule.id) {
            let old_lineage = Lineage::of(svc.resources(), &old.resource_id)?;
            if !svc.may_decide(caller, &old_lineage, "volt:save-access") {
                return Err(super::denied("volt:save-access", old_lineage.id()));
            }
        }
        if rule_subject(&rule).is_empty() {
            return Err(Failure::invalid(
                "SaveAccess: a rule needs identity_did (credential lookups are not supported)",
            ));
        }
        if rule.access.is_empty() {
            return Err(Failure::invalid("SaveAccess: a rule needs an access name"));
        }
        rule.access = names::canonical(&rule.access);
        rule.resource_id = lineage.id().to_owned();
        rule.decision = match PolicyDecision::try_from(rule.decision) {
            Ok(PolicyDecision::Unknown) => PolicyDecision::Permit as i32,
            Ok(PolicyDecision::Permit | PolicyDecision::Deny) => rule.decision,
            _ => {
                return Err(Failure::invalid(
                    "SaveAccess: decision must be PERMIT or DENY",
                ))
            }
        };
        if rule.id.is_empty() {
            rule.id = crate::services::resources::new_id();
        }
        if rule.decision_time == 0 {
            rule.decision_time = now_ms();
        }
        rules.push(rule);
    }
    svc.access().save(rules).await?;
    Ok(pb::SaveAccessResponse { status: None })
}

async fn delete_access(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::DeleteAccessRequest,
) -> Result<pb::DeleteAccessResponse, Failure> {
    let not_found = || Failure::not_found(format!("access rule not found: {}", r.id));
    let rule = svc.access().rule(&r.id).ok_or_else(not_found)?;
    if !r.resource_id.is_empty()
        && svc.resources().get(&r.resource_id).map(|x| x.id) != Some(rule.resource_id.clone())
    {
        return Err(not_found());
    }
    let lineage = Lineage::of(svc.resources(), &rule.resource_id)?;
    if !svc.may_decide(caller, &lineage, "volt:delete-access") {
        return Err(super::denied("volt:delete-access", lineage.id()));
    }
    svc.access().delete(&rule.id).await?;
    Ok(pb::DeleteAccessResponse { status: None })
}

/// Answers at once when the policy decides already (PERMIT, or a DENY rule); otherwise the
/// request is recorded for the resource's owners and is PROMPT when one of them was told over
/// a Connect stream, else PENDING.
async fn request_access(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::RequestAccessRequest,
) -> Result<pb::RequestAccessResponse, Failure> {
    let lineage = Lineage::of(svc.resources(), &r.resource_id)?;
    let subject = svc.subject(caller);
    let access = requested(&r.access);
    let answer =
        |decision: PolicyDecision, request: Option<&pb::Access>| pb::RequestAccessResponse {
            status: None,
            resource_id: lineage.id().to_owned(),
            identity_did: subject.name().to_owned(),
            access: access.clone(),
            decision: decision as i32,
            request_time: request.map_or(0, |q| q.request_time),
            decision_time: request.map_or(0, |q| q.decision_time),
            request_count: request
                .map_or(0, |q| i32::try_from(q.request_count).unwrap_or(i32::MAX)),
        };
    match svc.access().decide(&subject, &lineage, &access, "") {
        PolicyDecision::Permit => return Ok(answer(PolicyDecision::Permit, None)),
        _ if svc.access().ruled(&subject, &lineage, &access, "") == Some(PolicyDecision::Deny) => {
            return Ok(answer(PolicyDecision::Deny, None));
        }
        _ => {}
    }
    let template = pb::Access {
        resource_id: lineage.id().to_owned(),
        access: access.clone(),
        ..pb::Access::default()
    };
    let request = svc.access().request(&subject, template, now_ms()).await?;
    let told = tell_deciders(
        svc,
        &lineage,
        &subject,
        caller,
        &described(svc, request.clone()),
    );
    let decision = if told > 0 {
        PolicyDecision::Prompt
    } else {
        PolicyDecision::Pending
    };
    Ok(answer(decision, Some(&request)))
}

/// Sends an access request as a Connect auth-request event to the streams of clients that
/// subscribed to auth requests and may decide it. The API has no request type for access
/// requests: the event's type is UNKNOWN and its `context` is the request as JSON
/// (`{"access_request": Access}`), whose `id` SetAccessRequestDecision takes.
fn tell_deciders(
    svc: &Services,
    lineage: &Lineage,
    subject: &Subject,
    caller: &Caller,
    request: &pb::Access,
) -> usize {
    let context = match crate::proto_json::to_json(request) {
        Ok(json) => serde_json::json!({ "access_request": json }).to_string(),
        Err(_) => return 0,
    };
    let event = pb::ConnectEvent {
        event: Some(pb::connect_event::Event::ConnectAuthRequest(
            pb::ConnectAuthRequest {
                session: Some(pb::Session {
                    id: caller.session_id.clone(),
                    identity_did: subject.name().to_owned(),
                    ..pb::Session::default()
                }),
                request_type: pb::ConnectAuthRequestType::Unknown as i32,
                context,
                challenge: String::new(),
                timestamp: now_millis(),
            },
        )),
    };
    svc.events().publish(&event, |listener, interests| {
        interests.auth_requests
            && svc.access().decide(
                listener,
                lineage,
                names::API_CALL,
                "volt:set-access-request-decision",
            ) == PolicyDecision::Permit
    })
}

async fn set_decision(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::SetAccessRequestDecisionRequest,
) -> Result<pb::SetAccessRequestDecisionResponse, Failure> {
    let decision = match PolicyDecision::try_from(r.decision) {
        Ok(d @ (PolicyDecision::Permit | PolicyDecision::Deny)) => d,
        _ => {
            return Err(Failure::invalid(
                "SetAccessRequestDecision: decision must be PERMIT or DENY",
            ))
        }
    };
    let rule = svc
        .access()
        .rule(&r.id)
        .ok_or_else(|| Failure::not_found(format!("access request not found: {}", r.id)))?;
    let lineage = Lineage::of(svc.resources(), &rule.resource_id)?;
    if !svc.may_decide(caller, &lineage, "volt:set-access-request-decision") {
        return Err(super::denied(
            "volt:set-access-request-decision",
            lineage.id(),
        ));
    }
    svc.access().set_decision(&r.id, decision, now_ms()).await?;
    Ok(pb::SetAccessRequestDecisionResponse { status: None })
}

/// The decision for the subject a token or certificate names (the caller when neither is
/// given): what a service asks before serving one of its own callers.
async fn can_access(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::CanAccessResourceRequest,
) -> Result<pb::CanAccessResourceResponse, Failure> {
    use pb::can_access_resource_request::Subject as Named;
    let asking = match &r.subject {
        Some(Named::Token(jwt)) if !jwt.is_empty() => {
            let token = IdentityToken::parse(jwt)
                .map_err(|e| Failure::invalid(format!("CanAccessResource: bad token: {e}")))?;
            // A token for this Volt, or one a caller sent to the asking client (a host
            // checking a caller of its service: the token's audience is the host).
            let for_asker = token
                .claims_unverified()
                .is_ok_and(|c| !caller.client_id.is_empty() && c.aud == caller.client_id);
            let audience = if for_asker {
                caller.client_id.as_str()
            } else {
                svc.identity().id()
            };
            crate::services::auth::verify_token_for(svc, &token, audience)
                .map_err(|f| Failure::invalid(format!("CanAccessResource: {}", f.message())))?
                .0
        }
        Some(Named::Cert(pem)) if !pem.is_empty() => {
            let session = certificate_der(pem)
                .and_then(|der| svc.clients().by_certificate(&der))
                .ok_or_else(|| {
                    Failure::invalid("CanAccessResource: not a certificate this Volt issued")
                })?;
            Caller {
                client_id: session.client_id,
                session_id: session.session_id,
            }
        }
        _ => caller.clone(),
    };
    let lineage = Lineage::of(svc.resources(), &r.resource_id)?;
    let subject = svc.subject(&asking);
    let access = requested(&r.access);
    let decision = svc.access().decide(&subject, &lineage, &access, &r.extra);
    Ok(pb::CanAccessResourceResponse {
        status: None,
        identity_did: subject.name().to_owned(),
        resource_id: lineage.id().to_owned(),
        access,
        decision: decision as i32,
        session_id: asking.session_id,
    })
}

/// The DER inside a PEM certificate.
fn certificate_der(pem: &str) -> Option<Vec<u8>> {
    let body = pem
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)?
        .split("-----END CERTIFICATE-----")
        .next()?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

async fn get_policy(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::GetPolicyRequest,
) -> Result<pb::GetPolicyResponse, Failure> {
    svc.authorize_api(caller, "volt:get-policy")?;
    let policy = if r.custom_policy {
        svc.access().custom_policy()
    } else {
        serde_json::to_string_pretty(&svc.access().active_policy())
            .map_err(|e| Failure::internal("policy", e))?
    };
    Ok(pb::GetPolicyResponse {
        status: None,
        policy,
    })
}

/// Saves a custom policy document (JSON; empty clears it). The emulator keeps and returns it
/// but decides by its built-in rules and the saved rules alone.
async fn set_policy(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::SetPolicyRequest,
) -> Result<pb::SetPolicyResponse, Failure> {
    svc.authorize_api(caller, "volt:set-policy")?;
    if !r.custom_policy.trim().is_empty()
        && serde_json::from_str::<serde_json::Value>(&r.custom_policy).is_err()
    {
        return Err(Failure::invalid("SetPolicy: the policy is not JSON"));
    }
    svc.access().set_custom_policy(r.custom_policy).await?;
    Ok(pb::SetPolicyResponse { status: None })
}
