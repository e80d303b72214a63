//! The SDK's client against an in-process emulator: the Volt owner (the default client) and
//! further clients, and VoltAPI calls by method name answering the response or the status
//! code. Included with `#[path = "support/sdk.rs"] mod sdk;` next to `mod support;`.

#![allow(dead_code)]

use serde_json::Value;
use tdx_volt::{Transport, VoltClient};

use super::support::{TestVolt, WAIT};

/// A VoltAPI method's path.
pub fn path(method: &str) -> String {
    format!("/tdx.volt_api.volt.v1.VoltAPI/{method}")
}

/// A client with the configuration `config` over `transport`.
pub async fn client(config: Value, transport: Transport) -> VoltClient {
    VoltClient::builder()
        .config(config)
        .transport(transport)
        .request_timeout(WAIT)
        .connect()
        .await
        .expect("client connects")
}

/// The Volt owner: the default client the emulator wrote.
pub async fn owner(volt: &TestVolt, transport: Transport) -> VoltClient {
    let text = std::fs::read_to_string(volt.emulator().config_path()).expect("config");
    client(serde_json::from_str(&text).expect("config JSON"), transport).await
}

/// A further client, not the Volt's owner.
pub async fn other(volt: &TestVolt, name: &str, transport: Transport) -> VoltClient {
    let config = volt.emulator().issue_client(name, None).expect("issued");
    client(config, transport).await
}

/// Calls a VoltAPI method; `Err` carries the status code and message of a refusal.
pub async fn call(
    client: &VoltClient,
    method: &str,
    request: Value,
) -> Result<Value, (i32, String)> {
    match client.unary(&path(method), request).await {
        Ok(response) => Ok(response),
        Err(e) => match e.status() {
            Some(status) => Err((status.code, status.message.clone())),
            None => panic!("{method}: not a status error: {e:?}"),
        },
    }
}

/// Calls a method that must succeed.
pub async fn ok(client: &VoltClient, method: &str, request: Value) -> Value {
    call(client, method, request)
        .await
        .unwrap_or_else(|e| panic!("{method}: {e:?}"))
}

/// Calls a method that must be refused with `code`; returns the message.
pub async fn refused(client: &VoltClient, method: &str, request: Value, code: i32) -> String {
    match call(client, method, request).await {
        Err((got, message)) => {
            assert_eq!(got, code, "{method}: {message}");
            message
        }
        Ok(response) => panic!("{method}: expected code {code}, got {response}"),
    }
}

/// A resource's id in a response holding `resource`.
pub fn id_of(response: &Value) -> String {
    response["resource"]["id"]
        .as_str()
        .expect("resource id")
        .to_owned()
}
