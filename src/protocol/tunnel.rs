//! Relay tunnelling over `VoltAPI/Invoke`, sans-IO: the messages of one tunnelled call.
//!
//! A tunnelled call is one `Invoke` stream. The caller opens it with an [`opening_request`]
//! (its identity token, whose `k` claim is a fresh X25519 key, and the route); the far end
//! (the Volt, or a client hosting a service) answers with a signed key exchange, which the
//! caller checks with [`complete_key_exchange`] before anything else leaves. From then on each
//! message is AES-256-CBC under the call key with a fresh IV:
//! - caller to target, an `InvokeRequest{iv, payload}` holding a `RemoteResponse`
//!   (`method_invoke` first, then `method_payload`s; an end is a half-close of the stream);
//! - target to caller, an `InvokeResponse{iv, payload}` holding a `RemoteRequest`
//!   (`method_payload`s, then `method_end`); the call ends when the stream does.
//!
//! A failure of the tunnel itself comes as `InvokeResponse.status` with a message.

use prost::Message as _;
use rand_core::{OsRng, RngCore as _};

use super::body::Body;
use super::error::{Error, ErrorKind, Result};
use super::exchange::{server_key_exchange, CallKey, ClientKeyExchange};
use super::frame::{ServerHello, IV_LEN};
use super::keys::{PrivateKey, PublicKey};
use super::schema::MethodKind;
use crate::proto::volt::{
    invoke_request, invoke_response, remote_request, remote_response, InvokeRequest,
    InvokeRequestKeyExchange, InvokeResponse, MethodType, RemoteRequest, RemoteResponse,
};

/// The method every tunnelled call goes through.
pub const INVOKE_PATH: &str = "/tdx.volt_api.volt.v1.VoltAPI/Invoke";

/// The `method_type` of a method of this shape (taken from its descriptor, never guessed).
pub fn method_type(kind: MethodKind) -> MethodType {
    match kind {
        MethodKind::Unary => MethodType::Unary,
        MethodKind::ClientStreaming => MethodType::ClientStream,
        MethodKind::ServerStreaming => MethodType::ServerStream,
        MethodKind::BidiStreaming => MethodType::Bidi,
    }
}

/// The first message of a tunnel: the caller's token and the route, with no invoke id, IV or
/// payload. `target_did` lists the hops (the Volt's id when going through a relay, then the
/// host's for a relayed service); `target_service_id` names a hosted service.
pub fn opening_request(
    token: String,
    target_did: Vec<String>,
    target_service_id: Option<String>,
) -> InvokeRequest {
    InvokeRequest {
        token,
        target_did,
        target_service_id: target_service_id.unwrap_or_default(),
        ..InvokeRequest::default()
    }
}

/// Checks the far end's key exchange with `signer` (the Volt's key, or the host's key for a
/// hosted service) and derives the tunnel's key. Fails closed: a missing or wrong signature, a
/// malformed key, or a signer that is not Ed25519 is a key exchange error.
pub fn complete_key_exchange(
    exchange: ClientKeyExchange,
    answer: &InvokeRequestKeyExchange,
    signer: &PublicKey,
) -> Result<TunnelKey> {
    let hello = ServerHello {
        call_id: 0,
        public_key: answer.encryption_key.clone(),
        nonce: answer.nonce.clone(),
        signature: answer.signature.clone(),
    };
    exchange.complete(&hello, signer).map(TunnelKey)
}

/// The far end's half of the key exchange: reads the caller's `k` claim and answers with a
/// fresh key and nonce signed by `key` (the Volt's, or a host's own credential key).
pub fn answer_key_exchange(
    client_k: &str,
    key: &PrivateKey,
) -> Result<(InvokeRequestKeyExchange, TunnelKey)> {
    let (hello, call_key) = server_key_exchange(0, client_k, key)?;
    Ok((
        InvokeRequestKeyExchange {
            nonce: hello.nonce,
            encryption_key: hello.public_key,
            signature: hello.signature,
        },
        TunnelKey(call_key),
    ))
}

