//! RSA keys of RSA-era Volts and their clients, through aws-lc-rs.
//!
//! The older protocol needs four RSA operations: RS256 signing (every client call) and
//! verification (the Volt's side), and RSA-OAEP with SHA-1 encryption of the call's key to the
//! Volt (every client call) and decryption (the Volt's side, twice per call). aws-lc-rs does
//! them in constant time, several times faster than the pure-Rust `rsa` crate this module
//! replaced (the README's Performance section has the figures). AWS-LC wipes a key's memory
//! when it frees it.
//!
//! Keys of 2048 to 8192 bits are accepted, the range aws-lc-rs signs and verifies with.

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::error::KeyRejected;
use aws_lc_rs::rsa::{
    KeyPair, KeySize, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
    PublicEncryptingKey, OAEP_SHA1_MGF1SHA1,
};
use aws_lc_rs::signature::{
    KeyPair as _, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
};
use pkcs8::der::{Decode as _, Encode as _};
use zeroize::Zeroizing;

use super::error::{Error, Result};

/// rsaEncryption (PKCS #1), the algorithm of an RSA SubjectPublicKeyInfo.
const RSA_ENCRYPTION: pkcs8::ObjectIdentifier =
    pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// An RSA private key: the signing key pair, the same key set up for OAEP decryption, and its
/// public half.
pub(crate) struct RsaPrivate {
    pair: KeyPair,
    decrypting: OaepPrivateDecryptingKey,
    public: RsaPublic,
}

impl RsaPrivate {
    /// A fresh random key of `bits` bits: 2048, 3072, 4096 or 8192.
    pub(crate) fn generate(bits: usize) -> Result<RsaPrivate> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            8192 => KeySize::Rsa8192,
            _ => {
                return Err(Error::key(
                    "RSA keys are generated with 2048, 3072, 4096 or 8192 bits",
                ))
            }
        };
        let pair = KeyPair::generate(size).map_err(|_| Error::key("RSA key generation failed"))?;
        RsaPrivate::from_pair(pair)
    }

    /// Reads a PKCS#1 `RSAPrivateKey` DER.
    pub(crate) fn from_pkcs1_der(der: &[u8]) -> Result<RsaPrivate> {
        RsaPrivate::from_parsed(KeyPair::from_der(der), "PKCS#1 RSA key")
    }

    /// Reads a PKCS#8 DER holding an RSA key.
    pub(crate) fn from_pkcs8_der(der: &[u8]) -> Result<RsaPrivate> {
        RsaPrivate::from_parsed(KeyPair::from_pkcs8(der), "RSA key")
    }

    /// The key aws-lc-rs parsed, or the key error naming `what` it refused.
    fn from_parsed(parsed: Result<KeyPair, KeyRejected>, what: &str) -> Result<RsaPrivate> {
        let pair = parsed.map_err(|e| {
            Error::key(format!(
                "private key: invalid or unsupported {what} ({e}; 2048 to 8192 bits)"
            ))
        })?;
        RsaPrivate::from_pair(pair)
    }

    fn from_pair(pair: KeyPair) -> Result<RsaPrivate> {
        let pkcs8 = pkcs8_of(&pair)?;
        let decrypting = PrivateDecryptingKey::from_pkcs8(&pkcs8)
            .ok()
            .and_then(|k| OaepPrivateDecryptingKey::new(k).ok())
            .ok_or_else(|| Error::key("private key: the RSA key cannot decrypt"))?;
        let spki = pair
            .public_key()
            .as_der()
            .map_err(|_| Error::key("RSA public key encoding failed"))?;
        let public = RsaPublic::from_spki_der(spki.as_ref())?;
        Ok(RsaPrivate {
            pair,
            decrypting,
            public,
        })
    }

    /// The public half.
    pub(crate) fn public_key(&self) -> &RsaPublic {
        &self.public
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 (RS256) over `message`.
    pub(crate) fn sign_rs256(&self, message: &[u8]) -> Result<Vec<u8>> {
        let mut signature = vec![0u8; self.pair.public_modulus_len()];
        // aws-lc-rs takes an RNG for ring compatibility; PKCS#1 v1.5 signing does not use it.
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.pair
            .sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)
            .map_err(|_| Error::key("RSA signing failed"))?;
        Ok(signature)
    }

    /// RSA-OAEP (SHA-1, MGF1 with SHA-1) decryption. Any failure is the same bare error.
    pub(crate) fn decrypt_oaep_sha1(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let mut plain = Zeroizing::new(vec![0u8; self.decrypting.min_output_size()]);
        let len = self
            .decrypting
            .decrypt(&OAEP_SHA1_MGF1SHA1, sealed, &mut plain, None)
            .map_err(|_| Error::key("RSA-OAEP decryption failed"))?
            .len();
        plain.truncate(len);
        Ok(plain)
    }

    /// The unencrypted PKCS#8 DER (zeroized on drop).
    pub(crate) fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>> {
        pkcs8_of(&self.pair)
    }
}

