//! Known-answer tests against vectors produced by the official JavaScript client
//! (`@tdxvolt/volt-client-web`): `tests/fixtures/kat-vectors.json`, written by
//! `interop/kat/generate-vectors.mjs`.
//!
//! Every comparison is of exact bytes or text. Fields the official code randomizes (see the
//! fixture's `notes`) are never predicted: they are checked through what they must agree with
//! (an encrypted PEM must decrypt to its seed, a per-call shared key must be what both sides
//! derive from the recorded secrets, and so on). Ed25519 is deterministic, so every signature
//! and token in the file, random or not, is reproduced exactly from its key and message.

use std::fmt::{Debug, Display};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use x25519_dalek::StaticSecret;

use tdx_volt::protocol::body::Body;
use tdx_volt::protocol::exchange::{
    parse_x25519_spki, server_key_exchange_with, x25519_spki, CallKey, ClientKeyExchange,
};
use tdx_volt::protocol::frame::{
    decode_client_frame, decode_server_frame, ClientFrame, FrameType, ServerFrame, ServerHello,
};
use tdx_volt::protocol::keys::fingerprint_of_pem_text;
use tdx_volt::protocol::token::{Claims, IdentityToken, Validation, EDDSA_HEADER};
use tdx_volt::{ClientConfig, PrivateKey, PublicKey, Status};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const ED25519_SPKI_PREFIX: &str = "302a300506032b6570032100";

#[test]
fn spki_public_key_pems() {
    let kat = vectors();
    for (i, v) in indexed(&kat.spki, "spki") {
        let what = format!("spki[{i}] ({})", v.curve);
        let raw: [u8; 32] = hex_array(&v.raw_public_hex);
        let official_der = pem_body_der(&v.pem);
        match v.curve.as_str() {
            "Ed25519" => {
                let from_pem = PublicKey::from_pem(&v.pem).must(&what);
                let from_raw = PublicKey::from_spki_der(&unhex(&format!(
                    "{ED25519_SPKI_PREFIX}{}",
                    v.raw_public_hex
                )))
                .must(&what);
                assert_eq!(from_pem, from_raw, "{what}: PEM and raw key differ");
                assert_eq!(
                    from_raw.to_spki_pem().must(&what),
                    v.pem,
                    "{what}: SPKI PEM"
                );
                let der = from_pem.to_spki_der().must(&what);
                assert_eq!(hex(&der), hex(&official_der), "{what}: SPKI DER");
                assert_eq!(
                    hex(&der[der.len() - 32..]),
                    v.raw_public_hex,
                    "{what}: raw key"
                );
            }
            "X25519" => {
                let ours = x25519_spki(&raw);
                assert_eq!(
                    STANDARD.encode(ours),
                    pem_body(&v.pem),
                    "{what}: SPKI base64"
                );
                let back = parse_x25519_spki(&official_der).must(&what);
                assert_eq!(hex(&back), v.raw_public_hex, "{what}: parsed raw key");
            }
            other => panic!("{what}: unknown curve {other:?}"),
        }
    }
}

#[test]
fn private_key_pems() {
    let kat = vectors();
    for (i, v) in indexed(&kat.private_keys, "private_keys") {
        let what = format!("private_keys[{i}]");
        let key = PrivateKey::from_pem(&v.pem, None).must(&what);
        assert_eq!(hex(&ed25519_seed(&key)), v.seed_hex, "{what}: seed");
        assert_eq!(
            key.public_key().to_spki_pem().must(&what),
            v.public_pem,
            "{what}: public PEM"
        );
    }
    // Writing, in a loop of its own so that every vector above is read first.
    for (i, v) in indexed(&kat.private_keys, "private_keys") {
        let what = format!("private_keys[{i}]");
        let ours = PrivateKey::from_ed25519_seed(&hex_array(&v.seed_hex));
        // We write PKCS#8 v1 (302e020100300506032b657004220420 || seed) like the official
        // client, not v2 with the public key appended.
        assert_eq!(
            hex(&ours.to_pkcs8_der().must(&what)),
            hex(&pem_body_der(&v.pem)),
            "{what}: PKCS#8 DER"
        );
        // The official PEM has no final newline; ours has one. Otherwise identical.
        let pem = ours.to_pkcs8_pem().must(&what);
        assert_eq!(pem.trim_end(), v.pem.trim_end(), "{what}: PKCS#8 PEM");
        assert!(
            pem.ends_with("-----\n"),
            "{what}: our PEM ends with one newline"
        );
    }
}

