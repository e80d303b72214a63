//! The proto3 JSON of a message that carries a wire chunk and nothing else,
//! `{"chunk":"<base64>"}`: a `PublishWireRequest` on its way to the Volt, a
//! `SubscribeWireResponse` on its way back. Over the websocket gateway every chunk travels in
//! that form, so both ends write and read it directly, with SIMD base64, instead of going
//! through a `serde_json::Value` and the schema's generic conversion.
//!
//! Both functions give exactly what the generic conversion gives for these messages: the
//! tests hold them to it.

/// The proto3 JSON of a message carrying `chunk` alone: `{"chunk":"<standard base64>"}`,
/// written into one string (standard base64 needs no JSON escaping).
///
/// ```
/// assert_eq!(tdx_volt::protocol::wire_chunk::to_json(b"hi"), r#"{"chunk":"aGk="}"#);
/// ```
#[must_use]
pub fn to_json(chunk: &[u8]) -> String {
    const OPEN: &str = r#"{"chunk":""#;
    const CLOSE: &str = r#""}"#;
    let b64 = base64_simd::STANDARD;
    let mut json =
        String::with_capacity(OPEN.len() + b64.encoded_length(chunk.len()) + CLOSE.len());
    json.push_str(OPEN);
    b64.encode_append(chunk, &mut json);
    json.push_str(CLOSE);
    json
}

/// The chunk of a JSON message that is `{"chunk": "<standard base64>"}` and nothing else,
/// decoded; `None` for anything else, including base64 that is not canonical standard base64
/// with padding, which the caller then hands to the generic conversion (and its errors).
///
/// ```
/// use tdx_volt::protocol::wire_chunk::from_json;
///
/// assert_eq!(from_json(r#"{"chunk":"aGk="}"#), Some(b"hi".to_vec()));
/// assert_eq!(from_json(r#"{"status":{"code":5}}"#), None);
/// ```
#[must_use]
pub fn from_json(text: &str) -> Option<Vec<u8>> {
    // The form both ends write: nothing to parse, since a string the base64 decoder takes
    // (its alphabet and `=`) is a JSON string without escapes.
    if let Some(base64) = text
        .strip_prefix(r#"{"chunk":""#)
        .and_then(|rest| rest.strip_suffix(r#""}"#))
    {
        if let Ok(chunk) = base64_simd::STANDARD.decode_to_vec(base64.as_bytes()) {
            return Some(chunk);
        }
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ChunkAlone<'a> {
        // Borrowed from the text unless the string has escapes.
        #[serde(borrow)]
        chunk: std::borrow::Cow<'a, str>,
    }
    // serde_json reads a struct from an array too (`["..."]`); a message is an object.
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return None;
    }
    let message: ChunkAlone<'_> = serde_json::from_str(text).ok()?;
    base64_simd::STANDARD
        .decode_to_vec(message.chunk.as_bytes())
        .ok()
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use serde_json::{json, Value};

    use super::{from_json, to_json};
    use crate::protocol::schema::methods;

    const PUBLISH: &str = "/tdx.volt_api.volt.v1.WireAPI/PublishWire";
    const SUBSCRIBE: &str = "/tdx.volt_api.volt.v1.WireAPI/SubscribeWire";

    fn chunks() -> Vec<Vec<u8>> {
        let mut all = vec![Vec::new(), b"x".to_vec(), b"xy".to_vec(), b"xyz".to_vec()];
        all.push((0..=255u8).collect());
        all.push((0..70_001u32).map(|i| (i * 7 + i / 13) as u8).collect());
        all
    }

    #[test]
    fn to_json_is_the_generic_conversion_byte_for_byte() {
        let subscribe = methods().get(SUBSCRIBE).expect("SubscribeWire");
        let publish = methods().get(PUBLISH).expect("PublishWire");
        for chunk in chunks() {
            let ours = to_json(&chunk);
            // A SubscribeWireResponse with the chunk set, as the emulator answers it.
            let bytes = subscribe
                .encode_response(
                    &json!({ "chunk": base64::engine::general_purpose::STANDARD.encode(&chunk) }),
                )
                .expect("encodes");
            let generic = subscribe.decode_response(&bytes).expect("decodes");
            assert_eq!(
                ours,
                crate::protocol::json_text::to_string(&generic),
                "{} bytes",
                chunk.len()
            );
            // A PublishWireRequest read from it carries the same chunk.
            let value: Value = serde_json::from_str(&ours).expect("JSON");
            let request = publish.encode_request(&value).expect("fits");
            let back = publish.decode_request(&request).expect("decodes");
            let expected = if chunk.is_empty() {
                json!({})
            } else {
                value.clone()
            };
            assert_eq!(back, expected);
        }
    }

    #[test]
    fn from_json_reads_what_to_json_and_serde_json_write() {
        for chunk in chunks() {
            assert_eq!(from_json(&to_json(&chunk)).as_deref(), Some(&chunk[..]));
            let spaced = format!(
                " {{ \"chunk\" : {} }} ",
                serde_json::to_string(&base64::engine::general_purpose::STANDARD.encode(&chunk))
                    .expect("a string")
            );
            assert_eq!(from_json(&spaced).as_deref(), Some(&chunk[..]));
        }
        // An escaped slash makes the string owned; it is the same base64.
        assert_eq!(from_json(r#"{"chunk":"P\/8="}"#), Some(vec![0x3f, 0xff]));
        // Text after the compact form's closing quote is not taken as base64.
        assert_eq!(from_json(r#"{"chunk":"aGk="}"}"#), None);
        assert_eq!(from_json(r#"{"chunk":"aGk=","x":"y"}"#), None);
    }

    #[test]
    fn anything_but_a_canonical_chunk_alone_is_left_to_the_generic_conversion() {
        for other in [
            r#"{"chunk":"@@@"}"#,
            // Not canonical: trailing bits set, padding left out, the URL-safe alphabet.
            r#"{"chunk":"aGl="}"#,
            r#"{"chunk":"aGk"}"#,
            r#"{"chunk":"-_8="}"#,
            r#"{"status":{"code":3,"message":"no"}}"#,
            r#"{"chunk":"aGk=","status":{}}"#,
            r#"{"chunk":"aGk=","chunk":"aGk="}"#,
            r#"{"chunk":7}"#,
            r#"{"chunk":null}"#,
            r#"{}"#,
            "[]",
            r#"["aGk="]"#,
            r#" ["aGk="]"#,
            "not json",
            "",
        ] {
            assert_eq!(from_json(other), None, "{other}");
        }
    }
}
