//! GetSessions and SaveSession over the sessions this Volt issued (`crate::clients`).
//!
//! A session answers with its id, its identity (the identity DID, or the client id when
//! Authenticate named none), the client's name, its key as a `public-key` credential, and its
//! status: LIVE unless a SaveSession changed it. The Volt's owner sees every session; any other
//! client sees its own client's sessions only (the filters `id`, `identity_did`,
//! `identity_name` and `status` then apply). SaveSession changes a session's `status` (to LIVE,
//! EXPIRED, REVOKED or REJECTED; the other fields are the Volt's records and are left as they
//! are): a client may change its own sessions, the Volt's owner any. The status is kept in
//! `DIR/session-states.json` and answered from then on; REVOKED also revokes the session
//! (as `volt-emulator revoke` does): its calls and Connect streams fail with `session invalid`.
//! The other statuses are only recorded.
//!
//! [`SessionStates`] also keeps the names and descriptions SaveIdentity gives identities.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};
use tdx_volt::proto::volt::{self as pb, SessionStatus};

use crate::call::{Caller, Failure, Inbound, Outbound};
use crate::clients::Session;
use crate::files::{read_optional, write_atomic, Access};

use super::{unary, Services};

/// The methods [`dispatch`] routes.
pub const METHODS: [&str; 2] = ["GetSessions", "SaveSession"];

/// The file session statuses and identity names are kept in.
pub const SESSION_STATES_FILE: &str = "session-states.json";

/// What clients changed about sessions and identities.
pub struct SessionStates {
    path: PathBuf,
    state: Mutex<States>,
}

#[derive(Default)]
struct States {
    /// Session id to status (absent: LIVE).
    status: BTreeMap<String, i32>,
    /// Client id to the name and description SaveIdentity gave it.
    identity: BTreeMap<String, (String, String)>,
}

impl SessionStates {
    /// Loads what `DIR/session-states.json` holds (nothing when there is no file).
    pub fn open(dir: &Path) -> tdx_volt::Result<SessionStates> {
        let path = dir.join(SESSION_STATES_FILE);
        let mut states = States::default();
        if let Some(text) = read_optional(&path)? {
            let doc: Value = serde_json::from_str(&text).map_err(|e| {
                tdx_volt::Error::new(tdx_volt::ErrorKind::Io, format!("{}: {e}", path.display()))
            })?;
            if let Some(map) = doc.get("status").and_then(Value::as_object) {
                for (id, status) in map {
                    let status = status.as_i64().and_then(|s| i32::try_from(s).ok());
                    if let Some(status) = status {
                        states.status.insert(id.clone(), status);
                    }
                }
            }
            if let Some(map) = doc.get("identity").and_then(Value::as_object) {
                for (id, entry) in map {
                    let field = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or("");
                    states.identity.insert(
                        id.clone(),
                        (field("name").into(), field("description").into()),
                    );
                }
            }
        }
        Ok(SessionStates {
            path,
            state: Mutex::new(states),
        })
    }

    fn lock(&self) -> MutexGuard<'_, States> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session's status (LIVE unless changed).
    pub fn status(&self, session_id: &str) -> SessionStatus {
        self.lock()
            .status
            .get(session_id)
            .and_then(|s| SessionStatus::try_from(*s).ok())
            .unwrap_or(SessionStatus::Live)
    }

    /// The name and description SaveIdentity gave a client's identity, if any.
    pub fn identity(&self, client_id: &str) -> Option<(String, String)> {
        self.lock().identity.get(client_id).cloned()
    }

    /// Records a session's status.
    pub fn set_status(&self, session_id: &str, status: SessionStatus) -> Result<(), Failure> {
        let mut states = self.lock();
        states.status.insert(session_id.to_owned(), status as i32);
        self.save(&states)
    }

    /// Records an identity's name and description.
    pub fn set_identity(
        &self,
        client_id: &str,
        name: String,
        description: String,
    ) -> Result<(), Failure> {
        let mut states = self.lock();
        states
            .identity
            .insert(client_id.to_owned(), (name, description));
        self.save(&states)
    }

