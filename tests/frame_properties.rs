//! Property tests of the websocket v1 codec: everything encoded decodes to itself, sealed
//! bodies open to their plaintext, and no input makes a decoder panic.

use proptest::prelude::*;
use serde_json::{Map, Value};
use tdx_volt::protocol::body::Body;
use tdx_volt::protocol::exchange::CallKey;
use tdx_volt::protocol::frame::{
    decode_client_frame, decode_server_frame, ClientFrame, ClientHello, FrameType, ServerFrame,
    ServerHello,
};

fn meta() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map("[a-z_]{1,8}", any::<i32>(), 0..4).prop_map(|m| {
        m.into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect::<Map<String, Value>>()
    })
}

fn sealed_type() -> impl Strategy<Value = FrameType> {
    prop_oneof![Just(FrameType::Invoke), Just(FrameType::Payload)]
}

/// A piece of a well-formed JSON string's contents: characters, or an escape.
fn payload_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-c/{}:,é ]{1,40}",
        2 => r#"\\["\\/nrtbf]"#,
        1 => Just(r"\u00e9".to_owned()),
    ]
}

/// What a JSON string's contents may not hold as it is: a bad escape, a bare quote or
/// backslash, a control character.
fn payload_flaw() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r"\q".to_owned()),
        Just("\"".to_owned()),
        Just("\\".to_owned()),
        Just("\u{1}".to_owned()),
        Just("\n".to_owned()),
    ]
}

proptest! {
    #[test]
    fn client_hello_round_trips(
        call_id in any::<u64>(),
        meta in meta(),
        signature in proptest::collection::vec(any::<u8>(), 0..=255),
        claims in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let hello = ClientHello { call_id, meta, signature, claims };
        let bytes = hello.encode().unwrap();
        prop_assert_eq!(decode_client_frame(&bytes).unwrap(), ClientFrame::Hello(hello));
    }

    #[test]
    fn server_hello_round_trips(
        call_id in any::<u64>(),
        public_key in proptest::collection::vec(any::<u8>(), 0..=255),
        nonce in proptest::collection::vec(any::<u8>(), 0..=255),
        signature in proptest::collection::vec(any::<u8>(), 0..=255),
    ) {
        let hello = ServerHello { call_id, public_key, nonce, signature };
        let bytes = hello.encode().unwrap();
        prop_assert_eq!(decode_server_frame(&bytes).unwrap(), ServerFrame::Hello(hello));
    }

    #[test]
    fn sealed_frames_round_trip_and_open(
        frame_type in sealed_type(),
        call_id in any::<u64>(),
        meta in meta(),
        key in any::<[u8; 32]>(),
        body in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        let key = CallKey::from_bytes(key);
        let sealed = key.seal(frame_type, call_id, meta, &body);
        let bytes = sealed.encode().unwrap();
        let ClientFrame::Sealed(back) = decode_client_frame(&bytes).unwrap() else {
            return Err(TestCaseError::fail("not sealed"));
        };
        prop_assert_eq!(&back, &sealed);
        prop_assert_eq!(key.open(&back).unwrap(), body);
        prop_assert_eq!(decode_server_frame(&bytes).unwrap(), ServerFrame::Sealed(sealed));
    }

    #[test]
    fn bodies_round_trip(
        name in ".*",
        service in proptest::option::of(".+"),
        json in ".*",
        error in proptest::option::of(".+"),
        code in any::<i32>(),
    ) {
        let cases = [
            Body::Invoke { method_name: name, service_id: service, json_request: json.clone() },
            Body::Payload { json_payload: json },
            Body::End { error: error.clone(), error_code: if error.is_some() { code } else { 0 } },
        ];
        for body in cases {
            prop_assert_eq!(Body::parse(&body.to_json()).unwrap(), body);
        }
    }

    #[test]
    fn payloads_read_as_serde_json_reads_them(
        pieces in proptest::collection::vec(payload_piece(), 0..40),
        flaw in proptest::option::of((0usize..40, payload_flaw())),
    ) {
        // The form both ends write, around a string of escapes and characters with at most
        // one flaw in it: what `Body::parse` reads is what serde_json reads.
        let mut pieces = pieces;
        if let Some((at, flaw)) = flaw {
            pieces.insert(at.min(pieces.len()), flaw);
        }
        let inner = pieces.concat();
        let text = format!(r#"{{"method_payload":{{"json_payload":"{inner}"}}}}"#);
        let expected = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["method_payload"]["json_payload"].as_str().map(str::to_owned));
        let got = match Body::parse(text.as_bytes()) {
            Ok(Body::Payload { json_payload }) => Some(json_payload),
            Ok(_) => return Ok(()),
            Err(_) => None,
        };
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_client_frame(&bytes);
        let _ = decode_server_frame(&bytes);
        let _ = Body::parse(&bytes);
    }

    #[test]
    fn decoders_never_panic_on_plausible_headers(
        ty in 0u8..5,
        rest in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = vec![1, ty, 0, 0, 0, 0, 0, 0, 0, 1];
        bytes.extend_from_slice(&rest);
        let _ = decode_client_frame(&bytes);
        let _ = decode_server_frame(&bytes);
    }

    #[test]
    fn wrong_key_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..256),
        a in any::<[u8; 32]>(),
        b in any::<[u8; 32]>(),
    ) {
        let sealed = CallKey::from_bytes(a).seal(FrameType::Payload, 1, Map::new(), &body);
        let _ = CallKey::from_bytes(b).open(&sealed);
    }
}
