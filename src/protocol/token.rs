//! Identity tokens: the JWTs every transport presents.
//!
//! Ed25519 keys make EdDSA tokens whose header is exactly [`EDDSA_HEADER`] (the websocket
//! gateway never sends the header; the Volt rebuilds it from that constant). RSA keys make
//! RS256 tokens with a `kid` (the RSA-era protocol). Claims are `aud`, `iat`, `exp`, then `sub`
//! and `k` when present, serialized in that order like the official client does.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::keys::{KeyAlgorithm, PrivateKey, PublicKey};

/// The exact header bytes of an EdDSA identity token.
pub const EDDSA_HEADER: &str = r#"{"alg":"EdDSA","typ":"JWT"}"#;

/// How far either side of "now" the official clients set `iat` and `exp`, in seconds.
pub const DEFAULT_TOKEN_TTL_SECS: i64 = 60;

/// Clock skew tolerated by [`Validation`] by default, in seconds.
pub const DEFAULT_LEEWAY_SECS: i64 = 30;

/// Longest `exp - iat` a [`Validation`] accepts by default, in seconds (one hour: room for
/// clients that cache long-lived tokens, none for tokens that never expire).
pub const DEFAULT_MAX_LIFETIME_SECS: i64 = 3600;

/// The claims of an identity token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Claims {
    /// Audience: the Volt id, or a service host's client id.
    pub aud: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// The session id of the credential, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The client's ephemeral X25519 public key (standard base64 of its SPKI DER), present
    /// when the call is end-to-end encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<String>,
    /// Any further claims (the RSA-era protocol adds `sk` and `iv`).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Claims {
    /// Claims for `audience` valid from `now - 60` to `now + 60`, as the official client sets them.
    pub fn new(audience: impl Into<String>, now: i64) -> Claims {
        Claims {
            aud: audience.into(),
            iat: now.saturating_sub(DEFAULT_TOKEN_TTL_SECS),
            exp: now.saturating_add(DEFAULT_TOKEN_TTL_SECS),
            sub: None,
            k: None,
            extra: serde_json::Map::new(),
        }
    }

    /// Sets the subject (the credential's session id).
    #[must_use]
    pub fn with_subject(mut self, sub: Option<String>) -> Claims {
        self.sub = sub;
        self
    }

    /// Sets the ephemeral key claim `k`.
    #[must_use]
    pub fn with_key(mut self, k: impl Into<String>) -> Claims {
        self.k = Some(k.into());
        self
    }

    /// The claims as the compact JSON bytes that get signed.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::token("claims do not serialize").with_source(e))
    }
}

/// A signed identity token.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentityToken {
    header: String,
    claims: Vec<u8>,
    signature: Vec<u8>,
}

impl fmt::Debug for IdentityToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityToken")
            .field("header", &self.header)
            .field("claims", &String::from_utf8_lossy(&self.claims))
            .field("signature", &"<redacted>")
            .finish()
    }
}

impl IdentityToken {
    /// Signs `claims` with `key`: EdDSA for Ed25519 keys, RS256 (with `kid`) for RSA keys.
    pub fn sign(key: &PrivateKey, claims: &Claims) -> Result<IdentityToken> {
        let header = match key.algorithm() {
            KeyAlgorithm::Ed25519 => EDDSA_HEADER.to_owned(),
            KeyAlgorithm::Rsa => {
                let kid = key.public_key().fingerprint()?;
                serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": kid}).to_string()
            }
        };
        let claims = claims.to_json()?;
        let signature = key.sign(signing_input(&header, &claims).as_bytes())?;
        Ok(IdentityToken {
            header,
            claims,
            signature,
        })
    }

    /// Rebuilds an EdDSA token from the parts the websocket gateway carries (the raw claims
    /// bytes and the signature); the header is the constant [`EDDSA_HEADER`].
    pub fn from_wire_parts(claims: &[u8], signature: &[u8]) -> IdentityToken {
        IdentityToken {
            header: EDDSA_HEADER.to_owned(),
            claims: claims.to_vec(),
            signature: signature.to_vec(),
        }
    }

