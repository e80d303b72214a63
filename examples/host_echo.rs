//! Hosts the echo service of `examples/proto/echo.proto` (unary `Echo`, bidirectional
//! `EchoStream`) for callers that reach it through the Volt, until Ctrl-C.
//!
//! ```text
//! cargo run --example host_echo -- CONFIG_PATH
//! ```
//!
//! It saves the service resource (or reuses the one it saved before), opens a hosting
//! session, and prints one line, `{"ready": true, "service_id": "..."}`, once the Volt lists
//! the service online on that session. Works with a direct configuration and with a relayed
//! one (`volt-emulator client --relayed`).
//!
//! Callers must be allowed to find and invoke the service: run `call_echo` with the same
//! configuration (the owner), or with another client's once the owner has granted it
//! `volt:resource-read` and `volt:resource-invoke` on the service (SaveAccess).

#[path = "common/echo.rs"]
mod echo;

use std::process::ExitCode;
use std::time::Duration;

use echo::{EchoRequest, EchoResponse};
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tdx_volt::client::{HostOptions, Invocation, ServiceProtos};
use tdx_volt::{Status, VoltClient};

/// How long to wait for the Volt to list the service online.
const READY_WAIT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: host_echo CONFIG_PATH");
        return ExitCode::from(2);
    };
    match run(&path).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("host_echo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: &str) -> tdx_volt::Result<()> {
    let client = VoltClient::builder().config_file(path).connect().await?;
    let service_id = save_service(&client).await?;
    // With the service's proto file the host serves callers on the websocket gateway (JSON)
    // as well as those on gRPC (protobuf).
    let protos = ServiceProtos::compile([("echo.proto", echo::PROTO)])?;
    let mut host = client.host(HostOptions::new().protos(protos)).await?;
    wait_until_online(&client, &service_id, &host).await?;
    // Exactly this line (scripts wait for it): `{"ready": true, "service_id": "..."}`.
    println!("{{\"ready\": true, \"service_id\": {}}}", json!(service_id));

    let session = host.session().clone();
    let serving = async {
        while let Some(call) = host.next().await {
            tokio::spawn(answer(call));
        }
    };
    tokio::select! {
        () = serving => {}
        _ = tokio::signal::ctrl_c() => session.close().await,
    }
    Ok(())
}

/// The service resource this client hosts: the one it saved before, or a new one. Its
/// description names this client as the host, with its public key, and the resource itself
/// as `host_service_id` (callers such as the official JS client send that as the call's
/// `target_service_id`: with none, the Volt cannot check their access to the service).
async fn save_service(client: &VoltClient) -> tdx_volt::Result<String> {
    let config = client.config();
    let me = config.credential().client_id.clone();
    let mut description = json!({
        "host_type": "SERVICE_HOST_TYPE_RELAYED",
        "host_client_id": me,
        "host_public_key": config.private_key(None)?.public_key().to_spki_pem()?,
        // Callers reach a RELAYED service through the Volt; the official gRPC client still
        // wants an address here (it makes, and never dials, a client for it).
        "host_address": config.volt().address.clone().unwrap_or_default(),
        "service_api": [echo::SERVICE],
        "proto_file": [{"file_path": "echo.proto", "protobuf": echo::PROTO,
                        "service_name": [echo::SERVICE]}],
    });
    let found = client
        .discover_services(json!({"service_api": [echo::SERVICE], "include_offline": true}))
        .await?;
    let mine = found["resource"].as_array().and_then(|all| {
        all.iter()
            .find(|r| r["service_description"]["host_client_id"] == json!(me))
            .cloned()
    });
    let mut resource = match mine {
        Some(resource) => resource,
        // A new resource first, for its id.
        None => client
            .save_resource(json!({"create": true, "resource": {
                "name": "echo", "kind": ["volt:service"],
                "service_description": description}}))
            .await?["resource"]
            .take(),
    };
    let id = resource["id"].as_str().unwrap_or_default().to_owned();
    description["host_service_id"] = json!(id);
    resource["service_description"] = description;
    client.save_resource(json!({"resource": resource})).await?;
    Ok(id)
}

/// Waits until the Volt lists the service online on this host's session.
async fn wait_until_online(
    client: &VoltClient,
    service_id: &str,
    host: &tdx_volt::client::Host,
) -> tdx_volt::Result<()> {
    let check = async {
        loop {
            let found = client
                .discover_services(json!({"service_api": [echo::SERVICE]}))
                .await?;
            let online = found["resource"].as_array().is_some_and(|all| {
                all.iter().any(|r: &Value| {
                    r["id"] == json!(service_id)
                        && host.session().connection_id().is_some_and(|id| {
                            r["service_description"]["host_connection_id"] == json!(id)
                        })
                })
            });
            if online {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(READY_WAIT, check).await.map_err(|_| {
        tdx_volt::Error::new(
            tdx_volt::ErrorKind::Timeout,
            format!("the Volt did not list the service online within {READY_WAIT:?}"),
        )
    })?
}

/// Answers one call: `Echo` once, `EchoStream` for each request until the caller ends.
async fn answer(mut call: Invocation) -> tdx_volt::Result<()> {
    let mut sequence = 0;
    let known = matches!(call.method(), echo::ECHO | echo::ECHO_STREAM);
    if !known {
        let method = call.method().to_owned();
        return call
            .finish(Err(Status::new(
                12,
                format!("{method}: no such method"),
                "",
            )))
            .await;
    }
    while let Some(request) = call.request::<EchoRequest>().await? {
        sequence += 1;
        call.respond(&EchoResponse {
            text: request.text,
            sequence,
        })
        .await?;
        if call.method() == echo::ECHO {
            break;
        }
    }
    call.finish(Ok(())).await
}
