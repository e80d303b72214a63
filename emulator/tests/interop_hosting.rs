//! Hosting services across clients: the official tdx Volt clients (`@tdxvolt/volt-client-grpc`
//! and `@tdxvolt/volt-client-web`) and ours, each calling a service the other hosts, through a
//! `volt-emulator serve` process.
//!
//! - `official_client_calls_our_host_echo`: our `host_echo` example hosts the echo service
//!   of `examples/proto/echo.proto`; `interop/grpc-call-hosted.mjs` finds it and calls unary
//!   `Echo` and bidirectional `EchoStream` with the official gRPC client.
//! - `official_web_client_calls_our_host_echo`: the same, with `interop/web-call-hosted.mjs`
//!   and the official web client, through the websocket gateway (in JSON).
//! - `our_client_calls_a_service_the_official_client_hosts`:
//!   `interop/grpc-host-service.mjs` hosts the echo service with the official client's
//!   RpcInvocation; our client calls it with `ServiceRef`, `call_service_unary` and
//!   `call_service`.
//!
//! In both the caller is a second client of the Volt, allowed to read and invoke the service
//! by its owner (SaveAccess). Needs `node` and the pinned packages in `interop/node_modules`
//! (`npm ci --prefix interop`), and the `host_echo` example binary (built by `cargo test
//! --workspace`, or `cargo build --example host_echo`); without them these tests fail.

#[path = "support/process.rs"]
mod process;

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use process::{run_script, wait_with_timeout, workspace_root, Captured, EmulatorProcess, Script};
use serde_json::{json, Value};
use tdx_volt::client::ServiceRef;
use tdx_volt::protocol::schema::MethodKind;
use tdx_volt::VoltClient;
use tokio::sync::mpsc;

const NPM_HINT: &str = "run `npm ci --prefix interop` from the workspace root (CI does this first)";
/// How long a child may take to say it is ready, and an answer to come.
const WAIT: Duration = Duration::from_secs(30);

const SERVICE: &str = "tdx_volt.examples.echo.v1.Echo";
const ECHO: &str = "/tdx_volt.examples.echo.v1.Echo/Echo";
const ECHO_STREAM: &str = "/tdx_volt.examples.echo.v1.Echo/EchoStream";

/// `EchoRequest` of `examples/proto/echo.proto`.
#[derive(Clone, PartialEq, prost::Message)]
struct EchoRequest {
    #[prost(string, tag = "1")]
    text: String,
}

/// `EchoResponse` of `examples/proto/echo.proto`.
#[derive(Clone, PartialEq, prost::Message)]
struct EchoResponse {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint64, tag = "2")]
    sequence: u64,
}

fn answer(text: &str, sequence: u64) -> EchoResponse {
    EchoResponse {
        text: text.to_owned(),
        sequence,
    }
}

/// Fails (never skips) when node or the official gRPC client is not there.
fn require_node_and_packages(root: &Path) {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|out| out.status.success()),
        "cannot run `node --version` ({node:?}): install Node.js and {NPM_HINT}"
    );
    for package in ["@tdxvolt/volt-client-grpc", "@grpc/grpc-js"] {
        let manifest = root
            .join("interop/node_modules")
            .join(package)
            .join("package.json");
        assert!(
            manifest.is_file(),
            "{} is missing: {NPM_HINT}",
            manifest.display()
        );
    }
}

/// Awaits `what` for at most WAIT.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {WAIT:?}"))
}

/// A child process whose stdout lines arrive on a channel (and are kept, for reports); its
/// stdin stays open until `close_stdin`. Killed on drop if still running.
struct LineChild {
    name: String,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    stdout: Captured,
    stderr: Captured,
}

impl LineChild {
    fn spawn(name: &str, command: &mut Command) -> LineChild {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        let stderr = Captured::default();
        process::capture_lines(child.stderr.take().expect("piped stderr"), stderr.clone());
        let stdout = Captured::default();
        let (tx, lines) = mpsc::unbounded_channel();
        let pipe = child.stdout.take().expect("piped stdout");
        let kept = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                kept.push_line(&line);
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LineChild {
            name: name.to_owned(),
            child,
            lines,
            stdout,
            stderr,
        }
    }

    fn report(&self, emulator: &EmulatorProcess) -> String {
        format!(
            "--- {name} stdout ---\n{}--- {name} stderr ---\n{}{}",
            self.stdout.text(),
            self.stderr.text(),
            emulator.diagnostics(),
            name = self.name
        )
    }

    /// The first stdout line `pick` accepts (within WAIT).
    async fn line<T>(&mut self, emulator: &EmulatorProcess, pick: impl Fn(&str) -> Option<T>) -> T {
        let wait = async {
            while let Some(line) = self.lines.recv().await {
                if let Some(found) = pick(&line) {
                    return Some(found);
                }
            }
            None
        };
        match tokio::time::timeout(WAIT, wait).await {
            Ok(Some(found)) => found,
            Ok(None) => panic!(
                "{} ended without the line awaited\n{}",
                self.name,
                self.report(emulator)
            ),
            Err(_) => panic!(
                "{} printed no line awaited within {WAIT:?}\n{}",
                self.name,
                self.report(emulator)
            ),
        }
    }

    fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }
}

impl Drop for LineChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `host_echo` example binary built beside this test (`target/<profile>/examples/`).
fn host_echo_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = profile_dir
        .join("examples")
        .join(format!("host_echo{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build --example host_echo` (`cargo test \
         --workspace` does)",
        path.display()
    );
    path
}

/// Our client with the configuration at `path`.
async fn our_client(path: &Path) -> VoltClient {
    within(
        "our client connects",
        VoltClient::builder().config_file(path).connect(),
    )
    .await
    .unwrap_or_else(|e| panic!("our client with {}: {e}", path.display()))
}

/// The identity DID the Volt knows `client` by (CanAccessResource answers it, whatever the
/// resource).
async fn identity_did(client: &VoltClient, resource_id: &str) -> String {
    let me = client
        .can_access_resource(json!({"resource_id": resource_id}))
        .await
        .expect("CanAccessResource");
    me["identity_did"]
        .as_str()
        .unwrap_or_else(|| panic!("no identity_did: {me}"))
        .to_owned()
}

/// The official gRPC client calls the echo service our `host_echo` example hosts: the service
/// description our host saves suits it (RELAYED, host_client_id, host_service_id,
/// host_public_key as PEM SPKI, proto_file with the proto text, service_api); unary `Echo`
/// answers once; `EchoStream` answers three requests in order and ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_client_calls_our_host_echo() {
    official_client_calls_host_echo(
        "grpc-call-hosted.mjs",
        &["discover", "unary_echo", "bidi_echo_stream"],
    )
    .await;
}

/// The official web client calls the same service through the websocket gateway: routed by
/// its key-exchange frame's meta, in proto3 JSON, which our host serves with the service's
/// proto file; an unknown method's refusal reaches it as the call's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_web_client_calls_our_host_echo() {
    official_client_calls_host_echo(
        "web-call-hosted.mjs",
        &["discover", "unary_echo", "bidi_echo_stream", "host_error"],
    )
    .await;
}

