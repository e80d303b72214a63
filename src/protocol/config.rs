//! The client configuration JSON a Volt issues.
//!
//! ```json
//! { "client_name": "...",
//!   "credential": { "client_id", "key", "session_id"?, "cert"?, "ca"?, "identity_did"?,
//!                   "challenge_code"? },
//!   "volt": { "id", "display_name"?, "address"?, "http_address"?, "public_key"?, "ca_pem"?,
//!             "fingerprint"?, "relay"?: "https://..." | { "http_address"?, "address"?,
//!             "ca_pem"?, "cloud"? } },
//!   "p"?: "passphrase of an encrypted key" }
//! ```
//!
//! Fields this crate does not know are kept and written back by [`ClientConfig::to_json`].
//! Every error names the offending field (`volt.http_address: missing scheme`). The key and
//! the passphrase are held in zeroizing buffers and never shown by `Debug`.

use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::error::{Error, ErrorKind, Result};
use super::keys::{self, PrivateKey, PublicKey};

/// A loaded client configuration.
#[derive(Clone)]
pub struct ClientConfig {
    client_name: Option<String>,
    credential: Credential,
    volt: VoltInfo,
    passphrase: Option<Zeroizing<String>>,
    extra: Map<String, Value>,
}

/// The `credential` section: who the client is.
#[derive(Clone)]
#[non_exhaustive]
pub struct Credential {
    /// `client_id`.
    pub client_id: String,
    key: Zeroizing<String>,
    /// `session_id`, set once the Volt has accepted the client.
    pub session_id: Option<String>,
    /// `cert`: client certificate PEM for mutual TLS.
    pub cert: Option<String>,
    /// `ca`: CA chain PEM returned by Authenticate.
    pub ca: Option<String>,
    /// `identity_did`.
    pub identity_did: Option<String>,
    /// `challenge_code` issued by the Volt.
    pub challenge_code: Option<String>,
    extra: Map<String, Value>,
}

/// The `volt` section: which Volt to reach and how to trust it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VoltInfo {
    /// `id`: the Volt's DID, the audience of identity tokens.
    pub id: String,
    /// `display_name`.
    pub display_name: Option<String>,
    /// `address`: `host:port` of the native gRPC endpoint.
    pub address: Option<String>,
    /// `http_address`: `http(s)://host:port` of the websocket gateway.
    pub http_address: Option<String>,
    /// `public_key`: SPKI PEM of the Volt signing key.
    pub public_key: Option<String>,
    /// `ca_pem`: the Volt CA certificate.
    pub ca_pem: Option<String>,
    /// `fingerprint`: relay routing fingerprint.
    pub fingerprint: Option<String>,
    /// `relay`: a relay to go through.
    pub relay: Option<Relay>,
    extra: Map<String, Value>,
}