#[test]
fn encrypted_private_key_pems() {
    let kat = vectors();
    for (i, v) in indexed(&kat.encrypted_keys, "encrypted_keys") {
        let what = format!("encrypted_keys[{i}]");
        // The official client writes the PBKDF2 prf as SEQUENCE { OID hmacWithSHA256 } with
        // no NULL parameter (300a06082a864886f70d0209); we must read that form.
        let key = PrivateKey::from_pem(&v.pem, Some(&v.passphrase))
            .must(format!("{what}: official encrypted PKCS#8"));
        assert_eq!(
            hex(&ed25519_seed(&key)),
            v.seed_hex,
            "{what}: decrypted seed"
        );

        let wrong = PrivateKey::from_pem(&v.pem, Some(&format!("{}!", v.passphrase)));
        let err = wrong.expect_err(&format!("{what}: a wrong passphrase must fail"));
        assert!(err.is_key(), "{what}: wrong passphrase gives {err:?}");
        let err = PrivateKey::from_pem(&v.pem, None)
            .expect_err(&format!("{what}: a missing passphrase must fail"));
        assert!(err.is_key(), "{what}: missing passphrase gives {err:?}");
    }
}

#[test]
fn ed25519_signatures() {
    let kat = vectors();
    for (i, v) in indexed(&kat.signatures, "signatures") {
        let what = format!("signatures[{i}]");
        let key = PrivateKey::from_pem(&v.private_pem, None).must(&what);
        let message = unhex(&v.message_hex);
        let ours = key.sign(&message).must(&what);
        assert_eq!(
            URL_SAFE_NO_PAD.encode(&ours),
            v.signature_b64url,
            "{what}: signature"
        );

        let official = URL_SAFE_NO_PAD.decode(&v.signature_b64url).must(&what);
        key.public_key().verify(&message, &official).must(&what);
        let mut other = message.clone();
        other.push(0);
        assert!(
            key.public_key().verify(&other, &official).is_err(),
            "{what}: signature verified over a different message"
        );
    }
}

#[test]
fn identity_tokens() {
    let kat = vectors();
    for (i, v) in indexed(&kat.tokens, "tokens") {
        let what = format!("tokens[{i}] ({})", v.generator);
        let key = PrivateKey::from_pem(&v.private_pem, None).must(&what);
        let public = PublicKey::from_pem(&v.public_pem).must(&what);
        assert_eq!(key.public_key(), public, "{what}: key pair");

        let claims: Claims = serde_json::from_value(v.claims.clone()).must(&what);
        assert_eq!(
            utf8(&claims.to_json().must(&what)),
            v.claims_json,
            "{what}: claims JSON"
        );
        // Deterministic for getIdentityToken too, once its (clock-based) claims are given.
        let signed = IdentityToken::sign(&key, &claims).must(&what);
        assert_eq!(signed.to_jwt(), v.token, "{what}: JWT");

        let parsed = IdentityToken::parse(&v.token).must(&what);
        assert_eq!(parsed.header(), EDDSA_HEADER, "{what}: header");
        assert_eq!(
            utf8(parsed.claims_json()),
            v.claims_json,
            "{what}: parsed claims"
        );
        let validation = Validation::new(claims.aud.clone(), claims.iat + 60);
        assert_eq!(
            parsed.verify(&public, &validation).must(&what),
            claims,
            "{what}: verify"
        );
        let wire = IdentityToken::from_wire_parts(parsed.claims_json(), parsed.signature());
        assert_eq!(wire.to_jwt(), v.token, "{what}: wire parts rebuild the JWT");
        wire.verify(&public, &validation).must(&what);

        if let (Some(k), Some(k_private_hex)) = (&v.k, &v.k_private_hex) {
            assert_eq!(claims.k.as_ref(), Some(k), "{what}: k claim");
            let exchange =
                ClientKeyExchange::from_secret(StaticSecret::from(hex_array::<32>(k_private_hex)));
            assert_eq!(&exchange.token_claim(), k, "{what}: k from k_private_hex");
        }
    }
}

