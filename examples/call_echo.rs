//! Calls the echo service that `host_echo` hosts: finds it with DiscoverServices, calls
//! `Echo` once and `EchoStream` with three requests, and prints one JSON line per answer.
//!
//! ```text
//! cargo run --example call_echo -- CONFIG_PATH
//! ```
//!
//! The service's resource carries its proto file, so the calls work over any transport:
//! protobuf tunnelled over gRPC, or JSON routed through the websocket gateway.
//!
//! The calls go through the Volt (and its relay, with a relayed configuration) to the host,
//! end-to-end encrypted with it: the host's key exchange is checked against the service's
//! `host_public_key` before a request leaves.

#[path = "common/echo.rs"]
mod echo;

use std::process::ExitCode;

use echo::{EchoRequest, EchoResponse};
use serde_json::json;
use tdx_volt::client::ServiceRef;
use tdx_volt::VoltClient;

#[tokio::main]
async fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: call_echo CONFIG_PATH");
        return ExitCode::from(2);
    };
    match run(&path).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("call_echo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: &str) -> tdx_volt::Result<()> {
    let client = VoltClient::builder().config_file(path).connect().await?;
    let found = client
        .discover_services(json!({"service_api": [echo::SERVICE], "include_protobuf": true}))
        .await?;
    let resource = found["resource"]
        .as_array()
        .and_then(|all| all.first())
        .ok_or_else(|| {
            tdx_volt::Error::new(
                tdx_volt::ErrorKind::Status,
                format!(
                    "no {} service this client may see is online (start host_echo; a client \
                     other than its owner needs volt:resource-read and volt:resource-invoke \
                     on it)",
                    echo::SERVICE
                ),
            )
        })?;
    let service = ServiceRef::from_resource(resource)?;

    let answer: EchoResponse = client
        .call_service_unary(
            &service,
            echo::ECHO,
            &EchoRequest {
                text: "hello".into(),
            },
        )
        .await?;
    println!(
        "{}",
        json!({"method": "Echo", "text": answer.text, "sequence": answer.sequence})
    );

    // The method's shape (bidirectional) comes from the proto file the service carries.
    let mut call = client.call_service(&service, echo::ECHO_STREAM).await?;
    for text in ["one", "two", "three"] {
        call.send(&EchoRequest { text: text.into() }).await?;
    }
    call.end().await?;
    while let Some(answer) = call.next::<EchoResponse>().await {
        let answer = answer?;
        println!(
            "{}",
            json!({"method": "EchoStream", "text": answer.text, "sequence": answer.sequence})
        );
    }
    Ok(())
}
