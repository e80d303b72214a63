//! `volt emulator [--dir DIR]`: a local Volt in the foreground.

use std::future::Future as _;
use std::path::PathBuf;

use serde_json::json;
use tdx_volt_emulator::Emulator;

use super::{interrupted, Context};
use crate::exit::Failure;

/// Starts volt-emulator with its state in `dir` (made on first start), prints the path of
/// the client configuration it wrote (with `--json`, an object with its addresses too), and
/// runs until Ctrl-C, SIGTERM or a Shutdown call from the Volt's owner.
pub async fn run(cx: &Context, dir: PathBuf) -> Result<(), Failure> {
    let emulator = Emulator::builder(dir).start().await?;
    // Listen for signals before saying it is ready: a SIGTERM right after the config path
    // must stop it cleanly.
    let stop = interrupted();
    tokio::pin!(stop);
    std::future::poll_fn(|context| {
        let _ = stop.as_mut().poll(context);
        std::task::Poll::Ready(())
    })
    .await;
    let config = emulator.config_path().display().to_string();
    if cx.out.json {
        cx.out.json_line(&json!({
            "config": config,
            "volt_id": emulator.volt_id(),
            "address": emulator.address(),
            "http_address": emulator.http_address(),
        }))?;
    } else {
        cx.out.line(&config)?;
        crate::output::note(&format!(
            "volt-emulator: gRPC on {}, websocket gateway on {}; Ctrl-C to stop",
            emulator.address(),
            emulator.http_address()
        ));
    }
    tokio::select! {
        () = &mut stop => {}
        () = emulator.stopped() => {}
    }
    emulator.shutdown().await;
    Ok(())
}
