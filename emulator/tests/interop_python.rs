//! Interop with the official tdx Volt Python client (PyPI `volt_client_web` 0.1.14, the
//! older JSON/RSA websocket protocol): starts `volt-emulator serve --legacy` on a fresh data
//! directory and runs `interop/python/legacy_scenario.py` against it.
//!
//! Needs the virtual environment `interop/python/.venv` with the packages pinned in
//! `interop/python/requirements.txt` (scripts/test-all.sh creates it), or another Python
//! with them named by the environment variable `VOLT_INTEROP_PYTHON`. Without it this test
//! fails rather than skips.

#[path = "support/process.rs"]
mod process;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use process::{run_script, workspace_root, EmulatorProcess, Script, ScriptRun};
use serde_json::Value;

/// Names another Python interpreter (with the pinned packages) than the workspace venv.
const PYTHON_ENV: &str = "VOLT_INTEROP_PYTHON";

const VENV_HINT: &str = "create the venv from the workspace root with `python3 -m venv \
     interop/python/.venv && interop/python/.venv/bin/python -m pip install --require-hashes \
     -r interop/python/requirements.txt` (scripts/test-all.sh does this), or set \
     VOLT_INTEROP_PYTHON to a Python that has those packages";

/// The steps legacy_scenario.py reports, in order.
const STEPS: [&str; 9] = [
    "connect",
    "get_resource",
    "create_database",
    "bulk_update",
    "sql_execute_json",
    "save_wire",
    "subscribe_and_publish",
    "stop_subscription",
    "done",
];

/// A finished, successful run of legacy_scenario.py.
struct PythonRun {
    /// Each step's `result` (`Null` for a step without one, e.g. `done`), by step name.
    results: BTreeMap<String, Value>,
    /// The raw run, for messages.
    run: ScriptRun,
}

impl PythonRun {
    fn result(&self, step: &str) -> &Value {
        self.results
            .get(step)
            .unwrap_or_else(|| panic!("no result for step {step:?}\n{}", self.run.stdout))
    }
}

/// The Python to run the scenario with: `VOLT_INTEROP_PYTHON`, else the workspace venv.
/// Fails (never skips) when it is missing or cannot import the official client.
fn python_interpreter(root: &Path) -> PathBuf {
    let python = match std::env::var_os(PYTHON_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => {
            let venv = root
                .join("interop")
                .join("python")
                .join(".venv")
                .join("bin")
                .join("python");
            assert!(venv.exists(), "{} is missing: {VENV_HINT}", venv.display());
            venv
        }
    };
    let probe = Command::new(&python)
        .args(["-W", "ignore", "-c", "import volt_client_web"])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); {VENV_HINT}", python.display()));
    assert!(
        probe.status.success(),
        "{} cannot import volt_client_web ({}): {}\n{VENV_HINT}",
        python.display(),
        probe.status,
        String::from_utf8_lossy(&probe.stderr)
    );
    python
}

/// Runs legacy_scenario.py against `emulator` (which must be serving with `--legacy`),
/// asserts that every step passed, and returns each step's result.
fn run_python_scenario(emulator: &EmulatorProcess) -> PythonRun {
    let root = workspace_root();
    let python = python_interpreter(&root);
    let script = root
        .join("interop")
        .join("python")
        .join("legacy_scenario.py");
    assert!(script.is_file(), "{} is missing", script.display());
    let ca_pem = emulator.ca_pem_path();
    assert!(
        ca_pem.is_file(),
        "the emulator wrote no CA certificate at {}",
        ca_pem.display()
    );

    let run = run_script(&Script {
        name: "legacy_scenario.py",
        program: python.as_os_str(),
        args: vec![script.as_os_str(), emulator.ready.config.as_os_str()],
        env: vec![
            // The client opens wss:// with Python's default TLS context, which OpenSSL
            // points at this file: trust the Volt CA.
            ("SSL_CERT_FILE", ca_pem.as_os_str()),
            ("PYTHONDONTWRITEBYTECODE", OsStr::new("1")),
        ],
        cwd: &root,
        hint: VENV_HINT,
        timeout: process::SCRIPT_TIMEOUT,
    });
    run.assert_finished(emulator);

    // Every stdout line is a step record (the script sends the client's own prints to
    // stderr); all of them must have passed, in the expected order.
    let mut order = Vec::new();
    let mut results = BTreeMap::new();
    for line in run.stdout.lines().filter(|l| !l.trim().is_empty()) {
        let record: Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "a stdout line is not JSON ({e}): {line:?}\n{}",
                run.report(emulator)
            )
        });
        let step = record
            .get("step")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("a line has no step: {line}\n{}", run.report(emulator)))
            .to_owned();
        assert_eq!(
            record.get("ok"),
            Some(&Value::Bool(true)),
            "step {step} did not pass\n{}",
            run.report(emulator)
        );
        let result = record.get("result").cloned().unwrap_or(Value::Null);
        assert!(
            results.insert(step.clone(), result).is_none(),
            "step {step} reported twice\n{}",
            run.report(emulator)
        );
        order.push(step);
    }
    assert_eq!(order, STEPS, "unexpected steps\n{}", run.report(emulator));
    PythonRun { results, run }
}