/// The `volt.relay` value: a URL, or an object.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Relay {
    /// The relay's websocket gateway URL.
    Url(String),
    /// A relay described by its addresses.
    Detailed {
        /// `http_address` of the relay's gateway.
        http_address: Option<String>,
        /// `address` of the relay's gRPC endpoint.
        address: Option<String>,
        /// `ca_pem` of the relay.
        ca_pem: Option<String>,
        /// `cloud`: whether the relay presents a public certificate.
        cloud: Option<bool>,
        /// Other fields, preserved.
        extra: Map<String, Value>,
    },
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("client_name", &self.client_name)
            .field("credential", &self.credential)
            .field("volt", &self.volt)
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("client_id", &self.client_id)
            .field("key", &"<redacted>")
            .field("session_id", &self.session_id)
            .field("cert", &self.cert.as_ref().map(|_| "<pem>"))
            .field("ca", &self.ca.as_ref().map(|_| "<pem>"))
            .field("identity_did", &self.identity_did)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Reads a configuration file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<ClientConfig> {
        let path = path.as_ref();
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("reading configuration {}", path.display()),
            )
            .with_source(e)
        })?);
        ClientConfig::from_json_str(&text)
    }

    /// Parses configuration JSON text.
    pub fn from_json_str(text: &str) -> Result<ClientConfig> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            Error::config(format!(
                "not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        ClientConfig::from_value(value)
    }

    /// Reads a configuration from a JSON value.
    pub fn from_value(value: Value) -> Result<ClientConfig> {
        let Value::Object(mut root) = value else {
            return Err(Error::config("the configuration must be a JSON object"));
        };
        let client_name = opt_string(&mut root, "client_name", "client_name")?;
        let passphrase = opt_string(&mut root, "p", "p")?.map(Zeroizing::new);
        let credential = match root.remove("credential") {
            Some(Value::Object(obj)) => Credential::from_map(obj)?,
            Some(_) => return Err(Error::config("credential: must be an object")),
            None => return Err(Error::config("credential: missing")),
        };
        let volt = match root.remove("volt") {
            Some(Value::Object(obj)) => VoltInfo::from_map(obj)?,
            Some(_) => return Err(Error::config("volt: must be an object")),
            None => return Err(Error::config("volt: missing")),
        };
        Ok(ClientConfig {
            client_name,
            credential,
            volt,
            passphrase,
            extra: root,
        })
    }

    /// The configuration as JSON, unknown fields included. The result holds the private key.
    pub fn to_json(&self) -> Value {
        let mut root = self.extra.clone();
        put(&mut root, "client_name", &self.client_name);
        root.insert("credential".into(), Value::Object(self.credential.to_map()));
        root.insert("volt".into(), Value::Object(self.volt.to_map()));
        if let Some(p) = &self.passphrase {
            root.insert("p".into(), Value::from(p.as_str()));
        }
        Value::Object(root)
    }

    /// Pretty JSON text of [`ClientConfig::to_json`] (holds the private key), zeroized on drop.
    /// The text is written into a buffer reserved up front, so growth leaves no stray copy.
    pub fn to_json_string(&self) -> Zeroizing<String> {
        let value = self.to_json();
        let mut out = Zeroizing::new(Vec::with_capacity(json_size_hint(&value)));
        if serde_json::to_writer_pretty(&mut *out, &value).is_err() {
            return Zeroizing::new(String::new());
        }
        Zeroizing::new(String::from_utf8(std::mem::take(&mut *out)).unwrap_or_default())
    }

    /// `client_name`.
    pub fn client_name(&self) -> Option<&str> {
        self.client_name.as_deref()
    }

    /// The credential section.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// The credential section, for updating (for example after Authenticate).
    pub fn credential_mut(&mut self) -> &mut Credential {
        &mut self.credential
    }

    /// The volt section.
    pub fn volt(&self) -> &VoltInfo {
        &self.volt
    }

    /// Whether the configuration carries a passphrase (`p`).
    pub fn has_passphrase(&self) -> bool {
        self.passphrase.is_some()
    }

    /// Decodes the client key. The passphrase for an encrypted key is `explicit`, else the
    /// config's `p`, else the environment variable `VOLT_KEY_PASSPHRASE`.
    pub fn private_key(&self, explicit: Option<&str>) -> Result<PrivateKey> {
        let passphrase =
            keys::resolve_passphrase(explicit, self.passphrase.as_ref().map(|p| p.as_str()));
        PrivateKey::from_pem(
            &self.credential.key,
            passphrase.as_ref().map(|p| p.as_str()),
        )
        .map_err(|e| e.in_field("credential.key"))
    }

    /// The Volt's signing key: `volt.public_key`, else the key of the `volt.ca_pem`
    /// certificate.
    pub fn volt_public_key(&self) -> Result<PublicKey> {
        if let Some(pem) = &self.volt.public_key {
            return PublicKey::from_pem(pem).map_err(|e| e.in_field("volt.public_key"));
        }
        if let Some(pem) = &self.volt.ca_pem {
            return PublicKey::from_certificate_pem(pem).map_err(|e| e.in_field("volt.ca_pem"));
        }
        Err(Error::config(
            "volt.public_key: missing, and there is no volt.ca_pem to take it from",
        ))
    }

    /// The Volt fingerprint for relay routing: `volt.fingerprint`, else the fingerprint of
    /// the Volt public key ([`PublicKey::fingerprint`]).
    pub fn volt_fingerprint(&self) -> Result<String> {
        if let Some(fp) = &self.volt.fingerprint {
            return Ok(fp.clone());
        }
        self.volt_public_key()?.fingerprint()
    }

    /// The websocket gateway URL, built as the official client builds it: the relay (a string,
    /// or its `http_address`) else `volt.http_address`; `http` becomes `ws`, `https` becomes
    /// `wss`; `/api` is appended.
    pub fn websocket_url(&self) -> Result<String> {
        let (field, base) = match &self.volt.relay {
            Some(Relay::Url(url)) => ("volt.relay", Some(url)),
            Some(Relay::Detailed {
                http_address: Some(url),
                ..
            }) => ("volt.relay.http_address", Some(url)),
            _ => ("volt.http_address", self.volt.http_address.as_ref()),
        };
        let base = base.ok_or_else(|| {
            Error::config("volt.http_address: missing (and no volt.relay is set)")
        })?;
        let rest = scheme_rest(base).map_err(|m| Error::config(format!("{field}: {m}")))?;
        let scheme = if base.starts_with("https") {
            "wss"
        } else {
            "ws"
        };
        Ok(format!("{scheme}://{}/api", rest.trim_end_matches('/')))
    }

    /// Whether calls go through a relay.
    pub fn is_relayed(&self) -> bool {
        self.volt.relay.is_some()
    }
}

