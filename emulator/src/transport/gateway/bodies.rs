//! The bodies and frames a gateway call answers with, and the requests it reads, shared by
//! both protocols.

use bytes::Bytes;
use serde_json::Value;
use tdx_volt::protocol::body::Body;
use tdx_volt::protocol::json_text;
use tdx_volt::protocol::schema::{self, Method};
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

pub(super) fn request_bytes(method: &Method, json: &str) -> Result<Bytes, Failure> {
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
    let json = schema::protobuf_to_json(method.output(), bytes)
        .map_err(|e| Failure::abort(Code::Internal, format!("response: {e}")))?;
    let body = Body::Payload {
        json_payload: json_text::to_string(&json),
    };
    key.frame(call_id, &body).map_err(|e| {
        Failure::abort(
            Code::ResourceExhausted,
            format!("the response does not fit in a websocket frame: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::MAX_ERROR_TEXT;
    use super::{clip, end_body};
    use crate::call::{Code, Failure};
    use tdx_volt::protocol::body::Body;

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
