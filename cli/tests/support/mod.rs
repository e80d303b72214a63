//! Test support: a volt-emulator in-process on 127.0.0.1:0, a client for it, and the
//! `volt` binary run against the client configuration it wrote.

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{json, Value};
use tdx_volt::{Transport, VoltClient};
use tdx_volt_emulator::Emulator;
use tokio::io::AsyncWriteExt as _;

/// How long a test waits for any one thing before failing.
pub const WAIT: Duration = Duration::from_secs(120);

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing after {WAIT:?}"))
}

/// A fresh directory name under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "volt-cli-{tag}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// What a run of `volt` gave.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// An emulator, a client of it, and a scratch directory for the test's files.
pub struct Volt {
    pub emulator: Option<Emulator>,
    pub dir: PathBuf,
    pub scratch: PathBuf,
    pub client: VoltClient,
}

impl Volt {
    pub async fn start(tag: &str) -> Volt {
        let dir = temp_dir(tag);
        let emulator = Emulator::builder(&dir)
            .start()
            .await
            .expect("emulator starts");
        let scratch = dir.join("scratch");
        std::fs::create_dir_all(&scratch).expect("scratch dir");
        let client = VoltClient::builder()
            .config_file(emulator.config_path())
            .transport(Transport::Grpc)
            .connect()
            .await
            .expect("client connects");
        Volt {
            emulator: Some(emulator),
            dir,
            scratch,
            client,
        }
    }

    pub fn emulator(&self) -> &Emulator {
        self.emulator.as_ref().expect("running")
    }

    pub fn config_path(&self) -> PathBuf {
        self.emulator().config_path().to_path_buf()
    }

    pub fn volt_id(&self) -> String {
        self.client.volt_id().to_owned()
    }

    /// `volt --config CONFIG ARGS...`, with no VOLT_CONFIG from the environment, run in the
    /// scratch directory.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = bare_command(&self.scratch, args);
        command.arg("--config").arg(self.config_path());
        command
    }

    /// Runs `volt ARGS...` with `stdin` to its end.
    pub async fn run(&self, args: &[&str], stdin: &[u8]) -> Run {
        run_command(self.command(args), stdin).await
    }

    /// Makes a resource and returns its id.
    pub async fn new_resource(&self, resource: Value, parent: Option<&str>) -> String {
        let mut request = json!({"resource": resource, "create": true});
        if let Some(parent) = parent {
            request["create_in_parent_id"] = json!(parent);
        }
        let saved = self
            .client
            .save_resource(request)
            .await
            .expect("SaveResource");
        saved["resource"]["id"].as_str().expect("id").to_owned()
    }

    /// Replaces the Volt's id and every id shaped like a UUID with placeholders.
    pub fn normalise(&self, text: &str) -> String {
        normalise_ids(&text.replace(&self.volt_id(), "<VOLT>"))
            .replace(&self.dir.display().to_string(), "<DIR>")
    }
}

impl Drop for Volt {
    fn drop(&mut self) {
        drop(self.emulator.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `volt ARGS...` in `dir`, with nothing taken from the environment's VOLT_CONFIG.
pub fn bare_command(dir: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_volt"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("VOLT_CONFIG")
        .env_remove("VOLT_KEY_PASSPHRASE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs a command with `stdin` to its end; its exit code and output.
pub async fn run_command(mut command: tokio::process::Command, stdin: &[u8]) -> Run {
    let mut child = command.spawn().expect("volt starts");
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_vec();
    let writer = tokio::spawn(async move {
        // The command may not read it all (a unary call with an argument): ignore that.
        let _ = input.write_all(&stdin).await;
    });
    let output = within("volt to finish", child.wait_with_output())
        .await
        .expect("volt runs");
    let _ = writer.await;
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Every 8-4-4-4-12 hex id in `text` as `<ID>`.
pub fn normalise_ids(text: &str) -> String {
    let bytes = text.as_bytes();
    let shape = [8, 4, 4, 4, 12];
    let len = 36;
    let is_id = |at: usize| -> bool {
        if at + len > bytes.len() {
            return false;
        }
        let mut i = at;
        for (n, &run) in shape.iter().enumerate() {
            if n > 0 {
                if bytes[i] != b'-' {
                    return false;
                }
                i += 1;
            }
            if !bytes[i..i + run].iter().all(u8::is_ascii_hexdigit) {
                return false;
            }
            i += run;
        }
        true
    };
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if is_id(i) {
            out.push_str("<ID>");
            i += len;
        } else {
            let c = text[i..].chars().next().expect("a char");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Sends SIGTERM to a child (as Ctrl-C or `kill` would stop it).
pub fn terminate(child: &tokio::process::Child) {
    let pid = child.id().expect("running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}
