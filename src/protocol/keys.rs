//! Private and public keys of Volt clients and Volts.
//!
//! Current Volts use Ed25519 (PKCS#8 v1 or v2 private keys, SPKI public keys); Volts of the
//! RSA era use RSA (PKCS#1 or PKCS#8). Private keys may be PKCS#8-encrypted with PBES2
//! (PBKDF2-HMAC-SHA256 with AES-256-CBC or DES-EDE3-CBC). Secret material is zeroized on drop
//! and never printed by `Debug`.

use std::fmt;

use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use ed25519_dalek::Signer as _;
use pkcs8::der::{Decode as _, Encode as _};
use pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
use rand_core::OsRng;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::error::{Error, Result};
use super::pem::{self, PrivatePem, PublicPem};
#[cfg(feature = "legacy")]
use super::rsa_keys::{RsaPrivate, RsaPublic};

/// Environment variable consulted for the passphrase of an encrypted private key.
pub const PASSPHRASE_ENV: &str = "VOLT_KEY_PASSPHRASE";

/// PBKDF2 iterations used when this crate encrypts a private key.
pub const DEFAULT_PBKDF2_ITERATIONS: u32 = 600_000;

const OID_ED25519: pkcs8::ObjectIdentifier = pkcs8::ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_RSA: pkcs8::ObjectIdentifier =
    pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// The signature algorithm of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// Ed25519 (EdDSA), used by current Volts.
    Ed25519,
    /// RSA, used by Volts of the RSA era (RS256 tokens).
    Rsa,
}

/// The error for an RSA key in a build without the feature `legacy` (RSA keys belong to
/// RSA-era Volts, which only the legacy protocol reaches).
#[cfg(not(feature = "legacy"))]
fn rsa_left_out() -> Error {
    Error::unsupported(
        "RSA keys (RSA-era Volts) need the cargo feature `legacy` of tdx-volt, which this build leaves out",
    )
}

/// A private signing key (a client credential or a Volt's own key).
pub struct PrivateKey {
    inner: PrivateInner,
}

