//! `volt-emulator`: run a local tdx Volt, or issue client configurations for one.

use std::future::Future as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use tdx_volt_emulator::{issue_client_file_as, Emulator};

/// A local tdx Volt: websocket gateway and gRPC, over TLS, with SQLite.
///
/// Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more.
#[derive(clap::Parser)]
#[command(name = "volt-emulator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Runs the Volt with its state in DIR.
    ///
    /// DIR is created on first start. Writes DIR/client.config.json, prints one JSON line with
    /// the bound addresses and runs until SIGINT, SIGTERM or a Shutdown call from the Volt's
    /// owner.
    Serve {
        /// The Volt's state directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The websocket gateway's listening address (default 127.0.0.1:0).
        #[arg(long, value_name = "ADDR")]
        ws_listen: Option<SocketAddr>,
        /// The gRPC listening address (default 127.0.0.1:0).
        #[arg(long, value_name = "ADDR")]
        grpc_listen: Option<SocketAddr>,
        /// Serve without TLS.
        #[arg(long)]
        plain: bool,
        /// Play an RSA-era Volt: RSA keys, and a websocket gateway speaking the older JSON
        /// text protocol (Python volt_client_web 0.1.x). A directory keeps the era it was
        /// created with.
        #[arg(long)]
        legacy: bool,
    },
    /// Issues a further client configuration for the Volt in DIR.
    ///
    /// The configuration has a fresh key and session.
    /// With --passphrase (or, without it, the environment variable VOLT_KEY_PASSPHRASE,
    /// which the clients also read to decrypt the key) the key is encrypted (PBES2,
    /// PBKDF2-HMAC-SHA256, AES-256-CBC). The key is RSA when the Volt in DIR is an RSA-era
    /// one.
    Client {
        /// The Volt's state directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The client's name.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// Encrypt the key with this passphrase.
        #[arg(long, value_name = "P")]
        passphrase: Option<String>,
        /// Where to write the configuration (default DIR/<NAME>.config.json).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Reach the Volt through its own relay endpoint (volt.relay): gRPC calls are
        /// tunnelled through VoltAPI/Invoke and gateway calls carry the relay route, as
        /// through a real relay.
        #[arg(long)]
        relayed: bool,
    },
    /// Revokes a session of the Volt in DIR, running or not.
    ///
    /// Every later call with it, and its open Connect streams, fail with UNAUTHENTICATED, the
    /// message ending with `session invalid`.
    Revoke {
        /// The Volt's state directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The session to revoke.
        #[arg(long, value_name = "ID")]
        session: String,
    },
}

fn main() -> ExitCode {
    // Usage errors exit with 2, --help and --version with 0 (clap's own codes).
    let command = <Cli as clap::Parser>::parse().command;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match command {
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
