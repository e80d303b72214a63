//! The JSON bodies carried (encrypted) in type 2 and 3 frames.
//!
//! They are the proto3 JSON of `RemoteResponse` (client to server) and `RemoteRequest`
//! (server to client) with the request and payload messages embedded as JSON *strings*:
//! `{"method_invoke": {"method_name", "service_id"?, "json_request"}}`,
//! `{"method_payload": {"json_payload"}}` and `{"method_end": {"ended"?, "error"?,
//! "error_code"?}}`.

use serde_json::{Map, Value};

use super::frame::{FrameError, FrameType};

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
        let value = match self {
            Body::Invoke {
                method_name,
                service_id,
                json_request,
            } => {
                let mut inner = Map::new();
                inner.insert("method_name".into(), Value::from(method_name.as_str()));
                if let Some(id) = service_id {
                    inner.insert("service_id".into(), Value::from(id.as_str()));
                }
                inner.insert("json_request".into(), Value::from(json_request.as_str()));
                wrap("method_invoke", inner)
            }
            Body::Payload { json_payload } => {
                let mut inner = Map::new();
                inner.insert("json_payload".into(), Value::from(json_payload.as_str()));
                wrap("method_payload", inner)
            }
            Body::End { error, error_code } => {
                let mut inner = Map::new();
                match error {
                    None => {
                        inner.insert("ended".into(), Value::Bool(true));
                    }
                    Some(text) => {
                        inner.insert("error".into(), Value::from(text.as_str()));
                        if *error_code != 0 {
                            inner.insert("error_code".into(), Value::from(*error_code));
                        }
                    }
                }
                wrap("method_end", inner)
            }
        };
        // Serializing a Value built from strings, bools and integers cannot fail.
        serde_json::to_vec(&value).unwrap_or_default()
    }

    /// Parses a decrypted body. Accepts snake_case and camelCase keys.
    pub fn parse(bytes: &[u8]) -> Result<Body, FrameError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|_| FrameError::BadBody("not JSON"))?;
        let obj = value
            .as_object()
            .ok_or(FrameError::BadBody("not a JSON object"))?;
        if let Some(inner) = field(obj, "method_invoke", "methodInvoke") {
            let inner = inner
                .as_object()
                .ok_or(FrameError::BadBody("method_invoke is not an object"))?;
            let method_name = text(inner, "method_name", "methodName")
                .ok_or(FrameError::BadBody("method_invoke.method_name missing"))?;
            let service_id = text(inner, "service_id", "serviceId").filter(|s| !s.is_empty());
            let json_request =
                text(inner, "json_request", "jsonRequest").unwrap_or_else(|| "{}".to_owned());
            return Ok(Body::Invoke {
                method_name,
                service_id,
                json_request,
            });
        }
        if let Some(inner) = field(obj, "method_payload", "methodPayload") {
            let inner = inner
                .as_object()
                .ok_or(FrameError::BadBody("method_payload is not an object"))?;
            let json_payload = text(inner, "json_payload", "jsonPayload")
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

fn wrap(key: &str, inner: Map<String, Value>) -> Value {
    let mut outer = Map::new();
    outer.insert(key.to_owned(), Value::Object(inner));
    Value::Object(outer)
}

fn field<'a>(obj: &'a Map<String, Value>, snake: &str, camel: &str) -> Option<&'a Value> {
    obj.get(snake).or_else(|| obj.get(camel))
}

fn text(obj: &Map<String, Value>, snake: &str, camel: &str) -> Option<String> {
    field(obj, snake, camel)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The length of [`Body::Invoke`]'s JSON for a call of `path` with the request `json` (and no
/// service id), computed without building it.
pub fn invoke_len(path: &str, json: &str) -> usize {
    const WRAPPER: &str = r#"{"method_invoke":{"method_name":"","json_request":""}}"#;
    WRAPPER.len() + escaped_len(path) + escaped_len(json)
}

/// The length of `text` once escaped inside a JSON string, as serde_json escapes it.
pub(crate) fn escaped_len(text: &str) -> usize {
    text.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

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
