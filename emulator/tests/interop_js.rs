//! Interop with the official tdx Volt JavaScript clients: starts `volt-emulator serve` on a
//! fresh data directory and runs `interop/emulator-web.mjs` (websocket client),
//! `interop/emulator-grpc.mjs` (native gRPC client) and `interop/grpc-endurance.mjs` (the
//! gRPC client over many calls and a Connect session) against it.
//!
//! Needs `node` and the pinned packages in `interop/node_modules`
//! (`npm ci --prefix interop`); without them these tests fail rather than skip.

#[path = "support/process.rs"]
mod process;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use process::{run_script, workspace_root, EmulatorProcess, Script, SCRIPT_TIMEOUT};

const NPM_HINT: &str = "run `npm ci --prefix interop` from the workspace root (CI does this first)";

/// Fails (never skips) when node or the pinned JS packages are not there.
fn require_node_and_packages(root: &Path) {
    match Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`node --version` failed ({}): {}; install Node.js and {NPM_HINT}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("cannot run `node` ({e}); install Node.js and {NPM_HINT}"),
    }
    let modules = root.join("interop").join("node_modules");
    for package in [
        "@tdxvolt/volt-client-web",
        "@tdxvolt/volt-client-grpc",
        "@grpc/grpc-js",
        "ws",
    ] {
        let manifest = modules.join(package).join("package.json");
        assert!(
            manifest.is_file(),
            "{} is missing: {NPM_HINT}",
            manifest.display()
        );
    }
}

fn run_scenario(label: &str, script: &str, timeout: Duration) {
    let root = workspace_root();
    require_node_and_packages(&root);

    let emulator = EmulatorProcess::start(label, &[]);
    let script_path = root.join("interop").join(script);
    assert!(
        script_path.is_file(),
        "{} is missing",
        script_path.display()
    );
    let ca_pem = emulator.ca_pem_path();
    // A second client, for the scenario's access-control step (the endurance run ignores it).
    let other = emulator.issue_client("second");
    let run = run_script(&Script {
        name: script,
        program: OsStr::new("node"),
        args: vec![
            script_path.as_os_str(),
            emulator.ready.config.as_os_str(),
            other.as_os_str(),
        ],
        // The scripts trust the Volt CA from the configuration themselves; this only makes
        // any other TLS use inside Node trust it too.
        env: vec![("NODE_EXTRA_CA_CERTS", ca_pem.as_os_str())],
        cwd: &root,
        hint: NPM_HINT,
        timeout,
    });
    run.assert_finished(&emulator);
    // Show the steps in the test output (visible with --nocapture).
    println!("{}", run.stdout);
    emulator.terminate();
}

#[test]
fn official_web_client_against_emulator() {
    run_scenario("web", "emulator-web.mjs", SCRIPT_TIMEOUT);
}

#[test]
fn official_grpc_client_against_emulator() {
    run_scenario("grpc", "emulator-grpc.mjs", SCRIPT_TIMEOUT);
}

/// The official gRPC client as long-running applications use it: 20,000 sequential unary
/// calls on one connection (once cut off after about 2,000 by streams reset on our side),
/// then a Connect session that stays up while the application is busy for 40 ms after each
/// ping (once dropped at the first ping, the acknowledge's interval read as milliseconds).
#[test]
fn official_grpc_client_endurance() {
    run_scenario(
        "grpc-endurance",
        "grpc-endurance.mjs",
        Duration::from_secs(300),
    );
}

/// The official gRPC client and ours, each with a Connect session on one Volt: the official
/// session (pinging every second, its application busy 40 ms after each ping) stays up for
/// 60 s without a reconnect and hears of the resources our client creates; our session hears
/// of the resources the official client creates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_grpc_session_and_ours_hear_each_other() {
    use futures_util::StreamExt as _;
    use tdx_volt::client::{ResourceEventKind, SessionEvent, SessionOptions};

    let root = workspace_root();
    require_node_and_packages(&root);
    let emulator = EmulatorProcess::start("grpc-session-events", &[]);
    let ours = tdx_volt::VoltClient::builder()
        .config_file(&emulator.ready.config)
        .connect()
        .await
        .expect("our client");
    let session = ours
        .session(SessionOptions::new().resource_events(true))
        .await
        .expect("our session");
    let mut events = session.events().expect("events");

    let script_path = root.join("interop").join("grpc-session-events.mjs");
    let config = emulator.ready.config.clone();
    let ca_pem = emulator.ca_pem_path();
    let cwd = root.clone();
    let script = tokio::task::spawn_blocking(move || {
        run_script(&Script {
            name: "grpc-session-events.mjs",
            program: OsStr::new("node"),
            args: vec![script_path.as_os_str(), config.as_os_str()],
            env: vec![("NODE_EXTRA_CA_CERTS", ca_pem.as_os_str())],
            cwd: &cwd,
            hint: NPM_HINT,
            timeout: Duration::from_secs(150),
        })
    });
    tokio::pin!(script);

    // Our client creates `ours-<n>` every half second while the script runs, and our session
    // collects what it hears of the official client's resources.
    let mut heard_official = 0usize;
    let mut made = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let run = loop {
        tokio::select! {
            run = &mut script => break run.expect("the script's thread"),
            _ = tick.tick() => {
                ours.save_resource(serde_json::json!({
                    "resource": {"name": format!("ours-{made}")}, "create": true
                }))
                .await
                .expect("SaveResource");
                made += 1;
            }
            Some(event) = events.next() => {
                if let SessionEvent::Resource { kind: ResourceEventKind::Created, resource } = event {
                    if resource["name"].as_str().is_some_and(|n| n.starts_with("official-")) {
                        heard_official += 1;
                    }
                }
            }
        }
    };
    run.assert_finished(&emulator);
    println!("{}", run.stdout);
    assert!(
        run.stdout
            .contains("\"step\":\"session_events\",\"ok\":true"),
        "{}",
        run.stdout
    );
    assert!(
        heard_official > 0,
        "our session heard nothing of the official client's resources"
    );
    session.close().await;
    emulator.terminate();
}
