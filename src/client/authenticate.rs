//! [`VoltClient::authenticate`]: how a client without a session (or without a certificate)
//! gets one. It asks the Volt (`VoltAPI/Authenticate`), asks again while the decision is
//! pending, and on PERMIT keeps the session id, certificate and CA chain in the credential,
//! saves them to the configuration file the client was loaded from, and reconnects with them
//! (over gRPC, with mutual TLS).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Map, Value};
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::{config_file, VoltClient};
use crate::transport::Link;
use crate::{ClientConfig, Error, ErrorKind, KeyAlgorithm, Result};

/// How long to wait before asking again while the Volt's decision is pending: 10 s, as the
/// official clients do.
pub const DEFAULT_AUTH_POLL: Duration = Duration::from_secs(10);
/// How long [`VoltClient::authenticate`] waits in all for a pending decision: 10 minutes.
pub const DEFAULT_AUTH_WAIT: Duration = Duration::from_secs(600);
const MIN_AUTH_POLL: Duration = Duration::from_millis(10);
const MAX_AUTH_POLL: Duration = Duration::from_secs(86_400);

/// What to ask the Volt for when authenticating.
///
/// ```no_run
/// use tdx_volt::client::Authentication;
/// use tdx_volt::VoltClient;
///
/// # async fn demo() -> tdx_volt::Result<()> {
/// let client = VoltClient::from_file("client.config.json").await?;
/// let granted = client
///     .authenticate(Authentication::session_only().client_name("reporting job"))
///     .await?;
/// println!("session {}", granted.session_id());
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use]
pub struct Authentication {
    identity: Identity,
    client_name: Option<String>,
    host: Option<String>,
    exchange_token: Option<Zeroizing<String>>,
    challenge: Option<String>,
    poll_interval: Duration,
    max_wait: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Identity {
    /// The credential's DID when it has one, else a DID the Volt makes.
    Default,
    /// A session for the key alone (`public_key`).
    Session,
    /// A new DID made by the Volt (`did_public_key`).
    VoltDid,
    /// A DID the Volt already knows (`did`).
    Did(String),
    /// A DID of the client's own making (`did_document`, signed with the client key).
    OwnDid,
}

impl std::fmt::Debug for Authentication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authentication")
            .field("identity", &self.identity)
            .field("client_name", &self.client_name)
            .field("host", &self.host)
            .field(
                "exchange_token",
                &self.exchange_token.as_ref().map(|_| "<redacted>"),
            )
            .field("challenge", &self.challenge.as_ref().map(|_| "<redacted>"))
            .field("poll_interval", &self.poll_interval)
            .field("max_wait", &self.max_wait)
            .finish()
    }
}

impl Default for Authentication {
    fn default() -> Self {
        Authentication::with(Identity::Default)
    }
}

impl Authentication {
    fn with(identity: Identity) -> Authentication {
        Authentication {
            identity,
            client_name: None,
            host: None,
            exchange_token: None,
            challenge: None,
            poll_interval: DEFAULT_AUTH_POLL,
            max_wait: DEFAULT_AUTH_WAIT,
        }
    }

    /// As the official clients do by default: the credential's identity DID when it has one
    /// (`did`), else a new DID made by the Volt (`did_public_key`).
    pub fn new() -> Authentication {
        Authentication::default()
    }

    /// A session for the client key alone, with no DID (`public_key`).
    pub fn session_only() -> Authentication {
        Authentication::with(Identity::Session)
    }

    /// A new identity DID, made and kept by the Volt (`did_public_key`).
    pub fn volt_did() -> Authentication {
        Authentication::with(Identity::VoltDid)
    }

    /// A DID the Volt already knows for this key (`did`).
    pub fn did(did: impl Into<String>) -> Authentication {
        Authentication::with(Identity::Did(did.into()))
    }

    /// A new DID of the client's own: a DID document naming the client key, signed with it
    /// (`did_document` and `did_document_signature`).
    pub fn own_did() -> Authentication {
        Authentication::with(Identity::OwnDid)
    }