    /// Rewrites the file (under the lock, so writes keep their order).
    fn save(&self, states: &States) -> Result<(), Failure> {
        let identity: serde_json::Map<String, Value> = states
            .identity
            .iter()
            .map(|(id, (name, description))| {
                (
                    id.clone(),
                    json!({"name": name, "description": description}),
                )
            })
            .collect();
        let doc = json!({"status": states.status, "identity": identity});
        write_atomic(&self.path, doc.to_string().as_bytes(), Access::Private)
            .map_err(|e| Failure::internal("saving session states", e))
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
        "GetSessions" => unary(inbound, outbound, |r| get_sessions(svc, caller, r)).await,
        "SaveSession" => unary(inbound, outbound, |r| save_session(svc, caller, r)).await,
        _ => Err(Failure::unimplemented(&format!(
            "/tdx.volt_api.volt.v1.VoltAPI/{name}"
        ))),
    }
}

/// A session as the API describes it.
pub fn describe(svc: &Services, s: &Session) -> pb::Session {
    let identity_did = if s.identity_did.is_empty() {
        s.client_id.clone()
    } else {
        s.identity_did.clone()
    };
    let fingerprint = tdx_volt::PublicKey::from_pem(&s.public_key_pem)
        .and_then(|k| k.fingerprint())
        .unwrap_or_default();
    pb::Session {
        id: s.session_id.clone(),
        identity_did,
        identity_name: s.client_name.clone(),
        credential: vec![pb::SessionCredential {
            id: 1,
            session_id: s.session_id.clone(),
            credential_type: "public-key".to_owned(),
            key_fingerprint: fingerprint,
            public_key: s.public_key_pem.clone(),
            ..pb::SessionCredential::default()
        }],
        status: if s.revoked {
            SessionStatus::Revoked as i32
        } else {
            svc.session_states().status(&s.session_id) as i32
        },
        ..pb::Session::default()
    }
}

/// The sessions `caller` may see: all for the Volt's owner, else its own client's.
fn visible(svc: &Services, caller: &Caller) -> Vec<Session> {
    let owner = svc.subject(caller).volt_owner;
    svc.clients()
        .all()
        .into_iter()
        .filter(|s| owner || s.client_id == caller.client_id)
        .collect()
}

async fn get_sessions(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::GetSessionsRequest,
) -> Result<pb::GetSessionsResponse, Failure> {
    let session = visible(svc, caller)
        .iter()
        .map(|s| describe(svc, s))
        .filter(|s| {
            (r.id.is_empty() || s.id == r.id)
                && (r.identity_did.is_empty() || s.identity_did == r.identity_did)
                && (r.identity_name.is_empty() || s.identity_name == r.identity_name)
                && (r.status == 0 || s.status == r.status)
        })
        .collect();
    Ok(pb::GetSessionsResponse {
        status: None,
        session,
    })
}

async fn save_session(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::SaveSessionRequest,
) -> Result<pb::SaveSessionResponse, Failure> {
    let wanted = r
        .session
        .ok_or_else(|| Failure::invalid("SaveSession needs a session"))?;
    let known = svc
        .clients()
        .by_session(&wanted.id)
        .ok_or_else(|| Failure::not_found(format!("session not found: {}", wanted.id)))?;
    if known.client_id != caller.client_id && !svc.subject(caller).volt_owner {
        return Err(Failure::denied(format!(
            "permission denied: session {} is another client's",
            wanted.id
        )));
    }
    match SessionStatus::try_from(wanted.status) {
        Ok(SessionStatus::Unknown) => {}
        Ok(
            status @ (SessionStatus::Live
            | SessionStatus::Expired
            | SessionStatus::Revoked
            | SessionStatus::Rejected),
        ) => {
            svc.session_states().set_status(&known.session_id, status)?;
            // A revoked session is refused from now on, as `volt-emulator revoke` does.
            if status == SessionStatus::Revoked {
                svc.clients()
                    .revoke(&known.session_id)
                    .map_err(|e| Failure::internal("revoking the session", e))?;
            }
        }
        _ => {
            return Err(Failure::invalid(format!(
                "a session cannot be given status {}",
                wanted.status
            )))
        }
    }
    Ok(pb::SaveSessionResponse {
        status: None,
        session: Some(describe(svc, &known)),
    })
}