fn pkcs8_of(pair: &KeyPair) -> Result<Zeroizing<Vec<u8>>> {
    let der = pair
        .as_der()
        .map_err(|_| Error::key("private key encoding failed"))?;
    Ok(Zeroizing::new(der.as_ref().to_vec()))
}

/// An RSA public key, kept as its DER forms: SPKI (what PEM files and fingerprints use) and
/// PKCS#1 (what verification takes). Two keys are equal when their DER is.
#[derive(Clone)]
pub(crate) struct RsaPublic {
    spki: Vec<u8>,
    pkcs1: Vec<u8>,
    encrypting: PublicEncryptingKey,
}

impl PartialEq for RsaPublic {
    fn eq(&self, other: &RsaPublic) -> bool {
        self.pkcs1 == other.pkcs1
    }
}

impl Eq for RsaPublic {}

impl RsaPublic {
    /// Reads a DER SubjectPublicKeyInfo holding an RSA key.
    pub(crate) fn from_spki_der(der: &[u8]) -> Result<RsaPublic> {
        let invalid =
            || Error::key("public key: invalid or unsupported RSA key (2048 to 8192 bits)");
        let encrypting = PublicEncryptingKey::from_der(der).map_err(|_| invalid())?;
        if !(2048..=8192).contains(&encrypting.key_size_bits()) {
            return Err(invalid());
        }
        // Kept as AWS-LC writes it back (rsaEncryption with NULL parameters, minimal
        // integers), whatever the input's parameters were: the canonical form is what PEM
        // files, fingerprints and equality use.
        let spki = encrypting
            .as_der()
            .map_err(|_| invalid())?
            .as_ref()
            .to_vec();
        let info = spki::SubjectPublicKeyInfoRef::from_der(&spki).map_err(|_| invalid())?;
        let pkcs1 = info
            .subject_public_key
            .as_bytes()
            .ok_or_else(invalid)?
            .to_vec();
        Ok(RsaPublic {
            spki,
            pkcs1,
            encrypting,
        })
    }

    /// Reads a PKCS#1 `RSAPublicKey` DER (only that: it is wrapped as an rsaEncryption key).
    pub(crate) fn from_pkcs1_der(der: &[u8]) -> Result<RsaPublic> {
        let invalid = || Error::key("public key: invalid PKCS#1 RSA key");
        let info = spki::SubjectPublicKeyInfoRef {
            algorithm: spki::AlgorithmIdentifier {
                oid: RSA_ENCRYPTION,
                parameters: Some(spki::der::AnyRef::NULL),
            },
            subject_public_key: spki::der::asn1::BitStringRef::from_bytes(der)
                .map_err(|_| invalid())?,
        };
        let spki = info.to_der().map_err(|_| invalid())?;
        RsaPublic::from_spki_der(&spki)
    }

