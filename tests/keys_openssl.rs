//! Keys made by OpenSSL (`tests/fixtures/keys/make-keys.sh`): every RSA-era and current form
//! a configuration may carry must load to the same key, and RS256 tokens must work.

use tdx_volt::protocol::token::{Claims, IdentityToken, Validation};
use tdx_volt::{KeyAlgorithm, PrivateKey, PublicKey};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/keys/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_rsa_form_loads_to_the_same_key() {
    let public = PublicKey::from_pem(&fixture("rsa-public.pem")).unwrap();
    assert_eq!(public.algorithm(), KeyAlgorithm::Rsa);
    for (name, pass) in [
        ("rsa-pkcs8.pem", None),
        ("rsa-pkcs1.pem", None),
        ("rsa-aes256.pem", Some("legacy-pass")),
        ("rsa-des3.pem", Some("legacy-pass")),
    ] {
        let key =
            PrivateKey::from_pem(&fixture(name), pass).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(key.algorithm(), KeyAlgorithm::Rsa, "{name}");
        assert_eq!(key.public_key(), public, "{name}");
    }
    assert_eq!(public.to_spki_pem().unwrap(), fixture("rsa-public.pem"));
}

#[test]
fn wrong_or_missing_passphrase_is_a_key_error() {
    for name in ["rsa-aes256.pem", "rsa-des3.pem", "ed25519-des3.pem"] {
        let text = fixture(name);
        let wrong = PrivateKey::from_pem(&text, Some("not it")).unwrap_err();
        assert!(wrong.is_key(), "{name}: {wrong}");
        assert!(
            wrong.to_string().contains("wrong passphrase"),
            "{name}: {wrong}"
        );
        assert!(
            !wrong.to_string().contains("not it"),
            "{name}: passphrase leaked"
        );
        let missing = PrivateKey::from_pem(&text, None).unwrap_err();
        assert!(
            missing.to_string().contains("passphrase is required"),
            "{name}"
        );
    }
}

#[test]
fn ed25519_from_openssl_des3_and_certificate() {
    let plain = PrivateKey::from_pem(&fixture("ed25519.pem"), None).unwrap();
    let des3 = PrivateKey::from_pem(&fixture("ed25519-des3.pem"), Some("ed-pass")).unwrap();
    assert_eq!(plain.public_key(), des3.public_key());
    let public = PublicKey::from_pem(&fixture("ed25519-public.pem")).unwrap();
    assert_eq!(public, plain.public_key());
    let from_cert = PublicKey::from_certificate_pem(&fixture("ed25519-ca.pem")).unwrap();
    assert_eq!(from_cert, public);
}

#[test]
fn rs256_tokens_sign_and_verify() {
    let key = PrivateKey::from_pem(&fixture("rsa-pkcs8.pem"), None).unwrap();
    let claims = Claims::new("did:volt:legacy", 10_000);
    let token = IdentityToken::sign(&key, &claims).unwrap();
    let header: serde_json::Value = serde_json::from_str(token.header()).unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], key.public_key().fingerprint().unwrap());
    let parsed = IdentityToken::parse(&token.to_jwt()).unwrap();
    let got = parsed
        .verify(
            &key.public_key(),
            &Validation::new("did:volt:legacy", 10_000),
        )
        .unwrap();
    assert_eq!(got, claims);

    // An Ed25519 key must not accept an RS256 token, nor an RSA key an EdDSA one.
    let ed = PrivateKey::from_pem(&fixture("ed25519.pem"), None).unwrap();
    assert!(parsed
        .verify(
            &ed.public_key(),
            &Validation::new("did:volt:legacy", 10_000)
        )
        .is_err());
    let ed_token = IdentityToken::sign(&ed, &claims).unwrap();
    assert!(ed_token
        .verify(
            &key.public_key(),
            &Validation::new("did:volt:legacy", 10_000)
        )
        .is_err());
}

#[test]
fn our_encrypted_rsa_key_round_trips() {
    let key = PrivateKey::from_pem(&fixture("rsa-pkcs8.pem"), None).unwrap();
    let enc = key.to_encrypted_pkcs8_pem("pw", 2048).unwrap();
    let back = PrivateKey::from_pem(&enc, Some("pw")).unwrap();
    assert_eq!(back.public_key(), key.public_key());
}
