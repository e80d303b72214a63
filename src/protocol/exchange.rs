//! The per-call key exchange and the AES-256-CBC sealing of frame bodies.
//!
//! The client puts a fresh X25519 public key in its token (`k`); the server answers with its
//! own fresh key and a nonce, signed by the Volt key. Both derive the call key with
//! HKDF-SHA256 over the X25519 shared secret. A signature that does not verify fails the call:
//! there is no unverified fallback.

use aes::cipher::{
    block_padding::Pkcs7, BlockDecryptMut as _, BlockEncryptMut as _, KeyIvInit as _,
};
use base64::Engine as _;
use rand_core::{OsRng, RngCore as _};
use serde_json::{Map, Value};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::error::{Error, Result};
use super::frame::{FrameError, FrameType, SealedFrame, ServerHello, IV_LEN};
use super::keys::{PrivateKey, PublicKey};

/// HKDF salt: these 16 ASCII bytes.
pub const HKDF_SALT: &[u8] = b"a06e10d13fa4445a";
/// HKDF info string.
pub const HKDF_INFO: &[u8] = b"tdx-volt-encryption-key-derivation";
/// DER prefix of an X25519 SubjectPublicKeyInfo; the 32 key bytes follow.
pub const X25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00,
];
/// Nonce length the emulator and tests use for server hellos.
pub const DEFAULT_NONCE_LEN: usize = 32;

/// Encodes a raw X25519 public key as SPKI DER (44 bytes).
pub fn x25519_spki(public: &[u8; 32]) -> [u8; 44] {
    let mut out = [0u8; 44];
    out[..12].copy_from_slice(&X25519_SPKI_PREFIX);
    out[12..].copy_from_slice(public);
    out
}

/// Reads a raw X25519 public key from SPKI DER, strictly.
pub fn parse_x25519_spki(der: &[u8]) -> Result<[u8; 32]> {
    if der.len() != 44 || der[..12] != X25519_SPKI_PREFIX {
        return Err(Error::key_exchange("peer key is not an X25519 SPKI"));
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&der[12..]);
    Ok(key)
}

/// The symmetric key of one call (zeroized on drop).
pub struct CallKey {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for CallKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallKey(<redacted>)")
    }
}

impl CallKey {
    /// Wraps raw key bytes (for tests and known-answer checks).
    pub fn from_bytes(key: [u8; 32]) -> CallKey {
        CallKey {
            key: Zeroizing::new(key),
        }
    }

