//! Websocket gateway protocol v1: the binary frame layout, sans-IO, for both directions.
//!
//! ```text
//! every frame      u8 version (=1) | u8 type | u64 call id            (big-endian)
//! client, type 1   u16 len + meta JSON | u8 len + token signature | u16 len + claims JSON
//! server, type 1   u8 len + X25519 SPKI DER | u8 len + nonce | u8 len + Ed25519 signature
//! types 2 and 3    u16 len + meta JSON | u8 len + IV | AES-256-CBC ciphertext (rest of frame)
//! ```
//!
//! Type 1 means something different in each direction, so decoding is split into
//! [`decode_client_frame`] (what a server reads) and [`decode_server_frame`] (what a client
//! reads). Decoding never panics: every malformed input is a [`FrameError`].

use serde_json::{Map, Value};

/// The only protocol version this codec speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// Largest frame accepted or produced, in bytes (96 MiB): a message of 64 MiB of file content
/// (the API's limit) travels base64 in JSON, about 85.4 MiB, and is then sealed.
pub const MAX_FRAME_LEN: usize = 96 * 1024 * 1024;

/// AES block and IV size.
pub const IV_LEN: usize = 16;

const HEADER_LEN: usize = 10;

/// The frame type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameType {
    /// Opens a call (client) or answers with the server's key (server).
    KeyExchange = 1,
    /// Carries the encrypted method invocation.
    Invoke = 2,
    /// Carries an encrypted payload or end of stream.
    Payload = 3,
}

impl FrameType {
    fn from_byte(b: u8) -> Result<FrameType, FrameError> {
        match b {
            1 => Ok(FrameType::KeyExchange),
            2 => Ok(FrameType::Invoke),
            3 => Ok(FrameType::Payload),
            other => Err(FrameError::UnknownType(other)),
        }
    }
}

/// Why a frame could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame ended before a field was complete.
    #[error("frame truncated: {field} needs {needed} more bytes")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// How many bytes were missing.
        needed: usize,
    },
    /// The version byte is not 1.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// The type byte is not 1, 2 or 3.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// The frame is larger than [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// A length-prefixed field does not fit its prefix.
    #[error("{0} is too long for its length prefix")]
    FieldTooLong(&'static str),
    /// Bytes follow the last field of a key-exchange frame.
    #[error("{0} unexpected bytes after the last field")]
    TrailingBytes(usize),
    /// The meta field is not UTF-8 JSON of an object.
    #[error("meta is not a JSON object")]
    BadMeta,
    /// The IV is not 16 bytes, or ciphertext comes without one.
    #[error("IV of {0} bytes (must be 16)")]
    BadIv(usize),
    /// The ciphertext is empty or not a whole number of AES blocks.
    #[error("ciphertext of {0} bytes is not a whole number of AES blocks")]
    BadCiphertextLength(usize),
    /// Decryption produced invalid PKCS#7 padding (wrong key or corrupted data).
    #[error("decryption failed (bad padding)")]
    BadPadding,
    /// The decrypted body is not the JSON expected.
    #[error("body is not valid: {0}")]
    BadBody(&'static str),
    /// The body could not be decrypted and parsed (the cause is deliberately not told).
    #[error("body could not be decrypted")]
    Undecryptable,
}

/// Client to server, type 1: opens a call and carries the identity token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The call id, chosen by the client.
    pub call_id: u64,
    /// Routing metadata (`d`, `s` when relaying); empty when not.
    pub meta: Map<String, Value>,
    /// The token signature (64 bytes for Ed25519).
    pub signature: Vec<u8>,
    /// The token claims JSON, exactly as signed.
    pub claims: Vec<u8>,
}

/// Server to client, type 1: the server's half of the key exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHello {
    /// The call id being answered.
    pub call_id: u64,
    /// The server's fresh X25519 public key as SPKI DER (44 bytes).
    pub public_key: Vec<u8>,
    /// A nonce of any length.
    pub nonce: Vec<u8>,
    /// Ed25519 signature over `public_key || nonce` by the Volt (or service host) key.
    pub signature: Vec<u8>,
}

/// Types 2 and 3, either direction: meta and an encrypted body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedFrame {
    /// [`FrameType::Invoke`] or [`FrameType::Payload`].
    pub frame_type: FrameType,
    /// The call id.
    pub call_id: u64,
    /// Metadata: `{"client_end": true}` on a client end, `{"error": ...}` on a server error.
    pub meta: Map<String, Value>,
    /// The IV: 16 bytes, or empty when the frame carries meta only.
    pub iv: Vec<u8>,
    /// The AES-256-CBC ciphertext: whole blocks, or empty with an empty IV.
    pub ciphertext: Vec<u8>,
}

