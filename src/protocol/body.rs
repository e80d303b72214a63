//! The JSON bodies carried (encrypted) in type 2 and 3 frames.
//!
//! They are the proto3 JSON of `RemoteResponse` (client to server) and `RemoteRequest`
//! (server to client) with the request and payload messages embedded as JSON *strings*:
//! `{"method_invoke": {"method_name", "service_id"?, "json_request"}}`,
//! `{"method_payload": {"json_payload"}}` and `{"method_end": {"ended"?, "error"?,
//! "error_code"?}}`.

use serde_json::{Map, Value};

use super::frame::{FrameError, FrameType};
use super::json_text::{escaped_len, push_string, unescape_plain};

/// One decrypted frame body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Body {
    /// Starts a call (client to server, frame type 2).
    Invoke {
        /// Full method path, `/package.Service/Method`.
        method_name: String,
        /// The hosting service for an external service, else `None`.
        service_id: Option<String>,
        /// The first request message as JSON text.
        json_request: String,
    },
    /// A message of the call as JSON text (frame type 3).
    Payload {
        /// The message JSON text.
        json_payload: String,
    },
    /// The sender has finished; `error` set means the call failed (frame type 3).
    End {
        /// Error text, when the call failed.
        error: Option<String>,
        /// Error code accompanying `error`, 0 when none.
        error_code: i32,
    },
}

impl Body {
    /// A normal end of stream.
    pub fn end() -> Body {
        Body::End {
            error: None,
            error_code: 0,
        }
    }