    /// Parses a compact JWT (`header.claims.signature`, base64url).
    pub fn parse(jwt: &str) -> Result<IdentityToken> {
        let mut parts = jwt.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::token("a JWT has exactly three dot-separated parts"));
        };
        let decode = |part: &str, what: &'static str| {
            URL_SAFE_NO_PAD
                .decode(part.trim_end_matches('='))
                .map_err(|_| Error::token(format!("JWT {what} is not base64url")))
        };
        let header = String::from_utf8(decode(h, "header")?)
            .map_err(|_| Error::token("JWT header is not UTF-8"))?;
        Ok(IdentityToken {
            header,
            claims: decode(c, "claims")?,
            signature: decode(s, "signature")?,
        })
    }

    /// The compact JWT text.
    pub fn to_jwt(&self) -> String {
        format!(
            "{}.{}",
            signing_input(&self.header, &self.claims),
            URL_SAFE_NO_PAD.encode(&self.signature)
        )
    }

    /// The header JSON text.
    pub fn header(&self) -> &str {
        &self.header
    }

    /// The raw claims JSON bytes, exactly as signed.
    pub fn claims_json(&self) -> &[u8] {
        &self.claims
    }

    /// The raw signature bytes.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// Reads the claims without checking the signature.
    pub fn claims_unverified(&self) -> Result<Claims> {
        serde_json::from_slice(&self.claims)
            .map_err(|e| Error::token("claims are not valid JSON claims").with_source(e))
    }

    /// Checks the signature with `key`, the header's algorithm against the key's, then the
    /// audience and time window; returns the claims.
    pub fn verify(&self, key: &PublicKey, validation: &Validation) -> Result<Claims> {
        let header: serde_json::Value = serde_json::from_str(&self.header)
            .map_err(|_| Error::token("JWT header is not JSON"))?;
        let alg = header.get("alg").and_then(serde_json::Value::as_str);
        let expected = match key.algorithm() {
            KeyAlgorithm::Ed25519 => "EdDSA",
            KeyAlgorithm::Rsa => "RS256",
        };
        if alg != Some(expected) {
            return Err(Error::token(format!(
                "token algorithm {alg:?} does not match the key ({expected})"
            )));
        }
        key.verify(
            signing_input(&self.header, &self.claims).as_bytes(),
            &self.signature,
        )
        .map_err(|_| Error::token("token signature does not verify"))?;
        let claims = self.claims_unverified()?;
        validation.check(&claims)?;
        Ok(claims)
    }
}

fn signing_input(header: &str, claims: &[u8]) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.as_bytes()),
        URL_SAFE_NO_PAD.encode(claims)
    )
}

/// What a verifier requires of a token's claims.
#[derive(Debug, Clone)]
pub struct Validation {
    audience: String,
    now: i64,
    leeway: i64,
    max_lifetime: i64,
}

impl Validation {
    /// Requires `aud == audience` and a time window containing `now` (Unix seconds), with
    /// [`DEFAULT_LEEWAY_SECS`] of tolerance.
    pub fn new(audience: impl Into<String>, now: i64) -> Validation {
        Validation {
            audience: audience.into(),
            now,
            leeway: DEFAULT_LEEWAY_SECS,
            max_lifetime: DEFAULT_MAX_LIFETIME_SECS,
        }
    }

    /// Sets the longest accepted `exp - iat`, in seconds.
    #[must_use]
    pub fn max_lifetime(mut self, secs: i64) -> Validation {
        self.max_lifetime = secs.max(0);
        self
    }

    /// Sets the tolerated clock skew in seconds.
    #[must_use]
    pub fn leeway(mut self, secs: i64) -> Validation {
        self.leeway = secs.max(0);
        self
    }

    fn check(&self, claims: &Claims) -> Result<()> {
        if claims.aud != self.audience {
            return Err(Error::token(format!(
                "token audience {:?} is not {:?}",
                claims.aud, self.audience
            )));
        }
        if claims.exp < claims.iat {
            return Err(Error::token("token expires before it is issued"));
        }
        if claims.exp.saturating_sub(claims.iat) > self.max_lifetime {
            return Err(Error::token("token lifetime is longer than allowed"));
        }
        if claims.exp.saturating_add(self.leeway) < self.now {
            return Err(Error::token("token has expired"));
        }
        if claims.iat.saturating_sub(self.leeway) > self.now {
            return Err(Error::token("token is issued in the future"));
        }
        Ok(())
    }
}