/// What a caller reads from one `InvokeResponse`.
#[derive(Debug)]
pub enum Downstream {
    /// The far end's key exchange.
    KeyExchange(InvokeRequestKeyExchange),
    /// A sealed `RemoteRequest`.
    Sealed {
        /// The IV.
        iv: Vec<u8>,
        /// The ciphertext.
        payload: Vec<u8>,
    },
    /// The tunnel failed: the status the relay or Volt gave (its message is not empty).
    Failed(crate::proto::volt::Status),
    /// Nothing to act on: a bare invoke id, an empty status, or `server_end` alone.
    Nothing,
    /// A JSON-mode payload, which a gRPC caller never asked for.
    Unexpected(&'static str),
}

/// Sorts one `InvokeResponse` for the caller.
pub fn classify(response: InvokeResponse) -> Downstream {
    match response.response_payload {
        Some(invoke_response::ResponsePayload::Status(status)) if !status.message.is_empty() => {
            Downstream::Failed(status)
        }
        Some(invoke_response::ResponsePayload::Payload(payload)) => Downstream::Sealed {
            iv: response.iv,
            payload,
        },
        Some(invoke_response::ResponsePayload::JsonPayload(_)) => {
            Downstream::Unexpected("a JSON payload in a protobuf tunnel")
        }
        _ => match response.key_exchange {
            Some(kx) => Downstream::KeyExchange(kx),
            None => Downstream::Nothing,
        },
    }
}

/// The key of one tunnel (zeroized on drop), and the sealing of its messages both ways.
#[derive(Debug)]
pub struct TunnelKey(CallKey);

impl TunnelKey {
    /// Wraps a key (for tests and known answers).
    pub fn from_call_key(key: CallKey) -> TunnelKey {
        TunnelKey(key)
    }

    fn seal(&self, plaintext: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut iv = [0u8; IV_LEN];
        OsRng.fill_bytes(&mut iv);
        (iv.to_vec(), self.0.encrypt(&iv, plaintext))
    }

