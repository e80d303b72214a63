//! The hosting examples as a user runs them: `host_echo CONFIG_PATH` prints its ready line,
//! then `call_echo CONFIG_PATH` prints the answers, with a direct configuration and with a
//! relayed one. The example binaries are the ones `cargo test` builds beside this test.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{json, Value};
use support::{within, TestVolt};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

/// An example binary built for this test run (`target/<profile>/examples/NAME`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "{} is built by cargo test", path.display());
    path
}

/// Runs host_echo and call_echo with `config`, and checks what they print.
async fn host_and_call(config: &Path) {
    let mut host = Command::new(example("host_echo"))
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("host_echo starts");
    let stdout = host.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = within("the ready line", lines.next_line())
        .await
        .expect("read")
        .expect("a line");
    // The line is a contract: exactly this shape, spaces included.
    let id = ready
        .strip_prefix("{\"ready\": true, \"service_id\": \"")
        .and_then(|rest| rest.strip_suffix("\"}"))
        .unwrap_or_else(|| panic!("the ready line: {ready}"));
    assert!(!id.is_empty());

    let called = within(
        "call_echo",
        Command::new(example("call_echo"))
            .arg(config)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("call_echo runs");
    assert!(
        called.status.success(),
        "{}",
        String::from_utf8_lossy(&called.stderr)
    );
    let answers: Vec<Value> = String::from_utf8_lossy(&called.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(
        answers,
        vec![
            json!({"method": "Echo", "text": "hello", "sequence": 1}),
            json!({"method": "EchoStream", "text": "one", "sequence": 1}),
            json!({"method": "EchoStream", "text": "two", "sequence": 2}),
            json!({"method": "EchoStream", "text": "three", "sequence": 3}),
        ]
    );
    host.kill().await.expect("host_echo stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_echo_and_call_echo_directly_and_through_the_relay() {
    let volt = TestVolt::start("examples-echo").await;
    host_and_call(&volt.config_path()).await;

    let relayed = volt
        .emulator()
        .issue_relayed_client("relayed", None)
        .expect("a relayed configuration");
    let path = volt.dir.join("relayed.config.json");
    std::fs::write(&path, relayed.to_string()).expect("written");
    host_and_call(&path).await;
}