impl SealedFrame {
    /// The `error` text in the meta, if the peer reported one.
    pub fn meta_error(&self) -> Option<String> {
        self.meta.get("error").and_then(super::status::error_text)
    }
}

/// A frame as a server reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// Type 1: a call opens.
    Hello(ClientHello),
    /// Type 2 or 3.
    Sealed(SealedFrame),
}

/// A frame as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// Type 1: the server's key.
    Hello(ServerHello),
    /// Type 2 or 3.
    Sealed(SealedFrame),
}

impl ClientFrame {
    /// The call id.
    pub fn call_id(&self) -> u64 {
        match self {
            ClientFrame::Hello(h) => h.call_id,
            ClientFrame::Sealed(s) => s.call_id,
        }
    }
}

impl ServerFrame {
    /// The call id.
    pub fn call_id(&self) -> u64 {
        match self {
            ServerFrame::Hello(h) => h.call_id,
            ServerFrame::Sealed(s) => s.call_id,
        }
    }
}

/// Reads the call id of a frame without decoding the rest (for attributing errors).
pub fn peek_call_id(frame: &[u8]) -> Option<u64> {
    let id: [u8; 8] = frame.get(2..HEADER_LEN)?.try_into().ok()?;
    Some(u64::from_be_bytes(id))
}

/// Decodes a frame sent by a client.
pub fn decode_client_frame(frame: &[u8]) -> Result<ClientFrame, FrameError> {
    let (frame_type, call_id, mut r) = read_header(frame)?;
    match frame_type {
        FrameType::KeyExchange => {
            let meta = read_meta(&mut r)?;
            let sig_len = usize::from(r.u8("signature length")?);
            let signature = r.take(sig_len, "signature")?.to_vec();
            let claims_len = usize::from(r.u16("claims length")?);
            let claims = r.take(claims_len, "claims")?.to_vec();
            r.finish()?;
            Ok(ClientFrame::Hello(ClientHello {
                call_id,
                meta,
                signature,
                claims,
            }))
        }
        _ => Ok(ClientFrame::Sealed(read_sealed(frame_type, call_id, r)?)),
    }
}

/// Decodes a frame sent by a server.
pub fn decode_server_frame(frame: &[u8]) -> Result<ServerFrame, FrameError> {
    let (frame_type, call_id, mut r) = read_header(frame)?;
    match frame_type {
        FrameType::KeyExchange => {
            let key_len = usize::from(r.u8("key length")?);
            let public_key = r.take(key_len, "key")?.to_vec();
            let nonce_len = usize::from(r.u8("nonce length")?);
            let nonce = r.take(nonce_len, "nonce")?.to_vec();
            let sig_len = usize::from(r.u8("signature length")?);
            let signature = r.take(sig_len, "signature")?.to_vec();
            // Like the official client, ignore anything after the signature.
            Ok(ServerFrame::Hello(ServerHello {
                call_id,
                public_key,
                nonce,
                signature,
            }))
        }
        _ => Ok(ServerFrame::Sealed(read_sealed(frame_type, call_id, r)?)),
    }
}

impl ClientHello {
    /// Encodes the frame.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let meta = encode_meta(&self.meta)?;
        let mut w = Writer::new(FrameType::KeyExchange, self.call_id);
        w.u16_prefixed(&meta, "meta")?;
        w.u8_prefixed(&self.signature, "signature")?;
        w.u16_prefixed(&self.claims, "claims")?;
        w.finish()
    }
}

impl ServerHello {
    /// Encodes the frame.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let mut w = Writer::new(FrameType::KeyExchange, self.call_id);
        w.u8_prefixed(&self.public_key, "key")?;
        w.u8_prefixed(&self.nonce, "nonce")?;
        w.u8_prefixed(&self.signature, "signature")?;
        w.finish()
    }
}

impl SealedFrame {
    /// Encodes the frame (either direction).
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        if self.frame_type == FrameType::KeyExchange {
            return Err(FrameError::UnknownType(FrameType::KeyExchange as u8));
        }
        check_sealed(&self.iv, &self.ciphertext)?;
        let meta = encode_meta(&self.meta)?;
        let mut w = Writer::new(self.frame_type, self.call_id);
        w.u16_prefixed(&meta, "meta")?;
        w.u8_prefixed(&self.iv, "iv")?;
        w.raw(&self.ciphertext);
        w.finish()
    }
}

fn read_header(frame: &[u8]) -> Result<(FrameType, u64, Reader<'_>), FrameError> {
    if frame.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(frame.len()));
    }
    let mut r = Reader { buf: frame };
    let version = r.u8("version")?;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    let frame_type = FrameType::from_byte(r.u8("type")?)?;
    let id = r.take(8, "call id")?;
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(id);
    Ok((frame_type, u64::from_be_bytes(bytes), r))
}

