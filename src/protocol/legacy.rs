//! The older websocket protocol of RSA-era Volts (the one the Python client `volt_client_web`
//! 0.1.x speaks), sans-IO: JSON text frames, and a per-call AES key chosen by the client.
//!
//! A call's key is not agreed by a key exchange. The client picks a fresh AES-256 key and IV,
//! encrypts each to the Volt's RSA key (RSA-OAEP with SHA-1) and puts them in its RS256
//! identity token as the claims `sk` and `iv`. Every body of the call, in both directions, is
//! then AES-256-CBC/PKCS#7 under that key and that same IV, base64 in the frame's
//! `json_payload`. The bodies are the same JSON as in protocol v1 ([`Body`]).
//!
//! Client frames: the first `{"id", "token", "target_fingerprint", "json_payload"}`, later ones
//! `{"id", "json_payload"}`, the end `{"id", "client_end": true, "json_payload"}`.
//! Server frames: `{"invoke_id", "json_payload"}`, or `{"error"}` (this crate's emulator adds
//! the `invoke_id` it concerns, when it knows it).

use aes::cipher::{
    block_padding::Pkcs7, BlockDecryptMut as _, BlockEncryptMut as _, KeyIvInit as _,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand_core::{OsRng, RngCore as _};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::body::Body;
use super::error::{Error, Result};
use super::frame::{FrameError, IV_LEN};
use super::keys::{PrivateKey, PublicKey};
use super::token::Claims;

/// The AES key length of a call, in bytes.
pub const KEY_LEN: usize = 32;

/// The claim carrying the call's AES key, RSA-encrypted to the Volt.
pub const KEY_CLAIM: &str = "sk";
/// The claim carrying the call's IV, RSA-encrypted to the Volt.
pub const IV_CLAIM: &str = "iv";

/// The AES key and IV of one call (zeroized on drop).
pub struct LegacyKey {
    key: Zeroizing<[u8; KEY_LEN]>,
    iv: Zeroizing<[u8; IV_LEN]>,
}

impl std::fmt::Debug for LegacyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LegacyKey(<redacted>)")
    }
}

impl LegacyKey {
    /// A fresh random key and IV.
    pub fn generate() -> LegacyKey {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        let mut iv = Zeroizing::new([0u8; IV_LEN]);
        OsRng.fill_bytes(key.as_mut());
        OsRng.fill_bytes(iv.as_mut());
        LegacyKey { key, iv }
    }

    /// Wraps known bytes (for tests and known-answer checks).
    pub fn from_parts(key: [u8; KEY_LEN], iv: [u8; IV_LEN]) -> LegacyKey {
        LegacyKey {
            key: Zeroizing::new(key),
            iv: Zeroizing::new(iv),
        }
    }

    /// Adds the `sk` and `iv` claims: the key and IV, each RSA-OAEP(SHA-1) encrypted to the
    /// Volt's RSA key, standard base64.
    pub fn add_to_claims(&self, claims: &mut Claims, volt_key: &PublicKey) -> Result<()> {
        let rsa = volt_key.as_rsa().ok_or_else(|| {
            Error::config(
                "the older websocket protocol needs the Volt's RSA key (volt.public_key or \
                 the volt.ca_pem certificate holds another kind of key)",
            )
        })?;
        let seal = |bytes: &[u8]| rsa.encrypt_oaep_sha1(bytes).map(|c| STANDARD.encode(c));
        let sk = seal(self.key.as_ref())?;
        let iv = seal(self.iv.as_ref())?;
        claims.extra.insert(KEY_CLAIM.into(), Value::from(sk));
        claims.extra.insert(IV_CLAIM.into(), Value::from(iv));
        Ok(())
    }

