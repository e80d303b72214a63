//! tdx-volt in one minute, with no Volt of your own: starts volt-emulator in-process, connects
//! with the client configuration it wrote, and shows the three everyday uses.
//!
//! `cargo run --example quickstart`

use base64::Engine as _;
use futures_util::StreamExt as _;
use serde_json::json;
use tdx_volt::client::CallEvent;
use tdx_volt::VoltClient;
use tdx_volt_emulator::Emulator;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A local Volt keeping its state in a temporary directory.
    let dir = std::env::temp_dir().join(format!("tdx-volt-quickstart-{}", std::process::id()));
    let emulator = Emulator::builder(&dir).start().await?;
    println!("volt-emulator on {}", emulator.http_address());

    let result = tour(&VoltClient::from_file(emulator.config_path()).await?).await;
    emulator.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn tour(client: &VoltClient) -> Result<(), Box<dyn std::error::Error>> {
    // 1. Get a resource: the Volt itself.
    let volt = client
        .get_resource(json!({"resource_id": client.volt_id()}))
        .await?;
    println!(
        "\nresource: {}",
        serde_json::to_string_pretty(&volt["resource"])?
    );

    // 2. SQL: a database, a table, and a query two ways.
    let created = client.create_database(json!({"name": "shop"})).await?;
    let database_id = created["resource"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    client
        .bulk_update(json!({
            "database_id": database_id,
            "statement": [
                "CREATE TABLE fruit (id INTEGER PRIMARY KEY, name TEXT, price REAL)",
                "INSERT INTO fruit (name, price) VALUES ('apple', 0.5), ('pear', 0.75), ('fig', 1.2)",
            ],
        }))
        .await?;

    // As the Volt sends it: a header, then one message per row.
    println!("\nsql_execute:");
    let mut call = client
        .sql_execute(json!({"start": {
            "database_id": database_id,
            "statement": "SELECT name, price FROM fruit ORDER BY price",
        }}))
        .await?;
    while let Some(message) = call.message().await? {
        println!("  {message}");
    }

    // Or as plain rows, every page pulled.
    println!("\nsql_execute_json:");
    let rows = client
        .sql_execute_json(json!({
            "database_id": database_id,
            "statement": "SELECT id, name, price FROM fruit WHERE price < :max",
            "parameter": {"max": {"real": 1.0}},
        }))
        .await?;
    for row in &rows {
        println!("  {}", serde_json::Value::Object(row.clone()));
    }

    // 3. Wires: subscribe, publish, receive.
    let wire = client
        .save_wire(json!({"resource": {"name": "greetings"}, "create": true}))
        .await?;
    let wire_id = wire["resource"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut subscription = client.subscribe_wire(json!({"wire_id": wire_id})).await?;

    // A chunk only reaches subscribers registered before it was published; the subscription
    // registers as its call opens, so publish until the first chunk comes back.
    let mut received = Vec::new();
    for attempt in 1..=50 {
        let publisher = client.publish_wire_chunks(&wire_id).await?;
        publisher
            .send(format!("hello #{attempt}").as_bytes())
            .await?;
        publisher.send(b"and goodbye").await?;
        publisher.finish().await?;
        let wait = std::time::Duration::from_millis(100);
        while let Ok(Some(event)) = tokio::time::timeout(wait, subscription.next()).await {
            if let CallEvent::Data(message) = event {
                received.push(message);
            }
            if received.len() == 2 {
                break;
            }
        }
        if received.len() == 2 {
            break;
        }
    }
    println!("\nwire chunks:");
    for message in &received {
        // proto3 JSON carries bytes as base64.
        let text = message["chunk"]
            .as_str()
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        println!("  {message}  ->  {text:?}");
    }
    subscription.send(json!({"stop": true})).await?;
    Ok(())
}