// The Ed25519 key is stored inline on purpose: it is the common case and the RSA key is boxed.
#[allow(clippy::large_enum_variant)]
enum PrivateInner {
    Ed25519(ed25519_dalek::SigningKey),
    #[cfg(feature = "legacy")]
    Rsa(Box<RsaPrivate>),
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm())
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl PrivateKey {
    /// A fresh random Ed25519 key.
    pub fn generate_ed25519() -> PrivateKey {
        PrivateKey {
            inner: PrivateInner::Ed25519(ed25519_dalek::SigningKey::generate(&mut OsRng)),
        }
    }

    /// A fresh random RSA key of `bits` bits: 2048, 3072, 4096 or 8192. Without the feature
    /// `legacy` this is an [`ErrorKind::Unsupported`](super::error::ErrorKind::Unsupported)
    /// error.
    pub fn generate_rsa(bits: usize) -> Result<PrivateKey> {
        if bits < 2048 {
            return Err(Error::key("RSA keys must have at least 2048 bits"));
        }
        #[cfg(not(feature = "legacy"))]
        return Err(rsa_left_out());
        #[cfg(feature = "legacy")]
        {
            Ok(PrivateKey {
                inner: PrivateInner::Rsa(Box::new(RsaPrivate::generate(bits)?)),
            })
        }
    }

    /// The Ed25519 key with the given 32-byte seed.
    pub fn from_ed25519_seed(seed: &[u8; 32]) -> PrivateKey {
        PrivateKey {
            inner: PrivateInner::Ed25519(ed25519_dalek::SigningKey::from_bytes(seed)),
        }
    }

    /// Reads a PEM private key: `PRIVATE KEY` (PKCS#8 v1/v2, Ed25519 or RSA),
    /// `RSA PRIVATE KEY` (PKCS#1) or `ENCRYPTED PRIVATE KEY` (PKCS#8 PBES2, needs `passphrase`).
    pub fn from_pem(pem_text: &str, passphrase: Option<&str>) -> Result<PrivateKey> {
        let block =
            pem::private_key(pem_text).map_err(|e| Error::key(format!("private key: {e}")))?;
        match block {
            PrivatePem::Pkcs8(der) => PrivateKey::from_pkcs8_der(&der),
            #[cfg(not(feature = "legacy"))]
            PrivatePem::Pkcs1Rsa(_) => Err(rsa_left_out()),
            #[cfg(feature = "legacy")]
            PrivatePem::Pkcs1Rsa(der) => Ok(PrivateKey {
                inner: PrivateInner::Rsa(Box::new(RsaPrivate::from_pkcs1_der(&der)?)),
            }),
            PrivatePem::Encrypted(der) => {
                let passphrase = passphrase.ok_or_else(|| {
                    Error::key(format!(
                        "private key is encrypted: a passphrase is required (config `p`, an explicit passphrase, or {PASSPHRASE_ENV})"
                    ))
                })?;
                let der = super::pbes2::decrypt(&der, passphrase)?;
                PrivateKey::from_pkcs8_der(&der).map_err(|_| {
                    Error::key("private key: wrong passphrase (decrypted data is not a key)")
                })
            }
        }
    }

    /// Reads an unencrypted PKCS#8 DER private key (Ed25519 or RSA).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<PrivateKey> {
        let info = pkcs8::PrivateKeyInfo::from_der(der)
            .map_err(|e| Error::key("private key: invalid PKCS#8 structure").with_source(e))?;
        let oid = info.algorithm.oid;
        if oid == OID_ED25519 {
            let key = ed25519_dalek::SigningKey::from_pkcs8_der(der)
                .map_err(|e| Error::key("private key: invalid Ed25519 key").with_source(e))?;
            Ok(PrivateKey {
                inner: PrivateInner::Ed25519(key),
            })
        } else if oid == OID_RSA {
            #[cfg(not(feature = "legacy"))]
            return Err(rsa_left_out());
            #[cfg(feature = "legacy")]
            {
                Ok(PrivateKey {
                    inner: PrivateInner::Rsa(Box::new(RsaPrivate::from_pkcs8_der(der)?)),
                })
            }
        } else {
            Err(Error::key(format!(
                "private key: unsupported algorithm {oid}"
            )))
        }
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        match &self.inner {
            PrivateInner::Ed25519(_) => KeyAlgorithm::Ed25519,
            #[cfg(feature = "legacy")]
            PrivateInner::Rsa(_) => KeyAlgorithm::Rsa,
        }
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        match &self.inner {
            PrivateInner::Ed25519(k) => PublicKey {
                inner: PublicInner::Ed25519(k.verifying_key()),
            },
            #[cfg(feature = "legacy")]
            PrivateInner::Rsa(k) => PublicKey {
                inner: PublicInner::Rsa(k.public_key().clone()),
            },
        }
    }

    /// Signs `message`: raw Ed25519, or RSASSA-PKCS1-v1_5 with SHA-256 (RS256) for RSA.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        match &self.inner {
            PrivateInner::Ed25519(k) => Ok(k.sign(message).to_bytes().to_vec()),
            #[cfg(feature = "legacy")]
            PrivateInner::Rsa(k) => k.sign_rs256(message),
        }
    }

    /// The unencrypted PKCS#8 DER encoding (zeroized on drop).
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>> {
        match &self.inner {
            // PKCS#8 v1 (seed only), the form the official clients write.
            PrivateInner::Ed25519(k) => ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: k.to_bytes(),
                public_key: None,
            }
            .to_pkcs8_der()
            .map(|doc| Zeroizing::new(doc.as_bytes().to_vec()))
            .map_err(|e| Error::key("private key encoding failed").with_source(e)),
            #[cfg(feature = "legacy")]
            PrivateInner::Rsa(k) => k.to_pkcs8_der(),
        }
    }

    /// The unencrypted PKCS#8 PEM (`BEGIN PRIVATE KEY`), zeroized on drop.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>> {
        let der = self.to_pkcs8_der()?;
        Ok(Zeroizing::new(pem::encode("PRIVATE KEY", &der)))
    }

    /// PKCS#8 PEM encrypted with PBES2: PBKDF2-HMAC-SHA256 (`iterations`, random 16-byte salt)
    /// and AES-256-CBC, the form the official JavaScript client writes.
    pub fn to_encrypted_pkcs8_pem(&self, passphrase: &str, iterations: u32) -> Result<String> {
        if passphrase.is_empty() {
            return Err(Error::key("an empty passphrase cannot encrypt a key"));
        }
        let der = self.to_pkcs8_der()?;
        let encrypted = super::pbes2::encrypt(&der, passphrase, iterations)?;
        Ok(pem::encode("ENCRYPTED PRIVATE KEY", &encrypted))
    }

    third_party_fn! {
        /// The Ed25519 signing key, when this is one.
        fn as_ed25519(&self) -> Option<&ed25519_dalek::SigningKey> {
            match &self.inner {
                PrivateInner::Ed25519(k) => Some(k),
                #[cfg(feature = "legacy")]
                PrivateInner::Rsa(_) => None,
            }
        }
    }

    /// The RSA key, when this is one.
    #[cfg(feature = "legacy")]
    pub(crate) fn as_rsa(&self) -> Option<&RsaPrivate> {
        match &self.inner {
            PrivateInner::Rsa(k) => Some(k),
            PrivateInner::Ed25519(_) => None,
        }
    }
}

