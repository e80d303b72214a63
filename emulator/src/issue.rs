//! Client configurations: the JSON a Volt issues to a client (credential + how to reach and
//! trust the Volt), as the official clients read it.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tdx_volt::protocol::keys::DEFAULT_PBKDF2_ITERATIONS;
use tdx_volt::{Error, ErrorKind, PublicKey, Result};

use crate::clients::Session;
use crate::files::{read_optional, write_atomic, Access};
use crate::identity::{Era, VoltIdentity};
use crate::services::resources::new_id;
use crate::services::Services;

/// The configuration written at every `serve`.
pub const DEFAULT_CONFIG_FILE: &str = "client.config.json";
/// Where `serve` records its bound addresses, for `volt-emulator client`.
pub const ENDPOINTS_FILE: &str = "endpoints.json";
/// The client name of the configuration written at `serve`.
pub const DEFAULT_CLIENT_NAME: &str = "volt-emulator client";

/// How clients reach this Volt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// Native gRPC, `host:port`.
    pub address: String,
    /// The websocket gateway, `https://host:port` (or `http://` in plain mode).
    pub http_address: String,
}

impl Endpoints {
    /// Records the endpoints in the data directory.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = json!({ "address": self.address, "http_address": self.http_address });
        write_atomic(
            &dir.join(ENDPOINTS_FILE),
            text.to_string().as_bytes(),
            Access::Public,
        )
    }

    /// The endpoints the last `serve` in this directory recorded.
    pub fn load(dir: &Path) -> Result<Endpoints> {
        let path = dir.join(ENDPOINTS_FILE);
        let text = read_optional(&path)?.ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "{} not found: run `volt-emulator serve` in this directory first",
                    path.display()
                ),
            )
        })?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| Error::new(ErrorKind::Config, format!("{}: {e}", path.display())))?;
        let field = |name: &str| {
            value
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Config,
                        format!("{}: missing {name}", path.display()),
                    )
                })
        };
        Ok(Endpoints {
            address: field("address")?,
            http_address: field("http_address")?,
        })
    }
}

/// Issues a new client: a fresh key of the Volt's era (Ed25519, or RSA-2048 for an RSA-era
/// Volt), client id, session and home folder. With a passphrase the key is written encrypted
/// (PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC). Returns the configuration JSON.
///
/// `create_home`: make the client's home folder now. A separate process issuing a client for
/// a running emulator must not write the resource tree (the server owns it); the server then
/// creates the home folder on the client's first call.
pub fn issue_client(
    svc: &Services,
    endpoints: &Endpoints,
    name: &str,
    passphrase: Option<&str>,
    create_home: bool,
) -> Result<Value> {
    let key = svc.identity().era().generate_key()?;
    let key_pem = match passphrase {
        Some(p) => key.to_encrypted_pkcs8_pem(p, DEFAULT_PBKDF2_ITERATIONS)?,
        None => key.to_pkcs8_pem()?.to_string(),
    };
    issue_client_for_key(
        svc,
        endpoints,
        name,
        &key.public_key(),
        &key_pem,
        create_home,
    )
}

/// Issues a new client whose key the caller already has: `public_key` is registered for a new
/// client id, session and home folder, and the configuration carries `key_pem` exactly as
/// given (encrypted or not; it is not read). Returns the configuration JSON.
pub fn issue_client_for_key(
    svc: &Services,
    endpoints: &Endpoints,
    name: &str,
    public_key: &PublicKey,
    key_pem: &str,
    create_home: bool,
) -> Result<Value> {
    let client_id = new_id();
    let session_id = new_id();
    let home_id = if create_home {
        svc.resources()
            .create_home_folder_blocking(&client_id, name)
            .map_err(|f| Error::new(ErrorKind::Io, f.to_string()))?
    } else {
        String::new()
    };
    svc.clients().insert(Session {
        session_id: session_id.clone(),
        client_id: client_id.clone(),
        client_name: name.to_owned(),
        public_key_pem: public_key.to_spki_pem()?,
        home_id,
        identity_did: String::new(),
        cert_pem: String::new(),
        cert_der_b64: String::new(),
        revoked: false,
    })?;
    Ok(json!({
        "client_name": name,
        "credential": {
            "client_id": client_id,
            "key": key_pem,
            "session_id": session_id,
        },
        "volt": volt_section(svc.identity(), endpoints)?,
    }))
}