/// The current Unix time in seconds (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What a client signs each call's identity token with: its key, the Volt it talks to
/// (`aud`), and its session (`sub`), once it has one. Every transport signs through one.
#[derive(Clone)]
pub struct TokenSigner {
    key: std::sync::Arc<PrivateKey>,
    audience: String,
    subject: Option<String>,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("audience", &self.audience)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// Signs with `key` for the Volt `audience`, as the session `subject` when there is one.
    pub fn new(
        key: std::sync::Arc<PrivateKey>,
        audience: impl Into<String>,
        subject: Option<String>,
    ) -> TokenSigner {
        TokenSigner {
            key,
            audience: audience.into(),
            subject,
        }
    }

    /// The signing key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// Claims for a call made now: `aud`, the official clients' validity window, and `sub`.
    pub fn session_claims(&self) -> Claims {
        Claims::new(self.audience.clone(), unix_now()).with_subject(self.subject.clone())
    }

    /// Claims for a call made now without `sub` (the RSA-era protocol sends none).
    pub fn bare_claims(&self) -> Claims {
        Claims::new(self.audience.clone(), unix_now())
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<IdentityToken> {
        IdentityToken::sign(&self.key, claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PrivateKey {
        PrivateKey::from_ed25519_seed(&[1u8; 32])
    }

    #[test]
    fn claims_serialize_in_official_order() {
        let c = Claims::new("did:volt:x", 1000)
            .with_subject(Some("s".into()))
            .with_key("AAA=");
        assert_eq!(
            String::from_utf8(c.to_json().unwrap()).unwrap(),
            r#"{"aud":"did:volt:x","iat":940,"exp":1060,"sub":"s","k":"AAA="}"#
        );
        let bare = Claims::new("a", 0);
        assert_eq!(
            String::from_utf8(bare.to_json().unwrap()).unwrap(),
            r#"{"aud":"a","iat":-60,"exp":60}"#
        );
    }

    #[test]
    fn sign_parse_verify() {
        let k = key();
        let claims = Claims::new("volt", 5000);
        let t = IdentityToken::sign(&k, &claims).unwrap();
        let jwt = t.to_jwt();
        assert!(jwt.starts_with("eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9."));
        let parsed = IdentityToken::parse(&jwt).unwrap();
        assert_eq!(parsed, t);
        let got = parsed
            .verify(&k.public_key(), &Validation::new("volt", 5000))
            .unwrap();
        assert_eq!(got, claims);
        let wire = IdentityToken::from_wire_parts(t.claims_json(), t.signature());
        wire.verify(&k.public_key(), &Validation::new("volt", 5000))
            .unwrap();
    }

    #[test]
    fn verification_fails_closed() {
        let k = key();
        let t = IdentityToken::sign(&k, &Claims::new("volt", 5000)).unwrap();
        let other = PrivateKey::from_ed25519_seed(&[2u8; 32]).public_key();
        assert!(t.verify(&other, &Validation::new("volt", 5000)).is_err());
        assert!(t
            .verify(&k.public_key(), &Validation::new("other", 5000))
            .is_err());
        assert!(t
            .verify(&k.public_key(), &Validation::new("volt", 5000 + 200))
            .is_err());
        assert!(t
            .verify(&k.public_key(), &Validation::new("volt", 5000 - 200))
            .is_err());
        let mut forever = Claims::new("volt", 5000);
        forever.exp = i64::MAX;
        let long = IdentityToken::sign(&k, &forever).unwrap();
        let err = long
            .verify(&k.public_key(), &Validation::new("volt", 5000))
            .unwrap_err();
        assert!(err.to_string().contains("lifetime"), "{err}");
        assert_eq!(Claims::new("volt", i64::MIN).iat, i64::MIN);
        let mut claims = t.claims_json().to_vec();
        claims[5] ^= 1;
        let tampered = IdentityToken::from_wire_parts(&claims, t.signature());
        assert!(tampered
            .verify(&k.public_key(), &Validation::new("volt", 5000))
            .is_err());
    }

    #[test]
    fn malformed_jwts_are_errors() {
        for s in ["", "a", "a.b", "a.b.c.d", "!!.e30.AA", "e30.!!.AA"] {
            assert!(IdentityToken::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn debug_redacts_signature() {
        let t = IdentityToken::sign(&key(), &Claims::new("volt", 1)).unwrap();
        assert!(format!("{t:?}").contains("<redacted>"));
    }
}
