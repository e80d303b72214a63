//! Fuzzes the websocket v1 decoders, both directions, and the body parser. Whatever decodes
//! must encode back to bytes that decode to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tdx_volt::protocol::body::Body;
use tdx_volt::protocol::frame::{decode_client_frame, decode_server_frame, ClientFrame, ServerFrame};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode_client_frame(data) {
        let again = match &frame {
            ClientFrame::Hello(h) => h.encode(),
            ClientFrame::Sealed(s) => s.encode(),
        };
        if let Ok(bytes) = again {
            assert_eq!(decode_client_frame(&bytes).ok(), Some(frame));
        }
    }
    if let Ok(frame) = decode_server_frame(data) {
        let again = match &frame {
            ServerFrame::Hello(h) => h.encode(),
            ServerFrame::Sealed(s) => s.encode(),
        };
        if let Ok(bytes) = again {
            assert_eq!(decode_server_frame(&bytes).ok(), Some(frame));
        }
    }
    if let Ok(body) = Body::parse(data) {
        assert_eq!(Body::parse(&body.to_json()).ok(), Some(body));
    }
});
