//! Interop with the official tdx Volt JavaScript clients: starts `volt-emulator serve` on a
//! fresh data directory and runs `interop/emulator-web.mjs` (websocket client) and
//! `interop/emulator-grpc.mjs` (native gRPC client) against it.
//!
//! Needs `node` and the pinned packages in `interop/node_modules`
//! (`npm ci --prefix interop`); without them these tests fail rather than skip.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the emulator may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a scenario script may run (the scripts give up by themselves after 60 s).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the emulator may take to exit after SIGTERM.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

const NPM_HINT: &str = "run `npm ci --prefix interop` from the workspace root (CI does this first)";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

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

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "volt-interop-{label}-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Text collected from a child's pipe by a background thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<String>>);

impl Captured {
    fn push_line(&self, line: &str) {
        let mut text = self.0.lock().unwrap_or_else(|p| p.into_inner());
        text.push_str(line);
        text.push('\n');
    }

    fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Copies every line of `pipe` into `into`, until end of file.
fn capture_lines(pipe: impl Read + Send + 'static, into: Captured) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    into.push_line(text.trim_end_matches(['\n', '\r']));
                }
            }
        }
    })
}

/// Polls `child` until it exits or `timeout` passes; `None` on timeout.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("waiting for a child process: {e}"),
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// The ready line of `volt-emulator serve`.
struct Ready {
    http_address: String,
    address: String,
    config: PathBuf,
}

/// A running `volt-emulator serve --dir <fresh dir>`; killed on drop if still running.
struct EmulatorProcess {
    child: Child,
    ready: Ready,
    stdout_rest: Captured,
    stderr: Captured,
    dir: TempDir,
}

impl EmulatorProcess {
    fn start(label: &str) -> EmulatorProcess {
        let dir = TempDir::new(label);
        let mut child = Command::new(env!("CARGO_BIN_EXE_volt-emulator"))
            .arg("serve")
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning volt-emulator serve: {e}"));

        let stderr = Captured::default();
        capture_lines(child.stderr.take().expect("piped stderr"), stderr.clone());

        // The first stdout line is the ready line; anything after it is kept for diagnostics.
        let stdout_rest = Captured::default();
        let (tx, rx) = mpsc::channel::<Option<String>>();
        let stdout: ChildStdout = child.stdout.take().expect("piped stdout");
        {
            let rest = stdout_rest.clone();
            thread::spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut first = String::new();
                match reader.read_line(&mut first) {
                    Ok(n) if n > 0 => {
                        let _ = tx.send(Some(first.trim_end().to_owned()));
                    }
                    _ => {
                        let _ = tx.send(None);
                        return;
                    }
                }
                for line in reader.lines() {
                    match line {
                        Ok(line) => rest.push_line(&line),
                        Err(_) => break,
                    }
                }
            });
        }

        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Some(line)) => line,
            Ok(None) => {
                let status = wait_with_timeout(&mut child, Duration::from_secs(5));
                let _ = child.kill();
                let _ = child.wait();
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "volt-emulator serve closed stdout without a ready line (exit {status:?})\n\
                     --- emulator stderr ---\n{}",
                    stderr.text()
                );
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "volt-emulator serve printed no ready line within {READY_TIMEOUT:?}\n\
                     --- emulator stderr ---\n{}",
                    stderr.text()
                );
            }
        };

        let ready = match parse_ready(&line) {
            Ok(ready) => ready,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "bad ready line {line:?}: {e}\n--- emulator stderr ---\n{}",
                    stderr.text()
                );
            }
        };

        EmulatorProcess {
            child,
            ready,
            stdout_rest,
            stderr,
            dir,
        }
    }

    fn diagnostics(&self) -> String {
        format!(
            "--- emulator stderr ---\n{}--- emulator stdout after the ready line ---\n{}",
            self.stderr.text(),
            self.stdout_rest.text()
        )
    }

    /// Sends SIGTERM and asserts a clean exit (status 0) within SHUTDOWN_TIMEOUT.
    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let kill = Command::new("kill")
            .arg("-TERM")
            .arg(&pid)
            .status()
            .unwrap_or_else(|e| panic!("running `kill -TERM {pid}`: {e}"));
        assert!(kill.success(), "`kill -TERM {pid}` failed: {kill}");
        let status = wait_with_timeout(&mut self.child, SHUTDOWN_TIMEOUT);
        // Let the capture threads catch up before reading their text.
        thread::sleep(Duration::from_millis(100));
        match status {
            Some(status) => assert!(
                status.success(),
                "volt-emulator exited with {status} after SIGTERM (expected 0)\n{}",
                self.diagnostics()
            ),
            None => panic!(
                "volt-emulator did not exit within {SHUTDOWN_TIMEOUT:?} after SIGTERM\n{}",
                self.diagnostics()
            ),
        }
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn parse_ready(line: &str) -> Result<Ready, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let field = |name: &str| -> Result<String, String> {
        value
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("no string field {name:?}"))
    };
    let ready = Ready {
        http_address: field("http_address")?,
        address: field("address")?,
        config: PathBuf::from(field("config")?),
    };
    if !ready.http_address.starts_with("https://") {
        return Err(format!(
            "http_address {:?} is not https://",
            ready.http_address
        ));
    }
    if !ready.config.is_file() {
        return Err(format!("config {} is not a file", ready.config.display()));
    }
    Ok(ready)
}