#[test]
fn x25519_hkdf_shared_keys() {
    let kat = vectors();
    for (i, v) in indexed(&kat.shared_keys, "shared_keys") {
        let what = format!("shared_keys[{i}]");
        let a: [u8; 32] = hex_array(&v.a_private_hex);
        let b: [u8; 32] = hex_array(&v.b_private_hex);
        let a_public =
            parse_x25519_spki(&STANDARD.decode(&v.a_public_spki_b64).must(&what)).must(&what);
        let b_public =
            parse_x25519_spki(&STANDARD.decode(&v.b_public_spki_b64).must(&what)).must(&what);
        let claim_of = |secret: [u8; 32]| {
            ClientKeyExchange::from_secret(StaticSecret::from(secret)).token_claim()
        };
        assert_eq!(claim_of(a), v.a_public_spki_b64, "{what}: a public SPKI");
        assert_eq!(claim_of(b), v.b_public_spki_b64, "{what}: b public SPKI");

        let ab = CallKey::derive(&StaticSecret::from(a), &b_public).must(&what);
        assert_eq!(hex(ab.as_bytes()), v.shared_key_hex, "{what}: derive(a, B)");
        let ba = CallKey::derive(&StaticSecret::from(b), &a_public).must(&what);
        assert_eq!(hex(ba.as_bytes()), v.shared_key_hex, "{what}: derive(b, A)");
    }
}

#[test]
fn aes_256_cbc() {
    let kat = vectors();
    for (i, v) in indexed(&kat.aes_cbc, "aes_cbc") {
        let what = format!("aes_cbc[{i}]");
        let key = CallKey::from_bytes(hex_array(&v.key_hex));
        let iv: [u8; 16] = hex_array(&v.iv_hex);
        let ciphertext = key.encrypt(&iv, &unhex(&v.plaintext_hex));
        assert_eq!(hex(&ciphertext), v.ciphertext_hex, "{what}: encrypt");
        let plaintext = key.decrypt(&iv, &unhex(&v.ciphertext_hex)).must(&what);
        assert_eq!(hex(&plaintext), v.plaintext_hex, "{what}: decrypt");
    }
}

#[test]
fn pem_text_fingerprints() {
    // The web client keys its token cache by base58(SHA-256(PEM text)), whatever the text.
    let kat = vectors();
    for (i, v) in indexed(&kat.fingerprints, "fingerprints") {
        assert_eq!(
            fingerprint_of_pem_text(&v.public_pem),
            v.fingerprint,
            "fingerprints[{i}]: of PEM text"
        );
    }
}

#[test]
fn raw_key_fingerprints() {
    // The gRPC client routes by base58(SHA-256(raw Ed25519 key)): PublicKey::fingerprint.
    let kat = vectors();
    for (i, v) in indexed(&kat.raw_key_fingerprints, "raw_key_fingerprints") {
        let what = format!("raw_key_fingerprints[{i}]");
        let key = PublicKey::from_pem(&v.public_pem).must(&what);
        assert_eq!(key.fingerprint().must(&what), v.fingerprint, "{what}");
        let config = ClientConfig::from_value(json!({
            "credential": {"client_id": "c", "key": kat.private_keys[0].pem},
            "volt": {"id": "v", "public_key": v.public_pem},
        }))
        .must(&what);
        assert_eq!(
            config.volt_fingerprint().must(&what),
            v.fingerprint,
            "{what}: config"
        );
    }
}