    /// Recovers a call's key from the `sk` and `iv` claims with the Volt's RSA key (the
    /// server's side). Any failure is the same token error, so the token's sender learns
    /// nothing about which step failed.
    pub fn from_claims(claims: &Claims, volt_key: &PrivateKey) -> Result<LegacyKey> {
        let unusable = || Error::token("the token's call key (sk, iv) cannot be used");
        let rsa = volt_key.as_rsa().ok_or_else(unusable)?;
        let open = |name: &str, len: usize| -> Result<Zeroizing<Vec<u8>>> {
            let text = claims
                .extra
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(unusable)?;
            let sealed = STANDARD.decode(text.trim()).map_err(|_| unusable())?;
            let plain = rsa.decrypt_oaep_sha1(&sealed).map_err(|_| unusable())?;
            if plain.len() == len {
                Ok(plain)
            } else {
                Err(unusable())
            }
        };
        let key = open(KEY_CLAIM, KEY_LEN)?;
        let iv = open(IV_CLAIM, IV_LEN)?;
        let mut out = LegacyKey::from_parts([0u8; KEY_LEN], [0u8; IV_LEN]);
        out.key.copy_from_slice(&key);
        out.iv.copy_from_slice(&iv);
        Ok(out)
    }

    /// Encrypts a body: base64 of AES-256-CBC/PKCS#7 under the call's key and IV.
    pub fn seal(&self, body: &Body) -> String {
        let plain = Zeroizing::new(body.to_json());
        let sealed =
            cbc::Encryptor::<aes::Aes256>::new(self.key.as_ref().into(), self.iv.as_ref().into())
                .encrypt_padded_vec_mut::<Pkcs7>(&plain);
        // The body's bulk: SIMD base64, as strict as `STANDARD` (padding, canonical bits).
        base64_simd::STANDARD.encode_to_string(sealed)
    }

    /// Decrypts and parses a `json_payload`. Every failure (base64, lengths, padding, JSON)
    /// is the same [`FrameError::Undecryptable`]: CBC without a MAC must not become a padding
    /// oracle.
    pub fn open(&self, json_payload: &str) -> Result<Body, FrameError> {
        let sealed = base64_simd::STANDARD
            .decode_to_vec(json_payload.trim().as_bytes())
            .map_err(|_| FrameError::Undecryptable)?;
        if sealed.is_empty() || !sealed.len().is_multiple_of(IV_LEN) {
            return Err(FrameError::Undecryptable);
        }
        let plain = Zeroizing::new(
            cbc::Decryptor::<aes::Aes256>::new(self.key.as_ref().into(), self.iv.as_ref().into())
                .decrypt_padded_vec_mut::<Pkcs7>(&sealed)
                .map_err(|_| FrameError::Undecryptable)?,
        );
        Body::parse(&plain).map_err(|_| FrameError::Undecryptable)
    }
}

/// A frame from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFrame {
    /// The call id, chosen by the client (from 1).
    pub id: u64,
    /// The identity token (compact JWT); only in a call's first frame.
    pub token: Option<String>,
    /// Fingerprints of the hops to route through (the relay's Volt first); only in a call's
    /// first frame, empty when not relaying.
    pub target_fingerprint: Option<Vec<String>>,
    /// The client has finished sending.
    pub client_end: bool,
    /// The sealed body ([`LegacyKey::seal`]).
    pub json_payload: String,
}

impl ClientFrame {
    /// The frame's JSON text, keys in the order the Python client writes them.
    pub fn to_text(&self) -> String {
        let mut obj = Map::new();
        obj.insert("id".into(), Value::from(self.id));
        if let Some(token) = &self.token {
            obj.insert("token".into(), Value::from(token.as_str()));
        }
        if let Some(hops) = &self.target_fingerprint {
            obj.insert("target_fingerprint".into(), Value::from(hops.clone()));
        }
        if self.client_end {
            obj.insert("client_end".into(), Value::Bool(true));
        }
        obj.insert(
            "json_payload".into(),
            Value::from(self.json_payload.as_str()),
        );
        Value::Object(obj).to_string()
    }

