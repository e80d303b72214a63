//! The side-by-side benchmark with the peers (README "Performance").
//!
//! `cargo bench --features legacy --bench peers` runs `scripts/bench-peers.py`, which starts
//! one volt-emulator per protocol and runs this binary (tdx-volt's driver) and the official
//! JS, Python and vendor Rust clients' drivers on the same workloads, each in its own
//! process, and prints the table of figures and ratios.
//!
//! With arguments this is tdx-volt's driver (the command line and the JSON line it prints
//! are in `interop/bench/README.md`), plus `--transport websocket|grpc|legacy`, the modes
//! `setup` (makes the wire and the 20,000-row database) and `floor` (the crypto floor: the
//! primitives of a protocol-v1 call in a loop).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::{json, Value};
use tdx_volt::{Transport, VoltClient};

#[path = "peers/args.rs"]
mod args;
#[path = "peers/floor.rs"]
mod floor;
#[path = "peers/scale.rs"]
mod scale;
#[path = "peers/usage.rs"]
mod usage;

use args::{Args, Mode, Workload};
use usage::{Measured, Usage};

/// Rows in the SQL workload's table.
const SQL_ROWS: usize = 20_000;
/// Warm-up before each measured window.
const WARM_UP: Duration = Duration::from_millis(500);
/// Chunks a wire publisher may be ahead of its subscriber.
const WIRE_AHEAD: u64 = 64;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("peers: {message}\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    if args.mode == Mode::Script {
        return run_script();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("peers: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(drive(args)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("peers: {e}");
            ExitCode::FAILURE
        }
    }
}

/// No arguments: the whole comparison, through the script (handing it this binary).
fn run_script() -> ExitCode {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts").join("bench-peers.py");
    let mut command = std::process::Command::new("python3");
    command.arg(&script);
    if let Ok(me) = std::env::current_exe() {
        command.arg("--ours").arg(me);
    }
    match command.status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("peers: cannot run {}: {e}", script.display());
            ExitCode::FAILURE
        }
    }
}

async fn drive(args: Args) -> Result<Value, BoxError> {
    if args.mode == Mode::Floor {
        return Ok(floor::run(args.seconds));
    }
    let client = VoltClient::builder()
        .config_file(&args.config)
        .transport(args.transport)
        // Room for the idle workload's subscriptions (and the one opened before them).
        .max_calls(args.inflight.max(tdx_volt::client::DEFAULT_MAX_CALLS) + 16)
        .connect()
        .await?;
    if args.mode == Mode::Setup {
        return setup(&client).await;
    }
    let measured = match args.workload {
        Workload::Unary => {
            unary(&client, args.inflight, WARM_UP).await?;
            unary(&client, args.inflight, args.seconds).await?
        }
        Workload::Wire => {
            let wire = args.wire.as_deref().ok_or("--wire is needed")?;
            wire_run(&client, wire, args.chunk, WARM_UP).await?;
            wire_run(&client, wire, args.chunk, args.seconds).await?
        }
        Workload::Sql => {
            let database = args.database.as_deref().ok_or("--database is needed")?;
            sql(&client, database, WARM_UP).await?;
            sql(&client, database, args.seconds).await?
        }
        Workload::Idle => {
            let wire = args.wire.as_deref().ok_or("--wire is needed")?;
            scale::idle(&client, wire, args.inflight).await?
        }
        Workload::Save => scale::save_burst(&client, args.inflight).await?,
    };
    let transport = match args.transport {
        Transport::Grpc => "grpc",
        Transport::LegacyWebsocket => "legacy",
        _ => "websocket",
    };
    Ok(measured.line("tdx-volt", transport, &args))
}

/// `GetResource` of the Volt itself, `inflight` loops at once, for `window`.
async fn unary(
    client: &VoltClient,
    inflight: usize,
    window: Duration,
) -> Result<Measured, BoxError> {
    let request = json!({ "resource_id": client.volt_id() });
    let usage = Usage::now();
    let deadline = Instant::now() + window;
    let mut loops = Vec::with_capacity(inflight);
    for _ in 0..inflight {
        let client = client.clone();
        let request = request.clone();
        loops.push(tokio::spawn(async move {
            let mut calls = 0u64;
            while Instant::now() < deadline {
                client.get_resource(request.clone()).await?;
                calls += 1;
            }
            Ok::<u64, tdx_volt::Error>(calls)
        }));
    }
    let mut ops = 0;
    for one in loops {
        ops += one.await??;
    }
    Ok(usage.done(ops, 0, 0))
}