fn read_meta(r: &mut Reader<'_>) -> Result<Map<String, Value>, FrameError> {
    let len = usize::from(r.u16("meta length")?);
    let bytes = r.take(len, "meta")?;
    if bytes.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(FrameError::BadMeta),
    }
}

fn read_sealed(
    frame_type: FrameType,
    call_id: u64,
    mut r: Reader<'_>,
) -> Result<SealedFrame, FrameError> {
    let meta = read_meta(&mut r)?;
    let iv_len = usize::from(r.u8("iv length")?);
    let iv = r.take(iv_len, "iv")?.to_vec();
    let ciphertext = r.rest().to_vec();
    // IV and ciphertext lengths are checked when the frame is opened, so that the meta (which
    // may carry the peer's error) of a frame with a bad body can still be read.
    Ok(SealedFrame {
        frame_type,
        call_id,
        meta,
        iv,
        ciphertext,
    })
}

fn check_sealed(iv: &[u8], ciphertext: &[u8]) -> Result<(), FrameError> {
    match (iv.len(), ciphertext.len()) {
        (0, 0) => Ok(()),
        (IV_LEN, n) if n > 0 && n.is_multiple_of(IV_LEN) => Ok(()),
        (IV_LEN, n) => Err(FrameError::BadCiphertextLength(n)),
        (other, _) => Err(FrameError::BadIv(other)),
    }
}

