//! Prints a resource of a Volt (the Volt itself by default).
//!
//! `cargo run --example get_resource -- CONFIG [RESOURCE_ID]`, where CONFIG is the client
//! configuration JSON the Volt issued (for volt-emulator: `DIR/client.config.json`).

use serde_json::json;
use tdx_volt::VoltClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let Some(config) = args.next() else {
        eprintln!("usage: get_resource CONFIG [RESOURCE_ID]");
        std::process::exit(2);
    };
    let client = VoltClient::from_file(config).await?;
    let id = args.next().unwrap_or_else(|| client.volt_id().to_owned());
    let response = client.get_resource(json!({"resource_id": id})).await?;
    println!("{}", serde_json::to_string_pretty(&response)?);
    Ok(())
}