#[test]
fn official_python_client_against_legacy_emulator() {
    let emulator = EmulatorProcess::start("python-legacy", &["--legacy"]);
    let python = run_python_scenario(&emulator);
    // Show the steps in the test output (visible with --nocapture).
    println!("{}", python.run.stdout);

    // The script checks each answer itself; these only pin what the Rust side relies on.
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(&emulator.ready.config).expect("the client config reads"),
    )
    .expect("the client config is JSON");
    assert_eq!(
        python.result("get_resource")["resource"]["id"],
        config["volt"]["id"],
        "GetResource answered for another resource"
    );
    assert_eq!(
        python.result("sql_execute_json")["rows"]
            .as_array()
            .map(Vec::len),
        Some(5),
        "SqlExecuteJSON rows"
    );
    assert_eq!(
        python.result("subscribe_and_publish")["chunks"]
            .as_array()
            .map(Vec::len),
        Some(3),
        "wire chunks"
    );

    // Our client, on the same Volt with the same configuration, runs the same scenario and
    // must get the same results.
    our_client_scenario(&emulator.ready.config, &python);

    emulator.terminate();
}

/// The Python scenario again, with tdx-volt (which picks the older protocol for the RSA
/// configuration): the same resource, the same statements on a database of its own giving the
/// same rows, and the same chunks through a wire of its own.
fn our_client_scenario(config_path: &Path, python: &PythonRun) {
    use base64::Engine as _;
    use futures_util::StreamExt as _;
    use serde_json::json;
    use tdx_volt::{Transport, VoltClient};

    const WAIT: Duration = Duration::from_secs(30);
    async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(WAIT, future)
            .await
            .unwrap_or_else(|_| panic!("our client: {what}: nothing after {WAIT:?}"))
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let client = within(
            "connect",
            VoltClient::builder().config_file(config_path).connect(),
        )
        .await
        .expect("our client connects");
        assert_eq!(client.transport(), Transport::LegacyWebsocket);

        let resource = within(
            "GetResource",
            client.get_resource(json!({"resource_id": client.volt_id()})),
        )
        .await
        .expect("GetResource");
        assert_eq!(
            resource["resource"],
            python.result("get_resource")["resource"],
            "GetResource: our client and the Python client differ"
        );

        let created = within(
            "CreateDatabase",
            client.create_database(json!({"name": "interop-rust"})),
        )
        .await
        .expect("CreateDatabase");
        let database_id = created["resource"]["id"].as_str().expect("database id");
        let statements = &python.result("bulk_update")["statements"];
        within(
            "BulkUpdate",
            client.bulk_update(json!({"database_id": database_id, "statement": statements})),
        )
        .await
        .expect("BulkUpdate");
        let sql = python.result("sql_execute_json");
        let rows = within(
            "SqlExecuteJSON",
            client.sql_execute_json(
                json!({"database_id": database_id, "statement": sql["statement"]}),
            ),
        )
        .await
        .expect("SqlExecuteJSON");
        let rows = Value::Array(rows.into_iter().map(Value::Object).collect());
        assert_eq!(
            rows, sql["rows"],
            "SqlExecuteJSON: our client and the Python client differ"
        );

        let saved = within(
            "SaveWire",
            client.save_wire(json!({"resource": {"name": "interop-rust-wire"}, "create": true})),
        )
        .await
        .expect("SaveWire");
        let wire_id = saved["resource"]["id"].as_str().expect("wire id");
        let mut subscription = within("SubscribeWire", client.subscribe_wire_chunks(wire_id))
            .await
            .expect("SubscribeWire");
        let publisher = within("PublishWire", client.publish_wire_chunks(wire_id))
            .await
            .expect("PublishWire");
        // As the Python side does: probe until the subscription delivers, since chunks
        // published before it is registered are not delivered to it.
        within("a probe to arrive", async {
            loop {
                publisher.send(b"probe").await.expect("probe");
                let next =
                    tokio::time::timeout(Duration::from_millis(100), subscription.next()).await;
                if let Ok(chunk) = next {
                    assert_eq!(chunk.expect("open").expect("chunk"), b"probe");
                    break;
                }
            }
        })
        .await;
        let expected: Vec<Vec<u8>> = python.result("subscribe_and_publish")["chunks"]
            .as_array()
            .expect("chunks")
            .iter()
            .map(|c| b64.decode(c.as_str().expect("base64")).expect("base64"))
            .collect();
        for chunk in &expected {
            publisher.send(chunk).await.expect("chunk");
        }
        within("PublishWire to be confirmed", publisher.finish())
            .await
            .expect("PublishWire");
        let mut received = Vec::new();
        while received.len() < expected.len() {
            let chunk = within("a chunk", subscription.next())
                .await
                .expect("the subscription is open")
                .expect("a chunk");
            if chunk != b"probe" {
                received.push(chunk);
            }
        }
        assert!(
            received == expected,
            "wire chunks: our client received {:?} bytes, the Python client {:?}",
            received.iter().map(Vec::len).collect::<Vec<_>>(),
            expected.iter().map(Vec::len).collect::<Vec<_>>()
        );
        within("the subscription to stop", subscription.stop())
            .await
            .expect("stop");
        assert!(within("the end", subscription.next()).await.is_none());
    });
}