#[test]
fn session_frames_of_the_official_client() {
    let kat = vectors();
    let s = &kat.session;
    let config = ClientConfig::from_value(s.config.clone()).must("session.config");
    assert_eq!(
        config.websocket_url().must("session.config"),
        s.url,
        "session.url"
    );
    assert_eq!(
        config.credential().key_pem(),
        s.client_private_pem,
        "session.config key"
    );

    let volt_key = PrivateKey::from_ed25519_seed(&hex_array(&s.volt_signing_seed_hex));
    let volt_public = config.volt_public_key().must("session.config");
    assert_eq!(
        volt_public,
        volt_key.public_key(),
        "session: Volt key from the seed"
    );
    assert_eq!(
        volt_public.to_spki_pem().must("session"),
        s.volt_public_pem,
        "session: Volt PEM"
    );

    let client_key = config.private_key(None).must("session.config");
    assert_eq!(
        hex(&ed25519_seed(&client_key)),
        s.client_seed_hex,
        "session: client seed"
    );
    let client_public = PublicKey::from_pem(&s.client_public_pem).must("session");
    assert_eq!(
        client_key.public_key(),
        client_public,
        "session: client key pair"
    );

    let peers = Peers {
        audience: config.volt().id.clone(),
        volt_key,
        volt_public,
        client_key,
        client_public,
    };
    for (i, call) in indexed(&s.calls, "session.calls") {
        check_call(
            &format!("session.calls[{i}] (call {})", call.call_id),
            call,
            &peers,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Session helpers
// ---------------------------------------------------------------------------------------------

struct Peers {
    audience: String,
    volt_key: PrivateKey,
    volt_public: PublicKey,
    client_key: PrivateKey,
    client_public: PublicKey,
}

fn check_call(what: &str, call: &Call, peers: &Peers) {
    let n = call.client_frames_hex.len();
    assert!(
        n >= 2,
        "{what}: a call has a key exchange and an invoke frame"
    );
    assert_eq!(
        call.client_frame_types.len(),
        n,
        "{what}: client_frame_types aligned"
    );
    assert_eq!(call.client_metas.len(), n, "{what}: client_metas aligned");
    assert_eq!(
        call.decrypted_client_bodies.len(),
        n,
        "{what}: decrypted_client_bodies aligned"
    );
    assert_eq!(
        call.server_bodies.len(),
        call.server_frames_hex.len(),
        "{what}: server_bodies aligned"
    );

    // (a) The client's frames decode, re-encode to the same bytes, and carry its token.
    let frames = decode_client_frames(what, call);
    let ClientFrame::Hello(hello) = &frames[0] else {
        panic!("{what}: client frame 0 is not a key exchange")
    };
    assert_eq!(
        utf8(&hello.claims),
        call.client_claims_json,
        "{what}: claims"
    );
    let token = IdentityToken::from_wire_parts(&hello.claims, &hello.signature);
    assert_eq!(token.to_jwt(), call.client_token, "{what}: token");
    let claims = token.claims_unverified().must(what);
    let validation = Validation::new(peers.audience.clone(), claims.iat + 60);
    assert_eq!(
        token.verify(&peers.client_public, &validation).must(what),
        claims,
        "{what}"
    );
    let resigned = IdentityToken::sign(&peers.client_key, &claims).must(what);
    assert_eq!(
        resigned.to_jwt(),
        call.client_token,
        "{what}: token re-signed by us"
    );
    let k = claims
        .k
        .clone()
        .unwrap_or_else(|| panic!("{what}: no k claim"));

    // (b) Our server half, given the script's secret and nonce, answers byte for byte.
    let (server_hello, server_key) = server_key_exchange_with(
        call.call_id,
        &k,
        &peers.volt_key,
        StaticSecret::from(hex_array::<32>(&call.server_x25519_private_hex)),
        unhex(&call.nonce_hex),
    )
    .must(what);
    let encoded = server_hello.encode().must(what);
    assert_eq!(
        hex(&encoded),
        call.server_frames_hex[0],
        "{what}: server key exchange frame"
    );
    assert_eq!(
        hex(server_key.as_bytes()),
        call.shared_key_hex,
        "{what}: server call key"
    );

    // (c) The server opens the client's sealed frames.
    assert_eq!(
        call.decrypted_client_bodies[0], "",
        "{what}: key exchange has no body"
    );
    for (j, frame) in frames.iter().enumerate().skip(1) {
        let ClientFrame::Sealed(sealed) = frame else {
            panic!("{what}: client frame {j} is a second key exchange")
        };
        let plain = server_key
            .open(sealed)
            .must(format!("{what}: client frame {j}"));
        assert_eq!(
            utf8(&plain),
            call.decrypted_client_bodies[j],
            "{what}: client body {j}"
        );
        let expected = expected_client_body(call, sealed.frame_type);
        let parsed = Body::parse(&plain).must(format!("{what}: client body {j}"));
        assert_eq!(parsed, expected, "{what}: client body {j}");
        assert_eq!(
            utf8(&expected.to_json()),
            utf8(&plain),
            "{what}: our encoding of body {j}"
        );
    }

    // (d) Our client half, given the recorded ephemeral secret, gets the same key and reads
    // the server's frames.
    let secret = hex_array::<32>(&call.client_ephemeral_private_hex);
    let exchange = ClientKeyExchange::from_secret(StaticSecret::from(secret));
    assert_eq!(
        exchange.token_claim(),
        k,
        "{what}: k from the ephemeral secret"
    );
    let server_frames = decode_server_frames(what, call);
    let ServerFrame::Hello(official_hello) = &server_frames[0] else {
        panic!("{what}: server frame 0 is not a key exchange")
    };
    assert_eq!(
        official_hello, &server_hello,
        "{what}: decoded server hello"
    );
    let client_key = exchange
        .complete(official_hello, &peers.volt_public)
        .must(what);
    assert_eq!(
        hex(client_key.as_bytes()),
        call.shared_key_hex,
        "{what}: client call key"
    );

    assert_eq!(
        call.server_bodies[0], "",
        "{what}: key exchange has no body"
    );
    let mut bodies = Vec::new();
    for (j, frame) in server_frames.iter().enumerate().skip(1) {
        let ServerFrame::Sealed(sealed) = frame else {
            panic!("{what}: server frame {j} is a second key exchange")
        };
        assert!(
            sealed.meta.is_empty(),
            "{what}: server frame {j} meta {:?}",
            sealed.meta
        );
        let plain = client_key
            .open(sealed)
            .must(format!("{what}: server frame {j}"));
        assert_eq!(
            utf8(&plain),
            call.server_bodies[j],
            "{what}: server body {j}"
        );
        bodies.push(Body::parse(&plain).must(format!("{what}: server body {j}")));
    }
    // The parsed bodies mean what the official client made of them.
    assert_eq!(
        events_of(what, &bodies),
        official_events(call),
        "{what}: events"
    );

    // (e) A hello that was tampered with, or signed by another key, is refused.
    check_tampered_hellos(what, secret, official_hello, peers);
}

fn decode_client_frames(what: &str, call: &Call) -> Vec<ClientFrame> {
    let mut frames = Vec::new();
    for (j, frame_hex) in call.client_frames_hex.iter().enumerate() {
        let what = format!("{what}: client frame {j}");
        let bytes = unhex(frame_hex);
        let frame = decode_client_frame(&bytes).must(&what);
        let (frame_type, meta, encoded) = match &frame {
            ClientFrame::Hello(h) => (FrameType::KeyExchange, &h.meta, h.encode()),
            ClientFrame::Sealed(s) => (s.frame_type, &s.meta, s.encode()),
        };
        assert_eq!(frame.call_id(), call.call_id, "{what}: call id");
        assert_eq!(frame_type as u8, call.client_frame_types[j], "{what}: type");
        assert_eq!(meta, &meta_of(&what, &call.client_metas[j]), "{what}: meta");
        assert_eq!(hex(&encoded.must(&what)), *frame_hex, "{what}: re-encoded");
        frames.push(frame);
    }
    frames
}

fn decode_server_frames(what: &str, call: &Call) -> Vec<ServerFrame> {
    let mut frames = Vec::new();
    for (j, frame_hex) in call.server_frames_hex.iter().enumerate() {
        let what = format!("{what}: server frame {j}");
        let frame = decode_server_frame(&unhex(frame_hex)).must(&what);
        let encoded = match &frame {
            ServerFrame::Hello(h) => h.encode(),
            ServerFrame::Sealed(s) => s.encode(),
        };
        assert_eq!(frame.call_id(), call.call_id, "{what}: call id");
        assert_eq!(hex(&encoded.must(&what)), *frame_hex, "{what}: re-encoded");
        frames.push(frame);
    }
    frames
}

/// What the official client sends: the invoke carrying the first request (`{}` when there is
/// none), and a plain end.
fn expected_client_body(call: &Call, frame_type: FrameType) -> Body {
    match frame_type {
        FrameType::Invoke => Body::Invoke {
            method_name: call.method.clone(),
            service_id: None,
            json_request: match &call.request {
                Value::Null => "{}".to_owned(),
                request => request.to_string(),
            },
        },
        FrameType::Payload => Body::end(),
        other => unreachable!("{other:?} frames carry no body"),
    }
}

/// The events the official `WebSocketRPC` emits for these bodies: a payload whose status is
/// an error is an `error`, any other payload is `data`, an end is `end`.
fn events_of(what: &str, bodies: &[Body]) -> Vec<Value> {
    let status_error = |s: Status| json!({"error": {"message": s.message, "code": s.code, "description": s.description}});
    bodies
        .iter()
        .map(|body| match body {
            Body::Payload { json_payload } => {
                let payload: Value = serde_json::from_str(json_payload).must(what);
                match payload.get("status").and_then(Status::from_json) {
                    Some(status) if status.is_error() => status_error(status),
                    _ => json!({ "data": payload }),
                }
            }
            Body::End { error: None, .. } => json!({"end": true}),
            Body::End { error: Some(e), .. } => json!({"error": {"message": e}}),
            other => panic!("{what}: the server sent {other:?}"),
        })
        .collect()
}

/// The recorded events, without the JavaScript error class name.
fn official_events(call: &Call) -> Vec<Value> {
    let mut events = call.events.clone();
    for event in &mut events {
        if let Some(Value::Object(error)) = event.get_mut("error") {
            error.remove("name");
        }
    }
    events
}

/// Changes one byte of a server hello.
type Tamper = fn(&mut ServerHello);

fn check_tampered_hellos(what: &str, secret: [u8; 32], hello: &ServerHello, peers: &Peers) {
    let tampers: [(&str, Tamper); 3] = [
        ("signature", |h| h.signature[0] ^= 0x01),
        ("nonce", |h| h.nonce[0] ^= 0x01),
        ("X25519 key", |h| h.public_key[43] ^= 0x01),
    ];
    for (field, tamper) in tampers {
        let mut bad = hello.clone();
        tamper(&mut bad);
        let err = ClientKeyExchange::from_secret(StaticSecret::from(secret))
            .complete(&bad, &peers.volt_public)
            .expect_err(&format!(
                "{what}: hello with a flipped {field} byte was accepted"
            ));
        assert!(
            err.is_key_exchange(),
            "{what}: flipped {field} byte gives {err:?}"
        );
    }
    let err = ClientKeyExchange::from_secret(StaticSecret::from(secret))
        .complete(hello, &peers.client_public)
        .expect_err(&format!(
            "{what}: hello accepted under a key that is not the Volt's"
        ));
    assert!(
        err.is_key_exchange(),
        "{what}: wrong Volt key gives {err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct Vectors {
    spki: Vec<SpkiVector>,
    private_keys: Vec<PrivateKeyVector>,
    encrypted_keys: Vec<EncryptedKeyVector>,
    signatures: Vec<SignatureVector>,
    tokens: Vec<TokenVector>,
    shared_keys: Vec<SharedKeyVector>,
    aes_cbc: Vec<AesVector>,
    fingerprints: Vec<FingerprintVector>,
    raw_key_fingerprints: Vec<FingerprintVector>,
    session: Session,
}

#[derive(Deserialize)]
struct SpkiVector {
    curve: String,
    raw_public_hex: String,
    pem: String,
}

#[derive(Deserialize)]
struct PrivateKeyVector {
    seed_hex: String,
    pem: String,
    public_pem: String,
}

#[derive(Deserialize)]
struct EncryptedKeyVector {
    passphrase: String,
    pem: String,
    seed_hex: String,
}

#[derive(Deserialize)]
struct SignatureVector {
    private_pem: String,
    message_hex: String,
    signature_b64url: String,
}

#[derive(Deserialize)]
struct TokenVector {
    generator: String,
    private_pem: String,
    public_pem: String,
    claims: Value,
    claims_json: String,
    token: String,
    k: Option<String>,
    k_private_hex: Option<String>,
}

#[derive(Deserialize)]
struct SharedKeyVector {
    a_private_hex: String,
    a_public_spki_b64: String,
    b_private_hex: String,
    b_public_spki_b64: String,
    shared_key_hex: String,
}

#[derive(Deserialize)]
struct AesVector {
    key_hex: String,
    iv_hex: String,
    plaintext_hex: String,
    ciphertext_hex: String,
}

#[derive(Deserialize)]
struct FingerprintVector {
    public_pem: String,
    fingerprint: String,
}

#[derive(Deserialize)]
struct Session {
    url: String,
    volt_signing_seed_hex: String,
    volt_public_pem: String,
    client_private_pem: String,
    client_seed_hex: String,
    client_public_pem: String,
    config: Value,
    calls: Vec<Call>,
}

#[derive(Deserialize)]
struct Call {
    call_id: u64,
    method: String,
    request: Value,
    client_frames_hex: Vec<String>,
    client_frame_types: Vec<u8>,
    client_metas: Vec<String>,
    decrypted_client_bodies: Vec<String>,
    client_token: String,
    client_claims_json: String,
    client_ephemeral_private_hex: String,
    server_x25519_private_hex: String,
    nonce_hex: String,
    server_frames_hex: Vec<String>,
    server_bodies: Vec<String>,
    shared_key_hex: String,
    events: Vec<Value>,
}

fn vectors() -> Vectors {
    serde_json::from_str(include_str!("fixtures/kat-vectors.json")).must("kat-vectors.json")
}

/// The vectors of a group with their indices; an empty group is a broken fixture.
fn indexed<'a, T>(group: &'a [T], name: &str) -> impl Iterator<Item = (usize, &'a T)> {
    assert!(!group.is_empty(), "{name}: the fixture has no vectors");
    group.iter().enumerate()
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

trait Must<T> {
    /// Unwraps, naming the vector in the panic message.
    fn must(self, what: impl Display) -> T;
}

impl<T, E: Debug> Must<T> for Result<T, E> {
    fn must(self, what: impl Display) -> T {
        self.unwrap_or_else(|e| panic!("{what}: {e:?}"))
    }
}

fn unhex(text: &str) -> Vec<u8> {
    assert!(
        text.len().is_multiple_of(2) && text.is_ascii(),
        "bad hex {text:?}"
    );
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn hex_array<const N: usize>(text: &str) -> [u8; N] {
    unhex(text)
        .try_into()
        .unwrap_or_else(|v: Vec<u8>| panic!("expected {N} bytes of hex, got {}", v.len()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn utf8(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).must("UTF-8")
}

/// The base64 body of a single-block PEM, read independently of our PEM reader.
fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

fn pem_body_der(pem: &str) -> Vec<u8> {
    STANDARD.decode(pem_body(pem)).must("PEM base64")
}

fn meta_of(what: &str, meta: &str) -> Map<String, Value> {
    if meta.is_empty() {
        Map::new()
    } else {
        serde_json::from_str(meta).must(what)
    }
}

fn ed25519_seed(key: &PrivateKey) -> [u8; 32] {
    key.as_ed25519().expect("an Ed25519 key").to_bytes()
}