    /// The DER SubjectPublicKeyInfo.
    pub(crate) fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// Checks an RS256 signature over `message`.
    pub(crate) fn verify_rs256(&self, message: &[u8], signature: &[u8]) -> Result<()> {
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &self.pkcs1)
            .verify(message, signature)
            .map_err(|_| Error::key("signature does not verify"))
    }

    /// RSA-OAEP (SHA-1, MGF1 with SHA-1) encryption of `plain` to this key.
    pub(crate) fn encrypt_oaep_sha1(&self, plain: &[u8]) -> Result<Vec<u8>> {
        let key = OaepPublicEncryptingKey::new(self.encrypting.clone())
            .map_err(|_| Error::key("RSA-OAEP encryption failed"))?;
        let mut sealed = vec![0u8; key.ciphertext_size()];
        let len = key
            .encrypt(&OAEP_SHA1_MGF1SHA1, plain, &mut sealed, None)
            .map_err(|_| Error::key("RSA-OAEP encryption failed"))?
            .len();
        sealed.truncate(len);
        Ok(sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_oaep_round_trip() {
        let key = RsaPrivate::generate(2048).unwrap();
        let public = key.public_key().clone();
        let signature = key.sign_rs256(b"header.claims").unwrap();
        assert_eq!(signature.len(), 256);
        public.verify_rs256(b"header.claims", &signature).unwrap();
        assert!(public.verify_rs256(b"header.claimS", &signature).is_err());

        let sealed = public.encrypt_oaep_sha1(&[7u8; 32]).unwrap();
        assert_eq!(sealed.len(), 256);
        assert_eq!(
            key.decrypt_oaep_sha1(&sealed).unwrap().as_slice(),
            &[7u8; 32]
        );
        let mut bent = sealed.clone();
        bent[100] ^= 1;
        assert!(key.decrypt_oaep_sha1(&bent).is_err());
        assert!(key.decrypt_oaep_sha1(b"short").is_err());
    }

    #[test]
    fn the_der_forms_agree() {
        let key = RsaPrivate::generate(2048).unwrap();
        let public = key.public_key().clone();
        let again = RsaPublic::from_pkcs1_der(&public.pkcs1).unwrap();
        assert_eq!(again.spki_der(), public.spki_der());
        assert!(again == public);
        let back = RsaPrivate::from_pkcs8_der(&key.to_pkcs8_der().unwrap()).unwrap();
        assert!(*back.public_key() == public);
    }

    #[test]
    fn public_keys_are_kept_canonical_and_pkcs1_means_pkcs1() {
        let key = RsaPrivate::generate(2048).unwrap();
        let canonical = key.public_key().clone();
        // The same key with its algorithm's NULL parameters left out.
        let bare = spki::SubjectPublicKeyInfoRef {
            algorithm: spki::AlgorithmIdentifier {
                oid: RSA_ENCRYPTION,
                parameters: None,
            },
            subject_public_key: spki::der::asn1::BitStringRef::from_bytes(&canonical.pkcs1)
                .unwrap(),
        }
        .to_der()
        .unwrap();
        assert_ne!(bare, canonical.spki_der());
        let read = RsaPublic::from_spki_der(&bare).unwrap();
        assert_eq!(read.spki_der(), canonical.spki_der());
        assert!(read == canonical);
        // An SPKI is not a PKCS#1 key.
        assert!(RsaPublic::from_pkcs1_der(canonical.spki_der()).is_err());
    }

    #[test]
    fn odd_sizes_and_garbage_are_errors() {
        assert!(RsaPrivate::generate(1024).is_err());
        assert!(RsaPrivate::generate(2049).is_err());
        assert!(RsaPrivate::from_pkcs8_der(b"\x30\x03\x02\x01\x00").is_err());
        assert!(RsaPrivate::from_pkcs1_der(&[]).is_err());
        assert!(RsaPublic::from_spki_der(&[0x30, 0x00]).is_err());
        assert!(RsaPublic::from_pkcs1_der(&[0x30, 0x00]).is_err());
    }
}
