//! The driver's command line (interop/bench/README.md).

use std::path::PathBuf;
use std::time::Duration;

use tdx_volt::Transport;

pub const USAGE: &str = "usage: peers                       (the whole comparison)
       peers setup --config FILE [--transport T]
       peers floor [--seconds S]
       peers --config FILE --transport websocket|grpc|legacy --workload unary|wire|sql|idle|save
             --seconds S [--inflight N] [--chunk BYTES] [--wire ID] [--database ID]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Script,
    Setup,
    Floor,
    Drive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Unary,
    Wire,
    Sql,
    /// tdx-volt only: RSS per idle subscription (`--inflight` subscriptions).
    Idle,
    /// tdx-volt only: `--inflight` SaveResource calls at once.
    Save,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Unary => "unary",
            Workload::Wire => "wire",
            Workload::Sql => "sql",
            Workload::Idle => "idle",
            Workload::Save => "save",
        }
    }
}

pub struct Args {
    pub mode: Mode,
    pub config: PathBuf,
    pub transport: Transport,
    pub workload: Workload,
    pub seconds: Duration,
    pub inflight: usize,
    pub chunk: usize,
    pub wire: Option<String>,
    pub database: Option<String>,
}

impl Args {
    pub fn parse(mut words: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut args = Args {
            mode: Mode::Script,
            config: PathBuf::new(),
            transport: Transport::Auto,
            workload: Workload::Unary,
            seconds: Duration::from_secs(3),
            inflight: 1,
            chunk: 1024,
            wire: None,
            database: None,
        };
        let number = |value: &str, name: &str| {
            value
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n > 0.0)
                .ok_or_else(|| format!("{name} needs a positive number, not {value:?}"))
        };
        while let Some(word) = words.next() {
            // `cargo bench` adds `--bench`; it means nothing here.
            if word == "--bench" {
                continue;
            }
            if word == "setup" || word == "floor" {
                args.mode = if word == "setup" {
                    Mode::Setup
                } else {
                    Mode::Floor
                };
                continue;
            }
            let value = words
                .next()
                .ok_or_else(|| format!("{word} needs a value"))?;
            match word.as_str() {
                "--config" => {
                    args.config = PathBuf::from(value);
                    if args.mode == Mode::Script {
                        args.mode = Mode::Drive;
                    }
                }
                "--transport" => {
                    args.transport = match value.as_str() {
                        "websocket" => Transport::Websocket,
                        "grpc" => Transport::Grpc,
                        "legacy" => Transport::LegacyWebsocket,
                        other => return Err(format!("unknown transport {other:?}")),
                    }
                }
                "--workload" => {
                    args.workload = match value.as_str() {
                        "unary" => Workload::Unary,
                        "wire" => Workload::Wire,
                        "sql" => Workload::Sql,
                        "idle" => Workload::Idle,
                        "save" => Workload::Save,
                        other => return Err(format!("unknown workload {other:?}")),
                    }
                }
                "--seconds" => args.seconds = Duration::from_secs_f64(number(&value, &word)?),
                "--inflight" => args.inflight = number(&value, &word)? as usize,
                "--chunk" => args.chunk = number(&value, &word)? as usize,
                "--wire" => args.wire = Some(value),
                "--database" => args.database = Some(value),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(args)
    }
}