fn encode_meta(meta: &Map<String, Value>) -> Result<Vec<u8>, FrameError> {
    if meta.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::to_vec(meta).map_err(|_| FrameError::BadMeta)
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], FrameError> {
        if self.buf.len() < n {
            return Err(FrameError::Truncated {
                field,
                needed: n - self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, FrameError> {
        Ok(self.take(1, field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, FrameError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn finish(self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::TrailingBytes(self.buf.len()))
        }
    }
}

struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn new(frame_type: FrameType, call_id: u64) -> Writer {
        let mut out = Vec::with_capacity(128);
        out.push(PROTOCOL_VERSION);
        out.push(frame_type as u8);
        out.extend_from_slice(&call_id.to_be_bytes());
        Writer { out }
    }

    fn u8_prefixed(&mut self, bytes: &[u8], field: &'static str) -> Result<(), FrameError> {
        let len = u8::try_from(bytes.len()).map_err(|_| FrameError::FieldTooLong(field))?;
        self.out.push(len);
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    fn u16_prefixed(&mut self, bytes: &[u8], field: &'static str) -> Result<(), FrameError> {
        let len = u16::try_from(bytes.len()).map_err(|_| FrameError::FieldTooLong(field))?;
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    fn finish(self) -> Result<Vec<u8>, FrameError> {
        if self.out.len() > MAX_FRAME_LEN {
            return Err(FrameError::TooLarge(self.out.len()));
        }
        Ok(self.out)
    }
}

impl From<FrameError> for crate::Error {
    fn from(e: FrameError) -> crate::Error {
        crate::Error::new(crate::ErrorKind::Protocol, "malformed frame").with_source(e)
    }
}

/// The length of the sealed frame (invoke or payload) carrying a body of `body_len` bytes with
/// `meta_len` bytes of meta (0 for none): header, meta, IV and the padded ciphertext.
pub fn sealed_frame_len(body_len: usize, meta_len: usize) -> usize {
    let ciphertext = (body_len / IV_LEN + 1) * IV_LEN;
    // version, type, call id | meta length, meta | IV length, IV | ciphertext
    HEADER_LEN + 2 + meta_len + 1 + IV_LEN + ciphertext
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hello() -> ClientHello {
        ClientHello {
            call_id: 0x0102_0304_0506_0708,
            meta: Map::new(),
            signature: vec![9; 64],
            claims: br#"{"aud":"v"}"#.to_vec(),
        }
    }

    #[test]
    fn client_hello_layout() {
        let bytes = hello().encode().unwrap();
        assert_eq!(&bytes[..10], &[1, 1, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&bytes[10..12], &[0, 0]);
        assert_eq!(bytes[12], 64);
        assert_eq!(&bytes[77..79], &[0, 11]);
        assert_eq!(
            decode_client_frame(&bytes).unwrap(),
            ClientFrame::Hello(hello())
        );
        assert_eq!(peek_call_id(&bytes), Some(0x0102_0304_0506_0708));
    }

    #[test]
    fn server_hello_round_trip() {
        let h = ServerHello {
            call_id: 7,
            public_key: vec![1; 44],
            nonce: vec![2; 32],
            signature: vec![3; 64],
        };
        let bytes = h.encode().unwrap();
        assert_eq!(bytes.len(), 10 + 1 + 44 + 1 + 32 + 1 + 64);
        assert_eq!(decode_server_frame(&bytes).unwrap(), ServerFrame::Hello(h));
    }

    #[test]
    fn sealed_round_trip_with_meta() {
        let mut meta = Map::new();
        meta.insert("client_end".into(), json!(true));
        let f = SealedFrame {
            frame_type: FrameType::Payload,
            call_id: 3,
            meta,
            iv: vec![5; 16],
            ciphertext: vec![6; 32],
        };
        let bytes = f.encode().unwrap();
        assert_eq!(&bytes[10..12], &[0, 19]);
        assert_eq!(&bytes[12..31], br#"{"client_end":true}"#);
        assert_eq!(
            decode_client_frame(&bytes).unwrap(),
            ClientFrame::Sealed(f.clone())
        );
        assert_eq!(decode_server_frame(&bytes).unwrap(), ServerFrame::Sealed(f));
    }

    #[test]
    fn meta_only_error_frame() {
        let mut meta = Map::new();
        meta.insert("error".into(), json!("no route"));
        let f = SealedFrame {
            frame_type: FrameType::Payload,
            call_id: 3,
            meta,
            iv: vec![],
            ciphertext: vec![],
        };
        let decoded = decode_server_frame(&f.encode().unwrap()).unwrap();
        let ServerFrame::Sealed(s) = decoded else {
            panic!("expected sealed")
        };
        assert_eq!(s.meta_error().as_deref(), Some("no route"));
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        let good = hello().encode().unwrap();
        assert!(matches!(
            decode_client_frame(&[]),
            Err(FrameError::Truncated { .. })
        ));
        let mut v2 = good.clone();
        v2[0] = 2;
        assert_eq!(
            decode_client_frame(&v2),
            Err(FrameError::UnsupportedVersion(2))
        );
        let mut t9 = good.clone();
        t9[1] = 9;
        assert_eq!(decode_client_frame(&t9), Err(FrameError::UnknownType(9)));
        for cut in 0..good.len() {
            assert!(decode_client_frame(&good[..cut]).is_err(), "cut {cut}");
        }
        let mut extra = good.clone();
        extra.push(0);
        assert_eq!(
            decode_client_frame(&extra),
            Err(FrameError::TrailingBytes(1))
        );
        let bad_meta = [1, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, b'[', b']', 0];
        assert_eq!(decode_client_frame(&bad_meta), Err(FrameError::BadMeta));
        // Bad IV and ciphertext lengths decode (their meta stays readable) but never encode.
        let short_iv = [1, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 3, 1, 2, 3, 0];
        let ClientFrame::Sealed(s) = decode_client_frame(&short_iv).unwrap() else {
            panic!("expected sealed")
        };
        assert_eq!(s.encode(), Err(FrameError::BadIv(3)));
        let mut odd_ct = vec![1, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 16];
        odd_ct.extend_from_slice(&[0; 16 + 5]);
        let ClientFrame::Sealed(s) = decode_client_frame(&odd_ct).unwrap() else {
            panic!("expected sealed")
        };
        assert_eq!(s.encode(), Err(FrameError::BadCiphertextLength(5)));
    }

    #[test]
    fn oversized_fields_are_refused_on_encode() {
        let mut h = hello();
        h.signature = vec![0; 256];
        assert_eq!(h.encode(), Err(FrameError::FieldTooLong("signature")));
    }

    #[test]
    fn sealed_frame_length_is_computed_exactly() {
        use crate::protocol::body::{invoke_len, Body};
        use crate::protocol::exchange::CallKey;
        let key = CallKey::from_bytes([7u8; 32]);
        let path = "/tdx.volt_api.volt.v1.FileAPI/UploadFile";
        let samples = [
            String::new(),
            "{}".to_owned(),
            r#"{"chunk":"aGVsbG8="}"#.to_owned(),
            "quote \" back \\ slash \n\r\t \u{1} \u{8} \u{c} \u{1f} é 😀".to_owned(),
            "x".repeat(4095),
        ];
        for json in samples {
            for meta in [Map::new(), {
                let mut m = Map::new();
                m.insert("d".into(), Value::from(vec!["did:volt:abc"]));
                m
            }] {
                let meta_len = if meta.is_empty() {
                    0
                } else {
                    Value::Object(meta.clone()).to_string().len()
                };
                let body = Body::Invoke {
                    method_name: path.to_owned(),
                    service_id: None,
                    json_request: json.clone(),
                };
                assert_eq!(invoke_len(path, &json), body.to_json().len(), "{json:?}");
                let frame = key.seal(FrameType::Invoke, 1, meta, &body.to_json());
                let encoded = frame.encode().expect("encodes");
                let computed = sealed_frame_len(invoke_len(path, &json), meta_len);
                assert_eq!(computed, encoded.len(), "{json:?}");
            }
        }
    }
}