impl Credential {
    fn from_map(mut obj: Map<String, Value>) -> Result<Credential> {
        let client_id = req_string(&mut obj, "client_id", "credential.client_id")?;
        let key = Zeroizing::new(req_string(&mut obj, "key", "credential.key")?);
        if !key.contains("PRIVATE KEY-----") {
            return Err(Error::config("credential.key: not a PEM private key"));
        }
        Ok(Credential {
            client_id,
            key,
            session_id: opt_string(&mut obj, "session_id", "credential.session_id")?,
            cert: opt_string(&mut obj, "cert", "credential.cert")?,
            ca: opt_string(&mut obj, "ca", "credential.ca")?,
            identity_did: opt_string(&mut obj, "identity_did", "credential.identity_did")?,
            challenge_code: opt_string(&mut obj, "challenge_code", "credential.challenge_code")?,
            extra: obj,
        })
    }

    fn to_map(&self) -> Map<String, Value> {
        let mut obj = self.extra.clone();
        obj.insert("client_id".into(), Value::from(self.client_id.as_str()));
        obj.insert("key".into(), Value::from(self.key.as_str()));
        put(&mut obj, "session_id", &self.session_id);
        put(&mut obj, "cert", &self.cert);
        put(&mut obj, "ca", &self.ca);
        put(&mut obj, "identity_did", &self.identity_did);
        put(&mut obj, "challenge_code", &self.challenge_code);
        obj
    }

    /// The private key PEM text, exactly as configured.
    pub fn key_pem(&self) -> &str {
        &self.key
    }

    /// Replaces the private key PEM.
    pub fn set_key_pem(&mut self, pem: impl Into<String>) {
        self.key = Zeroizing::new(pem.into());
    }
}

impl VoltInfo {
    fn from_map(mut obj: Map<String, Value>) -> Result<VoltInfo> {
        let id = req_string(&mut obj, "id", "volt.id")?;
        let address = opt_string(&mut obj, "address", "volt.address")?;
        if let Some(a) = &address {
            check_host_port(a).map_err(|m| Error::config(format!("volt.address: {m}")))?;
        }
        let http_address = opt_string(&mut obj, "http_address", "volt.http_address")?;
        if let Some(a) = &http_address {
            scheme_rest(a).map_err(|m| Error::config(format!("volt.http_address: {m}")))?;
        }
        let relay = match obj.remove("relay") {
            None | Some(Value::Null) => None,
            Some(Value::String(url)) => {
                scheme_rest(&url).map_err(|m| Error::config(format!("volt.relay: {m}")))?;
                Some(Relay::Url(url))
            }
            Some(Value::Object(mut r)) => {
                let http_address = opt_string(&mut r, "http_address", "volt.relay.http_address")?;
                if let Some(a) = &http_address {
                    scheme_rest(a)
                        .map_err(|m| Error::config(format!("volt.relay.http_address: {m}")))?;
                }
                let address = opt_string(&mut r, "address", "volt.relay.address")?;
                let ca_pem = opt_string(&mut r, "ca_pem", "volt.relay.ca_pem")?;
                let cloud = match r.remove("cloud") {
                    None | Some(Value::Null) => None,
                    Some(Value::Bool(b)) => Some(b),
                    Some(_) => return Err(Error::config("volt.relay.cloud: must be a boolean")),
                };
                Some(Relay::Detailed {
                    http_address,
                    address,
                    ca_pem,
                    cloud,
                    extra: r,
                })
            }
            Some(_) => {
                return Err(Error::config(
                    "volt.relay: must be a URL string or an object",
                ))
            }
        };
        Ok(VoltInfo {
            id,
            display_name: opt_string(&mut obj, "display_name", "volt.display_name")?,
            address,
            http_address,
            public_key: opt_string(&mut obj, "public_key", "volt.public_key")?,
            ca_pem: opt_string(&mut obj, "ca_pem", "volt.ca_pem")?,
            fingerprint: opt_string(&mut obj, "fingerprint", "volt.fingerprint")?,
            relay,
            extra: obj,
        })
    }