    /// The name the Volt shows for the client; the configuration's `client_name` by default.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = Some(name.into());
        self
    }

    /// The host name or address written into the client certificate (its SAN); none by
    /// default.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// A token issued elsewhere that the Volt exchanges for access (`exchange_token`).
    pub fn exchange_token(mut self, token: impl Into<String>) -> Self {
        self.exchange_token = Some(Zeroizing::new(token.into()));
        self
    }

    /// The challenge code the Volt issued (`challenge`); the credential's `challenge_code` by
    /// default.
    pub fn challenge(mut self, code: impl Into<String>) -> Self {
        self.challenge = Some(code.into());
        self
    }

    /// How long to wait between requests while the decision is pending;
    /// [`DEFAULT_AUTH_POLL`] by default (kept between 10 ms and one day; the wait in all is
    /// [`max_wait`](Self::max_wait)).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.clamp(MIN_AUTH_POLL, MAX_AUTH_POLL);
        self
    }

    /// How long to wait in all for a pending decision; [`DEFAULT_AUTH_WAIT`] by default.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }
}

/// What the Volt granted.
#[derive(Debug, Clone)]
pub struct Authenticated {
    session_id: String,
    identity_did: Option<String>,
    certificate: bool,
    response: Value,
}

impl Authenticated {
    /// The new session's id (now the `sub` of the client's tokens).
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The identity DID the Volt granted (or the client made, with
    /// [`Authentication::own_did`]); `None` for a session-only grant.
    pub fn identity_did(&self) -> Option<&str> {
        self.identity_did.as_deref()
    }

    /// Whether the Volt issued a client certificate (used for mutual TLS over gRPC).
    pub fn has_certificate(&self) -> bool {
        self.certificate
    }

    /// The Volt's last `AuthenticateResponse`, as proto3 JSON.
    pub fn response(&self) -> &Value {
        &self.response
    }
}

impl VoltClient {
    /// Asks the Volt for a session (and a client certificate), and waits for its decision.
    ///
    /// While the decision is pending (or a prompt awaits an administrator) the request is
    /// repeated every [`poll_interval`](Authentication::poll_interval), for at most
    /// [`max_wait`](Authentication::max_wait) in all (then a
    /// [`Timeout`](ErrorKind::Timeout) error). On PERMIT the credential gets the session id,
    /// the certificate, the CA chain and the identity DID; a client loaded from a file saves
    /// them into that file (atomically, owner-only permissions, other fields untouched); and
    /// the client reconnects with them, so later calls (from every clone) run in the new
    /// session, over mutual TLS on gRPC. Calls already open finish on the old connection.
    /// DENY is a [`Denied`](ErrorKind::Denied) error. Nothing is kept unless the new
    /// connection is made; concurrent calls keep their grants one after the other.
    pub async fn authenticate(&self, authentication: Authentication) -> Result<Authenticated> {
        self.authenticate_via(authentication, None).await
    }

