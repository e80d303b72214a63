//! Process helpers for the interop tests: a `volt-emulator serve` child on a fresh data
//! directory, and scenario scripts (any interpreter) run against it with their output
//! captured.
//!
//! Included by each interop test file with `#[path = "support/process.rs"] mod process;`
//! (kept out of `support/mod.rs`, which starts emulators in-process instead).

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the emulator may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a scenario script may run unless it says otherwise (the scripts give up by
/// themselves after 60 s).
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the emulator may take to exit after SIGTERM.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// What a scenario script prints as its last line when every step passed (compact JSON).
pub const DONE_MARKER: &str = r#""step":"done","ok":true"#;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
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

    pub fn path(&self) -> &Path {
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
pub struct Captured(Arc<Mutex<String>>);

impl Captured {
    pub fn push_line(&self, line: &str) {
        let mut text = self.0.lock().unwrap_or_else(|p| p.into_inner());
        text.push_str(line);
        text.push('\n');
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Copies every line of `pipe` into `into`, until end of file.
pub fn capture_lines(pipe: impl Read + Send + 'static, into: Captured) -> JoinHandle<()> {
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
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
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
pub struct Ready {
    pub http_address: String,
    pub address: String,
    pub config: PathBuf,
}

/// A running `volt-emulator serve --dir <fresh dir> [extra args]`; killed on drop if still
/// running.
pub struct EmulatorProcess {
    child: Child,
    pub ready: Ready,
    stdout_rest: Captured,
    stderr: Captured,
    pub dir: TempDir,
}

impl EmulatorProcess {
    /// Starts `volt-emulator serve --dir <fresh dir>` followed by `extra_args` (e.g.
    /// `["--legacy"]`) and waits for its ready line.
    pub fn start(label: &str, extra_args: &[&str]) -> EmulatorProcess {
        let dir = TempDir::new(label);
        let mut child = Command::new(env!("CARGO_BIN_EXE_volt-emulator"))
            .arg("serve")
            .arg("--dir")
            .arg(dir.path())
            .args(extra_args)
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
                    "volt-emulator serve {extra_args:?} closed stdout without a ready line \
                     (exit {status:?})\n--- emulator stderr ---\n{}",
                    stderr.text()
                );
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "volt-emulator serve {extra_args:?} printed no ready line within \
                     {READY_TIMEOUT:?}\n--- emulator stderr ---\n{}",
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

    /// The Volt CA certificate the emulator wrote into its data directory.
    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn diagnostics(&self) -> String {
        format!(
            "--- emulator stderr ---\n{}--- emulator stdout after the ready line ---\n{}",
            self.stderr.text(),
            self.stdout_rest.text()
        )
    }

    /// Issues another client with `volt-emulator client --name NAME` (to the running
    /// emulator's directory) and returns its configuration's path.
    #[allow(dead_code)] // Not every test binary that includes this module issues clients.
    pub fn issue_client(&self, name: &str) -> PathBuf {
        let out = self.dir.path().join(format!("{name}.config.json"));
        let run = Command::new(env!("CARGO_BIN_EXE_volt-emulator"))
            .args(["client", "--name", name, "--dir"])
            .arg(self.dir.path())
            .arg("--out")
            .arg(&out)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running volt-emulator client: {e}"));
        assert!(
            run.status.success(),
            "volt-emulator client --name {name}: {}\n{}",
            run.status,
            String::from_utf8_lossy(&run.stderr)
        );
        out
    }

    /// Sends SIGTERM and asserts a clean exit (status 0) within SHUTDOWN_TIMEOUT.
    pub fn terminate(mut self) {
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

pub fn parse_ready(line: &str) -> Result<Ready, String> {
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

/// A scenario script to run: `program args...` in `cwd` with extra environment variables.
pub struct Script<'a> {
    /// Names the script in messages, e.g. "emulator-web.mjs".
    pub name: &'a str,
    /// The interpreter (or any executable).
    pub program: &'a OsStr,
    pub args: Vec<&'a OsStr>,
    pub env: Vec<(&'a str, &'a OsStr)>,
    pub cwd: &'a Path,
    /// Appended to the panic message when the program cannot be started.
    pub hint: &'a str,
    /// How long it may run before it is killed.
    pub timeout: Duration,
}

/// What a scenario script printed and how it ended.
pub struct ScriptRun {
    pub name: String,
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `script` with stdin closed, capturing stdout and stderr; kills it after its timeout
/// (status `None`).
pub fn run_script(script: &Script<'_>) -> ScriptRun {
    let mut command = Command::new(script.program);
    command
        .args(&script.args)
        .current_dir(script.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in &script.env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap_or_else(|e| {
        panic!(
            "spawning {} for {} ({e}); {}",
            Path::new(script.program).display(),
            script.name,
            script.hint
        )
    });
    let stdout = Captured::default();
    let stderr = Captured::default();
    let out_thread = capture_lines(child.stdout.take().expect("piped stdout"), stdout.clone());
    let err_thread = capture_lines(child.stderr.take().expect("piped stderr"), stderr.clone());
    let status = wait_with_timeout(&mut child, script.timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = out_thread.join();
    let _ = err_thread.join();
    ScriptRun {
        name: script.name.to_owned(),
        status,
        stdout: stdout.text(),
        stderr: stderr.text(),
    }
}

impl ScriptRun {
    /// Everything worth showing when a check on this run fails.
    pub fn report(&self, emulator: &EmulatorProcess) -> String {
        format!(
            "emulator: websocket {} grpc {}\n--- {name} stdout ---\n{}--- {name} stderr ---\n{}{}",
            emulator.ready.http_address,
            emulator.ready.address,
            self.stdout,
            self.stderr,
            emulator.diagnostics(),
            name = self.name,
        )
    }

    /// Asserts the script exited 0 after printing its final `done` step.
    pub fn assert_finished(&self, emulator: &EmulatorProcess) {
        let name = &self.name;
        match self.status {
            Some(status) if status.success() => {}
            Some(status) => panic!("{name} exited with {status}\n{}", self.report(emulator)),
            None => panic!(
                "{name} did not finish within {SCRIPT_TIMEOUT:?}\n{}",
                self.report(emulator)
            ),
        }
        assert!(
            self.stdout.contains(DONE_MARKER),
            "{name} exited 0 without reporting the final step\n{}",
            self.report(emulator)
        );
    }
}