    /// Parses a client frame; the call id is read first so that an error can name its call
    /// ([`LegacyFrameError::call_id`]).
    pub fn parse(text: &str) -> Result<ClientFrame, LegacyFrameError> {
        let obj = object(text)?;
        let id = obj.get("id").and_then(call_id);
        let Some(id) = id else {
            return Err(LegacyFrameError::new(None, "no call id (id)"));
        };
        let fail = |what: &'static str| LegacyFrameError::new(Some(id), what);
        let token = match obj.get("token") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(_) => return Err(fail("token is not a string")),
        };
        let target_fingerprint = match obj.get("target_fingerprint") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| fail("target_fingerprint holds a non-string"))?,
            ),
            Some(_) => return Err(fail("target_fingerprint is not a list")),
        };
        let client_end = obj.get("client_end").is_some_and(super::status::is_truthy);
        let json_payload = obj
            .get("json_payload")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("no json_payload"))?
            .to_owned();
        Ok(ClientFrame {
            id,
            token,
            target_fingerprint,
            client_end,
            json_payload,
        })
    }
}

/// A frame from the Volt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// A sealed body for a call.
    Payload {
        /// The call it is for.
        invoke_id: u64,
        /// The sealed body ([`LegacyKey::seal`]).
        json_payload: String,
    },
    /// The Volt refused something; `invoke_id` names the call when the Volt says which.
    Error {
        /// The call, when named.
        invoke_id: Option<u64>,
        /// The Volt's message.
        error: String,
    },
}

impl ServerFrame {
    /// The frame's JSON text.
    pub fn to_text(&self) -> String {
        let mut obj = Map::new();
        match self {
            ServerFrame::Payload {
                invoke_id,
                json_payload,
            } => {
                obj.insert("invoke_id".into(), Value::from(*invoke_id));
                obj.insert("json_payload".into(), Value::from(json_payload.as_str()));
            }
            ServerFrame::Error { invoke_id, error } => {
                if let Some(id) = invoke_id {
                    obj.insert("invoke_id".into(), Value::from(*id));
                }
                obj.insert("error".into(), Value::from(error.as_str()));
            }
        }
        Value::Object(obj).to_string()
    }

    /// Parses a server frame. An `error` takes precedence, as the Python client reads it.
    pub fn parse(text: &str) -> Result<ServerFrame, LegacyFrameError> {
        let obj = object(text)?;
        let invoke_id = obj.get("invoke_id").and_then(call_id);
        if let Some(error) = obj.get("error").and_then(super::status::error_text) {
            return Ok(ServerFrame::Error { invoke_id, error });
        }
        let Some(invoke_id) = invoke_id else {
            return Err(LegacyFrameError::new(None, "no call id (invoke_id)"));
        };
        let json_payload = obj
            .get("json_payload")
            .and_then(Value::as_str)
            .ok_or_else(|| LegacyFrameError::new(Some(invoke_id), "no json_payload"))?
            .to_owned();
        Ok(ServerFrame::Payload {
            invoke_id,
            json_payload,
        })
    }
}

/// A text frame that is not a frame of the older protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}")]
pub struct LegacyFrameError {
    call_id: Option<u64>,
    what: &'static str,
}

impl LegacyFrameError {
    fn new(call_id: Option<u64>, what: &'static str) -> LegacyFrameError {
        LegacyFrameError { call_id, what }
    }

    /// The call the frame names, when it names one.
    pub fn call_id(&self) -> Option<u64> {
        self.call_id
    }
}

impl From<LegacyFrameError> for Error {
    fn from(e: LegacyFrameError) -> Error {
        Error::new(crate::ErrorKind::Protocol, "malformed frame").with_source(e)
    }
}

fn object(text: &str) -> Result<Map<String, Value>, LegacyFrameError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(LegacyFrameError::new(None, "not a JSON object")),
        Err(_) => Err(LegacyFrameError::new(None, "not JSON")),
    }
}

