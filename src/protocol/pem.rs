//! PEM text to DER and back, through kept crates: rustls-pki-types' `PemObject` reads the
//! labels it knows (`PRIVATE KEY`, `RSA PRIVATE KEY`, `PUBLIC KEY`, `CERTIFICATE`), and
//! pem-rfc7468 (RustCrypto, through `der`) reads the two it skips (`ENCRYPTED PRIVATE KEY`,
//! `RSA PUBLIC KEY`) and writes PEM. Surrounding text and CRLF line ends are accepted.
//! Decoded private key bytes are zeroized on drop.

use rustls_pki_types::pem::{PemObject as _, SectionKind};
use spki::der::pem::{self as rfc7468, LineEnding};
use zeroize::Zeroizing;

/// A private key's DER, by its PEM label.
pub(crate) enum PrivatePem {
    /// `PRIVATE KEY`: PKCS#8.
    Pkcs8(Zeroizing<Vec<u8>>),
    /// `RSA PRIVATE KEY`: PKCS#1.
    #[cfg_attr(not(feature = "legacy"), allow(dead_code))] // read with `legacy` only
    Pkcs1Rsa(Zeroizing<Vec<u8>>),
    /// `ENCRYPTED PRIVATE KEY`: PKCS#8 `EncryptedPrivateKeyInfo`.
    Encrypted(Zeroizing<Vec<u8>>),
}

/// A public key's DER, by its PEM label.
pub(crate) enum PublicPem {
    /// `PUBLIC KEY`: SPKI.
    Spki(Vec<u8>),
    /// `RSA PUBLIC KEY`: PKCS#1.
    #[cfg_attr(not(feature = "legacy"), allow(dead_code))] // read with `legacy` only
    Pkcs1Rsa(Vec<u8>),
    /// `CERTIFICATE`: X.509, whose subject key is meant.
    Certificate(Vec<u8>),
}

/// Why PEM text could not be read. Never includes the text itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PemError {
    /// No block of a wanted label.
    NoBlock(&'static str),
    /// A block that is not well formed (no END line, bad base64, ...).
    Malformed(String),
    /// `Proc-Type` headers: the OpenSSL encryption of old.
    LegacyEncrypted,
}

impl std::fmt::Display for PemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemError::NoBlock(what) => write!(f, "no {what} PEM block found"),
            PemError::Malformed(why) => write!(f, "malformed PEM: {why}"),
            PemError::LegacyEncrypted => {
                f.write_str("legacy OpenSSL-encrypted PEM is not supported; convert it to PKCS#8")
            }
        }
    }
}

/// The labels pki-types reads, in the order they appear in `text`.
fn sections(text: &str) -> impl Iterator<Item = Result<(SectionKind, Vec<u8>), PemError>> + '_ {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(text.as_bytes())
        .map(|item| item.map_err(|e| PemError::Malformed(describe(&e))))
}

/// A pki-types error without the bytes some of its variants carry (a line of the text).
fn describe(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => "a block has no END line".into(),
        Error::IllegalSectionStart { .. } => "a BEGIN line is not well formed".into(),
        Error::Base64Decode(_) => "a block is not valid base64".into(),
        Error::SectionTooLarge => "a block is over 10 MB".into(),
        _ => "unreadable".into(),
    }
}

/// The first block labelled `label` that pki-types does not read, with pem-rfc7468.
fn other_block(text: &str, label: &str) -> Result<Option<Vec<u8>>, PemError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let Some(start) = text.find(&begin) else {
        return Ok(None);
    };
    let Some(stop) = text[start..].find(&end) else {
        return Err(PemError::Malformed("a block has no END line".into()));
    };
    let block = &text[start..start + stop + end.len()];
    let (_, der) = rfc7468::decode_vec(block.as_bytes())
        .map_err(|e| PemError::Malformed(format!("{label}: {e}")))?;
    Ok(Some(der))
}

/// The first private key in `text`.
pub(crate) fn private_key(text: &str) -> Result<PrivatePem, PemError> {
    if text.contains("Proc-Type:") {
        return Err(PemError::LegacyEncrypted);
    }
    for section in sections(text) {
        let (kind, der) = section?;
        let der = Zeroizing::new(der);
        match kind {
            SectionKind::PrivateKey => return Ok(PrivatePem::Pkcs8(der)),
            SectionKind::RsaPrivateKey => return Ok(PrivatePem::Pkcs1Rsa(der)),
            _ => {}
        }
    }
    match other_block(text, "ENCRYPTED PRIVATE KEY")? {
        Some(der) => Ok(PrivatePem::Encrypted(Zeroizing::new(der))),
        None => Err(PemError::NoBlock("PRIVATE KEY")),
    }
}

/// The first public key or certificate in `text`.
pub(crate) fn public_key(text: &str) -> Result<PublicPem, PemError> {
    for section in sections(text) {
        match section? {
            (SectionKind::PublicKey, der) => return Ok(PublicPem::Spki(der)),
            (SectionKind::Certificate, der) => return Ok(PublicPem::Certificate(der)),
            _ => {}
        }
    }
    match other_block(text, "RSA PUBLIC KEY")? {
        Some(der) => Ok(PublicPem::Pkcs1Rsa(der)),
        None => Err(PemError::NoBlock("PUBLIC KEY or CERTIFICATE")),
    }
}

/// The first certificate in `text`.
pub(crate) fn certificate(text: &str) -> Result<Vec<u8>, PemError> {
    for section in sections(text) {
        if let (SectionKind::Certificate, der) = section? {
            return Ok(der);
        }
    }
    Err(PemError::NoBlock("CERTIFICATE"))
}

/// Encodes DER as PEM with LF line ends, 64-column lines and a final newline.
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    // Only a label that is not valid PEM fails, and every caller passes a fixed one.
    rfc7468::encode_string(label, LineEnding::LF, der).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_crlf_and_surrounding_text() {
        let der: Vec<u8> = (0..100u8).collect();
        let pem = encode("PUBLIC KEY", &der);
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(pem.ends_with("-----END PUBLIC KEY-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        let crlf = format!("junk before\r\n{}trailing", pem.replace('\n', "\r\n"));
        let Ok(PublicPem::Spki(read)) = public_key(&crlf) else {
            panic!("an SPKI block");
        };
        assert_eq!(read, der);
        let encrypted = encode("ENCRYPTED PRIVATE KEY", &der);
        let Ok(PrivatePem::Encrypted(read)) = private_key(&format!("note\n{encrypted}")) else {
            panic!("an encrypted block");
        };
        assert_eq!(read.as_slice(), der.as_slice());
    }

    #[test]
    fn errors_are_typed() {
        assert_eq!(
            private_key("hello").err(),
            Some(PemError::NoBlock("PRIVATE KEY"))
        );
        assert!(matches!(
            private_key("-----BEGIN PRIVATE KEY-----\nAAAA\n").err(),
            Some(PemError::Malformed(_))
        ));
        assert!(matches!(
            public_key("-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----").err(),
            Some(PemError::Malformed(_))
        ));
        assert!(matches!(
            private_key("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n").err(),
            Some(PemError::Malformed(_))
        ));
        assert_eq!(
            certificate(&encode("PUBLIC KEY", b"x")).err(),
            Some(PemError::NoBlock("CERTIFICATE"))
        );
    }

    #[test]
    fn legacy_encryption_is_named() {
        let text = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(private_key(text).err(), Some(PemError::LegacyEncrypted));
    }
}