    third_party_fn! {
        /// Derives the call key from our X25519 secret and the peer's public key.
        fn derive(secret: &x25519_dalek::StaticSecret, peer: &[u8; 32]) -> Result<CallKey> {
            let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*peer));
            if !shared.was_contributory() {
                return Err(Error::key_exchange("peer key is a low-order point"));
            }
            let hk = hkdf::Hkdf::<Sha256>::new(Some(HKDF_SALT), shared.as_bytes());
            let mut key = Zeroizing::new([0u8; 32]);
            hk.expand(HKDF_INFO, key.as_mut())
                .map_err(|_| Error::key_exchange("key derivation failed"))?;
            Ok(CallKey { key })
        }
    }

    /// The raw key (for known-answer tests).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// AES-256-CBC/PKCS#7 encryption with the given IV.
    pub fn encrypt(&self, iv: &[u8; IV_LEN], plaintext: &[u8]) -> Vec<u8> {
        cbc::Encryptor::<aes::Aes256>::new(self.key.as_ref().into(), iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plaintext)
    }

    /// AES-256-CBC/PKCS#7 decryption; bad lengths and padding are errors.
    pub fn decrypt(&self, iv: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, FrameError> {
        let iv: &[u8; IV_LEN] = iv.try_into().map_err(|_| FrameError::BadIv(iv.len()))?;
        if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(IV_LEN) {
            return Err(FrameError::BadCiphertextLength(ciphertext.len()));
        }
        cbc::Decryptor::<aes::Aes256>::new(self.key.as_ref().into(), iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
            .map_err(|_| FrameError::BadPadding)
    }

    /// Builds a type 2 or 3 frame: `body` encrypted under a fresh random IV.
    pub fn seal(
        &self,
        frame_type: FrameType,
        call_id: u64,
        meta: Map<String, Value>,
        body: &[u8],
    ) -> SealedFrame {
        let mut iv = [0u8; IV_LEN];
        OsRng.fill_bytes(&mut iv);
        SealedFrame {
            frame_type,
            call_id,
            meta,
            iv: iv.to_vec(),
            ciphertext: self.encrypt(&iv, body),
        }
    }

    /// Decrypts the body of a sealed frame.
    pub fn open(&self, frame: &SealedFrame) -> Result<Vec<u8>, FrameError> {
        self.decrypt(&frame.iv, &frame.ciphertext)
    }

    /// Decrypts and parses the body of a sealed frame. Every failure (lengths, padding,
    /// JSON) is the same [`FrameError::Undecryptable`], so a peer learns nothing about which
    /// step failed: AES-CBC without a MAC must not become a padding oracle. Servers should
    /// answer every such failure identically.
    pub fn open_body(&self, frame: &SealedFrame) -> Result<super::body::Body, FrameError> {
        let plain = Zeroizing::new(self.open(frame).map_err(|_| FrameError::Undecryptable)?);
        super::body::Body::parse(&plain).map_err(|_| FrameError::Undecryptable)
    }
}

/// The client's half of a call's key exchange.
pub struct ClientKeyExchange {
    secret: x25519_dalek::StaticSecret,
    public: [u8; 32],
}

impl std::fmt::Debug for ClientKeyExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKeyExchange")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl ClientKeyExchange {
    /// A fresh ephemeral key pair.
    pub fn new() -> ClientKeyExchange {
        ClientKeyExchange::from_secret(x25519_dalek::StaticSecret::random_from_rng(OsRng))
    }

    third_party_fn! {
        /// Uses the given secret (for known-answer tests).
        fn from_secret(secret: x25519_dalek::StaticSecret) -> ClientKeyExchange {
            let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
            ClientKeyExchange { secret, public }
        }
    }

    /// Our public key as SPKI DER.
    pub fn public_spki(&self) -> [u8; 44] {
        x25519_spki(&self.public)
    }

    /// The `k` claim: standard base64 of our SPKI DER.
    pub fn token_claim(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.public_spki())
    }

    /// Verifies the server's hello with `signer` (the Volt key, or a service host's key) and
    /// derives the call key. Any failure is a key exchange error.
    /// Consumes the exchange, so its ephemeral secret is used once and then zeroized.
    pub fn complete(self, hello: &ServerHello, signer: &PublicKey) -> Result<CallKey> {
        if signer.as_ed25519().is_none() {
            return Err(Error::key_exchange(
                "the Volt key is not Ed25519; protocol v1 needs an Ed25519 Volt key",
            ));
        }
        let mut signed = Vec::with_capacity(hello.public_key.len() + hello.nonce.len());
        signed.extend_from_slice(&hello.public_key);
        signed.extend_from_slice(&hello.nonce);
        signer.verify(&signed, &hello.signature).map_err(|_| {
            Error::key_exchange("the Volt's key exchange signature does not verify")
        })?;
        let peer = parse_x25519_spki(&hello.public_key)?;
        CallKey::derive(&self.secret, &peer)
    }
}

impl Default for ClientKeyExchange {
    fn default() -> Self {
        ClientKeyExchange::new()
    }
}

