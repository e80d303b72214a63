//! Benchmark driver for the vendor's Rust client, crates.io `volt-client-rs` (websocket,
//! protocol v1). Command line and output: interop/bench/README.md.
//!
//!     vendor-rs-driver --config FILE --workload unary|wire|sql --seconds S
//!                      [--inflight N] [--chunk BYTES] [--wire ID] [--database ID]
//!
//! Notes on the vendor client that shape this driver:
//!
//! * It `println!`s on every frame it sends and receives (whole payloads included). Stdout
//!   must carry exactly one JSON line, so the driver keeps a duplicate of the real stdout for
//!   that line and points file descriptor 1 at /dev/null for the run (the formatting and the
//!   writes still happen, and are counted as the client's CPU). Set
//!   `VENDOR_RS_CHATTER=stderr` to send that chatter to stderr instead.
//! * It reads the emulator's client.config.json as it is (unknown fields such as `ca_pem` are
//!   ignored), but it has no way to trust a CA: it connects with tokio-tungstenite's plain
//!   `connect_async` and turns on no TLS feature at all. This crate turns on
//!   tokio-tungstenite's `rustls-tls-native-roots` feature (Cargo.toml) and, for an `https`
//!   address, writes the configuration's `volt.ca_pem` to a temporary file and points
//!   `SSL_CERT_FILE` at it while the client connects; rustls-native-certs reads that variable.
//! * Its unary helpers (`get_resource`, ...) take `&mut self` and hold it until the answer
//!   arrives, so through them one client can only have one call in flight. Its public
//!   `streaming_call` also takes `&mut self` but returns as soon as the call is registered,
//!   and the returned `WebsocketRpc` can then send, end and be listened to without the
//!   client. `--inflight N` therefore runs N tasks on ONE client (one websocket): each locks
//!   the client just to start its call and then sends `{request}` + end and waits for the
//!   end on its own, the same frames the vendor's `unary_rpc` sends.
//! * It connects to `volt.http_address` with no path; the emulator's gateway is at `/api`, so
//!   an address without a path gets `/api` appended (see `connect`).
//! * SQL: its `sql_execute_json` helper would be the natural "native rows", but it decodes a
//!   REAL cell with `cell["real"].as_str().unwrap()` and the emulator sends proto3 JSON
//!   numbers (`{"real":0.5}`): the helper panics on the vendor's reader task and the
//!   connection goes deaf. The driver therefore runs the same Execute call through the
//!   vendor's `sql_execute` and decodes each row into a `BenchRow` struct itself.
//! * Wire: SubscribeWire and PublishWire on the one client; chunks travel as base64 (proto3
//!   JSON `bytes`). The publisher stays at most 64 chunks ahead of the subscriber.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Mutex, Notify};
use volt_client_rs::volt_client::VoltClient;
use volt_client_rs::websocket_rpc::{Event, EventType, WebsocketRpc};

const CLIENT: &str = "vendor-rs";
const TRANSPORT: &str = "websocket";
const WARMUP: Duration = Duration::from_millis(500);
/// How many wire chunks the publisher may be ahead of the subscriber.
const MAX_AHEAD: i64 = 64;
/// Bound on connecting and on single waits outside the measured loops.
const WAIT: Duration = Duration::from_secs(30);

const GET_RESOURCE: &str = "/tdx.volt_api.volt.v1.VoltAPI/GetResource";
const PUBLISH_WIRE: &str = "/tdx.volt_api.volt.v1.WireAPI/PublishWire";
const SUBSCRIBE_WIRE: &str = "/tdx.volt_api.volt.v1.WireAPI/SubscribeWire";

#[derive(Debug)]
struct Args {
    config: String,
    workload: String,
    seconds: f64,
    inflight: usize,
    chunk: usize,
    wire: Option<String>,
    database: Option<String>,
}

fn usage() -> String {
    "usage: vendor-rs-driver --config FILE --workload unary|wire|sql --seconds S \
     [--inflight N] [--chunk BYTES] [--wire ID] [--database ID]"
        .to_string()
}

