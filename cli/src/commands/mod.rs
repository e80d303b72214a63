//! The subcommands, one file each, and what they share: connecting with the configuration
//! the options name.

mod auth;
mod call;
mod emulator;
mod file;
mod resources;
mod session;
mod sql;
mod wire;

use std::path::PathBuf;
use std::time::Duration;

use tdx_volt::{Transport, VoltClient};

use crate::args::{Cli, Command, TransportArg};
use crate::exit::{Failure, CONFIG};
use crate::output::Output;

/// The configuration file used when neither `--config` nor `VOLT_CONFIG` names one.
pub const DEFAULT_CONFIG: &str = "client.config.json";

/// What every command gets from the global options.
#[derive(Debug)]
pub struct Context {
    config: Option<PathBuf>,
    transport: TransportArg,
    timeout: Duration,
    /// Where results go.
    pub out: Output,
}

impl Context {
    /// The configuration file: `--config`, else `VOLT_CONFIG` (clap reads both), else
    /// `./client.config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    }

    /// Connects to the Volt the configuration names.
    pub async fn connect(&self) -> Result<VoltClient, Failure> {
        let path = self.config_path();
        if !path.is_file() {
            return Err(Failure::new(
                CONFIG,
                format!(
                    "no client configuration at {} (give --config FILE or set VOLT_CONFIG)",
                    path.display()
                ),
            ));
        }
        let transport = match self.transport {
            TransportArg::Auto => Transport::Auto,
            TransportArg::Grpc => Transport::Grpc,
            TransportArg::Websocket => Transport::Websocket,
            TransportArg::LegacyWebsocket => Transport::LegacyWebsocket,
        };
        VoltClient::builder()
            .config_file(path)
            .transport(transport)
            .connect_timeout(self.timeout)
            .request_timeout(self.timeout)
            .connect()
            .await
            .map_err(Failure::from)
    }
}

/// Runs the command the arguments name.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let cx = Context {
        config: cli.config,
        transport: cli.transport,
        timeout: Duration::from_secs(cli.timeout.max(1)),
        out: Output { json: cli.json },
    };
    match cli.command {
        Command::Call {
            method,
            request,
            keep_open,
        } => call::run(&cx, &method, request.as_deref(), keep_open).await,
        Command::Get { id } => resources::get(&cx, &id).await,
        Command::Ls { id, depth } => resources::ls(&cx, id.as_deref(), depth).await,
        Command::Rm { id, recursive } => resources::rm(&cx, &id, recursive).await,
        Command::Sql {
            database,
            statement,
            format,
        } => sql::run(&cx, &database, &statement, format).await,
        Command::Wire { action } => wire::run(&cx, action).await,
        Command::File { action } => file::run(&cx, action).await,
        Command::Auth { name, identity } => auth::run(&cx, name, identity).await,
        Command::Session => session::run(&cx).await,
        Command::Emulator { dir } => emulator::run(&cx, dir).await,
    }
}

/// Resolves when the user asks to stop (Ctrl-C, or SIGTERM on Unix).
pub async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    if tokio::signal::ctrl_c().await.is_err() {
        // No way to hear the signal: wait forever (the default handler still stops us).
        std::future::pending::<()>().await;
    }
}
