//! The Volt's `Status` (`tdx.volt_api.volt.v1.Status`), attached to every response, and the
//! JavaScript truthiness rules the official clients read error fields with.

use std::fmt;

/// The status a Volt attaches to every response (`tdx.volt_api.volt.v1.Status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// Numeric code, kept as the Volt sent it.
    pub code: i32,
    /// Short message; a non-empty message marks an error.
    pub message: String,
    /// Longer description, possibly empty.
    pub description: String,
}

impl Status {
    /// A status with this code, message and description.
    pub fn new(code: i32, message: impl Into<String>, description: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
            description: description.into(),
        }
    }

    /// A status is an error when its message is non-empty, whatever the code: the rule every
    /// official client applies (a non-zero code with no message is not treated as an error).
    pub fn is_error(&self) -> bool {
        !self.message.is_empty()
    }

    /// Reads a `status` object in proto3 JSON form; missing fields take their defaults.
    pub fn from_json(value: &serde_json::Value) -> Option<Status> {
        let obj = value.as_object()?;
        let code = match obj.get("code") {
            Some(serde_json::Value::Number(n)) => n.as_i64().and_then(|c| i32::try_from(c).ok()),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            None | Some(serde_json::Value::Null) => Some(0),
            _ => None,
        }
        .unwrap_or(0);
        let text = |k: &str| obj.get(k).and_then(error_text).unwrap_or_default();
        Some(Status {
            code,
            message: text("message"),
            description: text("description"),
        })
    }
}

/// Whether a JSON value counts as set, by JavaScript's rules (the official clients test
/// `if (x.error)`): not null, false, 0, or "".
pub(crate) fn is_truthy(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => false,
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        serde_json::Value::String(s) => !s.is_empty(),
        serde_json::Value::Array(_) | serde_json::Value::Object(_) => true,
    }
}

/// The text of an error value: strings as they are, anything else as its JSON.
pub(crate) fn error_text(value: &serde_json::Value) -> Option<String> {
    if !is_truthy(value) {
        return None;
    }
    Some(match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)?;
        if !self.description.is_empty() {
            write!(f, ": {}", self.description)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_with_message_and_zero_code_is_error() {
        let s = Status::from_json(&serde_json::json!({"message": "nope"})).unwrap();
        assert!(s.is_error());
        assert_eq!(s.code, 0);
        let ok = Status::from_json(&serde_json::json!({})).unwrap();
        assert!(!ok.is_error());
    }
}