/// A public key: a Volt's signing key, or a client's.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    inner: PublicInner,
}

#[derive(Clone, PartialEq, Eq)]
enum PublicInner {
    Ed25519(ed25519_dalek::VerifyingKey),
    #[cfg(feature = "legacy")]
    Rsa(RsaPublic),
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fingerprint = self.fingerprint().unwrap_or_default();
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm())
            .field("fingerprint", &fingerprint)
            .finish()
    }
}

impl PublicKey {
    /// Reads the first key in PEM text: `PUBLIC KEY` (SPKI), `RSA PUBLIC KEY` (PKCS#1) or a
    /// `CERTIFICATE`, whose subject public key is taken.
    pub fn from_pem(pem_text: &str) -> Result<PublicKey> {
        match pem::public_key(pem_text).map_err(|e| Error::key(format!("public key: {e}")))? {
            PublicPem::Spki(der) => PublicKey::from_spki_der(&der),
            #[cfg(not(feature = "legacy"))]
            PublicPem::Pkcs1Rsa(_) => Err(rsa_left_out()),
            #[cfg(feature = "legacy")]
            PublicPem::Pkcs1Rsa(der) => Ok(PublicKey {
                inner: PublicInner::Rsa(RsaPublic::from_pkcs1_der(&der)?),
            }),
            PublicPem::Certificate(der) => PublicKey::from_certificate_der(&der),
        }
    }

    /// Reads the subject public key of the first certificate in PEM text.
    pub fn from_certificate_pem(pem_text: &str) -> Result<PublicKey> {
        let der =
            pem::certificate(pem_text).map_err(|e| Error::key(format!("certificate: {e}")))?;
        PublicKey::from_certificate_der(&der)
    }

    /// Reads the subject public key of a DER certificate.
    pub fn from_certificate_der(der: &[u8]) -> Result<PublicKey> {
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|e| Error::key("certificate: invalid X.509 DER").with_source(e))?;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| Error::key("certificate: bad public key info").with_source(e))?;
        PublicKey::from_spki_der(&spki)
    }

    /// Reads a DER SubjectPublicKeyInfo (Ed25519 or RSA).
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey> {
        let info = spki::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| Error::key("public key: invalid SPKI structure").with_source(e))?;
        let oid = info.algorithm.oid;
        if oid == OID_ED25519 {
            let key = ed25519_dalek::VerifyingKey::from_public_key_der(der)
                .map_err(|e| Error::key("public key: invalid Ed25519 key").with_source(e))?;
            Ok(PublicKey {
                inner: PublicInner::Ed25519(key),
            })
        } else if oid == OID_RSA {
            #[cfg(not(feature = "legacy"))]
            return Err(rsa_left_out());
            #[cfg(feature = "legacy")]
            {
                Ok(PublicKey {
                    inner: PublicInner::Rsa(RsaPublic::from_spki_der(der)?),
                })
            }
        } else {
            Err(Error::key(format!(
                "public key: unsupported algorithm {oid}"
            )))
        }
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        match &self.inner {
            PublicInner::Ed25519(_) => KeyAlgorithm::Ed25519,
            #[cfg(feature = "legacy")]
            PublicInner::Rsa(_) => KeyAlgorithm::Rsa,
        }
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn to_spki_der(&self) -> Result<Vec<u8>> {
        match &self.inner {
            PublicInner::Ed25519(k) => k
                .to_public_key_der()
                .map(|doc| doc.into_vec())
                .map_err(|e| Error::key("public key encoding failed").with_source(e)),
            #[cfg(feature = "legacy")]
            PublicInner::Rsa(k) => Ok(k.spki_der().to_vec()),
        }
    }

    /// The SPKI PEM (`BEGIN PUBLIC KEY`), LF line ends, 64 columns, final newline: the text
    /// the official clients write.
    pub fn to_spki_pem(&self) -> Result<String> {
        Ok(pem::encode("PUBLIC KEY", &self.to_spki_der()?))
    }

    /// The fingerprint the official clients route by: base58(SHA-256) of the raw 32-byte key
    /// for Ed25519 (the gRPC client's rule), of the canonical SPKI PEM text for RSA (the
    /// RSA-era Python client's rule).
    pub fn fingerprint(&self) -> Result<String> {
        match &self.inner {
            PublicInner::Ed25519(k) => Ok(bs58::encode(Sha256::digest(k.as_bytes())).into_string()),
            #[cfg(feature = "legacy")]
            PublicInner::Rsa(_) => Ok(fingerprint_of_pem_text(&self.to_spki_pem()?)),
        }
    }

    /// Verifies `signature` over `message` (Ed25519, or RS256 for RSA keys).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<()> {
        match &self.inner {
            PublicInner::Ed25519(k) => {
                let sig = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| Error::key("signature has the wrong length"))?;
                k.verify_strict(message, &sig)
                    .map_err(|_| Error::key("signature does not verify"))
            }
            #[cfg(feature = "legacy")]
            PublicInner::Rsa(k) => k.verify_rs256(message, signature),
        }
    }

    third_party_fn! {
        /// The Ed25519 key, when this is one.
        fn as_ed25519(&self) -> Option<&ed25519_dalek::VerifyingKey> {
            match &self.inner {
                PublicInner::Ed25519(k) => Some(k),
                #[cfg(feature = "legacy")]
                PublicInner::Rsa(_) => None,
            }
        }
    }

    /// The RSA key, when this is one.
    #[cfg(feature = "legacy")]
    pub(crate) fn as_rsa(&self) -> Option<&RsaPublic> {
        match &self.inner {
            PublicInner::Rsa(k) => Some(k),
            PublicInner::Ed25519(_) => None,
        }
    }
}

