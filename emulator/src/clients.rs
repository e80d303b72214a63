//! The sessions this Volt has issued: which client key signs for which session, the client's
//! home folder, and the certificate issued by Authenticate. Kept in `DIR/clients.json`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{json, Value};
use tdx_volt::PublicKey;

use crate::files::{read_optional, write_atomic, Access};

/// The file the sessions are kept in.
pub const CLIENTS_FILE: &str = "clients.json";

/// One session: a client key the Volt accepts tokens from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The session id (the token's `sub`).
    pub session_id: String,
    /// The client id issued with the configuration.
    pub client_id: String,
    /// The client's name.
    pub client_name: String,
    /// The client's public key, SPKI PEM.
    pub public_key_pem: String,
    /// The client's home folder resource.
    pub home_id: String,
    /// The identity DID, when Authenticate made or named one.
    pub identity_did: String,
    /// The client certificate issued by Authenticate (PEM), if any.
    pub cert_pem: String,
    /// The issued certificate in DER (for matching a TLS peer), base64.
    pub cert_der_b64: String,
}

/// The registry of sessions.
pub struct ClientRegistry {
    path: PathBuf,
    sessions: Mutex<Vec<Session>>,
}

impl ClientRegistry {
    /// Loads the registry from `dir` (empty when there is none yet).
    pub fn open(dir: &Path) -> tdx_volt::Result<ClientRegistry> {
        let path = dir.join(CLIENTS_FILE);
        let mut sessions = Vec::new();
        if let Some(text) = read_optional(&path)? {
            sessions = parse(&text).map_err(|e| {
                tdx_volt::Error::new(tdx_volt::ErrorKind::Io, format!("{}: {e}", path.display()))
            })?;
        }
        Ok(ClientRegistry {
            path,
            sessions: Mutex::new(sessions),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds (or replaces, by session id) a session and saves the registry. Sessions another
    /// process added to the file meanwhile (`volt-emulator client`) are kept.
    pub fn insert(&self, session: Session) -> tdx_volt::Result<()> {
        let mut sessions = self.lock();
        self.merge_from_disk(&mut sessions);
        sessions.retain(|s| s.session_id != session.session_id);
        sessions.push(session);
        write_atomic(&self.path, to_text(&sessions).as_bytes(), Access::Private)
    }

    /// Adds the sessions in the file that are not in memory (issued by another process).
    fn merge_from_disk(&self, sessions: &mut Vec<Session>) {
        let Ok(Some(text)) = read_optional(&self.path) else {
            return;
        };
        // A file that does not parse is left to the next write to replace.
        if let Ok(on_disk) = parse(&text) {
            for s in on_disk {
                if !sessions.iter().any(|m| m.session_id == s.session_id) {
                    sessions.push(s);
                }
            }
        }
    }

    /// The session with this id.
    pub fn by_session(&self, session_id: &str) -> Option<Session> {
        let mut sessions = self.lock();
        let find = |list: &[Session]| list.iter().find(|s| s.session_id == session_id).cloned();
        if let Some(found) = find(&sessions) {
            return Some(found);
        }
        // Not known here: perhaps issued by `volt-emulator client` since this process started.
        self.merge_from_disk(&mut sessions);
        find(&sessions)
    }

    /// The first session whose client key has this fingerprint
    /// ([`PublicKey::fingerprint`]): how the older websocket protocol names its caller (the
    /// token header's `kid`) when the token has no `sub`.
    pub fn by_fingerprint(&self, fingerprint: &str) -> Option<Session> {
        let mut sessions = self.lock();
        let find = |list: &[Session]| {
            list.iter()
                .find(|s| {
                    PublicKey::from_pem(&s.public_key_pem)
                        .and_then(|k| k.fingerprint())
                        .is_ok_and(|f| f == fingerprint)
                })
                .cloned()
        };
        if let Some(found) = find(&sessions) {
            return Some(found);
        }
        self.merge_from_disk(&mut sessions);
        find(&sessions)
    }

    /// The session whose issued certificate is exactly this DER.
    pub fn by_certificate(&self, der: &[u8]) -> Option<Session> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        self.lock()
            .iter()
            .find(|s| !s.cert_der_b64.is_empty() && s.cert_der_b64 == b64)
            .cloned()
    }

    /// The first session of a client.
    pub fn by_client(&self, client_id: &str) -> Option<Session> {
        self.lock()
            .iter()
            .find(|s| s.client_id == client_id)
            .cloned()
    }

    /// The newest session carrying this identity DID.
    pub fn by_identity_did(&self, did: &str) -> Option<Session> {
        self.lock()
            .iter()
            .rev()
            .find(|s| !s.identity_did.is_empty() && s.identity_did == did)
            .cloned()
    }

    /// The first session registered for this public key.
    pub fn by_public_key(&self, key: &PublicKey) -> Option<Session> {
        self.lock()
            .iter()
            .find(|s| {
                PublicKey::from_pem(&s.public_key_pem)
                    .map(|k| k == *key)
                    .unwrap_or(false)
            })
            .cloned()
    }
}

fn to_text(sessions: &[Session]) -> String {
    let list: Vec<Value> = sessions
        .iter()
        .map(|s| {
            json!({
                "session_id": s.session_id,
                "client_id": s.client_id,
                "client_name": s.client_name,
                "public_key": s.public_key_pem,
                "home_id": s.home_id,
                "identity_did": s.identity_did,
                "cert": s.cert_pem,
                "cert_der": s.cert_der_b64,
            })
        })
        .collect();
    serde_json::to_string_pretty(&json!({ "sessions": list })).unwrap_or_default()
}

fn parse(text: &str) -> Result<Vec<Session>, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let list = doc
        .get("sessions")
        .and_then(Value::as_array)
        .ok_or("missing \"sessions\" array")?;
    let field = |v: &Value, name: &str| -> String {
        v.get(name).and_then(Value::as_str).unwrap_or("").to_owned()
    };
    list.iter()
        .map(|v| {
            let s = Session {
                session_id: field(v, "session_id"),
                client_id: field(v, "client_id"),
                client_name: field(v, "client_name"),
                public_key_pem: field(v, "public_key"),
                home_id: field(v, "home_id"),
                identity_did: field(v, "identity_did"),
                cert_pem: field(v, "cert"),
                cert_der_b64: field(v, "cert_der"),
            };
            if s.session_id.is_empty() || s.public_key_pem.is_empty() {
                return Err("a session without session_id or public_key".to_owned());
            }
            Ok(s)
        })
        .collect()
}
