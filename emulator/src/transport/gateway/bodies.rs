//! The bodies and frames a gateway call answers with, and the requests it reads, shared by
//! both protocols.

use bytes::Bytes;
use prost::Message as _;
use serde_json::Value;
use tdx_volt::proto::volt::{subscribe_wire_response, PublishWireRequest, SubscribeWireResponse};
use tdx_volt::protocol::body::Body;
use tdx_volt::protocol::json_text;
use tdx_volt::protocol::schema::{self, Method};
use tdx_volt::protocol::wire_chunk;
use tokio_tungstenite::tungstenite::Message;

use super::{CallSeal, MAX_ERROR_TEXT};
use crate::call::{Code, Failure};

/// The body ending a call: a normal end, or `method_end.error` with the failure's code.
pub(super) fn end_body(result: Result<(), Failure>) -> Body {
    match result {
        Ok(()) => Body::end(),
        Err(f) => Body::End {
            error: Some(clip(f.message()).to_owned()),
            error_code: f.code().as_i32(),
        },
    }
}

/// The failure of a call whose response alone is over the connection's queue cap.
pub(super) fn too_large(size: usize) -> Failure {
    Failure::abort(
        Code::ResourceExhausted,
        format!("a response frame of {size} bytes exceeds this connection's queue limit"),
    )
}

/// Cuts an error text to [`MAX_ERROR_TEXT`] bytes at a character boundary.
pub(crate) fn clip(message: &str) -> &str {
    if message.len() <= MAX_ERROR_TEXT {
        return message;
    }
    let mut end = MAX_ERROR_TEXT;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

// A `PublishWireRequest`, and a `SubscribeWireResponse`, that carries a chunk alone (the bulk
// of a wire's traffic) is read and written without the generic conversion, which goes through
// a `serde_json::Value` and base64 a byte at a time; anything else takes it.
const PUBLISH_WIRE: &str = "/tdx.volt_api.volt.v1.WireAPI/PublishWire";
const SUBSCRIBE_WIRE: &str = "/tdx.volt_api.volt.v1.WireAPI/SubscribeWire";

pub(super) fn request_bytes(method: &Method, json: &str) -> Result<Bytes, Failure> {
    if method.path() == PUBLISH_WIRE {
        if let Some(chunk) = wire_chunk::from_json(json) {
            let request = PublishWireRequest {
                chunk,
                ..PublishWireRequest::default()
            };
            return Ok(request.encode_to_vec().into());
        }
    }
    let value: Value = serde_json::from_str(json)
        .map_err(|e| Failure::abort(Code::InvalidArgument, format!("request is not JSON: {e}")))?;
    schema::json_to_protobuf(method.input(), &value)
        .map(Bytes::from)
        .map_err(|e| Failure::abort(Code::InvalidArgument, format!("bad request: {e}")))
}

pub(super) fn response_frame<K: CallSeal>(
    method: &Method,
    key: &K,
    call_id: u64,
    bytes: &[u8],
) -> Result<Message, Failure> {
    let body = Body::Payload {
        json_payload: response_json(method, bytes)?,
    };
    key.frame(call_id, &body).map_err(|e| {
        Failure::abort(
            Code::ResourceExhausted,
            format!("the response does not fit in a websocket frame: {e}"),
        )
    })
}

fn response_json(method: &Method, bytes: &[u8]) -> Result<String, Failure> {
    if method.path() == SUBSCRIBE_WIRE {
        if let Ok(SubscribeWireResponse {
            payload: Some(subscribe_wire_response::Payload::Chunk(chunk)),
        }) = SubscribeWireResponse::decode(bytes)
        {
            return Ok(wire_chunk::to_json(&chunk));
        }
    }
    let json = schema::protobuf_to_json(method.output(), bytes)
        .map_err(|e| Failure::abort(Code::Internal, format!("response: {e}")))?;
    Ok(json_text::to_string(&json))
}

#[cfg(test)]
mod tests {
    use super::super::MAX_ERROR_TEXT;
    use super::{clip, end_body, request_bytes, response_json, PUBLISH_WIRE, SUBSCRIBE_WIRE};
    use crate::call::{Code, Failure};
    use serde_json::{json, Value};
    use tdx_volt::protocol::body::Body;
    use tdx_volt::protocol::{json_text, schema};

    #[test]
    fn wire_chunks_take_the_short_way_to_what_the_generic_conversion_gives() {
        let publish = schema::methods().lookup(PUBLISH_WIRE).expect("PublishWire");
        let subscribe = schema::methods()
            .lookup(SUBSCRIBE_WIRE)
            .expect("SubscribeWire");
        let texts = [
            r#"{"chunk":""}"#.to_owned(),
            r#"{"chunk":"aGk="}"#.to_owned(),
            format!(r#"{{"chunk":"{}"}}"#, "QUJD".repeat(30_000)),
            // Not for the short way: the generic conversion reads them.
            r#"{"chunk":"aGk="}"#.replace("chunk", "wireId"),
            r#"{"chunk":"aGk","doNotPersist":true}"#.to_owned(),
        ];
        for text in &texts {
            let value: Value = serde_json::from_str(text).expect("JSON");
            let generic = schema::json_to_protobuf(publish.input(), &value).expect("fits");
            assert_eq!(
                &request_bytes(publish, text).expect("a request")[..],
                &generic[..]
            );
        }
        assert!(request_bytes(publish, r#"{"chunk":"@@@"}"#).is_err());
        assert!(request_bytes(publish, r#"["aGk="]"#).is_err());
        for response in [
            json!({ "chunk": "" }),
            json!({ "chunk": "QUJD".repeat(30_000) }),
            json!({ "status": { "code": 5, "message": "gone" } }),
            json!({}),
        ] {
            let bytes = subscribe.encode_response(&response).expect("encodes");
            let generic = schema::protobuf_to_json(subscribe.output(), &bytes).expect("decodes");
            assert_eq!(
                response_json(subscribe, &bytes).expect("JSON"),
                json_text::to_string(&generic)
            );
        }
    }

    #[test]
    fn clip_cuts_long_texts_at_a_character_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(1000); // 2000 bytes
        let cut = clip(&long);
        assert!(cut.len() <= MAX_ERROR_TEXT && cut.len() >= MAX_ERROR_TEXT - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn end_bodies_carry_the_failure_clipped_with_its_code() {
        assert_eq!(end_body(Ok(())), Body::end());
        let long = "x".repeat(5000);
        let Body::End { error, error_code } =
            end_body(Err(Failure::abort(Code::NotFound, long.as_str())))
        else {
            panic!("an end body");
        };
        assert_eq!(error.map(|e| e.len()), Some(MAX_ERROR_TEXT));
        assert_eq!(error_code, 5);
    }
}
