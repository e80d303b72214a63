//! GetIdentities, GetIdentity and SaveIdentity over the clients this Volt issued.
//!
//! An identity is one issued client: its DID is the identity DID Authenticate named for it,
//! else its client id. It answers as `Identity{resource, alias}`: the resource is made up for
//! it, of kind [`IDENTITY_KIND`] (the vendor's packages name no kind for identities), with the
//! DID as id, the client's name and the identity as owner; each of the client's keys is an
//! alias of type `public-key` (its fingerprint, its PEM, decision PERMIT).
//!
//! Who reads an identity: the client itself, the Volt's owner, and clients with
//! `volt:resource-read` on the identity's home folder (an identity is as visible as its home).
//! SaveIdentity changes the name and description of an identity (its own for a client, any for
//! the Volt's owner), kept in `DIR/session-states.json`. It does not create identities (they
//! come from issuing clients and Authenticate) and does not change their keys: `create`,
//! `delete_alias`, `purge_aliases` and `did_document` are refused with FAILED_PRECONDITION.

use std::sync::Arc;

use tdx_volt::proto::volt::{self as pb, PolicyDecision};
use tdx_volt::PublicKey;

use crate::call::{Caller, Code, Failure, Inbound, Outbound};
use crate::clients::Session;

use super::access::names;
use super::{unary, Services};

/// The methods [`dispatch`] routes.
pub const METHODS: [&str; 3] = ["GetIdentities", "GetIdentity", "SaveIdentity"];

/// The kind of the resource an identity answers with.
pub const IDENTITY_KIND: &str = "volt:identity";

/// One issued client as an identity.
#[derive(Clone, Debug)]
pub struct Record {
    /// The identity DID, or the client id when there is none.
    pub did: String,
    /// The client id.
    pub client_id: String,
    /// The client's name as issued.
    pub client_name: String,
    /// The client's home folder (empty when it has none yet).
    pub home_id: String,
    /// The client's sessions, oldest first.
    pub sessions: Vec<Session>,
}

impl Record {
    /// Whether `caller` is this identity.
    pub fn is(&self, caller: &Caller) -> bool {
        caller.client_id == self.client_id
    }

    /// The newest key of the identity.
    pub fn public_key(&self) -> Result<PublicKey, Failure> {
        let session = self
            .sessions
            .last()
            .ok_or_else(|| Failure::not_found(format!("identity {} has no key", self.did)))?;
        PublicKey::from_pem(&session.public_key_pem)
            .map_err(|e| Failure::internal("reading an identity's key", e))
    }
}

/// Every identity, in the order their clients were issued.
pub fn records(svc: &Services) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    for session in svc.clients().all() {
        match out.iter_mut().find(|r| r.client_id == session.client_id) {
            Some(record) => {
                if record.did == record.client_id && !session.identity_did.is_empty() {
                    record.did = session.identity_did.clone();
                }
                if record.home_id.is_empty() {
                    record.home_id = session.home_id.clone();
                }
                record.sessions.push(session);
            }
            None => out.push(Record {
                did: if session.identity_did.is_empty() {
                    session.client_id.clone()
                } else {
                    session.identity_did.clone()
                },
                client_id: session.client_id.clone(),
                client_name: session.client_name.clone(),
                home_id: session.home_id.clone(),
                sessions: vec![session],
            }),
        }
    }
    out
}

/// The identity a DID or client id names.
pub fn find(svc: &Services, did: &str) -> Option<Record> {
    records(svc)
        .into_iter()
        .find(|r| r.did == did || r.client_id == did)
}

/// Whether `caller` may read the identity.
fn may_read(svc: &Services, caller: &Caller, record: &Record) -> bool {
    record.is(caller)
        || svc.subject(caller).volt_owner
        || (!record.home_id.is_empty()
            && svc.authorize(caller, &record.home_id, names::READ).is_ok())
}

/// The identity as the API describes it.
fn describe(svc: &Services, record: &Record) -> pb::Identity {
    let (name, description) = svc
        .session_states()
        .identity(&record.client_id)
        .unwrap_or_else(|| (record.client_name.clone(), String::new()));
    let alias = record
        .sessions
        .iter()
        .zip(1u32..)
        .map(|(s, id)| pb::IdentityAlias {
            id,
            identity_did: record.did.clone(),
            alias: PublicKey::from_pem(&s.public_key_pem)
                .and_then(|k| k.fingerprint())
                .unwrap_or_default(),
            public_key: s.public_key_pem.clone(),
            alias_type: "public-key".to_owned(),
            issuer_id: svc.identity().id().to_owned(),
            authenticate: PolicyDecision::Permit as i32,
            ..pb::IdentityAlias::default()
        })
        .collect();
    pb::Identity {
        resource: Some(pb::Resource {
            id: record.did.clone(),
            name,
            description,
            kind: vec![IDENTITY_KIND.to_owned()],
            volt_id: svc.identity().id().to_owned(),
            owner: record.did.clone(),
            ..pb::Resource::default()
        }),
        alias,
    }
}