/// How to reach and trust the Volt; an RSA-era Volt's also carries its `fingerprint`, as the
/// configurations such Volts issued did.
pub fn volt_section(identity: &VoltIdentity, endpoints: &Endpoints) -> Result<Value> {
    let mut volt = json!({
        "id": identity.id(),
        "display_name": identity.display_name(),
        "address": endpoints.address,
        "http_address": endpoints.http_address,
        "public_key": identity.signing_key().public_key().to_spki_pem()?,
        "ca_pem": identity.ca_pem(),
    });
    if identity.era() == Era::Legacy {
        if let Some(obj) = volt.as_object_mut() {
            obj.insert("fingerprint".into(), Value::from(identity.fingerprint()?));
        }
    }
    Ok(volt)
}

/// Points a configuration at this Volt through its own relay endpoint: `volt.relay` names
/// the emulator's gRPC address (where `VoltAPI/Invoke` tunnels end) and its gateway (where
/// calls carry the route in their meta `d`), trusted through the Volt's CA. The official
/// clients and ours then reach the Volt as they would through a relay.
pub fn make_relayed(config: &mut Value, identity: &VoltIdentity, endpoints: &Endpoints) {
    if let Some(volt) = config.get_mut("volt").and_then(Value::as_object_mut) {
        volt.insert(
            "relay".into(),
            json!({
                "address": endpoints.address,
                "http_address": endpoints.http_address,
                "ca_pem": identity.ca_pem(),
            }),
        );
    }
}

/// Writes `DIR/client.config.json`: when it already holds a session this Volt knows, only the
/// `volt` section is refreshed (addresses change between runs) and everything else is kept;
/// otherwise a new client is issued.
pub fn write_default_config(svc: &Services, endpoints: &Endpoints) -> Result<PathBuf> {
    let path = svc.dir().join(DEFAULT_CONFIG_FILE);
    let existing = read_optional(&path)?
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .filter(|config| {
            config
                .pointer("/credential/session_id")
                .and_then(Value::as_str)
                .is_some_and(|s| svc.clients().by_session(s).is_some())
        });
    let config = match existing {
        Some(mut config) => {
            // A directory from before access control named no owner: the default client is.
            if let Some(client_id) = config
                .pointer("/credential/client_id")
                .and_then(Value::as_str)
            {
                claim_volt_owner(svc, client_id)?;
            }
            if let Some(obj) = config.as_object_mut() {
                obj.insert("volt".into(), volt_section(svc.identity(), endpoints)?);
            }
            config
        }
        None => {
            let config = issue_client(svc, endpoints, DEFAULT_CLIENT_NAME, None, true)?;
            if let Some(client_id) = config
                .pointer("/credential/client_id")
                .and_then(Value::as_str)
            {
                claim_volt_owner(svc, client_id)?;
            }
            config
        }
    };
    write_config(&path, &config)?;
    Ok(path)
}

/// Names `client_id` the Volt's owner, unless an owner is named already.
fn claim_volt_owner(svc: &Services, client_id: &str) -> Result<()> {
    svc.access()
        .claim_volt_owner_blocking(client_id)
        .map_err(|f| Error::new(ErrorKind::Io, f.to_string()))
}

/// Writes a configuration file, readable by the owner only (it holds a private key).
pub fn write_config(path: &Path, config: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(config)
        .map_err(|e| Error::new(ErrorKind::Config, format!("configuration: {e}")))?;
    write_atomic(path, text.as_bytes(), Access::Private)
}