/// A call id: a JSON integer, or a string of digits (the Python client reads `invoke_id` with
/// `int()`, which takes both).
fn call_id(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// At most the length of a client frame carrying a body of `body_len` bytes: a call's first
/// frame, with its `token_len`-byte token and `hops` (no token: a later frame). It counts a
/// twenty-digit id and a `client_end` too, so it is a few bytes over.
pub fn client_frame_len_bound(body_len: usize, token_len: usize, hops: &[String]) -> usize {
    let ciphertext = (body_len / IV_LEN + 1) * IV_LEN;
    let payload = ciphertext.div_ceil(3) * 4;
    let opening = if token_len == 0 {
        0
    } else {
        let hops_len: usize = hops
            .iter()
            .map(|h| super::json_text::escaped_len(h) + 3)
            .sum();
        r#","token":"","target_fingerprint":[]"#.len() + token_len + hops_len.saturating_sub(1)
    };
    r#"{"id":,"client_end":true,"json_payload":""}"#.len() + 20 + opening + payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::token::{unix_now, IdentityToken};

    fn rsa_key() -> PrivateKey {
        PrivateKey::generate_rsa(2048).unwrap()
    }

    #[test]
    fn key_travels_in_the_token_to_the_volt() {
        let volt = rsa_key();
        let client = rsa_key();
        let key = LegacyKey::generate();
        let mut claims = Claims::new("did:volt:x", unix_now());
        key.add_to_claims(&mut claims, &volt.public_key()).unwrap();
        let token = IdentityToken::sign(&client, &claims).unwrap();
        let header: Value = serde_json::from_str(token.header()).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], client.public_key().fingerprint().unwrap());

        let received = IdentityToken::parse(&token.to_jwt()).unwrap();
        let at_volt =
            LegacyKey::from_claims(&received.claims_unverified().unwrap(), &volt).unwrap();
        assert_eq!(*at_volt.key, *key.key);
        assert_eq!(*at_volt.iv, *key.iv);

        // The body round-trips between the two ends.
        let body = Body::Payload {
            json_payload: r#"{"chunk":"aGk="}"#.into(),
        };
        assert_eq!(at_volt.open(&key.seal(&body)).unwrap(), body);

        // Another Volt's key cannot open it, and says so without detail.
        let other = rsa_key();
        let e = LegacyKey::from_claims(&received.claims_unverified().unwrap(), &other).unwrap_err();
        assert!(e.is_token(), "{e}");
    }

    #[test]
    fn an_ed25519_volt_key_is_a_config_error() {
        let mut claims = Claims::new("a", 0);
        let e = LegacyKey::generate()
            .add_to_claims(&mut claims, &PrivateKey::generate_ed25519().public_key())
            .unwrap_err();
        assert!(e.is_config(), "{e}");
    }

    #[test]
    fn known_answer_matches_openssl_and_the_python_client() {
        // AES-256-CBC of the end body under key 00..1f and IV 00..0f, as printed by both
        // `openssl enc -aes-256-cbc -K 0001..1f -iv 0001..0f | base64` and the Python
        // client's `aes_encrypt`.
        let mut k = [0u8; 32];
        let mut iv = [0u8; 16];
        for (i, b) in k.iter_mut().enumerate() {
            *b = i as u8;
        }
        for (i, b) in iv.iter_mut().enumerate() {
            *b = i as u8;
        }
        let key = LegacyKey::from_parts(k, iv);
        assert_eq!(Body::end().to_json(), br#"{"method_end":{"ended":true}}"#);
        let sealed = key.seal(&Body::end());
        assert_eq!(sealed, "LXZFPDqAIpr2ULPnJp9LJjJye3Hh1mbZRlYBqT4SuIY=");
        assert_eq!(key.open(&sealed).unwrap(), Body::end());
    }

    #[test]
    fn bad_payloads_are_one_undecryptable_error() {
        let key = LegacyKey::generate();
        let other = LegacyKey::generate();
        let sealed = other.seal(&Body::end());
        // The base64 is read strictly: a seal of ours re-encoded without padding, or in the
        // URL-safe alphabet, does not open.
        // (A 32-byte seal always ends in one `=`; a random one holds `+` or `/` only at times.)
        let ours = key.seal(&Body::end());
        assert_eq!(key.open(&ours), Ok(Body::end()));
        let raw = STANDARD.decode(&ours).unwrap();
        assert_eq!(raw.len(), 32);
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&raw);
        let url_safe = base64::engine::general_purpose::URL_SAFE.encode(&raw);
        let mut bads = vec![
            String::new(),
            "not base64!".into(),
            "AAAA".into(),
            sealed,
            STANDARD.encode([0u8; 16]),
            unpadded,
        ];
        if url_safe != ours {
            bads.push(url_safe);
        }
        for bad in &bads {
            assert_eq!(key.open(bad), Err(FrameError::Undecryptable), "{bad:?}");
        }
    }

    #[test]
    fn client_frames_round_trip_in_the_python_clients_key_order() {
        let first = ClientFrame {
            id: 1,
            token: Some("h.c.s".into()),
            target_fingerprint: Some(vec![]),
            client_end: false,
            json_payload: "QUJD".into(),
        };
        assert_eq!(
            first.to_text(),
            r#"{"id":1,"token":"h.c.s","target_fingerprint":[],"json_payload":"QUJD"}"#
        );
        assert_eq!(ClientFrame::parse(&first.to_text()).unwrap(), first);
        let end = ClientFrame {
            id: 7,
            token: None,
            target_fingerprint: None,
            client_end: true,
            json_payload: "QUJD".into(),
        };
        assert_eq!(
            end.to_text(),
            r#"{"id":7,"client_end":true,"json_payload":"QUJD"}"#
        );
        assert_eq!(ClientFrame::parse(&end.to_text()).unwrap(), end);
    }

    #[test]
    fn malformed_client_frames_are_errors_naming_their_call() {
        for (text, id) in [
            ("", None),
            ("[1]", None),
            ("{\"json_payload\":\"x\"}", None),
            ("{\"id\":-1,\"json_payload\":\"x\"}", None),
            ("{\"id\":3}", Some(3)),
            ("{\"id\":\"4\",\"token\":5,\"json_payload\":\"x\"}", Some(4)),
            (
                "{\"id\":5,\"target_fingerprint\":[1],\"json_payload\":\"x\"}",
                Some(5),
            ),
        ] {
            let e = ClientFrame::parse(text).unwrap_err();
            assert_eq!(e.call_id(), id, "{text}");
        }
    }

    #[test]
    fn server_frames_round_trip_and_errors_win() {
        let payload = ServerFrame::Payload {
            invoke_id: 9,
            json_payload: "QUJD".into(),
        };
        assert_eq!(ServerFrame::parse(&payload.to_text()).unwrap(), payload);
        let error = ServerFrame::Error {
            invoke_id: Some(2),
            error: "no".into(),
        };
        assert_eq!(ServerFrame::parse(&error.to_text()).unwrap(), error);
        assert_eq!(
            ServerFrame::parse(r#"{"error":"bad token"}"#).unwrap(),
            ServerFrame::Error {
                invoke_id: None,
                error: "bad token".into()
            }
        );
        assert_eq!(
            ServerFrame::parse(r#"{"invoke_id":"12","json_payload":"x"}"#).unwrap(),
            ServerFrame::Payload {
                invoke_id: 12,
                json_payload: "x".into()
            }
        );
        assert!(ServerFrame::parse("{}").is_err());
        assert!(ServerFrame::parse("nope").is_err());
        assert_eq!(
            ServerFrame::parse(r#"{"invoke_id":3}"#)
                .unwrap_err()
                .call_id(),
            Some(3)
        );
    }

    #[test]
    fn client_frame_length_bounds_the_real_frame_closely() {
        use crate::protocol::body::invoke_len;
        let key = LegacyKey::generate();
        let path = "/tdx.volt_api.volt.v1.WireAPI/PublishWire";
        let token = "h".repeat(700);
        for hops in [
            vec![],
            vec!["5M1aCpnijWbmibq748AHnyG1qgpHMFmLi5UUeaGBGo8t".to_owned()],
        ] {
            for json in ["{}".to_owned(), "é\"\n".repeat(100), "x".repeat(5000)] {
                let body = Body::Invoke {
                    method_name: path.to_owned(),
                    service_id: None,
                    json_request: json.clone(),
                };
                let frame = ClientFrame {
                    id: u64::MAX,
                    token: Some(token.clone()),
                    target_fingerprint: Some(hops.clone()),
                    client_end: false,
                    json_payload: key.seal(&body),
                };
                let real = frame.to_text().len();
                let bound = client_frame_len_bound(invoke_len(path, &json), token.len(), &hops);
                assert!(bound >= real && bound <= real + 20, "{bound} vs {real}");
            }
        }
    }
}