/// Runs `host_echo` on an emulator, lets a second client find and invoke its service, and
/// runs the official client's `script` as that client; each of `steps` must pass.
async fn official_client_calls_host_echo(script_name: &'static str, steps: &[&str]) {
    let root = workspace_root();
    require_node_and_packages(&root);
    let host_echo = host_echo_binary();
    let label = format!("hosting-{}", script_name.trim_end_matches(".mjs"));
    let emulator = EmulatorProcess::start(&label, &[]);
    let owner_config = emulator.ready.config.clone();
    let caller_config = emulator.issue_client("caller");

    let mut host = LineChild::spawn("host_echo", Command::new(host_echo).arg(&owner_config));
    let service_id = host
        .line(&emulator, |line| {
            let ready: Value = serde_json::from_str(line).ok()?;
            (ready["ready"] == json!(true))
                .then(|| ready["service_id"].as_str().map(str::to_owned))?
        })
        .await;

    // The owner lets the caller find and invoke the service.
    let owner = our_client(&owner_config).await;
    let caller = our_client(&caller_config).await;
    let caller_did = identity_did(&caller, &service_id).await;
    for access in ["volt:resource-read", "volt:resource-invoke"] {
        owner
            .save_access(json!({"access": {"resource_id": service_id,
                                           "identity_did": caller_did, "access": access}}))
            .await
            .expect("SaveAccess");
    }

    let script = root.join("interop").join(script_name);
    let ca_pem = emulator.ca_pem_path();
    let cwd = root.clone();
    let run = tokio::task::spawn_blocking(move || {
        run_script(&Script {
            name: script_name,
            program: OsStr::new("node"),
            args: vec![script.as_os_str(), caller_config.as_os_str()],
            env: vec![("NODE_EXTRA_CA_CERTS", ca_pem.as_os_str())],
            cwd: &cwd,
            hint: NPM_HINT,
            timeout: Duration::from_secs(90),
        })
    })
    .await
    .expect("the script's thread");
    if run.status.is_none_or(|s| !s.success()) {
        panic!(
            "{script_name} failed\n{}\n{}",
            run.report(&emulator),
            host.report(&emulator)
        );
    }
    run.assert_finished(&emulator);
    println!("{}", run.stdout);
    for step in steps {
        assert!(
            run.stdout
                .contains(&format!("\"step\":\"{step}\",\"ok\":true")),
            "{step}\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout
            .contains(&format!("\"service_id\":\"{service_id}\"")),
        "the script called another service\n{}",
        run.stdout
    );

    drop(host);
    emulator.terminate();
}

/// Our client calls the echo service the official client hosts (its RpcInvocation over its
/// Connect session): `ServiceRef::from_resource` reads the description it saved; unary `Echo`
/// answers; the host's error reaches our caller; `EchoStream` answers three requests in
/// order and ends after our client ends its side. The host saw each call for its service,
/// with a token for it in our caller's session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_calls_a_service_the_official_client_hosts() {
    let root = workspace_root();
    require_node_and_packages(&root);
    let emulator = EmulatorProcess::start("hosting-official-hosts", &[]);
    let owner_config = emulator.ready.config.clone();
    let caller_config = emulator.issue_client("caller");
    let caller = our_client(&caller_config).await;
    let volt_id = caller.config().volt().id.clone();
    let caller_did = identity_did(&caller, &volt_id).await;

    let mut host = LineChild::spawn(
        "grpc-host-service.mjs",
        Command::new("node")
            .arg(root.join("interop").join("grpc-host-service.mjs"))
            .arg(&owner_config)
            .arg(&caller_did)
            .env("NODE_EXTRA_CA_CERTS", emulator.ca_pem_path())
            .current_dir(&root),
    );
    let service_id = host
        .line(&emulator, |line| {
            let step: Value = serde_json::from_str(line).ok()?;
            if step["ok"] == json!(false) {
                return Some(Err(line.to_owned()));
            }
            (step["step"] == json!("ready"))
                .then(|| step["service_id"].as_str().map(|id| Ok(id.to_owned())))?
        })
        .await
        .unwrap_or_else(|failed| panic!("the host failed: {failed}\n{}", host.report(&emulator)));

    let found = within(
        "DiscoverServices",
        caller.discover_services(json!({"service_api": [SERVICE]})),
    )
    .await
    .expect("DiscoverServices");
    let resource = found["resource"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["id"] == json!(service_id)))
        .unwrap_or_else(|| panic!("the service is listed: {found}"));
    let service = ServiceRef::from_resource(resource).expect("a hosted service");
    assert_eq!(service.service_id(), service_id);
    assert_eq!(service.service_api(), [SERVICE]);

    // Unary.
    let echoed: EchoResponse = within(
        "Echo",
        caller.call_service_unary(
            &service,
            ECHO,
            &EchoRequest {
                text: "hello".into(),
            },
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("Echo: {e}\n{}", host.report(&emulator)));
    assert_eq!(echoed, answer("hello", 1));

    // The host's error, as the official client ends a call with one (method_end.error).
    let failed = within(
        "Echo that fails",
        caller.call_service_unary::<_, EchoResponse>(
            &service,
            ECHO,
            &EchoRequest {
                text: "fail".into(),
            },
        ),
    )
    .await
    .expect_err("the host fails the call");
    assert!(failed.to_string().contains("asked to fail"), "{failed:?}");

    // Bidirectional. Each request goes once the answer to the one before came: the official
    // host hands an invocation to its application only after the first request, so a
    // request arriving with the first could be missed (see grpc-host-service.mjs).
    let mut call = caller
        .call_service_as(&service, ECHO_STREAM, MethodKind::BidiStreaming)
        .await
        .expect("EchoStream");
    for (n, text) in ["one", "two", "three"].into_iter().enumerate() {
        call.send(&EchoRequest { text: text.into() })
            .await
            .expect("sent");
        let got = within("an EchoStream answer", call.next::<EchoResponse>())
            .await
            .expect("the call is open")
            .expect("an answer");
        assert_eq!(got, answer(text, n as u64 + 1));
    }
    call.end().await.expect("ended");
    assert!(
        within("the end of EchoStream", call.next_bytes())
            .await
            .is_none(),
        "EchoStream ends after our client ends its side"
    );

    // The host saw our calls: for its service, with tokens for the host in our session.
    host.close_stdin();
    let calls = host
        .line(&emulator, |line| {
            let step: Value = serde_json::from_str(line).ok()?;
            (step["step"] == json!("served")).then(|| step["calls"].clone())
        })
        .await;
    let status = tokio::task::spawn_blocking(move || {
        let status = wait_with_timeout(&mut host.child, WAIT);
        (status, host)
    })
    .await
    .expect("waiting for the host");
    let (status, host) = status;
    assert!(
        status.is_some_and(|s| s.success()),
        "the host exited with {status:?}\n{}",
        host.report(&emulator)
    );
    let methods: Vec<&str> = calls
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| c["method"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(methods, [ECHO, ECHO, ECHO_STREAM], "{calls}");
    let session = caller.config().credential().session_id.clone();
    let host_client_id = resource["service_description"]["host_client_id"].clone();
    for call in calls.as_array().expect("calls") {
        assert_eq!(call["service_id"], json!(service_id), "{call}");
        assert_eq!(call["aud"], host_client_id, "{call}");
        assert_eq!(call["sub"], json!(session), "{call}");
    }
    emulator.terminate();
}
