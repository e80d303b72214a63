//! Fuzzes the readers of user-supplied text: configuration JSON, PEM keys and JWTs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tdx_volt::protocol::token::IdentityToken;
use tdx_volt::{ClientConfig, PrivateKey, PublicKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = ClientConfig::from_json_str(text) {
        let _ = config.websocket_url();
        let _ = config.volt_public_key();
        let _ = ClientConfig::from_value(config.to_json());
    }
    let _ = PrivateKey::from_pem(text, Some("passphrase"));
    let _ = PublicKey::from_pem(text);
    if let Ok(token) = IdentityToken::parse(text) {
        let _ = token.claims_unverified();
    }
});
