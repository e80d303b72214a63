//! The sessions this Volt has issued: which client key signs for which session, the client's
//! home folder, and the certificate issued by Authenticate. Kept in `DIR/clients.json`.

use std::fs::Metadata;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use serde_json::{json, Value};
use tdx_volt::PublicKey;

use crate::files::{write_atomic, Access};

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
///
/// Another process may add sessions to the file while this one serves: `volt-emulator client`
/// issues a client for a running emulator by writing `clients.json` itself. So a lookup that
/// finds nothing in memory, and every insert, merge in what the file holds that memory does
/// not. To keep a stream of unknown sessions (or of older-protocol key fingerprints) from
/// costing a read and parse of the file each, the file is read again only when it is not the
/// one last read: its `FileStamp` (inode, size, modification time) has changed. Every write
/// replaces the file with a new one (temporary file, then rename), so a write by anyone changes
/// the stamp, and a miss costs one `stat` otherwise. This process's own writes are not
/// recorded as read: the next miss after one reads the file once more, which also picks up a
/// write that raced with it.
pub struct ClientRegistry {
    path: PathBuf,
    state: Mutex<Registry>,
}

struct Registry {
    sessions: Vec<Session>,
    /// The file as last read; `None` before it has been read (or while it does not exist).
    read: Option<FileStamp>,
}

/// What tells one version of the file from another.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    /// Device and inode: a file put in place by rename is a new inode.
    #[cfg(unix)]
    inode: (u64, u64),
}

impl FileStamp {
    fn of(meta: &Metadata) -> FileStamp {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt as _;
        FileStamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            inode: (meta.dev(), meta.ino()),
        }
    }
}

/// The file's text and the stamp of the very file read (taken from the open file, so a
/// replacement in between cannot mix them up), or `None` when there is no file.
fn read_stamped(path: &Path) -> std::io::Result<Option<(String, FileStamp)>> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let stamp = FileStamp::of(&file.metadata()?);
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(Some((text, stamp)))
}