    fn to_map(&self) -> Map<String, Value> {
        let mut obj = self.extra.clone();
        obj.insert("id".into(), Value::from(self.id.as_str()));
        put(&mut obj, "display_name", &self.display_name);
        put(&mut obj, "address", &self.address);
        put(&mut obj, "http_address", &self.http_address);
        put(&mut obj, "public_key", &self.public_key);
        put(&mut obj, "ca_pem", &self.ca_pem);
        put(&mut obj, "fingerprint", &self.fingerprint);
        match &self.relay {
            None => {}
            Some(Relay::Url(url)) => {
                obj.insert("relay".into(), Value::from(url.as_str()));
            }
            Some(Relay::Detailed {
                http_address,
                address,
                ca_pem,
                cloud,
                extra,
            }) => {
                let mut r = extra.clone();
                put(&mut r, "http_address", http_address);
                put(&mut r, "address", address);
                put(&mut r, "ca_pem", ca_pem);
                if let Some(c) = cloud {
                    r.insert("cloud".into(), Value::Bool(*c));
                }
                obj.insert("relay".into(), Value::Object(r));
            }
        }
        obj
    }
}

/// An upper bound on the pretty JSON size of `value` (escapes and indentation included).
fn json_size_hint(value: &Value) -> usize {
    fn walk(v: &Value, depth: usize) -> usize {
        let indent = 2 * depth + 8;
        match v {
            Value::String(s) => 2 * s.len() + 8,
            Value::Array(items) => {
                items
                    .iter()
                    .map(|i| walk(i, depth + 1) + indent)
                    .sum::<usize>()
                    + 8
            }
            Value::Object(map) => {
                map.iter()
                    .map(|(k, i)| 2 * k.len() + walk(i, depth + 1) + indent)
                    .sum::<usize>()
                    + 8
            }
            _ => 32,
        }
    }
    walk(value, 0)
}

fn req_string(obj: &mut Map<String, Value>, key: &str, path: &str) -> Result<String> {
    match opt_string(obj, key, path)? {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => Err(Error::config(format!("{path}: must not be empty"))),
        None => Err(Error::config(format!("{path}: missing"))),
    }
}

fn opt_string(obj: &mut Map<String, Value>, key: &str, path: &str) -> Result<Option<String>> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::config(format!("{path}: must be a string"))),
    }
}

fn put(obj: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(v) = value {
        obj.insert(key.to_owned(), Value::from(v.as_str()));
    }
}

/// Checks `scheme://rest` with scheme http or https; returns `rest`.
fn scheme_rest(url: &str) -> std::result::Result<&str, &'static str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("missing scheme (expected http:// or https://)");
    };
    if !matches!(scheme, "http" | "https") {
        return Err("unsupported scheme (expected http or https)");
    }
    if rest.is_empty() || rest.starts_with('/') {
        return Err("missing host");
    }
    if rest.contains(['?', '#']) {
        return Err("must not contain a query or fragment");
    }
    Ok(rest)
}

