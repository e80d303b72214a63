//! The crypto floor of a protocol-v1 unary call: the client's share of the primitives every
//! call needs, in a loop on one thread. An ephemeral X25519 key, the identity token's
//! Ed25519 signature, the Volt hello's Ed25519 verification with X25519 and HKDF to the call
//! key, and AES-256-CBC over a request and a response of GetResource's sizes. The Volt's
//! half of each exchange is made outside the timed part.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tdx_volt::protocol::exchange::{server_key_exchange, ClientKeyExchange};
use tdx_volt::protocol::frame::FrameType;
use tdx_volt::protocol::token::{Claims, IdentityToken};
use tdx_volt::PrivateKey;

/// Exchanges prepared and timed per batch.
const BATCH: usize = 256;
/// Plaintext sizes of a GetResource request and its response, about.
const REQUEST_BYTES: usize = 120;
const RESPONSE_BYTES: usize = 600;

/// Runs batches for about `window` and returns the floor as the driver's JSON line
/// (`per_call_us`: the client's CPU for those primitives, per call).
pub fn run(window: Duration) -> Value {
    let client_key = PrivateKey::generate_ed25519();
    let volt_key = PrivateKey::generate_ed25519();
    let volt_public = volt_key.public_key();
    let request = vec![b'r'; REQUEST_BYTES];
    let response = vec![b'a'; RESPONSE_BYTES];
    let (mut timed, mut calls) = (Duration::ZERO, 0u64);
    let started = Instant::now();
    while started.elapsed() < window {
        // Key pairs (timed), then the Volt's hellos for them (not timed).
        let t = Instant::now();
        let exchanges: Vec<ClientKeyExchange> =
            (0..BATCH).map(|_| ClientKeyExchange::new()).collect();
        let claims: Vec<String> = exchanges
            .iter()
            .map(ClientKeyExchange::token_claim)
            .collect();
        timed += t.elapsed();
        let hellos: Vec<_> = claims
            .iter()
            .map(|k| server_key_exchange(1, k, &volt_key))
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        if hellos.len() != BATCH {
            return json!({"error": "the Volt's half of the exchange failed"});
        }
        let t = Instant::now();
        for ((exchange, k), (hello, server_key)) in exchanges.into_iter().zip(claims).zip(hellos) {
            let token_claims = Claims::new("volt-id", 1_700_000_000).with_key(k);
            let signed = token_claims
                .to_json()
                .and_then(|_| IdentityToken::sign(&client_key, &token_claims));
            let key = exchange.complete(&hello, &volt_public);
            let (Ok(_), Ok(key)) = (signed, key) else {
                return json!({"error": "a primitive failed"});
            };
            let sealed = key.seal(FrameType::Invoke, 1, Map::new(), &request);
            let answer = server_key.seal(FrameType::Payload, 1, Map::new(), &response);
            let opened = key.open(&answer);
            let _ = std::hint::black_box((sealed, opened));
        }
        timed += t.elapsed();
        calls += BATCH as u64;
    }
    let per_call_us = timed.as_secs_f64() * 1e6 / calls.max(1) as f64;
    json!({"client": "floor", "transport": "websocket", "workload": "floor",
           "ops": calls, "per_call_us": per_call_us})
}