    /// [`authenticate`](Self::authenticate), asking over `via` (a connection and the
    /// configuration it was made with) when given, else over the client's own connection.
    /// The grant is kept on top of that configuration. Renewing a refused session asks over
    /// a private connection that names no session, so that no other call goes out without
    /// one meanwhile.
    pub(crate) async fn authenticate_via(
        &self,
        authentication: Authentication,
        via: Option<(ClientConfig, Arc<dyn Link>)>,
    ) -> Result<Authenticated> {
        let (request, own_did) = self.authenticate_request(&authentication)?;
        let started = Instant::now();
        loop {
            let path = crate::protocol::grpc::AUTHENTICATE_PATH;
            let response = match &via {
                Some((_, connection)) => {
                    self.unary_once_on(connection.clone(), path, request.clone())
                        .await?
                }
                None => self.unary_once(path, request.clone()).await?,
            };
            match response.get("decision").and_then(decision) {
                Some(Decision::Permit) => {
                    let base = via.map(|(config, _)| config);
                    return self.keep_grant(response, own_did, base).await;
                }
                Some(Decision::Deny) => {
                    return Err(Error::new(
                        ErrorKind::Denied,
                        "the Volt denied the authentication request",
                    ))
                }
                Some(Decision::Wait) => {
                    let waited = started.elapsed();
                    if waited.saturating_add(authentication.poll_interval) > authentication.max_wait
                    {
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!("the Volt's decision was still pending after {:?}", waited),
                        ));
                    }
                    tokio::time::sleep(authentication.poll_interval).await;
                }
                None => {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!(
                            "an authentication decision this client does not know: {}",
                            response.get("decision").unwrap_or(&Value::Null)
                        ),
                    ))
                }
            }
        }
    }

    /// The request for `authentication`, and the DID this client is making for itself, if
    /// any.
    fn authenticate_request(&self, auth: &Authentication) -> Result<(Value, Option<String>)> {
        let config = self.config();
        let credential = config.credential();
        let key = &self.shared.setup.key;
        let public_key_pem = key.public_key().to_spki_pem()?;
        let mut request = Map::new();
        let client_name = auth
            .client_name
            .clone()
            .or_else(|| config.client_name().map(str::to_owned))
            .unwrap_or_default();
        request.insert("client_name".into(), client_name.into());
        request.insert("host".into(), auth.host.clone().unwrap_or_default().into());
        if let Some(token) = &auth.exchange_token {
            request.insert("exchange_token".into(), token.as_str().into());
        }
        if let Some(code) = auth
            .challenge
            .as_ref()
            .or(credential.challenge_code.as_ref())
        {
            request.insert("challenge".into(), code.as_str().into());
        }
        let mut own_did = None;
        match (&auth.identity, &credential.identity_did) {
            (Identity::Session, _) => {
                request.insert("public_key".into(), public_key_pem.into());
            }
            (Identity::Did(did), _) | (Identity::Default, Some(did)) => {
                request.insert("did".into(), did.as_str().into());
            }
            (Identity::VoltDid, _) | (Identity::Default, None) => {
                request.insert("did_public_key".into(), public_key_pem.into());
            }
            (Identity::OwnDid, _) => {
                let did = new_did();
                let document = did_document(&did, &public_key_pem, key.algorithm())?;
                let signature = key.sign(document.as_bytes())?;
                request.insert("did_document".into(), document.into());
                request.insert(
                    "did_document_signature".into(),
                    base64::engine::general_purpose::STANDARD
                        .encode(signature)
                        .into(),
                );
                own_did = Some(did);
            }
        }
        Ok((Value::Object(request), own_did))
    }

    /// Keeps what a PERMIT granted: in the credential (on top of `base`, else of the
    /// client's configuration), in the file, and in a new connection.
    async fn keep_grant(
        &self,
        response: Value,
        own_did: Option<String>,
        base: Option<ClientConfig>,
    ) -> Result<Authenticated> {
        let text = |field: &str| {
            response
                .get(field)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let session_id = text("session_id").ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                "the Volt permitted, but sent no session id",
            )
        })?;
        let grant = config_file::Grant {
            session_id: session_id.clone(),
            cert: text("cert"),
            ca: text("chain"),
            identity_did: text("identity_did").or(own_did),
        };
        let setup = &self.shared.setup;
        // One grant is kept at a time, so that the configuration, its file and the connection
        // always come from the same grant. (An async lock, held only by this rare operation.)
        let _one_at_a_time = setup.granting.lock().await;
        let mut updated = base.unwrap_or_else(|| self.config());
        grant.apply(updated.credential_mut());
        // Connect first: a grant that cannot be used is not kept.
        let transport = crate::transport::open(&setup.options, &updated, &setup.key).await?;
        if let Some(path) = setup.path.clone() {
            let saved = grant.clone();
            tokio::task::spawn_blocking(move || config_file::save_grant(&path, &saved))
                .await
                .map_err(|e| {
                    Error::new(ErrorKind::Io, "saving the configuration failed").with_source(e)
                })??;
        }
        *setup
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = updated;
        *self
            .shared
            .transport
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = transport;
        Ok(Authenticated {
            session_id,
            identity_did: grant.identity_did,
            certificate: grant.cert.is_some(),
            response,
        })
    }
}