/// The server's half: reads the client's `k` claim, makes a fresh key pair and a signed hello.
pub fn server_key_exchange(
    call_id: u64,
    client_k: &str,
    volt_key: &PrivateKey,
) -> Result<(ServerHello, CallKey)> {
    let mut nonce = vec![0u8; DEFAULT_NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    server_key_exchange_with(
        call_id,
        client_k,
        volt_key,
        x25519_dalek::StaticSecret::random_from_rng(OsRng),
        nonce,
    )
}

/// [`server_key_exchange`] with a chosen secret and nonce (for known-answer tests).
pub fn server_key_exchange_with(
    call_id: u64,
    client_k: &str,
    volt_key: &PrivateKey,
    secret: x25519_dalek::StaticSecret,
    nonce: Vec<u8>,
) -> Result<(ServerHello, CallKey)> {
    if volt_key.as_ed25519().is_none() {
        return Err(Error::key_exchange("protocol v1 needs an Ed25519 Volt key"));
    }
    let spki = base64::engine::general_purpose::STANDARD
        .decode(client_k.trim())
        .map_err(|_| Error::key_exchange("token claim k is not base64"))?;
    let peer = parse_x25519_spki(&spki)?;
    let key = CallKey::derive(&secret, &peer)?;
    let public_key = x25519_spki(x25519_dalek::PublicKey::from(&secret).as_bytes()).to_vec();
    let mut signed = public_key.clone();
    signed.extend_from_slice(&nonce);
    let signature = volt_key.sign(&signed)?;
    Ok((
        ServerHello {
            call_id,
            public_key,
            nonce,
            signature,
        },
        key,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_derive_the_same_key() {
        let volt = PrivateKey::from_ed25519_seed(&[4; 32]);
        let client = ClientKeyExchange::new();
        let (hello, server_key) = server_key_exchange(1, &client.token_claim(), &volt).unwrap();
        let client_key = client.complete(&hello, &volt.public_key()).unwrap();
        assert_eq!(client_key.as_bytes(), server_key.as_bytes());
        let sealed = client_key.seal(FrameType::Invoke, 1, Map::new(), b"{\"x\":1}");
        assert_eq!(server_key.open(&sealed).unwrap(), b"{\"x\":1}");
    }

    #[test]
    fn wrong_volt_key_fails_closed() {
        let volt = PrivateKey::from_ed25519_seed(&[4; 32]);
        let impostor = PrivateKey::from_ed25519_seed(&[5; 32]);
        let client = ClientKeyExchange::new();
        let (hello, _) = server_key_exchange(1, &client.token_claim(), &impostor).unwrap();
        let err = client.complete(&hello, &volt.public_key()).unwrap_err();
        assert!(err.is_key_exchange());
        let client = ClientKeyExchange::new();
        let mut tampered = server_key_exchange(1, &client.token_claim(), &volt)
            .unwrap()
            .0;
        tampered.nonce.push(0);
        assert!(client.complete(&tampered, &volt.public_key()).is_err());
    }

    #[test]
    fn low_order_and_malformed_peer_keys_are_refused() {
        let volt = PrivateKey::from_ed25519_seed(&[4; 32]);
        let zero = base64::engine::general_purpose::STANDARD.encode(x25519_spki(&[0; 32]));
        assert!(server_key_exchange(1, &zero, &volt).is_err());
        assert!(server_key_exchange(1, "not base64!", &volt).is_err());
        assert!(server_key_exchange(1, "AAAA", &volt).is_err());
    }

    #[test]
    fn open_body_hides_which_step_failed() {
        let a = CallKey::from_bytes([1; 32]);
        let good = a.seal(
            FrameType::Payload,
            1,
            Map::new(),
            &super::super::body::Body::end().to_json(),
        );
        assert_eq!(a.open_body(&good).unwrap(), super::super::body::Body::end());
        let not_json = a.seal(FrameType::Payload, 1, Map::new(), b"not json");
        let mut bad_len = good.clone();
        bad_len.ciphertext.pop();
        for frame in [not_json, bad_len] {
            assert_eq!(a.open_body(&frame), Err(FrameError::Undecryptable));
        }
        let other = CallKey::from_bytes([2; 32]);
        assert_eq!(other.open_body(&good), Err(FrameError::Undecryptable));
    }

    #[test]
    fn wrong_key_gives_padding_error_or_garbage_never_panic() {
        let a = CallKey::from_bytes([1; 32]);
        let b = CallKey::from_bytes([2; 32]);
        let sealed = a.seal(FrameType::Payload, 1, Map::new(), b"hello world");
        let _ = b.open(&sealed);
        assert_eq!(a.decrypt(&[0; 15], &[0; 16]), Err(FrameError::BadIv(15)));
        assert_eq!(
            a.decrypt(&[0; 16], &[]),
            Err(FrameError::BadCiphertextLength(0))
        );
    }
}
