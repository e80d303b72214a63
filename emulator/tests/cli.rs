//! The `volt-emulator` binary as a user runs it: the ready line, the written configuration,
//! `client` with a passphrase, bad input against the running process, restart with the same
//! identity, and SIGTERM ending it with status 0.

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{payloads, RawSocket};
use tdx_volt::protocol::config::ClientConfig;
use tdx_volt::protocol::exchange::ClientKeyExchange;
use tdx_volt::protocol::keys::KeyAlgorithm;
use tdx_volt::protocol::token::{unix_now, Claims};

const BIN: &str = env!("CARGO_BIN_EXE_volt-emulator");

struct Served {
    child: Child,
    ready: Value,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &std::path::Path) -> Served {
    serve_with(dir, &[])
}

fn serve_with(dir: &std::path::Path, flags: &[&str]) -> Served {
    let mut child = Command::new(BIN)
        .args(["serve", "--dir"])
        .arg(dir)
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("volt-emulator starts");
    let stdout = child.stdout.take().expect("stdout");
    // Read the ready line on a thread so that a silent emulator fails the test, not hangs it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(support::WAIT)
        .expect("ready line within the wait");
    let ready: Value = serde_json::from_str(line.trim()).expect("ready line is JSON");
    Served { child, ready }
}

fn terminate(mut served: Served) -> std::process::ExitStatus {
    let pid = served.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + support::WAIT;
    loop {
        if let Some(status) = served.child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "volt-emulator did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn get_root(config: &ClientConfig, key: &tdx_volt::PrivateKey, call_id: u64) -> Value {
    let http = config.volt().http_address.clone().expect("http_address");
    let ca = config.volt().ca_pem.clone().expect("ca_pem");
    let mut socket = RawSocket::connect(&http, &ca).await;
    let exchange = ClientKeyExchange::new();
    let claims = Claims::new(config.volt().id.clone(), unix_now())
        .with_subject(config.credential().session_id.clone())
        .with_key(exchange.token_claim());
    let volt_key = config.volt_public_key().unwrap();
    let call_key = socket
        .open(call_id, key, &claims, exchange, &volt_key)
        .await
        .expect("key exchange");
    let request = json!({"resource_id": config.volt().id});
    socket
        .send(support::invoke(
            &call_key,
            call_id,
            "/tdx.volt_api.volt.v1.VoltAPI/GetResource",
            &request,
        ))
        .await;
    socket.send(support::end(&call_key, call_id)).await;
    let (values, error) = payloads(&socket.read_call(&call_key, call_id).await);
    assert_eq!(error, None);
    values.into_iter().next().expect("a response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prints_ready_line_issues_clients_survives_bad_input_and_stops_on_sigterm() {
    let dir = support::temp_dir("cli");
    let served = serve(&dir);
    let config_path = served.ready["config"]
        .as_str()
        .expect("config path")
        .to_owned();
    let http = served.ready["http_address"].as_str().unwrap().to_owned();
    assert!(http.starts_with("https://127.0.0.1:"));
    assert!(served.ready["address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let config = ClientConfig::from_file(&config_path).expect("written config loads");
    assert_eq!(config.volt().http_address.as_deref(), Some(http.as_str()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&config_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the configuration holds a private key");
    }
    let key = config.private_key(None).unwrap();
    let root = get_root(&config, &key, 1).await;
    assert_eq!(root["resource"]["id"], json!(config.volt().id));

    // A second client, with an encrypted key.
    let out = dir.join("alice.json");
    let status = Command::new(BIN)
        .args([
            "client",
            "--name",
            "alice",
            "--passphrase",
            "s3cret",
            "--dir",
        ])
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let alice = ClientConfig::from_file(&out).unwrap();
    assert!(alice
        .credential()
        .key_pem()
        .contains("ENCRYPTED PRIVATE KEY"));
    assert!(alice.private_key(Some("wrong")).is_err());
    let alice_key = alice.private_key(Some("s3cret")).unwrap();
    assert_ne!(
        alice.credential().session_id,
        config.credential().session_id
    );
    get_root(&alice, &alice_key, 1).await;

    // The passphrase may come from the environment instead of the command line.
    let out = dir.join("bob.json");
    let status = Command::new(BIN)
        .args(["client", "--name", "bob", "--dir"])
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .env(tdx_volt::protocol::keys::PASSPHRASE_ENV, "from-the-env")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let bob = ClientConfig::from_file(&out).unwrap();
    assert!(bob.credential().key_pem().contains("ENCRYPTED PRIVATE KEY"));
    assert!(bob.private_key(Some("s3cret")).is_err());
    let bob_key = bob.private_key(Some("from-the-env")).unwrap();
    get_root(&bob, &bob_key, 1).await;

    // A configuration that goes through the emulator's own relay endpoint: gRPC calls are
    // tunnelled (VoltAPI/Invoke), the gateway's carry the route.
    let out = dir.join("carol.json");
    let status = Command::new(BIN)
        .args(["client", "--name", "carol", "--relayed", "--dir"])
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let carol: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(
        carol["volt"]["relay"]["address"], served.ready["address"],
        "{carol}"
    );
    assert_eq!(carol["volt"]["relay"]["http_address"], json!(http));
    for transport in [tdx_volt::Transport::Auto, tdx_volt::Transport::Websocket] {
        let client = tdx_volt::VoltClient::builder()
            .config_file(&out)
            .transport(transport)
            .connect()
            .await
            .expect("relayed client connects");
        if transport == tdx_volt::Transport::Auto {
            assert_eq!(client.transport(), tdx_volt::Transport::Grpc);
        }
        let root = client
            .get_resource(json!({"resource_id": config.volt().id}))
            .await
            .expect("GetResource through the relay");
        assert_eq!(root["resource"]["id"], json!(config.volt().id));
    }

    // Garbage at the running process, then a good call still works.
    let ca = config.volt().ca_pem.clone().unwrap();
    let mut socket = RawSocket::connect(&http, &ca).await;
    socket.send(vec![0xff; 3]).await;
    assert!(matches!(socket.next().await, support::Event::Closed(_)));
    let mut socket = RawSocket::connect(&http, &ca).await;
    socket.send(vec![1, 2, 0, 0, 0, 0, 0, 0, 0, 7, 0xff]).await;
    socket.expect_meta_error(7).await;
    get_root(&config, &key, 2).await;

    let status = terminate(served);
    assert!(status.success(), "exit status {status:?}");

    // Restarted in the same directory: same Volt, same client, new ports are written.
    let served = serve(&dir);
    let again = ClientConfig::from_file(&config_path).unwrap();
    assert_eq!(again.volt().id, config.volt().id);
    assert_eq!(
        again.credential().session_id,
        config.credential().session_id
    );
    assert_eq!(
        again.volt().http_address.as_deref(),
        served.ready["http_address"].as_str()
    );
    get_root(&again, &again.private_key(None).unwrap(), 1).await;
    assert!(terminate(served).success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the binary to its exit (failing the test if it runs on past the wait).
fn run_to_exit(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("volt-emulator starts");
    let deadline = Instant::now() + support::WAIT;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("volt-emulator {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn serve_legacy_writes_an_rsa_configuration_and_the_directory_keeps_its_era() {
    use tdx_volt::protocol::keys::fingerprint_of_pem_text;
    use tdx_volt::PublicKey;

    let dir = support::temp_dir("cli-legacy");
    let served = serve_with(&dir, &["--legacy"]);
    // The ready line has the same shape as without --legacy.
    let keys: Vec<&str> = served
        .ready
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["http_address", "address", "config"]);
    assert!(served.ready["http_address"]
        .as_str()
        .unwrap()
        .starts_with("https://127.0.0.1:"));
    let config_path = served.ready["config"].as_str().unwrap().to_owned();
    let raw: Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let config = ClientConfig::from_file(&config_path).expect("written config loads");

    // Client key, Volt key and CA key are RSA; the CA carries the Volt key.
    assert!(raw["credential"]["key"]
        .as_str()
        .unwrap()
        .contains("BEGIN PRIVATE KEY"));
    assert!(config.private_key(None).unwrap().public_key().algorithm() == KeyAlgorithm::Rsa);
    assert!(config.credential().session_id.is_some());
    let volt_key = config.volt_public_key().unwrap();
    assert_eq!(volt_key.algorithm(), KeyAlgorithm::Rsa);
    let ca_key = PublicKey::from_certificate_pem(raw["volt"]["ca_pem"].as_str().unwrap()).unwrap();
    assert_eq!(ca_key.algorithm(), KeyAlgorithm::Rsa);
    assert_eq!(ca_key, volt_key);
    // The fingerprint is base58(SHA-256) of the Volt key's SPKI PEM text.
    let public_pem = raw["volt"]["public_key"].as_str().unwrap();
    assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    let fingerprint = raw["volt"]["fingerprint"]
        .as_str()
        .expect("volt.fingerprint");
    assert_eq!(fingerprint, fingerprint_of_pem_text(public_pem));
    assert_eq!(fingerprint, volt_key.fingerprint().unwrap());

    // `client` issues RSA clients for this Volt too.
    let out = dir.join("bob.json");
    let status = Command::new(BIN)
        .args(["client", "--name", "bob", "--dir"])
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let bob = ClientConfig::from_file(&out).unwrap();
    assert!(bob.private_key(None).unwrap().public_key().algorithm() == KeyAlgorithm::Rsa);
    assert_eq!(bob.volt().fingerprint.as_deref(), Some(fingerprint));
    assert!(terminate(served).success());

    // Started without --legacy, the directory is refused, naming the flag to use.
    let output = run_to_exit(&["serve"], &dir);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("start it with --legacy"), "{stderr}");
    assert!(output.stdout.is_empty(), "no ready line");
    // And with it, it still starts.
    let served = serve_with(&dir, &["--legacy"]);
    assert_eq!(
        ClientConfig::from_file(served.ready["config"].as_str().unwrap())
            .unwrap()
            .volt()
            .id,
        config.volt().id
    );
    assert!(terminate(served).success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_exit_2_with_usage() {
    let output = Command::new(BIN).args(["serve"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--dir"));
    let output = Command::new(BIN)
        .args(["serve", "--dir", "x", "--ws-listen", "nope"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_reaches_the_running_emulator_and_ends_the_sessions_connect_stream() {
    let dir = support::temp_dir("cli-revoke");
    let served = serve(&dir);
    let config_path = served.ready["config"].as_str().expect("config").to_owned();
    let config = ClientConfig::from_file(&config_path).unwrap();
    let key = config.private_key(None).unwrap();
    let session = config.credential().session_id.clone().expect("a session");

    // A Connect stream of the default client, acknowledged.
    let http = config.volt().http_address.clone().expect("http_address");
    let ca = config.volt().ca_pem.clone().expect("ca_pem");
    let mut socket = RawSocket::connect(&http, &ca).await;
    let exchange = ClientKeyExchange::new();
    let claims = Claims::new(config.volt().id.clone(), unix_now())
        .with_subject(Some(session.clone()))
        .with_key(exchange.token_claim());
    let volt_key = config.volt_public_key().unwrap();
    let call_key = socket
        .open(1, &key, &claims, exchange, &volt_key)
        .await
        .expect("key exchange");
    let hello = json!({"hello": {"ping_interval": 10_000}});
    socket
        .send(support::invoke(
            &call_key,
            1,
            "/tdx.volt_api.volt.v1.VoltAPI/Connect",
            &hello,
        ))
        .await;
    assert!(matches!(
        socket.next().await,
        support::Event::Frame(tdx_volt::protocol::frame::ServerFrame::Sealed(_))
    ));

    // Another process revokes the session.
    let revoke = |session: &str| {
        Command::new(BIN)
            .args(["revoke", "--session", session, "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
    };
    assert!(revoke(&session).success());
    assert!(!revoke("no-such-session").success());

    // The running emulator notices on its own and ends the stream.
    let rest = socket.read_call(&call_key, 1).await;
    match rest.as_slice() {
        [tdx_volt::protocol::body::Body::End { error: Some(e), .. }] => {
            assert!(e.ends_with("session invalid"), "{e}")
        }
        other => panic!("expected the stream's end with an error, got {other:?}"),
    }
    let status = terminate(served);
    assert!(status.success(), "exit status {status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