/// Chunks of `chunk` bytes published to `wire` and counted as its subscriber receives them.
async fn wire_run(
    client: &VoltClient,
    wire: &str,
    chunk: usize,
    window: Duration,
) -> Result<Measured, BoxError> {
    let mut chunks = client.subscribe_wire_chunks(wire).await?;
    let publisher = client.publish_wire_chunks(wire).await?;
    // The subscription is live once a probe published after it comes back.
    loop {
        publisher.send(b"probe").await?;
        match tokio::time::timeout(Duration::from_millis(100), chunks.next()).await {
            Ok(Some(received)) => {
                received?;
                break;
            }
            Ok(None) => return Err("the subscription ended".into()),
            Err(_) => continue,
        }
    }
    let (received_tx, mut received_rx) = tokio::sync::watch::channel(0u64);
    let payload = vec![0x5a_u8; chunk];
    let publishing = tokio::spawn(async move {
        let mut sent = 0u64;
        loop {
            // At most WIRE_AHEAD chunks ahead of the subscriber; a chunk the Volt dropped
            // (nothing arrives for a while) stops counting as ahead.
            while sent.saturating_sub(*received_rx.borrow_and_update()) >= WIRE_AHEAD {
                let waited =
                    tokio::time::timeout(Duration::from_millis(200), received_rx.changed()).await;
                match waited {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => sent = *received_rx.borrow(),
                }
            }
            if publisher.send(&payload).await.is_err() {
                return;
            }
            sent += 1;
        }
    });
    let usage = Usage::now();
    let deadline = tokio::time::Instant::now() + window;
    let (mut ops, mut bytes) = (0u64, 0u64);
    loop {
        match tokio::time::timeout_at(deadline, chunks.next()).await {
            Err(_) => break,
            Ok(Some(received)) => {
                bytes += received?.len() as u64;
                ops += 1;
                received_tx.send_replace(ops);
            }
            Ok(None) => return Err("the subscription ended".into()),
        }
    }
    let measured = usage.done(ops, bytes, 0);
    publishing.abort();
    Ok(measured)
}

/// One row of the SQL workload's table, as a user's struct.
#[derive(Deserialize)]
#[allow(dead_code)] // Decoded to be measured, not read.
struct BenchRow {
    id: i64,
    name: String,
    score: f64,
    note: String,
}

/// `SELECT * FROM bench`, each row decoded into a [`BenchRow`], over and over for `window`.
async fn sql(client: &VoltClient, database: &str, window: Duration) -> Result<Measured, BoxError> {
    let request = json!({"database_id": database, "statement": "SELECT * FROM bench"});
    let usage = Usage::now();
    let deadline = Instant::now() + window;
    let (mut ops, mut rows) = (0u64, 0u64);
    while Instant::now() < deadline {
        let mut stream = client
            .sql_rows(request.clone())
            .await?
            .into_stream_as::<BenchRow>();
        while let Some(row) = stream.next().await {
            row?;
            rows += 1;
        }
        ops += 1;
    }
    Ok(usage.done(ops, 0, rows))
}

/// Makes the wire and the database the workloads use.
async fn setup(client: &VoltClient) -> Result<Value, BoxError> {
    let id = |saved: &Value| {
        saved["resource"]["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or("the Volt's answer has no resource id")
    };
    let wire = client
        .save_wire(json!({"resource": {"name": "bench-wire"}, "create": true}))
        .await?;
    let database = client.create_database(json!({"name": "bench-db"})).await?;
    let database = id(&database)?;
    let statement = format!(
        "CREATE TABLE bench (id INTEGER PRIMARY KEY, name TEXT, score REAL, note TEXT);\
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {SQL_ROWS})\
         INSERT INTO bench SELECT i, 'row ' || i, i * 0.25, 'a note of some length, row ' || i \
         FROM n;"
    );
    client
        .sql_execute_json(json!({"database_id": database, "statement": statement}))
        .await?;
    Ok(json!({"wire": id(&wire)?, "database": database}))
}