/// base58(SHA-256(text)): how the official web client keys its token cache by a PEM string.
pub fn fingerprint_of_pem_text(pem_text: &str) -> String {
    bs58::encode(Sha256::digest(pem_text.as_bytes())).into_string()
}

/// Resolves the passphrase for an encrypted key: the explicit one, else the config's, else
/// the environment variable [`PASSPHRASE_ENV`].
pub fn resolve_passphrase(
    explicit: Option<&str>,
    from_config: Option<&str>,
) -> Option<Zeroizing<String>> {
    explicit
        .filter(|p| !p.is_empty())
        .or(from_config.filter(|p| !p.is_empty()))
        .map(|p| Zeroizing::new(p.to_owned()))
        .or_else(|| {
            std::env::var(PASSPHRASE_ENV)
                .ok()
                .filter(|p| !p.is_empty())
                .map(Zeroizing::new)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_pem_round_trip_and_sign() {
        let key = PrivateKey::from_ed25519_seed(&[7u8; 32]);
        let pem = key.to_pkcs8_pem().unwrap();
        let back = PrivateKey::from_pem(&pem, None).unwrap();
        assert_eq!(back.public_key(), key.public_key());
        let sig = back.sign(b"hello").unwrap();
        key.public_key().verify(b"hello", &sig).unwrap();
        assert!(key.public_key().verify(b"hellO", &sig).is_err());
        let spki = key.public_key().to_spki_pem().unwrap();
        assert_eq!(PublicKey::from_pem(&spki).unwrap(), key.public_key());
    }

    #[test]
    fn pkcs8_v2_with_public_key_is_accepted() {
        let key = PrivateKey::from_ed25519_seed(&[9u8; 32]);
        let pair = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: [9u8; 32],
            public_key: Some(ed25519_dalek::pkcs8::PublicKeyBytes(
                key.public_key().as_ed25519().unwrap().to_bytes(),
            )),
        };
        let der = pair.to_pkcs8_der().unwrap();
        let pem_text = pem::encode("PRIVATE KEY", der.as_bytes());
        let back = PrivateKey::from_pem(&pem_text, None).unwrap();
        assert_eq!(back.public_key(), key.public_key());
    }

    #[test]
    fn encrypted_key_needs_the_right_passphrase() {
        let key = PrivateKey::from_ed25519_seed(&[3u8; 32]);
        let enc = key.to_encrypted_pkcs8_pem("correct horse", 1000).unwrap();
        assert!(enc.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
        let missing = PrivateKey::from_pem(&enc, None).unwrap_err();
        assert!(missing.is_key());
        assert!(missing.to_string().contains("passphrase is required"));
        let wrong = PrivateKey::from_pem(&enc, Some("battery staple")).unwrap_err();
        assert!(wrong.to_string().contains("wrong passphrase"));
        let back = PrivateKey::from_pem(&enc, Some("correct horse")).unwrap();
        assert_eq!(back.public_key(), key.public_key());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let key = PrivateKey::from_ed25519_seed(&[0x41u8; 32]);
        let shown = format!("{key:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains("65, 65"));
        assert!(!shown.to_lowercase().contains("4141"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for text in [
            "",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
            "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----",
            "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----",
        ] {
            assert!(PrivateKey::from_pem(text, None).is_err());
            assert!(PublicKey::from_pem(text).is_err());
        }
    }

    #[cfg(feature = "legacy")]
    #[test]
    fn rsa_keys_under_2048_bits_are_refused_not_a_panic() {
        // A throwaway 1024-bit key (`openssl genpkey -algorithm RSA -pkeyopt
        // rsa_keygen_bits:1024`) and its public half.
        const PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\n\
MIICcwIBADANBgkqhkiG9w0BAQEFAASCAl0wggJZAgEAAoGBAMWv/6xthxHNSIe7\n\
MfiihJUYoxTVGwJNC7Sio9FmmDUBQDHAAVVW9orcMuUa5ZH/sgblVQS1RAUdLpxa\n\
c8xODNqsVvG7bS597RSn41fjKG2zca5lrKtJKJ1Maqi1vbo34kSHwmj+W6bjsLJL\n\
eBJ2HrkUeddTZDLaxJcnIo7RQ41xAgMBAAECfwSiG1vvNTs1lH2Z5ZHuPS1BZpEW\n\
bYugQqX5Kd2+idK0NMz1sxJM93pJruevubGyTHnc5iE2HmIATRddB1nCeoqa8i7z\n\
UzWphKxBgS5AH9t5+8uyV5rbbqltYCGkl2WvSgYYjMB4uSzL/aJLZH6RZd+1qXo7\n\
2XqMq25PpIDatVkCQQDpGExyZxqGJ5PjNjufTVZwO8nj+VpY4/2nAtpCHW6R2GQi\n\
zqkabrjLXduEs1dtXK/Q5Lp3g/9pla1bEWq2nXRfAkEA2Rz/CKnp2Lc1Em/RYYEo\n\
Sf+c0SZzGVklo8/4VMk/3hZP9yTppPwCkUB1RaMSDVnaAg0hTex3wC+/85kO5vLQ\n\
LwJAB2Bneu9cXYZ/HZ+nv2DZLXAW8YoAm/OLIW/rrE/2IdNxR9C2dUmvu2/a9JYg\n\
XCukvL2gUQvyV0sPU2R3thPBjQJAHpFJiuO5S8zHiRf7J7oyfPCjGINMUzZM6Vpf\n\
gThwaIlFquskhhkBF4g2up4x7XVID1/f34O6fHF8mgRjp7pp+wJAQXB1YwWNol3w\n\
9e1auY9D8FClQ6XPJQBqX5WcKl0pei8nIOLyLggA8avgRbBJyqeFkncVPNozquaH\n\
G76QD4e6VQ==\n\
-----END PRIVATE KEY-----";
        const PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\n\
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDFr/+sbYcRzUiHuzH4ooSVGKMU\n\
1RsCTQu0oqPRZpg1AUAxwAFVVvaK3DLlGuWR/7IG5VUEtUQFHS6cWnPMTgzarFbx\n\
u20ufe0Up+NX4yhts3GuZayrSSidTGqotb26N+JEh8Jo/lum47CyS3gSdh65FHnX\n\
U2Qy2sSXJyKO0UONcQIDAQAB\n\
-----END PUBLIC KEY-----";
        let e = PrivateKey::from_pem(PRIVATE, None).unwrap_err();
        assert!(
            e.is_key() && e.to_string().contains("2048 to 8192 bits"),
            "{e}"
        );
        let e = PublicKey::from_pem(PUBLIC).unwrap_err();
        assert!(
            e.is_key() && e.to_string().contains("2048 to 8192 bits"),
            "{e}"
        );
    }

    #[cfg(feature = "legacy")]
    #[test]
    fn rsa_pem_round_trip_and_sign() {
        let key = PrivateKey::generate_rsa(2048).unwrap();
        let back = PrivateKey::from_pem(&key.to_pkcs8_pem().unwrap(), None).unwrap();
        assert_eq!(back.public_key(), key.public_key());
        let spki = key.public_key().to_spki_pem().unwrap();
        assert_eq!(PublicKey::from_pem(&spki).unwrap(), key.public_key());
        let sig = back.sign(b"hello").unwrap();
        key.public_key().verify(b"hello", &sig).unwrap();
        assert!(key.public_key().verify(b"hellO", &sig).is_err());
        assert_eq!(key.algorithm(), KeyAlgorithm::Rsa);
        assert!(format!("{key:?}").contains("redacted"));
    }

    #[test]
    fn passphrase_precedence() {
        let p = resolve_passphrase(Some("a"), Some("b")).unwrap();
        assert_eq!(p.as_str(), "a");
        let p = resolve_passphrase(None, Some("b")).unwrap();
        assert_eq!(p.as_str(), "b");
    }
}
