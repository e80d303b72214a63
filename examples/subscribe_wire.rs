//! Prints the chunks published to a wire as they arrive (as text when they are UTF-8), until
//! COUNT chunks have arrived or the subscription ends.
//!
//! `cargo run --example subscribe_wire -- CONFIG WIRE_ID [COUNT]`

use futures_util::StreamExt as _;
use tdx_volt::VoltClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (config, wire_id, count) = match args.as_slice() {
        [config, wire] => (config, wire, usize::MAX),
        [config, wire, count] => (config, wire, count.parse()?),
        _ => {
            eprintln!("usage: subscribe_wire CONFIG WIRE_ID [COUNT]");
            std::process::exit(2);
        }
    };
    let client = VoltClient::from_file(config).await?;
    let mut chunks = client.subscribe_wire_chunks(wire_id).await?;
    let mut seen = 0;
    while seen < count {
        let Some(chunk) = chunks.next().await else {
            break;
        };
        let chunk = chunk?;
        match std::str::from_utf8(&chunk) {
            Ok(text) => println!("{text}"),
            Err(_) => println!("<{} bytes>", chunk.len()),
        }
        seen += 1;
    }
    Ok(())
}
