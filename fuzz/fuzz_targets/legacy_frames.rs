//! Fuzzes the older (RSA-era) protocol's text frame parsers, both directions, and the opening
//! of a sealed payload under a fixed call key. Whatever parses must write back to text that
//! parses to the same frame; no input may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tdx_volt::protocol::legacy::{ClientFrame, LegacyKey, ServerFrame};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = ClientFrame::parse(text) {
        assert_eq!(ClientFrame::parse(&frame.to_text()).ok(), Some(frame));
    }
    if let Ok(frame) = ServerFrame::parse(text) {
        assert_eq!(ServerFrame::parse(&frame.to_text()).ok(), Some(frame));
    }
    let key = LegacyKey::from_parts([7u8; 32], [9u8; 16]);
    if let Ok(body) = key.open(text) {
        assert_eq!(key.open(&key.seal(&body)).ok(), Some(body));
    }
});