/// What a scenario script printed and how it ended.
struct ScriptRun {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

fn run_script(root: &Path, script: &str, emulator: &EmulatorProcess) -> ScriptRun {
    let script_path = root.join("interop").join(script);
    assert!(
        script_path.is_file(),
        "{} is missing",
        script_path.display()
    );
    let mut child = Command::new("node")
        .arg(&script_path)
        .arg(&emulator.ready.config)
        .current_dir(root)
        // The scripts trust the Volt CA from the configuration themselves; this only makes
        // any other TLS use inside Node trust it too.
        .env("NODE_EXTRA_CA_CERTS", emulator.dir.path().join("ca.pem"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning node {script}: {e}; {NPM_HINT}"));
    let stdout = Captured::default();
    let stderr = Captured::default();
    let out_thread = capture_lines(child.stdout.take().expect("piped stdout"), stdout.clone());
    let err_thread = capture_lines(child.stderr.take().expect("piped stderr"), stderr.clone());
    let status = wait_with_timeout(&mut child, SCRIPT_TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = out_thread.join();
    let _ = err_thread.join();
    ScriptRun {
        status,
        stdout: stdout.text(),
        stderr: stderr.text(),
    }
}

fn run_scenario(label: &str, script: &str) {
    let root = workspace_root();
    require_node_and_packages(&root);

    let emulator = EmulatorProcess::start(label);
    let run = run_script(&root, script, &emulator);
    let report = format!(
        "emulator: websocket {} grpc {}\n--- {script} stdout ---\n{}--- {script} stderr ---\n{}{}",
        emulator.ready.http_address,
        emulator.ready.address,
        run.stdout,
        run.stderr,
        emulator.diagnostics()
    );
    match run.status {
        Some(status) if status.success() => {}
        Some(status) => panic!("{script} exited with {status}\n{report}"),
        None => panic!("{script} did not finish within {SCRIPT_TIMEOUT:?}\n{report}"),
    }
    assert!(
        run.stdout.contains(r#""step":"done","ok":true"#),
        "{script} exited 0 without reporting the final step\n{report}"
    );
    // Show the steps in the test output (visible with --nocapture).
    println!("{}", run.stdout);
    emulator.terminate();
}

#[test]
fn official_web_client_against_emulator() {
    run_scenario("web", "emulator-web.mjs");
}

#[test]
fn official_grpc_client_against_emulator() {
    run_scenario("grpc", "emulator-grpc.mjs");
}
