//! The host's messages on the Connect call, between the session's proto3 JSON and prost
//! types: `ConnectResponse.invoke_request` in, `ConnectRequest.invoke_response` out.

use prost::Message as _;
use serde_json::{json, Value};

use crate::proto::volt::{connect_request, connect_response, ConnectRequest, ConnectResponse};
use crate::proto::volt::{InvokeRequest, InvokeResponse};
use crate::protocol::schema::{self, Method};
use crate::{Error, ErrorKind, Result};

/// The Connect method, whose messages these are.
fn connect() -> Result<&'static Method> {
    schema::methods().lookup("/tdx.volt_api.volt.v1.VoltAPI/Connect")
}

/// Reads an `invoke_request` the session received (its JSON) as the prost message.
pub(super) fn invoke_request(json: Value) -> Result<InvokeRequest> {
    let bytes = connect()?.encode_response(&json!({ "invoke_request": json }))?;
    let message = ConnectResponse::decode(bytes.as_slice()).map_err(|e| {
        Error::new(
            ErrorKind::Protocol,
            "an invoke_request that does not decode",
        )
        .with_source(e)
    })?;
    match message.payload {
        Some(connect_response::Payload::InvokeRequest(request)) => Ok(request),
        _ => Err(Error::new(
            ErrorKind::Protocol,
            "an invoke_request without its message",
        )),
    }
}

/// The `ConnectRequest` (as the session's JSON) that carries `response` to the Volt.
pub(super) fn invoke_response(response: InvokeResponse) -> Result<Value> {
    let message = ConnectRequest {
        payload: Some(connect_request::Payload::InvokeResponse(response)),
    };
    connect()?.decode_request(&message.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::volt::{invoke_request, invoke_response, InvokeRequestKeyExchange};

    #[test]
    fn messages_cross_the_json_of_the_session_unchanged() {
        let request = InvokeRequest {
            invoke_id: u64::MAX,
            token: "a.b.c".into(),
            target_did: vec!["did:volt:x".into()],
            iv: vec![1; 16],
            request_payload: Some(invoke_request::RequestPayload::Payload(vec![0, 255, 7])),
            client_end: true,
            hop_index: 0,
            target_service_id: "svc".into(),
        };
        let as_json = connect()
            .unwrap()
            .decode_response(
                &ConnectResponse {
                    payload: Some(connect_response::Payload::InvokeRequest(request.clone())),
                    ..Default::default()
                }
                .encode_to_vec(),
            )
            .unwrap();
        assert_eq!(
            invoke_request(as_json["invoke_request"].clone()).unwrap(),
            request
        );

        let response = InvokeResponse {
            invoke_id: 3,
            key_exchange: Some(InvokeRequestKeyExchange {
                nonce: vec![1; 16],
                encryption_key: vec![2; 44],
                signature: vec![3; 64],
            }),
            iv: vec![],
            response_payload: Some(invoke_response::ResponsePayload::Payload(vec![9])),
            server_end: true,
        };
        let json = invoke_response(response.clone()).unwrap();
        let bytes = connect().unwrap().encode_request(&json).unwrap();
        let back = ConnectRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            back.payload,
            Some(connect_request::Payload::InvokeResponse(response))
        );
        assert!(invoke_request(json!({"invoke_id": "not a number"})).is_err());
    }
}
