//! Saving what Authenticate granted into the configuration file the client was loaded from:
//! only the credential's session id, certificate, CA chain and identity DID change; every
//! other field, known to this crate or not, stays as it is in the file. The file is replaced
//! atomically (a temporary file in the same directory, synced, then renamed over it) and, on
//! Unix, readable by its owner only.

use std::io::Write as _;
use std::path::Path;

use serde_json::Value;
use zeroize::{Zeroize as _, Zeroizing};

use crate::protocol::config::Credential;
use crate::{Error, ErrorKind, Result};

/// What a PERMIT grants.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub session_id: String,
    pub cert: Option<String>,
    pub ca: Option<String>,
    pub identity_did: Option<String>,
}

impl Grant {
    /// Writes the grant into a loaded credential (as [`save_grant`] does into the file).
    pub(crate) fn apply(&self, credential: &mut Credential) {
        credential.session_id = Some(self.session_id.clone());
        if let Some(cert) = &self.cert {
            credential.cert = Some(cert.clone());
        }
        if let Some(ca) = &self.ca {
            credential.ca = Some(ca.clone());
        }
        // A session-only grant names no DID and leaves the credential's as it was.
        if let Some(did) = &self.identity_did {
            credential.identity_did = Some(did.clone());
        }
    }
}

/// Writes `grant` into the credential of the configuration file at `path`.
pub(crate) fn save_grant(path: &Path, grant: &Grant) -> Result<()> {
    let io = |what: &str, e: std::io::Error| {
        Error::new(ErrorKind::Io, format!("{what} {}", path.display())).with_source(e)
    };
    // The file holds the private key: every copy of its text is wiped.
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| io("reading", e))?);
    let mut root: Value = serde_json::from_str(&text).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("{}: no longer valid JSON", path.display()),
        )
        .with_source(e)
    })?;
    let result = update(&mut root, grant).and_then(|()| {
        let mut out = Zeroizing::new(serde_json::to_string_pretty(&root).map_err(|e| {
            Error::new(ErrorKind::Config, "the configuration does not serialize").with_source(e)
        })?);
        out.push('\n');
        replace(path, out.as_bytes()).map_err(|e| io("writing", e))
    });
    wipe(&mut root);
    result
}

fn update(root: &mut Value, grant: &Grant) -> Result<()> {
    let credential = root
        .get_mut("credential")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| Error::new(ErrorKind::Config, "credential: missing from the file"))?;
    credential.insert("session_id".into(), grant.session_id.clone().into());
    if let Some(cert) = &grant.cert {
        credential.insert("cert".into(), cert.clone().into());
    }
    if let Some(ca) = &grant.ca {
        credential.insert("ca".into(), ca.clone().into());
    }
    if let Some(did) = &grant.identity_did {
        credential.insert("identity_did".into(), did.clone().into());
    }
    Ok(())
}

/// Replaces `path` with `contents`: written to a temporary file beside it (owner-only), synced,
/// renamed over the original, and the directory synced.
fn replace(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use rand_core::RngCore as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{:016x}.tmp", rand_core::OsRng.next_u64()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&temp).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&temp, path)) {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Zeroizes every string of a JSON value (the configuration holds the private key).
fn wipe(value: &mut Value) {
    match value {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Object(map) => map.values_mut().for_each(wipe),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            session_id: "s-1".into(),
            cert: Some("CERT".into()),
            ca: Some("CHAIN".into()),
            identity_did: Some("did:volt:new".into()),
        }
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tdx-volt-config-file-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn grant_is_saved_and_other_fields_kept() {
        let dir = temp_dir("keep");
        let path = dir.join("client.config.json");
        let original = serde_json::json!({
            "client_name": "c",
            "credential": {"client_id": "id", "key": "KEY", "identity_did": "did:volt:old",
                           "custom": [1, {"x": true}]},
            "volt": {"id": "did:volt:v", "future_field": {"a": 1}},
            "top_level_extra": "kept"
        });
        std::fs::write(&path, serde_json::to_string(&original).unwrap()).unwrap();
        save_grant(&path, &grant()).unwrap();
        let saved: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut expected = original.clone();
        let credential = expected["credential"].as_object_mut().unwrap();
        credential.insert("session_id".into(), "s-1".into());
        credential.insert("cert".into(), "CERT".into());
        credential.insert("ca".into(), "CHAIN".into());
        credential.insert("identity_did".into(), "did:volt:new".into());
        assert_eq!(saved, expected);

        // A session-only grant leaves the DID as it was.
        let session_only = Grant {
            identity_did: None,
            session_id: "s-2".into(),
            ..grant()
        };
        save_grant(&path, &session_only).unwrap();
        let saved: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(saved["credential"]["identity_did"], "did:volt:new");
        assert_eq!(saved["credential"]["session_id"], "s-2");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("client.config.json")]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_without_credential_is_left_alone() {
        let dir = temp_dir("bad");
        let path = dir.join("c.json");
        std::fs::write(&path, r#"{"volt": {}}"#).unwrap();
        assert!(save_grant(&path, &grant()).unwrap_err().is_config());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), r#"{"volt": {}}"#);
        std::fs::write(&path, "not json").unwrap();
        assert!(save_grant(&path, &grant()).unwrap_err().is_config());
        assert!(save_grant(&dir.join("missing.json"), &grant())
            .unwrap_err()
            .is_io());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
