//! `volt-emulator`: run a local tdx Volt, or issue client configurations for one.

use std::future::Future as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use tdx_volt_emulator::{issue_client_file_as, Emulator};

const USAGE: &str = "\
volt-emulator: a local tdx Volt (websocket gateway + gRPC, TLS, SQLite)

USAGE:
  volt-emulator serve --dir DIR [--ws-listen ADDR] [--grpc-listen ADDR] [--plain] [--legacy]
  volt-emulator client --dir DIR --name NAME [--passphrase P] [--out FILE] [--relayed]
  volt-emulator revoke --dir DIR --session ID

serve   starts the Volt with its state in DIR (created on first start), writes
        DIR/client.config.json, prints one JSON line with the bound addresses and runs
        until SIGINT, SIGTERM or a Shutdown call from the Volt's owner. Listeners
        default to 127.0.0.1:0; TLS unless --plain.
        --legacy plays an RSA-era Volt: RSA keys, and a websocket gateway speaking the
        older JSON text protocol (Python volt_client_web 0.1.x). A directory keeps the era
        it was created with.
client  issues a further client configuration (fresh key and session) for the Volt in
        DIR, written to FILE (default DIR/<NAME>.config.json); with --passphrase (or,
        without it, the environment variable VOLT_KEY_PASSPHRASE, which the clients also
        read to decrypt the key) the key is encrypted (PBES2, PBKDF2-HMAC-SHA256,
        AES-256-CBC). The key is RSA when the Volt in DIR is an RSA-era one.
        --relayed writes a configuration that reaches the Volt through its own relay
        endpoint (volt.relay): gRPC calls are tunnelled through VoltAPI/Invoke and
        gateway calls carry the relay route, as through a real relay.
revoke  revokes session ID of the Volt in DIR, running or not: every later call with it,
        and its open Connect streams, fail with UNAUTHENTICATED, the message ending with
        `session invalid`.

Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more.";

enum Command {
    Serve {
        dir: PathBuf,
        ws_listen: Option<SocketAddr>,
        grpc_listen: Option<SocketAddr>,
        plain: bool,
        legacy: bool,
    },
    Client {
        dir: PathBuf,
        name: String,
        passphrase: Option<String>,
        out: Option<PathBuf>,
        relayed: bool,
    },
    Revoke {
        dir: PathBuf,
        session: String,
    },
    Help,
}

fn parse(args: Vec<String>) -> Result<Command, String> {
    let mut it = args.into_iter();
    let command = it.next().ok_or("missing command")?;
    let mut dir = None;
    let mut ws_listen = None;
    let mut grpc_listen = None;
    let mut plain = false;
    let mut legacy = false;
    let mut name = None;
    let mut passphrase = None;
    let mut out = None;
    let mut session = None;
    let mut relayed = false;
    if command == "--help" || command == "-h" || command == "help" {
        return Ok(Command::Help);
    }
    while let Some(flag) = it.next() {
        let mut value = |what: &str| it.next().ok_or(format!("{what} needs a value"));
        let addr = |text: String, what: &str| {
            text.parse::<SocketAddr>()
                .map_err(|_| format!("{what}: not an address (host:port): {text}"))
        };
        match flag.as_str() {
            "--dir" => dir = Some(PathBuf::from(value("--dir")?)),
            "--ws-listen" if command == "serve" => {
                ws_listen = Some(addr(value("--ws-listen")?, "--ws-listen")?)
            }
            "--grpc-listen" if command == "serve" => {
                grpc_listen = Some(addr(value("--grpc-listen")?, "--grpc-listen")?)
            }
            "--plain" if command == "serve" => plain = true,
            "--legacy" if command == "serve" => legacy = true,
            "--name" if command == "client" => name = Some(value("--name")?),
            "--passphrase" if command == "client" => passphrase = Some(value("--passphrase")?),
            "--out" if command == "client" => out = Some(PathBuf::from(value("--out")?)),
            "--relayed" if command == "client" => relayed = true,
            "--session" if command == "revoke" => session = Some(value("--session")?),
            "--help" | "-h" => return Ok(Command::Help),
            other => return Err(format!("unexpected argument for {command}: {other}")),
        }
    }
    let dir = dir.ok_or("--dir DIR is required")?;
    match command.as_str() {
        "serve" => Ok(Command::Serve {
            dir,
            ws_listen,
            grpc_listen,
            plain,
            legacy,
        }),
        "client" => Ok(Command::Client {
            dir,
            name: name.ok_or("--name NAME is required")?,
            passphrase,
            out,
            relayed,
        }),
        "revoke" => Ok(Command::Revoke {
            dir,
            session: session.ok_or("--session ID is required")?,
        }),
        other => Err(format!("unknown command: {other}")),
    }
}

fn main() -> ExitCode {
    let command = match parse(std::env::args().skip(1).collect()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("volt-emulator: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match command {
        Command::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Command::Client {
            dir,
            name,
            passphrase,
            out,
            relayed,
        } => {
            let safe: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let out = out.unwrap_or_else(|| dir.join(format!("{safe}.config.json")));
            // A passphrase kept out of the command line (and so out of `ps` and shell history).
            let passphrase = passphrase.or_else(|| {
                std::env::var(tdx_volt::protocol::keys::PASSPHRASE_ENV)
                    .ok()
                    .filter(|p| !p.is_empty())
            });
            issue_client_file_as(&dir, &name, passphrase.as_deref(), relayed, &out).map(|()| {
                println!("{}", out.display());
            })
        }
        Command::Revoke { dir, session } => revoke(&dir, &session),
        Command::Serve {
            dir,
            ws_listen,
            grpc_listen,
            plain,
            legacy,
        } => serve(dir, ws_listen, grpc_listen, plain, legacy),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("volt-emulator: {text}");
            ExitCode::FAILURE
        }
    }
}

fn revoke(dir: &std::path::Path, session: &str) -> tdx_volt::Result<()> {
    let registry = tdx_volt_emulator::clients::ClientRegistry::open(dir)?;
    if registry.revoke(session)? {
        println!("{session}");
        Ok(())
    } else {
        Err(tdx_volt::Error::new(
            tdx_volt::ErrorKind::Config,
            format!("no session {session} in {}", dir.display()),
        ))
    }
}

fn serve(
    dir: PathBuf,
    ws_listen: Option<SocketAddr>,
    grpc_listen: Option<SocketAddr>,
    plain: bool,
    legacy: bool,
) -> tdx_volt::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            tdx_volt::Error::new(tdx_volt::ErrorKind::Io, "starting the runtime").with_source(e)
        })?;
    runtime.block_on(async move {
        let mut builder = Emulator::builder(dir).plain(plain).legacy(legacy);
        if let Some(addr) = ws_listen {
            builder = builder.ws_listen(addr);
        }
        if let Some(addr) = grpc_listen {
            builder = builder.grpc_listen(addr);
        }
        let emulator = builder.start().await?;
        // Listen for signals before announcing readiness: a SIGTERM sent right after the
        // ready line must stop the emulator cleanly, not kill it.
        let signals = wait_for_signal();
        tokio::pin!(signals);
        std::future::poll_fn(|cx| {
            let _ = signals.as_mut().poll(cx);
            std::task::Poll::Ready(())
        })
        .await;
        {
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{}", emulator.ready_line());
            let _ = stdout.flush();
        }
        // A signal, or a Shutdown call from the Volt's owner, stops it.
        tokio::select! {
            () = &mut signals => {}
            () = emulator.stopped() => {}
        }
        tracing::info!("stopping");
        emulator.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
