//! Authenticates a client whose configuration has no session yet, then makes a call in the
//! new session (over mutual TLS when the transport is gRPC). The configuration file is updated
//! with the session id, certificate and CA chain the Volt grants.
//!
//! `cargo run --example authenticate -- CONFIG [session|volt-did|own-did] [grpc|websocket]`
//!
//! To try it on volt-emulator, copy `DIR/client.config.json` and delete
//! `credential.session_id` from the copy.

use serde_json::json;
use tdx_volt::client::Authentication;
use tdx_volt::{Transport, VoltClient};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(config) = args.first() else {
        eprintln!("usage: authenticate CONFIG [session|volt-did|own-did] [grpc|websocket]");
        std::process::exit(2);
    };
    let authentication = match args.get(1).map(String::as_str) {
        Some("session") => Authentication::session_only(),
        Some("own-did") => Authentication::own_did(),
        Some("volt-did") => Authentication::volt_did(),
        _ => Authentication::new(),
    };
    let transport = match args.get(2).map(String::as_str) {
        Some("grpc") => Transport::Grpc,
        Some("websocket") => Transport::Websocket,
        _ => Transport::Auto,
    };
    let client = VoltClient::builder()
        .config_file(config)
        .transport(transport)
        .connect()
        .await?;
    println!(
        "connected over {:?}; waiting for the Volt's decision",
        client.transport()
    );
    let granted = client
        .authenticate(authentication.client_name("tdx-volt example"))
        .await?;
    println!(
        "session {} (identity {:?}, certificate: {}); saved to {config}",
        granted.session_id(),
        granted.identity_did(),
        granted.has_certificate()
    );
    let volt = client
        .get_resource(json!({"resource_id": client.volt_id()}))
        .await?;
    println!("the Volt is {}", volt["resource"]["name"]);
    Ok(())
}