    /// Decrypts; every failure (lengths, padding) reads the same, so that a peer learns
    /// nothing of which step failed.
    fn open(&self, iv: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>> {
        self.0
            .decrypt(iv, ciphertext)
            .map_err(|_| Error::new(ErrorKind::Protocol, "a tunnel message does not decrypt"))
    }

    /// Caller to target: `message` sealed into an `InvokeRequest`.
    pub fn seal_upstream(&self, message: &RemoteResponse) -> InvokeRequest {
        let (iv, payload) = self.seal(&message.encode_to_vec());
        InvokeRequest {
            iv,
            request_payload: Some(invoke_request::RequestPayload::Payload(payload)),
            ..InvokeRequest::default()
        }
    }

    /// The target's side of [`seal_upstream`](Self::seal_upstream). A message without a
    /// payload (a bare `client_end`) is `None`; one that is not sealed is an error, never
    /// read as plaintext.
    pub fn open_upstream(&self, request: &InvokeRequest) -> Result<Option<RemoteResponse>> {
        match &request.request_payload {
            None => Ok(None),
            Some(invoke_request::RequestPayload::Payload(payload)) => {
                let plain = self.open(&request.iv, payload)?;
                RemoteResponse::decode(plain.as_slice())
                    .map(Some)
                    .map_err(|e| protocol("a tunnel message that does not decode", e))
            }
            Some(invoke_request::RequestPayload::JsonPayload(_)) => Err(Error::new(
                ErrorKind::Protocol,
                "a JSON payload in a protobuf tunnel",
            )),
        }
    }

    /// Target to caller: `message` sealed into an `InvokeResponse`.
    pub fn seal_downstream(&self, message: &RemoteRequest) -> InvokeResponse {
        let (iv, payload) = self.seal(&message.encode_to_vec());
        InvokeResponse {
            iv,
            response_payload: Some(invoke_response::ResponsePayload::Payload(payload)),
            ..InvokeResponse::default()
        }
    }

    /// Target to a JSON-mode caller (one on the websocket gateway): `body` sealed into an
    /// `InvokeResponse.json_payload`.
    pub fn seal_json_downstream(&self, body: &Body) -> InvokeResponse {
        let (iv, payload) = self.seal(&body.to_json());
        InvokeResponse {
            iv,
            response_payload: Some(invoke_response::ResponsePayload::JsonPayload(payload)),
            ..InvokeResponse::default()
        }
    }

    /// The target's side of a JSON-mode caller's message (`InvokeRequest.json_payload`: the
    /// caller's sealed websocket body, passed on as it came).
    pub fn open_json_upstream(&self, iv: &[u8], payload: &[u8]) -> Result<Body> {
        let plain = self.open(iv, payload)?;
        Body::parse(&plain).map_err(|e| {
            Error::new(ErrorKind::Protocol, "a tunnel message that does not parse").with_source(e)
        })
    }

    /// The caller's side of [`seal_downstream`](Self::seal_downstream).
    pub fn open_downstream(&self, iv: &[u8], payload: &[u8]) -> Result<RemoteRequest> {
        let plain = self.open(iv, payload)?;
        RemoteRequest::decode(plain.as_slice())
            .map_err(|e| protocol("a tunnel message that does not decode", e))
    }
}

fn protocol(what: &'static str, cause: prost::DecodeError) -> Error {
    Error::new(ErrorKind::Protocol, what).with_source(cause)
}

/// A `RemoteResponse` that starts a call of `method_name` with its first request.
pub fn method_invoke(method_name: String, kind: MethodKind, request: Vec<u8>) -> RemoteResponse {
    RemoteResponse {
        payload: Some(remote_response::Payload::MethodInvoke(
            crate::proto::volt::MethodInvoke {
                method_name,
                method_type: method_type(kind) as i32,
                invoke_request: Some(crate::proto::volt::method_invoke::InvokeRequest::Request(
                    request,
                )),
                ..Default::default()
            },
        )),
    }
}

/// A `RemoteResponse` carrying a later request of the call.
pub fn upstream_payload(request: Vec<u8>) -> RemoteResponse {
    RemoteResponse {
        payload: Some(remote_response::Payload::MethodPayload(payload(request))),
    }
}

/// A `RemoteRequest` carrying one response of the call.
pub fn downstream_payload(response: Vec<u8>) -> RemoteRequest {
    RemoteRequest {
        payload: Some(remote_request::Payload::MethodPayload(payload(response))),
    }
}

/// A `RemoteRequest` ending the call: with `error` (message and gRPC code) when it failed.
pub fn downstream_end(error: Option<(i32, String)>) -> RemoteRequest {
    let (error_code, error) = error.unwrap_or_default();
    RemoteRequest {
        payload: Some(remote_request::Payload::MethodEnd(
            crate::proto::volt::MethodEnd {
                ended: true,
                error,
                error_code,
                ..Default::default()
            },
        )),
    }
}

fn payload(bytes: Vec<u8>) -> crate::proto::volt::MethodPayload {
    crate::proto::volt::MethodPayload {
        method_payload: Some(crate::proto::volt::method_payload::MethodPayload::Payload(
            bytes,
        )),
        ..Default::default()
    }
}

/// A method name as a cloud relay routes it: `/pkg.Service/Method` of the Volt `volt_id` is
/// `/<volt id>/pkg.Service/Method`.
pub fn cloud_method_name(volt_id: &str, path: &str) -> String {
    format!("/{volt_id}{path}")
}

/// Strips the cloud relay's `/<volt id>` prefix from a tunnelled method name, when there is
/// one: `/<volt id>/pkg.Service/Method` is `/pkg.Service/Method`.
pub fn strip_cloud_prefix<'a>(method_name: &'a str, volt_id: &str) -> &'a str {
    method_name
        .strip_prefix('/')
        .and_then(|rest| rest.strip_prefix(volt_id))
        .filter(|rest| rest.starts_with('/'))
        .unwrap_or(method_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(volt: &PrivateKey) -> (TunnelKey, TunnelKey) {
        let client = ClientKeyExchange::new();
        let (answer, far) = answer_key_exchange(&client.token_claim(), volt).unwrap();
        let near = complete_key_exchange(client, &answer, &volt.public_key()).unwrap();
        (near, far)
    }

    #[test]
    fn both_ends_seal_and_open_each_others_messages() {
        let volt = PrivateKey::from_ed25519_seed(&[7; 32]);
        let (caller, target) = handshake(&volt);
        let invoke = method_invoke(
            "/tdx.volt_api.volt.v1.VoltAPI/GetResource".into(),
            MethodKind::Unary,
            vec![1, 2, 3],
        );
        let sealed = caller.seal_upstream(&invoke);
        assert_eq!(sealed.iv.len(), IV_LEN);
        assert!(sealed.token.is_empty() && sealed.target_did.is_empty());
        assert_eq!(target.open_upstream(&sealed).unwrap(), Some(invoke));
        assert_eq!(
            target.open_upstream(&InvokeRequest::default()).unwrap(),
            None
        );

        let answer = downstream_payload(vec![9; 40]);
        let Downstream::Sealed { iv, payload } = classify(target.seal_downstream(&answer)) else {
            panic!("sealed")
        };
        assert_eq!(caller.open_downstream(&iv, &payload).unwrap(), answer);
        // Each message has its own IV.
        assert_ne!(caller.seal_upstream(&upstream_payload(vec![])).iv, {
            caller.seal_upstream(&upstream_payload(vec![])).iv
        });
    }

    #[test]
    fn a_key_exchange_that_does_not_verify_fails_closed() {
        let volt = PrivateKey::from_ed25519_seed(&[7; 32]);
        let other = PrivateKey::from_ed25519_seed(&[8; 32]);
        let client = ClientKeyExchange::new();
        let (answer, _) = answer_key_exchange(&client.token_claim(), &volt).unwrap();
        // The wrong key.
        let err = complete_key_exchange(client, &answer, &other.public_key()).unwrap_err();
        assert!(err.is_key_exchange(), "{err:?}");
        // A flipped bit in the signature, in the key, in the nonce; no signature at all.
        for tamper in 0..4 {
            let client = ClientKeyExchange::new();
            let (mut answer, _) = answer_key_exchange(&client.token_claim(), &volt).unwrap();
            match tamper {
                0 => answer.signature[5] ^= 1,
                1 => answer.encryption_key[20] ^= 1,
                2 => answer.nonce[0] ^= 1,
                _ => answer.signature.clear(),
            }
            let err = complete_key_exchange(client, &answer, &volt.public_key()).unwrap_err();
            assert!(err.is_key_exchange(), "{tamper}: {err:?}");
        }
    }

    #[test]
    fn garbage_is_a_typed_error_never_plaintext() {
        let volt = PrivateKey::from_ed25519_seed(&[7; 32]);
        let (caller, target) = handshake(&volt);
        let (_, stranger) = handshake(&volt);
        let sealed = caller.seal_upstream(&upstream_payload(vec![1]));
        assert!(stranger
            .open_upstream(&sealed)
            .is_err_and(|e| e.is_protocol()));
        let plaintext = InvokeRequest {
            request_payload: Some(invoke_request::RequestPayload::Payload(
                upstream_payload(vec![1]).encode_to_vec(),
            )),
            ..InvokeRequest::default()
        };
        assert!(target
            .open_upstream(&plaintext)
            .is_err_and(|e| e.is_protocol()));
        for (iv, payload) in [
            (vec![], vec![0; 16]),
            (vec![0; 16], vec![0; 15]),
            (vec![0; 16], vec![]),
        ] {
            assert!(caller
                .open_downstream(&iv, &payload)
                .is_err_and(|e| e.is_protocol()));
        }
    }

    #[test]
    fn responses_are_sorted() {
        let failed = InvokeResponse {
            response_payload: Some(invoke_response::ResponsePayload::Status(
                crate::proto::volt::Status {
                    code: 5,
                    message: "no such host".into(),
                    description: String::new(),
                },
            )),
            ..InvokeResponse::default()
        };
        assert!(matches!(classify(failed), Downstream::Failed(s) if s.code == 5));
        let interim = InvokeResponse {
            invoke_id: 4,
            ..InvokeResponse::default()
        };
        assert!(matches!(classify(interim), Downstream::Nothing));
        let kx = InvokeResponse {
            key_exchange: Some(InvokeRequestKeyExchange::default()),
            ..InvokeResponse::default()
        };
        assert!(matches!(classify(kx), Downstream::KeyExchange(_)));
    }

    #[test]
    fn the_cloud_prefix_is_added_and_stripped_back() {
        let path = "/tdx.volt_api.volt.v1.VoltAPI/GetResource";
        let named = cloud_method_name("did:volt:abc", path);
        assert_eq!(
            named,
            "/did:volt:abc/tdx.volt_api.volt.v1.VoltAPI/GetResource"
        );
        assert_eq!(strip_cloud_prefix(&named, "did:volt:abc"), path);
    }

    #[test]
    fn the_cloud_prefix_is_stripped_only_when_it_is_there() {
        let id = "did:volt:abc";
        assert_eq!(
            strip_cloud_prefix("/did:volt:abc/tdx.volt_api.volt.v1.VoltAPI/GetResource", id),
            "/tdx.volt_api.volt.v1.VoltAPI/GetResource"
        );
        assert_eq!(strip_cloud_prefix("/a.B/C", id), "/a.B/C");
        assert_eq!(
            strip_cloud_prefix("/did:volt:abcd/a.B/C", id),
            "/did:volt:abcd/a.B/C"
        );
    }

    #[test]
    fn method_types_follow_the_shape() {
        assert_eq!(method_type(MethodKind::Unary), MethodType::Unary);
        assert_eq!(
            method_type(MethodKind::ClientStreaming),
            MethodType::ClientStream
        );
        assert_eq!(
            method_type(MethodKind::ServerStreaming),
            MethodType::ServerStream
        );
        assert_eq!(method_type(MethodKind::BidiStreaming), MethodType::Bidi);
    }
}