/// Routes one of the [`METHODS`].
pub async fn dispatch(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    match name {
        "GetIdentities" => unary(inbound, outbound, |r| get_identities(svc, caller, r)).await,
        "GetIdentity" => unary(inbound, outbound, |r| get_identity(svc, caller, r)).await,
        "SaveIdentity" => unary(inbound, outbound, |r| save_identity(svc, caller, r)).await,
        _ => Err(Failure::unimplemented(&format!(
            "/tdx.volt_api.volt.v1.VoltAPI/{name}"
        ))),
    }
}

/// `*` matches any run of characters; anything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|i| tail.is_char_boundary(*i))
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

async fn get_identities(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::GetIdentitiesRequest,
) -> Result<pb::GetIdentitiesResponse, Failure> {
    if r.name.len() > 1024 || r.name.matches('*').count() > 8 {
        return Err(Failure::invalid(
            "name: at most 1,024 bytes and 8 wildcards",
        ));
    }
    let identity = records(svc)
        .iter()
        .filter(|record| may_read(svc, caller, record))
        .map(|record| describe(svc, record))
        .filter(|identity| {
            let name = identity.resource.as_ref().map_or("", |x| x.name.as_str());
            let by_name = r.name.is_empty() || glob(&r.name, name);
            let by_alias = r.alias.as_ref().is_none_or(|q| {
                identity.alias.iter().any(|a| {
                    (q.alias.is_empty() || a.alias == q.alias)
                        && (q.identity_did.is_empty() || a.identity_did == q.identity_did)
                        && (q.public_key.is_empty() || a.public_key == q.public_key)
                        && (q.alias_type.is_empty() || a.alias_type == q.alias_type)
                })
            });
            by_name && by_alias
        })
        .collect();
    Ok(pb::GetIdentitiesResponse {
        status: None,
        identity,
    })
}

async fn get_identity(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::GetIdentityRequest,
) -> Result<pb::GetIdentityResponse, Failure> {
    use pb::get_identity_request::Lookup;
    let record = match &r.lookup {
        Some(Lookup::IdentityDid(did)) if !did.is_empty() => find(svc, did),
        Some(Lookup::Fingerprint(fingerprint)) if !fingerprint.is_empty() => {
            records(svc).into_iter().find(|record| {
                record.sessions.iter().any(|s| {
                    PublicKey::from_pem(&s.public_key_pem)
                        .and_then(|k| k.fingerprint())
                        .is_ok_and(|f| &f == fingerprint)
                })
            })
        }
        _ => {
            return Err(Failure::invalid(
                "GetIdentity needs identity_did or fingerprint",
            ))
        }
    };
    // An identity the caller may not read is answered as one that does not exist.
    let record = record
        .filter(|record| may_read(svc, caller, record))
        .ok_or_else(|| Failure::not_found("identity not found"))?;
    Ok(pb::GetIdentityResponse {
        status: None,
        identity: Some(describe(svc, &record)),
    })
}

async fn save_identity(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::SaveIdentityRequest,
) -> Result<pb::SaveIdentityResponse, Failure> {
    let refuse = |what: &str| {
        Err(Failure::reply(
            Code::FailedPrecondition,
            format!("volt-emulator cannot {what}: identities come from issued clients"),
        ))
    };
    if r.create {
        return refuse("create identities");
    }
    if !r.delete_alias.is_empty() || r.purge_aliases || !r.did_document.is_empty() {
        return refuse("change an identity's keys or DID document");
    }
    let wanted = r
        .identity
        .ok_or_else(|| Failure::invalid("SaveIdentity needs an identity"))?;
    let resource = wanted.resource.unwrap_or_default();
    let did = if resource.id.is_empty() {
        wanted
            .alias
            .first()
            .map(|a| a.identity_did.clone())
            .unwrap_or_default()
    } else {
        resource.id.clone()
    };
    if did.is_empty() {
        return Err(Failure::invalid("SaveIdentity needs the identity's id"));
    }
    let record = find(svc, &did)
        .filter(|record| may_read(svc, caller, record))
        .ok_or_else(|| Failure::not_found(format!("identity not found: {did}")))?;
    if !record.is(caller) && !svc.subject(caller).volt_owner {
        return Err(Failure::denied(format!(
            "permission denied: identity {did} is another client's"
        )));
    }
    let (mut name, mut description) = svc
        .session_states()
        .identity(&record.client_id)
        .unwrap_or_else(|| (record.client_name.clone(), String::new()));
    if !resource.name.trim().is_empty() {
        name = resource.name;
    }
    if !resource.description.is_empty() {
        description = resource.description;
    }
    svc.session_states()
        .set_identity(&record.client_id, name, description)?;
    Ok(pb::SaveIdentityResponse {
        status: None,
        identity: Some(describe(svc, &record)),
    })
}

#[cfg(test)]
mod tests;