fn check_host_port(addr: &str) -> std::result::Result<(), &'static str> {
    if addr.contains("://") {
        return Err("expected host:port without a scheme");
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err("expected host:port");
    };
    if host.is_empty() {
        return Err("missing host");
    }
    port.parse::<u16>()
        .map_err(|_| "port is not a number from 0 to 65535")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        let key = PrivateKey::from_ed25519_seed(&[8; 32]);
        let volt = PrivateKey::from_ed25519_seed(&[9; 32]);
        json!({
            "client_name": "test",
            "credential": {"client_id": "c1", "key": key.to_pkcs8_pem().unwrap().as_str(),
                           "session_id": "s1", "future_field": [1, 2]},
            "volt": {"id": "did:volt:1", "http_address": "https://127.0.0.1:9443/",
                     "public_key": volt.public_key().to_spki_pem().unwrap(),
                     "extra_volt": {"x": 1}},
            "top_level_unknown": true
        })
    }

    #[test]
    fn unknown_fields_survive_round_trip() {
        let cfg = ClientConfig::from_value(sample()).unwrap();
        assert_eq!(cfg.to_json(), sample());
    }

    #[test]
    fn websocket_url_rules() {
        let cfg = ClientConfig::from_value(sample()).unwrap();
        assert_eq!(cfg.websocket_url().unwrap(), "wss://127.0.0.1:9443/api");
        let mut v = sample();
        v["volt"]["relay"] = json!("http://relay:80");
        assert_eq!(
            ClientConfig::from_value(v.clone())
                .unwrap()
                .websocket_url()
                .unwrap(),
            "ws://relay:80/api"
        );
        v["volt"]["relay"] = json!({"http_address": "https://r.example"});
        assert_eq!(
            ClientConfig::from_value(v)
                .unwrap()
                .websocket_url()
                .unwrap(),
            "wss://r.example/api"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({"volt": {}}), "credential: missing"),
            (json!(3), "must be a JSON object"),
            (
                {
                    let mut v = sample();
                    v["volt"]["http_address"] = json!("127.0.0.1:1");
                    v
                },
                "volt.http_address: missing scheme",
            ),
            (
                {
                    let mut v = sample();
                    v["volt"]["http_address"] = json!("ftp://x");
                    v
                },
                "volt.http_address: unsupported scheme",
            ),
            (
                {
                    let mut v = sample();
                    v["volt"]["http_address"] = json!("https://h:1?x=1");
                    v
                },
                "volt.http_address: must not contain a query",
            ),
            (
                {
                    let mut v = sample();
                    v["volt"]["address"] = json!("x:port");
                    v
                },
                "volt.address: port is not a number",
            ),
            (
                {
                    let mut v = sample();
                    v["volt"].as_object_mut().unwrap().remove("id");
                    v
                },
                "volt.id: missing",
            ),
            (
                {
                    let mut v = sample();
                    v["credential"]["key"] = json!(5);
                    v
                },
                "credential.key: must be a string",
            ),
            (
                {
                    let mut v = sample();
                    v["volt"]["relay"] = json!(1);
                    v
                },
                "volt.relay: must be",
            ),
        ];
        for (value, want) in cases {
            let err = ClientConfig::from_value(value).unwrap_err();
            assert!(err.is_config(), "{err}");
            assert!(err.to_string().contains(want), "{err} !~ {want}");
        }
        let err = ClientConfig::from_json_str("{nope").unwrap_err();
        assert!(err.to_string().contains("line 1"));
    }

    #[test]
    fn debug_redacts_key_and_passphrase() {
        let mut v = sample();
        v["p"] = json!("hunter2");
        let cfg = ClientConfig::from_value(v).unwrap();
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"));
        assert!(!shown.contains("PRIVATE KEY"));
        assert!(!shown.contains(&cfg.credential().key_pem()[30..60]));
    }

    #[test]
    fn volt_key_falls_back_and_keys_decode() {
        let cfg = ClientConfig::from_value(sample()).unwrap();
        let volt = cfg.volt_public_key().unwrap();
        assert_eq!(volt, PrivateKey::from_ed25519_seed(&[9; 32]).public_key());
        assert!(cfg.private_key(None).is_ok());
        let mut v = sample();
        v["volt"].as_object_mut().unwrap().remove("public_key");
        let err = ClientConfig::from_value(v)
            .unwrap()
            .volt_public_key()
            .unwrap_err();
        assert!(err.to_string().contains("volt.public_key: missing"));
    }

    #[test]
    fn encrypted_key_uses_config_passphrase() {
        let key = PrivateKey::from_ed25519_seed(&[8; 32]);
        let mut v = sample();
        v["credential"]["key"] = json!(key.to_encrypted_pkcs8_pem("pw", 1000).unwrap());
        let cfg = ClientConfig::from_value(v.clone()).unwrap();
        assert!(cfg
            .private_key(Some("wrong"))
            .unwrap_err()
            .to_string()
            .contains("credential.key: "));
        assert_eq!(
            cfg.private_key(Some("pw")).unwrap().public_key(),
            key.public_key()
        );
        v["p"] = json!("pw");
        let cfg = ClientConfig::from_value(v).unwrap();
        assert_eq!(
            cfg.private_key(None).unwrap().public_key(),
            key.public_key()
        );
    }
}
