//! The sessions this Volt has issued: which client key signs for which session, the client's
//! home folder, and the certificate issued by Authenticate. Kept in `DIR/clients.json`.

use std::fs::Metadata;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use serde_json::{json, Value};
use tdx_volt::PublicKey;

use crate::files::{write_atomic, Access, FileLock};

/// The file the sessions are kept in.
pub const CLIENTS_FILE: &str = "clients.json";
/// The lock file every writer of [`CLIENTS_FILE`], in any process, holds while it reads,
/// changes and replaces it.
pub const CLIENTS_LOCK_FILE: &str = "clients.json.lock";

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
    /// Revoked (`volt-emulator revoke`, `Emulator::revoke_session`): every call with this
    /// session is refused from then on. Once revoked, a session stays revoked.
    pub revoked: bool,
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
/// recorded as read: the next miss after one reads the file once more.
///
/// Revocation must reach a running emulator from another process too, so every lookup by
/// session, certificate or key fingerprint first checks the file's stamp (one `stat`) and
/// merges what changed, revocations included; [`ClientRegistry::refresh`] does the same for a
/// caller that only wants to notice revocations, and [`ClientRegistry::revocations`] tells
/// whoever watches that one was noticed.
///
/// Writers take turns: an insert holds this process's lock on the registry and then an
/// exclusive lock on `clients.json.lock` ([`FileLock`]) while it reads the file afresh, adds its
/// session and replaces the file, so two processes inserting at once never drop each other's
/// sessions. Readers take no file lock: the file is always whole, being replaced by rename.
pub struct ClientRegistry {
    path: PathBuf,
    lock_path: PathBuf,
    state: Mutex<Registry>,
    /// Counts the revocations noticed (made here or read from the file).
    revoked: tokio::sync::watch::Sender<u64>,
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
            lock_path: dir.join(CLIENTS_LOCK_FILE),
            state: Mutex::new(registry),
            revoked: tokio::sync::watch::Sender::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds (or replaces, by session id) a session and saves the registry. Sessions another
    /// process added to the file meanwhile (`volt-emulator client`) are kept.
    pub fn insert(&self, session: Session) -> tdx_volt::Result<()> {
        let mut registry = self.lock();
        let _turn = FileLock::acquire(&self.lock_path)?;
        // Under the lock, read what is on disk whatever its stamp says: the file cannot change
        // until this write is done.
        registry.read = None;
        self.merge_from_disk(&mut registry);
        let sessions = &mut registry.sessions;
        let mut session = session;
        // A copy taken before a revocation must not undo it.
        session.revoked |= sessions
            .iter()
            .any(|s| s.session_id == session.session_id && s.revoked);
        sessions.retain(|s| s.session_id != session.session_id);
        sessions.push(session);
        write_atomic(&self.path, to_text(sessions).as_bytes(), Access::Private)
    }

    /// Revokes a session and saves the registry; `Ok(false)` when there is no such session.
    /// Works on the file whether or not an emulator is serving it: a running one notices at
    /// its next lookup or [`ClientRegistry::refresh`].
    pub fn revoke(&self, session_id: &str) -> tdx_volt::Result<bool> {
        let mut registry = self.lock();
        let _turn = FileLock::acquire(&self.lock_path)?;
        registry.read = None;
        self.merge_from_disk(&mut registry);
        let Some(session) = registry
            .sessions
            .iter_mut()
            .find(|s| s.session_id == session_id)
        else {
            return Ok(false);
        };
        if !session.revoked {
            session.revoked = true;
            write_atomic(
                &self.path,
                to_text(&registry.sessions).as_bytes(),
                Access::Private,
            )?;
            self.revoked.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(true)
    }

    /// Whether the session is revoked (an unknown session is not).
    pub fn is_revoked(&self, session_id: &str) -> bool {
        self.by_session(session_id).is_some_and(|s| s.revoked)
    }

    /// Merges what another process changed in the file, if anything (one `stat` otherwise):
    /// for noticing revocations while no call looks a session up.
    pub fn refresh(&self) {
        let mut registry = self.lock();
        self.merge_from_disk(&mut registry);
    }

    /// Changes each time a revocation is noticed: a live stream watches it and then checks
    /// its own session.
    pub fn revocations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revoked.subscribe()
    }

    /// Adds the sessions in the file that are not in memory (issued by another process), and
    /// the revocations it records, when the file is not the one last read.
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
        let Ok(on_disk) = parse(&text) else {
            return;
        };
        let mut noticed = false;
        for s in on_disk {
            match registry
                .sessions
                .iter_mut()
                .find(|m| m.session_id == s.session_id)
            {
                Some(known) => {
                    noticed |= s.revoked && !known.revoked;
                    known.revoked |= s.revoked;
                }
                None => {
                    noticed |= s.revoked;
                    registry.sessions.push(s);
                }
            }
        }
        if noticed {
            self.revoked.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The session with this id.
    pub fn by_session(&self, session_id: &str) -> Option<Session> {
        let mut registry = self.lock();
        // Perhaps issued, or revoked, by another process since this one last read the file.
        self.merge_from_disk(&mut registry);
        registry
            .sessions
            .iter()
            .find(|s| s.session_id == session_id)
            .cloned()
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
        self.merge_from_disk(&mut registry);
        find(&registry.sessions)
    }

    /// The session whose issued certificate is exactly this DER.
    pub fn by_certificate(&self, der: &[u8]) -> Option<Session> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let mut registry = self.lock();
        self.merge_from_disk(&mut registry);
        registry
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

    /// Every session, in the order they were issued (sessions another process added to the
    /// file are merged in first).
    pub fn all(&self) -> Vec<Session> {
        let mut registry = self.lock();
        self.merge_from_disk(&mut registry);
        registry.sessions.clone()
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
                "revoked": s.revoked,
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
                revoked: v.get("revoked").and_then(Value::as_bool).unwrap_or(false),
            };
            if s.session_id.is_empty() || s.public_key_pem.is_empty() {
                return Err("a session without session_id or public_key".to_owned());
            }
            Ok(s)
        })
        .collect()
}

#[cfg(test)]
mod tests;