fn parse_args() -> Result<Args, String> {
    let mut config = None;
    let mut workload = None;
    let mut seconds = None;
    let mut inflight = 1usize;
    let mut chunk = 0usize;
    let mut wire = None;
    let mut database = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(usage());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))?;
        let bad = |what: &str| format!("{flag}: not {what}: {value:?}");
        match flag.as_str() {
            "--config" => config = Some(value),
            "--workload" => workload = Some(value),
            "--seconds" => {
                let s: f64 = value.parse().map_err(|_| bad("a number"))?;
                if !(s > 0.0 && s.is_finite()) {
                    return Err(bad("a positive number"));
                }
                seconds = Some(s);
            }
            "--inflight" => {
                inflight = value.parse().map_err(|_| bad("a count"))?;
                if inflight == 0 {
                    return Err(bad("at least 1"));
                }
            }
            "--chunk" => chunk = value.parse().map_err(|_| bad("a byte count"))?,
            "--wire" => wire = Some(value),
            "--database" => database = Some(value),
            _ => return Err(format!("unknown option {flag}\n{}", usage())),
        }
    }
    let workload = workload.ok_or_else(|| format!("--workload is required\n{}", usage()))?;
    if !matches!(workload.as_str(), "unary" | "wire" | "sql") {
        return Err(format!(
            "--workload must be unary, wire or sql, not {workload:?}"
        ));
    }
    Ok(Args {
        config: config.ok_or_else(|| format!("--config is required\n{}", usage()))?,
        workload,
        seconds: seconds.ok_or_else(|| format!("--seconds is required\n{}", usage()))?,
        inflight,
        chunk,
        wire,
        database,
    })
}

/// CPU time of this process (user, system), in seconds.
fn cpu_now() -> (f64, f64) {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return (0.0, 0.0);
    }
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}

/// One point of the measured window: wall clock and CPU.
struct Mark {
    at: Instant,
    cpu: (f64, f64),
}

impl Mark {
    fn now() -> Mark {
        Mark {
            at: Instant::now(),
            cpu: cpu_now(),
        }
    }
}

#[derive(Default)]
struct Counts {
    ops: u64,
    bytes: u64,
    rows: u64,
}

struct Outcome {
    start: Mark,
    end: Mark,
    counts: Counts,
}