    /// The frame type this body travels in.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Body::Invoke { .. } => FrameType::Invoke,
            Body::Payload { .. } | Body::End { .. } => FrameType::Payload,
        }
    }

    /// Compact JSON bytes, with keys in the order the official client writes them.
    pub fn to_json(&self) -> Vec<u8> {
        // Written directly, in the key order of the official clients; the strings are escaped
        // as serde_json escapes them (tested), without first copying them into a `Value`.
        let mut out = Vec::with_capacity(self.json_len_hint());
        match self {
            Body::Invoke {
                method_name,
                service_id,
                json_request,
            } => {
                out.extend_from_slice(br#"{"method_invoke":{"method_name":"#);
                push_string(&mut out, method_name);
                if let Some(id) = service_id {
                    out.extend_from_slice(br#","service_id":"#);
                    push_string(&mut out, id);
                }
                out.extend_from_slice(br#","json_request":"#);
                push_string(&mut out, json_request);
            }
            Body::Payload { json_payload } => {
                out.extend_from_slice(br#"{"method_payload":{"json_payload":"#);
                push_string(&mut out, json_payload);
            }
            Body::End { error: None, .. } => {
                out.extend_from_slice(br#"{"method_end":{"ended":true"#)
            }
            Body::End {
                error: Some(text),
                error_code,
            } => {
                out.extend_from_slice(br#"{"method_end":{"error":"#);
                push_string(&mut out, text);
                if *error_code != 0 {
                    out.extend_from_slice(format!(r#","error_code":{error_code}"#).as_bytes());
                }
            }
        }
        out.extend_from_slice(b"}}");
        out
    }

    /// Room for the JSON of a body whose strings need little escaping.
    fn json_len_hint(&self) -> usize {
        let strings = match self {
            Body::Invoke {
                method_name,
                service_id,
                json_request,
            } => {
                method_name.len() + service_id.as_ref().map_or(0, String::len) + json_request.len()
            }
            Body::Payload { json_payload } => json_payload.len(),
            Body::End { error, .. } => error.as_ref().map_or(0, String::len),
        };
        strings + strings / 16 + 80
    }

    /// Parses a decrypted body. Accepts snake_case and camelCase keys.
    pub fn parse(bytes: &[u8]) -> Result<Body, FrameError> {
        // A payload as both ends write it (the bulk of a call's traffic), read without a parse:
        // its string is unescaped straight from the bytes.
        if let Some(escaped) = bytes
            .strip_prefix(br#"{"method_payload":{"json_payload":""#)
            .and_then(|rest| rest.strip_suffix(br#""}}"#))
        {
            if let Some(json_payload) = unescape_plain(escaped) {
                return Ok(Body::Payload { json_payload });
            }
        }
        // The strings are moved out of the parsed value, not copied: a payload may be large.
        let mut value: Value =
            serde_json::from_slice(bytes).map_err(|_| FrameError::BadBody("not JSON"))?;
        let obj = value
            .as_object_mut()
            .ok_or(FrameError::BadBody("not a JSON object"))?;
        if let Some(inner) = take(obj, "method_invoke", "methodInvoke") {
            let Value::Object(mut inner) = inner else {
                return Err(FrameError::BadBody("method_invoke is not an object"));
            };
            let method_name = take_text(&mut inner, "method_name", "methodName")
                .ok_or(FrameError::BadBody("method_invoke.method_name missing"))?;
            let service_id =
                take_text(&mut inner, "service_id", "serviceId").filter(|s| !s.is_empty());
            let json_request = take_text(&mut inner, "json_request", "jsonRequest")
                .unwrap_or_else(|| "{}".to_owned());
            return Ok(Body::Invoke {
                method_name,
                service_id,
                json_request,
            });
        }
        if let Some(inner) = take(obj, "method_payload", "methodPayload") {
            let Value::Object(mut inner) = inner else {
                return Err(FrameError::BadBody("method_payload is not an object"));
            };
            let json_payload = take_text(&mut inner, "json_payload", "jsonPayload")
                .ok_or(FrameError::BadBody("method_payload.json_payload missing"))?;
            return Ok(Body::Payload { json_payload });
        }
        if let Some(inner) = field(obj, "method_end", "methodEnd") {
            let inner = inner
                .as_object()
                .ok_or(FrameError::BadBody("method_end is not an object"))?;
            let error = field(inner, "error", "error").and_then(super::status::error_text);
            let error_code = field(inner, "error_code", "errorCode")
                .and_then(|v| match v {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) => s.parse().ok(),
                    _ => None,
                })
                .and_then(|c| i32::try_from(c).ok())
                .unwrap_or(0);
            return Ok(Body::End { error, error_code });
        }
        Err(FrameError::BadBody(
            "no method_invoke, method_payload or method_end",
        ))
    }
}

fn field<'a>(obj: &'a Map<String, Value>, snake: &str, camel: &str) -> Option<&'a Value> {
    obj.get(snake).or_else(|| obj.get(camel))
}

/// Takes the value under the snake_case key, else the camelCase one.
fn take(obj: &mut Map<String, Value>, snake: &str, camel: &str) -> Option<Value> {
    obj.remove(snake).or_else(|| obj.remove(camel))
}

/// Takes the string under the snake_case key, else the camelCase one; `None` if that value
/// is not a string.
fn take_text(obj: &mut Map<String, Value>, snake: &str, camel: &str) -> Option<String> {
    match take(obj, snake, camel)? {
        Value::String(text) => Some(text),
        _ => None,
    }
}

/// The length of [`Body::Invoke`]'s JSON for a call of `path` with the request `json` (and no
/// service id), computed without building it.
pub fn invoke_len(path: &str, json: &str) -> usize {
    const WRAPPER: &str = r#"{"method_invoke":{"method_name":"","json_request":""}}"#;
    WRAPPER.len() + escaped_len(path) + escaped_len(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_written_as_serde_json_writes_them() {
        let mut long = String::new();
        while long.len() < 1000 {
            long.push_str("{\"chunk\":\"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\"}");
            long.push_str("\\n\t\u{1}\u{1f}é\u{7f}\n");
        }
        let bodies = [
            Body::Invoke {
                method_name: "/a.B/C\n".into(),
                service_id: Some("svc\"1".into()),
                json_request: long.clone(),
            },
            Body::Payload { json_payload: long },
            Body::End {
                error: Some("bad \"thing\"".into()),
                error_code: -7,
            },
            Body::End {
                error: Some("no code".into()),
                error_code: 0,
            },
        ];
        for body in bodies {
            let json = body.to_json();
            assert_eq!(Body::parse(&json).unwrap(), body);
            let value: Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(serde_json::to_vec(&value).unwrap(), json);
        }
    }

    #[test]
    fn payloads_read_without_a_parse_are_what_a_parse_reads() {
        let parsed = |bytes: &[u8]| {
            let mut value: Value = serde_json::from_slice(bytes).unwrap();
            value["method_payload"]["json_payload"].take()
        };
        // Long enough for whole clean blocks, with every short escape; and, last, one with a
        // control character, which is written as `\u0001` and so read by serde_json.
        let long = "{\"chunk\":\"QUJDREVGR0hJSktMTU5PUFFS\"}\\/\n\r\t\u{8}\u{c}é😀".repeat(50);
        let control = format!("{long}\u{1}");
        for (text, short_way) in [
            ("", true),
            ("{}", true),
            ("{\"chunk\":\"aGk=\"}", true),
            (long.as_str(), true),
            (control.as_str(), false),
        ] {
            let body = Body::Payload {
                json_payload: text.to_owned(),
            };
            let bytes = body.to_json();
            assert_eq!(Body::parse(&bytes).unwrap(), body);
            assert_eq!(parsed(&bytes), Value::String(text.to_owned()));
            let inner = &bytes[r#"{"method_payload":{"json_payload":""#.len()..bytes.len() - 3];
            assert_eq!(unescape_plain(inner).is_some(), short_way, "{text:?}");
        }
        // The written form around something that is not one string goes to the parser.
        let other = br#"{"method_payload":{"json_payload":"a"},"x":{"y":"b"}}"#;
        assert_eq!(
            Body::parse(other).unwrap(),
            Body::Payload {
                json_payload: "a".into()
            }
        );
        let unicode = br#"{"method_payload":{"json_payload":"\u00e9"}}"#;
        assert_eq!(
            Body::parse(unicode).unwrap(),
            Body::Payload {
                json_payload: "é".into()
            }
        );
        let broken = br#"{"method_payload":{"json_payload":"a\q"}}"#;
        assert!(Body::parse(broken).is_err());
    }

    #[test]
    fn official_shapes() {
        let invoke = Body::Invoke {
            method_name: "/a.B/C".into(),
            service_id: None,
            json_request: "{}".into(),
        };
        assert_eq!(
            invoke.to_json(),
            br#"{"method_invoke":{"method_name":"/a.B/C","json_request":"{}"}}"#
        );
        assert_eq!(Body::end().to_json(), br#"{"method_end":{"ended":true}}"#);
        for b in [
            invoke,
            Body::end(),
            Body::Payload {
                json_payload: "{\"a\":1}".into(),
            },
            Body::End {
                error: Some("boom".into()),
                error_code: 3,
            },
        ] {
            assert_eq!(Body::parse(&b.to_json()).unwrap(), b);
        }
    }

    #[test]
    fn bad_bodies_are_typed_errors() {
        for bad in [
            &b"nope"[..],
            b"[]",
            b"{}",
            br#"{"method_payload":{"json_payload":{}}}"#,
            br#"{"method_invoke":{}}"#,
            br#"{"method_end":1}"#,
        ] {
            assert!(matches!(Body::parse(bad), Err(FrameError::BadBody(_))));
        }
        assert_eq!(Body::parse(br#"{"methodEnd":{}}"#).unwrap(), Body::end());
        // Any truthy error fails the call, as in the official client; falsy ones do not.
        for (json, failed) in [
            (&br#"{"method_end":{"error":{"x":1}}}"#[..], true),
            (br#"{"method_end":{"error":true}}"#, true),
            (br#"{"method_end":{"error":""}}"#, false),
            (br#"{"method_end":{"error":false}}"#, false),
        ] {
            let Body::End { error, .. } = Body::parse(json).unwrap() else {
                panic!("expected end")
            };
            assert_eq!(error.is_some(), failed, "{}", String::from_utf8_lossy(json));
        }
    }
}