impl ClientRegistry {
    /// Loads the registry from `dir` (empty when there is none yet).
    pub fn open(dir: &Path) -> tdx_volt::Result<ClientRegistry> {
        let path = dir.join(CLIENTS_FILE);
        let mut registry = Registry {
            sessions: Vec::new(),
            read: None,
        };
        let read = read_stamped(&path).map_err(|e| {
            tdx_volt::Error::new(
                tdx_volt::ErrorKind::Io,
                format!("reading {}", path.display()),
            )
            .with_source(e)
        })?;
        if let Some((text, stamp)) = read {
            registry.sessions = parse(&text).map_err(|e| {
                tdx_volt::Error::new(tdx_volt::ErrorKind::Io, format!("{}: {e}", path.display()))
            })?;
            registry.read = Some(stamp);
        }
        Ok(ClientRegistry {
            path,
            state: Mutex::new(registry),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds (or replaces, by session id) a session and saves the registry. Sessions another
    /// process added to the file meanwhile (`volt-emulator client`) are kept.
    pub fn insert(&self, session: Session) -> tdx_volt::Result<()> {
        let mut registry = self.lock();
        self.merge_from_disk(&mut registry);
        let sessions = &mut registry.sessions;
        sessions.retain(|s| s.session_id != session.session_id);
        sessions.push(session);
        write_atomic(&self.path, to_text(sessions).as_bytes(), Access::Private)
    }

    /// Adds the sessions in the file that are not in memory (issued by another process), when
    /// the file is not the one last read.
    fn merge_from_disk(&self, registry: &mut Registry) {
        let current = std::fs::metadata(&self.path)
            .ok()
            .map(|m| FileStamp::of(&m));
        if current.is_none() || current == registry.read {
            return;
        }
        let Ok(Some((text, stamp))) = read_stamped(&self.path) else {
            return;
        };
        // A file that does not parse is left to the next write to replace (and not read again
        // until then).
        registry.read = Some(stamp);
        if let Ok(on_disk) = parse(&text) {
            for s in on_disk {
                if !registry
                    .sessions
                    .iter()
                    .any(|m| m.session_id == s.session_id)
                {
                    registry.sessions.push(s);
                }
            }
        }
    }

    /// The session with this id.
    pub fn by_session(&self, session_id: &str) -> Option<Session> {
        let mut registry = self.lock();
        let find = |list: &[Session]| list.iter().find(|s| s.session_id == session_id).cloned();
        if let Some(found) = find(&registry.sessions) {
            return Some(found);
        }
        // Not known here: perhaps issued by `volt-emulator client` since this process started.
        self.merge_from_disk(&mut registry);
        find(&registry.sessions)
    }

    /// The first session whose client key has this fingerprint
    /// ([`PublicKey::fingerprint`]): how the older websocket protocol names its caller (the
    /// token header's `kid`) when the token has no `sub`.
    pub fn by_fingerprint(&self, fingerprint: &str) -> Option<Session> {
        let mut registry = self.lock();
        let find = |list: &[Session]| {
            list.iter()
                .find(|s| {
                    PublicKey::from_pem(&s.public_key_pem)
                        .and_then(|k| k.fingerprint())
                        .is_ok_and(|f| f == fingerprint)
                })
                .cloned()
        };
        if let Some(found) = find(&registry.sessions) {
            return Some(found);
        }
        self.merge_from_disk(&mut registry);
        find(&registry.sessions)
    }

    /// The session whose issued certificate is exactly this DER.
    pub fn by_certificate(&self, der: &[u8]) -> Option<Session> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        self.lock()
            .sessions
            .iter()
            .find(|s| !s.cert_der_b64.is_empty() && s.cert_der_b64 == b64)
            .cloned()
    }

    /// The first session of a client.
    pub fn by_client(&self, client_id: &str) -> Option<Session> {
        self.lock()
            .sessions
            .iter()
            .find(|s| s.client_id == client_id)
            .cloned()
    }

    /// The newest session carrying this identity DID.
    pub fn by_identity_did(&self, did: &str) -> Option<Session> {
        self.lock()
            .sessions
            .iter()
            .rev()
            .find(|s| !s.identity_did.is_empty() && s.identity_did == did)
            .cloned()
    }

    /// The first session registered for this public key.
    pub fn by_public_key(&self, key: &PublicKey) -> Option<Session> {
        self.lock()
            .sessions
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

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str) -> Session {
        Session {
            session_id: id.to_owned(),
            client_id: format!("client-{id}"),
            client_name: "test".to_owned(),
            public_key_pem: "-----BEGIN PUBLIC KEY-----".to_owned(),
            home_id: String::new(),
            identity_did: String::new(),
            cert_pem: String::new(),
            cert_der_b64: String::new(),
        }
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "volt-clients-{}",
            crate::services::resources::new_id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn sessions_written_by_another_process_are_found_and_misses_do_not_reread() {
        let dir = tempdir();
        let served = ClientRegistry::open(&dir).unwrap();
        served.insert(session("s1")).unwrap();
        // `volt-emulator client` in another process: its own registry on the same file.
        let other = ClientRegistry::open(&dir).unwrap();
        other.insert(session("s2")).unwrap();

        assert_eq!(served.by_session("s2").unwrap().client_id, "client-s2");
        assert!(served.by_session("nobody").is_none());
        // The file is the one last read: further misses stat it, and read nothing.
        let on_disk = std::fs::metadata(dir.join(CLIENTS_FILE)).unwrap();
        assert_eq!(served.lock().read, Some(FileStamp::of(&on_disk)));
        assert!(served.by_session("nobody").is_none());

        // A later write by the other process is seen at the next miss.
        other.insert(session("s3")).unwrap();
        assert!(served.by_session("s3").is_some());
        // Both processes' sessions survive either one's write.
        served.insert(session("s4")).unwrap();
        let reopened = ClientRegistry::open(&dir).unwrap();
        for id in ["s1", "s2", "s3", "s4"] {
            assert!(reopened.by_session(id).is_some(), "{id}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
