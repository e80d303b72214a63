//! `volt`: a command line for tdx Volt. See `volt --help` and cli/README.md.

#![forbid(unsafe_code)]

mod args;
mod commands;
mod exit;
mod output;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    // clap prints usage errors itself and exits with 2 (exit::USAGE); --help and --version
    // exit with 0.
    let cli = args::Cli::parse();
    let json = cli.json;
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| exit::Failure::new(exit::PROTOCOL, format!("starting the runtime: {e}")))
        .and_then(|runtime| {
            let result = runtime.block_on(commands::run(cli));
            // A read of stdin may still be blocked on a thread of the runtime: don't wait.
            runtime.shutdown_background();
            result
        });
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(failure) if failure.code == exit::OK => ExitCode::from(exit::OK),
        Err(failure) => {
            // An empty message was printed already (by a streaming call, as it came).
            if !failure.message.is_empty() {
                output::note(&failure.line(json));
            }
            ExitCode::from(failure.code)
        }
    }
}