/// Keeps the real stdout for the result line and sends the vendor client's `println!`
/// chatter (fd 1) to /dev/null, or to stderr with VENDOR_RS_CHATTER=stderr.
fn take_stdout() -> Result<File, String> {
    // SAFETY: plain descriptor juggling on descriptors this process owns.
    unsafe {
        let saved = libc::dup(1);
        if saved < 0 {
            return Err(format!("dup(stdout): {}", std::io::Error::last_os_error()));
        }
        let target = if std::env::var("VENDOR_RS_CHATTER").as_deref() == Ok("stderr") {
            2
        } else {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if null < 0 {
                return Err(format!(
                    "open /dev/null: {}",
                    std::io::Error::last_os_error()
                ));
            }
            null
        };
        if libc::dup2(target, 1) < 0 {
            return Err(format!("dup2: {}", std::io::Error::last_os_error()));
        }
        if target != 2 {
            libc::close(target);
        }
        Ok(File::from_raw_fd(saved))
    }
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("vendor-rs-driver: {e}");
            std::process::exit(1);
        }
    };
    let mut out = match take_stdout() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("vendor-rs-driver: {e}");
            std::process::exit(1);
        }
    };
    // The vendor's tokio-tungstenite builds its rustls ClientConfig with the process default
    // crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vendor-rs-driver: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(run(&args));
    let line = match result {
        Ok(outcome) => {
            let seconds = outcome
                .end
                .at
                .duration_since(outcome.start.at)
                .as_secs_f64();
            // The spec's key order (serde_json's map would sort the keys).
            let text = |s: &str| Value::String(s.to_string());
            let fields: [(&str, Value); 11] = [
                ("client", text(CLIENT)),
                ("transport", text(TRANSPORT)),
                ("workload", text(&args.workload)),
                ("inflight", json!(args.inflight)),
                ("chunk", json!(args.chunk)),
                ("ops", json!(outcome.counts.ops)),
                ("bytes", json!(outcome.counts.bytes)),
                ("rows", json!(outcome.counts.rows)),
                ("seconds", json!(round3(seconds))),
                (
                    "cpu_user_s",
                    json!(round3(outcome.end.cpu.0 - outcome.start.cpu.0)),
                ),
                (
                    "cpu_sys_s",
                    json!(round3(outcome.end.cpu.1 - outcome.start.cpu.1)),
                ),
            ];
            let body: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}: {v}", Value::String(k.to_string())))
                .collect();
            format!("{{{}}}", body.join(", "))
        }
        // Every workload of the spec runs with this client: no `{"unsupported": ...}` here.
        Err(e) => {
            eprintln!("vendor-rs-driver: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = writeln!(out, "{line}").and_then(|_| out.flush()) {
        eprintln!("vendor-rs-driver: writing the result: {e}");
        std::process::exit(1);
    }
    // The vendor client's background tasks never finish on their own; don't wait for them.
    std::process::exit(0);
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn run(args: &Args) -> Result<Outcome, String> {
    let config_json = std::fs::read_to_string(&args.config)
        .map_err(|e| format!("reading {}: {e}", args.config))?;
    let config: Value = serde_json::from_str(&config_json)
        .map_err(|e| format!("{} is not JSON: {e}", args.config))?;
    let volt_id = config["volt"]["id"]
        .as_str()
        .ok_or_else(|| format!("{}: no volt.id", args.config))?
        .to_string();

    if args.workload == "wire" && args.chunk == 0 {
        return Err("--workload wire needs --chunk BYTES (> 0)".into());
    }
    let wire = match (&args.workload[..], &args.wire) {
        ("wire", None) => return Err("--workload wire needs --wire ID".into()),
        (_, w) => w.clone(),
    };
    let database = match (&args.workload[..], &args.database) {
        ("sql", None) => return Err("--workload sql needs --database ID".into()),
        (_, d) => d.clone(),
    };

    let client = connect(&config_json, &config).await?;
    let client = Arc::new(Mutex::new(client));
    let window = Duration::from_secs_f64(args.seconds);

    let outcome = match args.workload.as_str() {
        "unary" => unary(client, &volt_id, args.inflight, window).await?,
        "wire" => wire_workload(client, wire.as_deref().unwrap(), args.chunk, window).await?,
        "sql" => sql(client, database.as_deref().unwrap(), window).await?,
        _ => unreachable!(),
    };
    Ok(outcome)
}

/// Connects the vendor client, trusting the configuration's CA for an https address.
async fn connect(config_json: &str, config: &Value) -> Result<VoltClient, String> {
    let address = config["volt"]["http_address"].as_str().unwrap_or("");
    let mut ca_file = None;
    if address.starts_with("https:") {
        let ca = config["volt"]["ca_pem"].as_str().ok_or_else(|| {
            format!("the configuration's address {address} is https but it has no volt.ca_pem")
        })?;
        let path =
            std::env::temp_dir().join(format!("vendor-rs-driver-{}-ca.pem", std::process::id()));
        std::fs::write(&path, ca).map_err(|e| format!("writing {}: {e}", path.display()))?;
        // rustls-native-certs (through tokio-tungstenite) reads it when the client connects.
        std::env::set_var("SSL_CERT_FILE", &path);
        ca_file = Some(path);
    }
    // The vendor client connects to `volt.http_address` with `http` replaced by `ws` and no
    // path, i.e. to `/`; the emulator's gateway (like our SDK and the web client, which
    // append `/api`) answers the upgrade only at `/api`, and `/` is a 404. So an address
    // without a path is handed to the vendor client with `/api` appended.
    let mut config_for_vendor = config.clone();
    let adapted = with_api_path(address);
    if adapted != address {
        config_for_vendor["volt"]["http_address"] = Value::String(adapted);
    }
    let config_json = if config_for_vendor == *config {
        config_json.to_string()
    } else {
        config_for_vendor.to_string()
    };
    let connected = tokio::time::timeout(WAIT, VoltClient::create(&config_json)).await;
    if let Some(path) = ca_file {
        let _ = std::fs::remove_file(path);
    }
    match connected {
        Err(_) => Err(format!("connecting to {address}: no answer in {WAIT:?}")),
        Ok(Err(e)) => Err(format!("connecting to {address}: {e}")),
        Ok(Ok(client)) => Ok(client),
    }
}

/// `scheme://host:port` gets `/api`; an address that already has a path is kept.
fn with_api_path(address: &str) -> String {
    match address.split_once("://") {
        Some((_, rest)) if !rest.trim_end_matches('/').contains('/') && !rest.is_empty() => {
            format!("{}/api", address.trim_end_matches('/'))
        }
        _ => address.to_string(),
    }
}

/// What one call has seen so far, filled in by the vendor's event callbacks (which run on
/// its reader task, with its locks held: they must not block).
#[derive(Default)]
struct CallState {
    data: Vec<Value>,
    error: Option<String>,
    ended: Option<oneshot::Sender<()>>,
}

/// Starts a call on the shared client (holding it only while the vendor registers the call)
/// and returns a handle that sends without the client.
async fn start_call(client: &Mutex<VoltClient>, method: &str) -> Result<WebsocketRpc, String> {
    let rpc = {
        let mut client = client.lock().await;
        client.streaming_call(method, &Value::Null, "").await?
    };
    let handle = rpc.lock().await.clone();
    Ok(handle)
}

/// One unary call: `{request}` then end, and the single answer.
async fn unary_call(
    client: &Mutex<VoltClient>,
    method: &str,
    request: &Value,
) -> Result<Value, String> {
    let rpc = start_call(client, method).await?;
    let (tx, rx) = oneshot::channel();
    let state = Arc::new(StdMutex::new(CallState {
        ended: Some(tx),
        ..Default::default()
    }));
    {
        let state = Arc::clone(&state);
        rpc.on(EventType::Data, move |event| {
            if let Event::Data(v) = event {
                state.lock().unwrap().data.push(v);
            }
        });
    }
    {
        let state = Arc::clone(&state);
        rpc.on(EventType::Error, move |event| {
            if let Event::Error(e) = event {
                state.lock().unwrap().error = Some(e);
            }
        });
    }
    {
        let state = Arc::clone(&state);
        rpc.on(EventType::End, move |_| {
            if let Some(tx) = state.lock().unwrap().ended.take() {
                let _ = tx.send(());
            }
        });
    }
    rpc.send(request).await?;
    rpc.end().await?;
    match tokio::time::timeout(WAIT, rx).await {
        Err(_) => return Err(format!("{method}: no end of call in {WAIT:?}")),
        Ok(Err(_)) => return Err(format!("{method}: the call was dropped")),
        Ok(Ok(())) => {}
    }
    let mut state = state.lock().unwrap();
    if let Some(e) = state.error.take() {
        return Err(format!("{method}: {e}"));
    }
    state
        .data
        .pop()
        .ok_or_else(|| format!("{method}: ended with no answer"))
}

async fn unary(
    client: Arc<Mutex<VoltClient>>,
    volt_id: &str,
    inflight: usize,
    window: Duration,
) -> Result<Outcome, String> {
    let request = json!({ "resource_id": volt_id });
    // One call first, to fail early and clearly.
    let first = unary_call(&client, GET_RESOURCE, &request).await?;
    if first["resource"]["id"].as_str() != Some(volt_id) {
        return Err(format!("GetResource answered {first}"));
    }

    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let failure: Arc<StdMutex<Option<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..inflight {
        let (client, done, stop, failure, request) = (
            Arc::clone(&client),
            Arc::clone(&done),
            Arc::clone(&stop),
            Arc::clone(&failure),
            request.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match unary_call(&client, GET_RESOURCE, &request).await {
                    Ok(_) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failure.lock().unwrap().get_or_insert(e);
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let outcome = measure(window, &failure, || Counts {
        ops: done.load(Ordering::Relaxed),
        ..Default::default()
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    outcome
}

/// Warm-up, then the measured window; `counts` reads running totals.
async fn measure(
    window: Duration,
    failure: &StdMutex<Option<String>>,
    counts: impl Fn() -> Counts,
) -> Result<Outcome, String> {
    let check = || match failure.lock().unwrap().clone() {
        Some(e) => Err(e),
        None => Ok(()),
    };
    tokio::time::sleep(WARMUP).await;
    check()?;
    let before = counts();
    let start = Mark::now();
    tokio::time::sleep(window).await;
    let after = counts();
    let end = Mark::now();
    check()?;
    Ok(Outcome {
        start,
        end,
        counts: Counts {
            ops: after.ops - before.ops,
            bytes: after.bytes - before.bytes,
            rows: after.rows - before.rows,
        },
    })
}

/// Flow control between the publisher and the subscriber on the same connection.
struct WireFlow {
    published: AtomicU64,
    received: AtomicU64,
    received_bytes: AtomicU64,
    /// Published count at which the window was last re-based (probes that never arrive).
    base: AtomicU64,
    wake: Notify,
}

impl WireFlow {
    fn ahead(&self) -> i64 {
        let published = self.published.load(Ordering::Acquire) as i64;
        let received = self.received.load(Ordering::Acquire) as i64;
        let base = self.base.load(Ordering::Acquire) as i64;
        published - base - received
    }
}

/// Whether a response carries a status with a message (an error the Volt reports in-call).
fn has_status(v: &Value) -> bool {
    v["status"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty())
}

/// Records a response's in-call error status as the run's failure (the first one wins).
fn note_status(failure: &Arc<StdMutex<Option<String>>>, call: &str, v: &Value) {
    if has_status(v) {
        failure
            .lock()
            .unwrap()
            .get_or_insert(format!("{call}: {v}"));
    }
}

/// Records an error or an end of a streaming call (neither is expected while it runs).
fn watch_end(rpc: &WebsocketRpc, call: &'static str, failure: &Arc<StdMutex<Option<String>>>) {
    let on_error = Arc::clone(failure);
    rpc.on(EventType::Error, move |event| {
        if let Event::Error(e) = event {
            on_error
                .lock()
                .unwrap()
                .get_or_insert(format!("{call}: {e}"));
        }
    });
    let on_end = Arc::clone(failure);
    rpc.on(EventType::End, move |_| {
        on_end
            .lock()
            .unwrap()
            .get_or_insert(format!("{call} ended"));
    });
}

async fn wire_workload(
    client: Arc<Mutex<VoltClient>>,
    wire_id: &str,
    chunk: usize,
    window: Duration,
) -> Result<Outcome, String> {
    let flow = Arc::new(WireFlow {
        published: AtomicU64::new(0),
        received: AtomicU64::new(0),
        received_bytes: AtomicU64::new(0),
        base: AtomicU64::new(0),
        wake: Notify::new(),
    });
    let failure: Arc<StdMutex<Option<String>>> = Arc::default();

    // Subscriber.
    let subscriber = start_call(&client, SUBSCRIBE_WIRE).await?;
    {
        let (flow, failure) = (Arc::clone(&flow), Arc::clone(&failure));
        subscriber.on(EventType::Data, move |event| {
            let Event::Data(v) = event else { return };
            match v["chunk"].as_str() {
                Some(b64) => match base64::engine::general_purpose::STANDARD.decode(b64) {
                    Ok(bytes) => {
                        flow.received_bytes
                            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        flow.received.fetch_add(1, Ordering::AcqRel);
                        flow.wake.notify_one();
                    }
                    Err(e) => {
                        failure.lock().unwrap().get_or_insert(format!(
                            "SubscribeWire: a chunk that is not base64: {e}"
                        ));
                    }
                },
                None => note_status(&failure, "SubscribeWire", &v),
            }
        });
    }
    watch_end(&subscriber, "SubscribeWire", &failure);
    subscriber.send(&json!({ "wire_id": wire_id })).await?;

    // Publisher: `{wire_id}` first, then `{chunk}` requests on the same call.
    let publisher = start_call(&client, PUBLISH_WIRE).await?;
    {
        let failure = Arc::clone(&failure);
        publisher.on(EventType::Data, move |event| {
            if let Event::Data(v) = event {
                note_status(&failure, "PublishWire", &v);
            }
        });
    }
    watch_end(&publisher, "PublishWire", &failure);
    publisher.send(&json!({ "wire_id": wire_id })).await?;

    // The subscription is registered asynchronously: publish small probes until one arrives,
    // then let stragglers land and re-base the flow window so lost probes don't count.
    let probe = json!({ "chunk": base64::engine::general_purpose::STANDARD.encode(b"probe") });
    let deadline = Instant::now() + WAIT;
    while flow.received.load(Ordering::Acquire) == 0 {
        if let Some(e) = failure.lock().unwrap().clone() {
            return Err(e);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no probe chunk reached the subscriber of wire {wire_id} in {WAIT:?}"
            ));
        }
        publisher.send(&probe).await?;
        flow.published.fetch_add(1, Ordering::AcqRel);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    flow.base.store(
        flow.published.load(Ordering::Acquire) - flow.received.load(Ordering::Acquire),
        Ordering::Release,
    );

    let payload: Vec<u8> = (0..chunk).map(|i| (i % 251) as u8).collect();
    let message = json!({ "chunk": base64::engine::general_purpose::STANDARD.encode(&payload) });
    let stop = Arc::new(AtomicBool::new(false));
    let pump = {
        let (flow, stop, failure) = (Arc::clone(&flow), Arc::clone(&stop), Arc::clone(&failure));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                while flow.ahead() >= MAX_AHEAD {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let woken = flow.wake.notified();
                    if flow.ahead() < MAX_AHEAD {
                        break;
                    }
                    // A bounded wait, so a stall shows as a failure rather than a hang.
                    if tokio::time::timeout(WAIT, woken).await.is_err() {
                        failure.lock().unwrap().get_or_insert(format!(
                            "the subscriber received nothing for {WAIT:?} with {MAX_AHEAD} chunks outstanding"
                        ));
                        stop.store(true, Ordering::Relaxed);
                        return;
                    }
                }
                if let Err(e) = publisher.send(&message).await {
                    failure
                        .lock()
                        .unwrap()
                        .get_or_insert(format!("PublishWire: {e}"));
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
                flow.published.fetch_add(1, Ordering::AcqRel);
            }
        })
    };
    let outcome = measure(window, &failure, || Counts {
        ops: flow.received.load(Ordering::Acquire),
        bytes: flow.received_bytes.load(Ordering::Acquire),
        rows: 0,
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    flow.wake.notify_one();
    drop(pump); // detached: the process exits after printing
                // Byte count of the probes is in the running total but never inside the window.
    outcome
}

/// A row of the `bench` table, as the driver decodes it.
#[derive(Debug)]
#[allow(dead_code)]
struct BenchRow {
    id: i64,
    name: String,
    score: f64,
    note: Option<String>,
}

fn cell_i64(cell: &Value) -> Option<i64> {
    // proto3 JSON writes int64 as a string; accept a number too.
    match &cell["integer"] {
        Value::String(s) => s.parse().ok(),
        v => v.as_i64(),
    }
}

fn cell_f64(cell: &Value) -> Option<f64> {
    // The emulator writes `double` as a JSON number (proto3 JSON); the vendor's own decoder
    // only takes a string. Accept both.
    match &cell["real"] {
        Value::String(s) => s.parse().ok(),
        v => v.as_f64(),
    }
}

fn cell_text(cell: &Value) -> Option<Option<String>> {
    if cell["null"].as_bool() == Some(true) {
        return Some(None);
    }
    cell["text"].as_str().map(|s| Some(s.to_string()))
}

fn decode_row(row: &Value) -> Result<BenchRow, String> {
    let cells = row["column"].as_array().ok_or("a row without columns")?;
    if cells.len() != 4 {
        return Err(format!("a row of {} cells, not 4: {row}", cells.len()));
    }
    let bad = |what: &str| format!("cell {what} of {row} is not what the bench table holds");
    Ok(BenchRow {
        id: cell_i64(&cells[0]).ok_or_else(|| bad("id"))?,
        name: cell_text(&cells[1]).flatten().ok_or_else(|| bad("name"))?,
        score: cell_f64(&cells[2]).ok_or_else(|| bad("score"))?,
        note: cell_text(&cells[3]).ok_or_else(|| bad("note"))?,
    })
}

#[derive(Default)]
struct QueryState {
    header_ok: bool,
    rows: Vec<BenchRow>,
    error: Option<String>,
    ended: Option<oneshot::Sender<()>>,
}

/// One `SELECT * FROM bench`: the vendor's `sql_execute` (Execute, with the request sent as
/// is and no client end, as its own `sql_execute_json` helper does), each row decoded into a
/// `BenchRow` as it arrives (on the vendor's reader task, as its helper decodes).
async fn sql_query(client: &Mutex<VoltClient>, request: &Value) -> Result<usize, String> {
    let rpc = {
        let mut client = client.lock().await;
        client.sql_execute(&Value::Null, "").await?
    };
    let rpc = rpc.lock().await.clone();
    let (tx, rx) = oneshot::channel();
    let state = Arc::new(StdMutex::new(QueryState {
        ended: Some(tx),
        ..Default::default()
    }));
    {
        let state = Arc::clone(&state);
        rpc.on(EventType::Data, move |event| {
            let Event::Data(v) = event else { return };
            let mut state = state.lock().unwrap();
            if let Some(header) = v.get("header") {
                let names: Vec<&str> = header["column"]
                    .as_array()
                    .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
                    .unwrap_or_default();
                if names == ["id", "name", "score", "note"] {
                    state.header_ok = true;
                } else {
                    state
                        .error
                        .get_or_insert(format!("Execute: unexpected header {header}"));
                }
            } else if let Some(row) = v.get("row") {
                match decode_row(row) {
                    Ok(row) => state.rows.push(row),
                    Err(e) => {
                        state.error.get_or_insert(format!("Execute: {e}"));
                    }
                }
            } else if has_status(&v) {
                state.error.get_or_insert(format!("Execute: {v}"));
            }
        });
    }
    {
        let state = Arc::clone(&state);
        rpc.on(EventType::Error, move |event| {
            if let Event::Error(e) = event {
                state
                    .lock()
                    .unwrap()
                    .error
                    .get_or_insert(format!("Execute: {e}"));
            }
        });
    }
    {
        let state = Arc::clone(&state);
        rpc.on(EventType::End, move |_| {
            if let Some(tx) = state.lock().unwrap().ended.take() {
                let _ = tx.send(());
            }
        });
    }
    rpc.send(request).await?;
    match tokio::time::timeout(WAIT, rx).await {
        Err(_) => return Err(format!("Execute: no end of call in {WAIT:?}")),
        Ok(Err(_)) => return Err("Execute: the call was dropped".into()),
        Ok(Ok(())) => {}
    }
    let mut state = state.lock().unwrap();
    if let Some(e) = state.error.take() {
        return Err(e);
    }
    if !state.header_ok {
        return Err("Execute: no header".into());
    }
    Ok(state.rows.len())
}

async fn sql(
    client: Arc<Mutex<VoltClient>>,
    database_id: &str,
    window: Duration,
) -> Result<Outcome, String> {
    let request =
        json!({ "start": { "database_id": database_id, "statement": "SELECT * FROM bench" } });
    let rows = sql_query(&client, &request).await?;
    if rows != 20_000 {
        return Err(format!("SELECT * FROM bench gave {rows} rows, not 20000"));
    }

    let done = Arc::new(AtomicU64::new(0));
    let rows_done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let failure: Arc<StdMutex<Option<String>>> = Arc::default();
    {
        let (done, rows_done, stop, failure, client) = (
            Arc::clone(&done),
            Arc::clone(&rows_done),
            Arc::clone(&stop),
            Arc::clone(&failure),
            Arc::clone(&client),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match sql_query(&client, &request).await {
                    Ok(rows) => {
                        rows_done.fetch_add(rows as u64, Ordering::Relaxed);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failure.lock().unwrap().get_or_insert(e);
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    let outcome = measure(window, &failure, || Counts {
        ops: done.load(Ordering::Relaxed),
        rows: rows_done.load(Ordering::Relaxed),
        bytes: 0,
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    outcome
}
