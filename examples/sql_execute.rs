//! Runs an SQL statement on a Volt database and prints each row as a JSON line.
//!
//! `cargo run --example sql_execute -- CONFIG DATABASE_ID "SELECT ..."`

use tdx_volt::VoltClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [config, database_id, statement] = args.as_slice() else {
        eprintln!("usage: sql_execute CONFIG DATABASE_ID STATEMENT");
        std::process::exit(2);
    };
    let client = VoltClient::from_file(config).await?;
    let rows = client
        .sql_execute_json(serde_json::json!({
            "database_id": database_id,
            "statement": statement,
            "page_size": 500,
        }))
        .await?;
    for row in rows {
        println!("{}", serde_json::Value::Object(row));
    }
    Ok(())
}