enum Decision {
    Permit,
    Deny,
    /// Pending, or a prompt awaiting an administrator: ask again later.
    Wait,
}

/// A `PolicyDecision`, by name (proto3 JSON) or number.
fn decision(value: &Value) -> Option<Decision> {
    let name = match value {
        Value::String(s) => s.as_str(),
        Value::Number(n) => match n.as_i64()? {
            1 => "POLICY_DECISION_PROMPT",
            2 => "POLICY_DECISION_PERMIT",
            3 => "POLICY_DECISION_DENY",
            7 => "POLICY_DECISION_PENDING",
            _ => return None,
        },
        _ => return None,
    };
    match name {
        "POLICY_DECISION_PERMIT" => Some(Decision::Permit),
        "POLICY_DECISION_DENY" => Some(Decision::Deny),
        "POLICY_DECISION_PENDING" | "POLICY_DECISION_PROMPT" => Some(Decision::Wait),
        _ => None,
    }
}

/// A fresh `did:volt:` DID: 128 random bits in hex.
fn new_did() -> String {
    use rand_core::RngCore as _;
    let mut bytes = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("did:volt:{hex}")
}

/// The DID document of a self-made DID, as the Volt checks it: keys in alphabetical order at
/// every level, two-space indentation (the text is what the signature covers).
fn did_document(did: &str, public_key_pem: &str, algorithm: KeyAlgorithm) -> Result<String> {
    let key_type = match algorithm {
        KeyAlgorithm::Ed25519 => "Ed25519Signature2018",
        _ => "RsaSignature2018",
    };
    let document = json!({
        "@context": ["https://www.w3.org/ns/did/v1", "https://tdxvolt.com/ns/did/v1"],
        "authentication": [format!("{did}#key-1")],
        "controller": did,
        "id": did,
        "verificationMethod": [{
            "id": format!("{did}#key-1"),
            "publicKeyPem": public_key_pem,
            "type": key_type,
        }],
    });
    serde_json::to_string_pretty(&document)
        .map_err(|e| Error::new(ErrorKind::Schema, "the DID document").with_source(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PrivateKey;

    #[test]
    fn decisions_by_name_and_number() {
        assert!(matches!(
            decision(&json!("POLICY_DECISION_PERMIT")),
            Some(Decision::Permit)
        ));
        assert!(matches!(decision(&json!(3)), Some(Decision::Deny)));
        assert!(matches!(decision(&json!(7)), Some(Decision::Wait)));
        assert!(matches!(
            decision(&json!("POLICY_DECISION_PROMPT")),
            Some(Decision::Wait)
        ));
        for unknown in [
            json!("POLICY_DECISION_UNKNOWN"),
            json!(0),
            json!(99),
            json!(null),
        ] {
            assert!(decision(&unknown).is_none(), "{unknown}");
        }
    }

    #[test]
    fn did_document_is_sorted_and_signed_text() {
        let key = PrivateKey::generate_ed25519();
        let pem = key.public_key().to_spki_pem().unwrap();
        let did = new_did();
        assert!(did.starts_with("did:volt:") && did.len() == "did:volt:".len() + 32);
        let text = did_document(&did, &pem, KeyAlgorithm::Ed25519).unwrap();
        // Two-space indentation, keys in alphabetical order.
        assert!(text.starts_with("{\n  \"@context\": [\n    \"https://www.w3.org/ns/did/v1\""));
        let order: Vec<usize> = [
            "\"@context\"",
            "\"authentication\"",
            "\"controller\"",
            "\"id\"",
            "\"verificationMethod\"",
        ]
        .iter()
        .map(|k| text.find(k).unwrap())
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed["verificationMethod"][0]["publicKeyPem"],
            pem.as_str()
        );
        assert_eq!(parsed["id"], did.as_str());
        let signature = key.sign(text.as_bytes()).unwrap();
        key.public_key()
            .verify(text.as_bytes(), &signature)
            .unwrap();
    }

    #[test]
    fn debug_redacts_tokens() {
        let auth = Authentication::new()
            .exchange_token("secret-exchange")
            .challenge("secret-challenge");
        let shown = format!("{auth:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
