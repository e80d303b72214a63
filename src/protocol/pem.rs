//! A tolerant reader of PEM text: finds `-----BEGIN X-----` blocks and decodes their base64
//! bodies, accepting CRLF line ends, indentation and surrounding text. Decoded bytes are
//! zeroized on drop because they may hold private keys.

use base64::Engine as _;
use zeroize::Zeroizing;

/// One decoded PEM block.
pub(crate) struct PemBlock {
    pub(crate) label: String,
    pub(crate) der: Zeroizing<Vec<u8>>,
    /// Encapsulated headers such as `Proc-Type` (legacy OpenSSL encryption) were present.
    pub(crate) has_headers: bool,
}

/// Why PEM text could not be read. Never includes the text itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PemError {
    NoBlock,
    Unterminated(String),
    BadBase64(String),
}

impl std::fmt::Display for PemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemError::NoBlock => f.write_str("no PEM block found"),
            PemError::Unterminated(l) => write!(f, "PEM block {l} has no END line"),
            PemError::BadBase64(l) => write!(f, "PEM block {l} is not valid base64"),
        }
    }
}

const BEGIN: &str = "-----BEGIN ";
const END: &str = "-----END ";
const DASHES: &str = "-----";

/// Decodes every PEM block in `text`, in order.
pub(crate) fn parse_blocks(text: &str) -> Result<Vec<PemBlock>, PemError> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix(BEGIN)
            .and_then(|rest| rest.strip_suffix(DASHES))
        else {
            continue;
        };
        let end_line = format!("{END}{label}{DASHES}");
        let mut body = Zeroizing::new(String::with_capacity(text.len()));
        let mut has_headers = false;
        let mut terminated = false;
        for inner in lines.by_ref() {
            if inner == end_line {
                terminated = true;
                break;
            }
            if inner.contains(':') {
                has_headers = true;
                continue;
            }
            body.push_str(inner);
        }
        if !terminated {
            return Err(PemError::Unterminated(label.to_owned()));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|_| PemError::BadBase64(label.to_owned()))?;
        blocks.push(PemBlock {
            label: label.to_owned(),
            der: Zeroizing::new(der),
            has_headers,
        });
    }
    if blocks.is_empty() {
        return Err(PemError::NoBlock);
    }
    Ok(blocks)
}

/// Encodes DER as PEM with LF line ends, 64-column lines and a final newline. The output is
/// allocated once at its final size, so no partial copy is left behind by reallocation.
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str(BEGIN);
    out.push_str(label);
    out.push_str(DASHES);
    out.push('\n');
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk boundary is a char boundary.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(END);
    out.push_str(label);
    out.push_str(DASHES);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_crlf() {
        let der: Vec<u8> = (0..100u8).collect();
        let pem = encode("THING", &der);
        assert!(pem.ends_with("-----END THING-----\n"));
        let crlf = format!("junk before\r\n{}", pem.replace('\n', "\r\n"));
        let blocks = parse_blocks(&crlf).unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].label, "THING");
        assert_eq!(blocks[0].der.as_slice(), der.as_slice());
    }

    #[test]
    fn errors_are_typed() {
        assert_eq!(parse_blocks("hello").err(), Some(PemError::NoBlock));
        assert_eq!(
            parse_blocks("-----BEGIN A-----\nAAAA\n").err(),
            Some(PemError::Unterminated("A".into()))
        );
        assert_eq!(
            parse_blocks("-----BEGIN A-----\n!!!\n-----END A-----").err(),
            Some(PemError::BadBase64("A".into()))
        );
    }

    #[test]
    fn headers_are_noticed() {
        let text = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let blocks = parse_blocks(text).unwrap();
        assert!(blocks[0].has_headers);
    }
}
