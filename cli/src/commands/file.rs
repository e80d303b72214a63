//! `volt file put LOCAL [ID]` and `volt file get ID [LOCAL]`: file content streamed in
//! blocks, with a progress bar (bytes, throughput, time left) on a terminal.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tdx_volt::client::Transferred;
use tdx_volt::VoltClient;

use super::Context;
use crate::args::FileCommand;
use crate::exit::{Failure, LOCAL_IO, PROTOCOL};

/// Runs a file command.
pub async fn run(cx: &Context, action: FileCommand) -> Result<(), Failure> {
    match action {
        FileCommand::Put { local, id, parent } => {
            put(cx, &local, id.as_deref(), parent.as_deref()).await
        }
        FileCommand::Get { id, local } => get(cx, &id, local).await,
    }
}

/// Uploads `local` into file resource `id`, or into a new one named after it.
async fn put(
    cx: &Context,
    local: &Path,
    id: Option<&str>,
    parent: Option<&str>,
) -> Result<(), Failure> {
    let file = tokio::fs::File::open(local)
        .await
        .map_err(|e| Failure::io("opening", local, &e))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| Failure::io("reading", local, &e))?
        .len();
    let client = cx.connect().await?;
    let (id, created) = match id {
        Some(id) => (id.to_owned(), false),
        None => (create_file(&client, local, parent).await?, true),
    };
    let bar = progress_bar(cx, Some(size), "put");
    let started = Instant::now();
    let result = client
        .upload_file_from(&id, file, |bytes| bar.set_position(bytes))
        .await;
    bar.finish_and_clear();
    let sent = match result {
        Ok(sent) => sent,
        Err(e) => {
            if created {
                // Best effort: don't leave an empty resource behind.
                let _ = client.delete_resource(json!({ "resource_id": id })).await;
            }
            return Err(e.into());
        }
    };
    if cx.out.json {
        return cx
            .out
            .json_line(&json!({ "id": id, "bytes": sent.bytes, "blocks": sent.blocks }));
    }
    cx.out.line(&format!(
        "{} -> {id}: {}",
        local.display(),
        summary(sent, started.elapsed())
    ))
}

/// A new file resource named after `local`: its id.
async fn create_file(
    client: &VoltClient,
    local: &Path,
    parent: Option<&str>,
) -> Result<String, Failure> {
    let name = local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_owned());
    let mut request = json!({ "resource": { "name": name, "kind": ["file"] }, "create": true });
    if let Some(parent) = parent {
        request["create_in_parent_id"] = json!(parent);
    }
    let saved = client.save_resource(request).await?;
    saved["resource"]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Failure::new(PROTOCOL, "the Volt made the file but sent no id"))
}

/// Downloads file resource `id` to `local`: `-` is stdout; by default a new file in the
/// current directory named after the resource (never one that exists).
async fn get(cx: &Context, id: &str, local: Option<PathBuf>) -> Result<(), Failure> {
    let client = cx.connect().await?;
    // Its size for the bar, and (before anything is written) whether it exists at all.
    let info = client.get_file(json!({ "resource_id": id })).await?;
    let size = info["file"]["size"]
        .as_u64()
        .or_else(|| info["file"]["size"].as_str().and_then(|s| s.parse().ok()));
    let started = Instant::now();
    if local.as_deref() == Some(Path::new("-")) {
        let bar = progress_bar(cx, size, "get");
        let result = client
            .download_file_to(id, tokio::io::stdout(), |bytes| bar.set_position(bytes))
            .await;
        bar.finish_and_clear();
        let got = result?;
        // The content went to stdout: the summary goes to stderr.
        if !cx.out.json {
            crate::output::note(&format!("{id}: {}", summary(got, started.elapsed())));
        }
        return Ok(());
    }
    let path = match local {
        Some(path) => path,
        None => default_path(&info, id)?,
    };
    let got = download_to_path(cx, &client, id, &path, size).await?;
    if cx.out.json {
        let path = path.display().to_string();
        return cx
            .out
            .json_line(&json!({ "id": id, "path": path, "bytes": got.bytes }));
    }
    cx.out.line(&format!(
        "{id} -> {}: {}",
        path.display(),
        summary(got, started.elapsed())
    ))
}

async fn download_to_path(
    cx: &Context,
    client: &VoltClient,
    id: &str,
    path: &Path,
    size: Option<u64>,
) -> Result<Transferred, Failure> {
    let file = tokio::fs::File::create(path)
        .await
        .map_err(|e| Failure::io("creating", path, &e))?;
    let writer = tokio::io::BufWriter::with_capacity(256 * 1024, file);
    let bar = progress_bar(cx, size, "get");
    let result = client
        .download_file_to(id, writer, |bytes| bar.set_position(bytes))
        .await;
    bar.finish_and_clear();
    result.map_err(|e| {
        // Don't leave a partial file that looks like the real one.
        let _ = std::fs::remove_file(path);
        Failure::from(e)
    })
}

/// The resource's file name, in the current directory; refused if that file exists.
fn default_path(info: &Value, id: &str) -> Result<PathBuf, Failure> {
    let name = info["file"]["file_name"].as_str().unwrap_or_default();
    // Only a plain name: never a path out of the current directory.
    let plain = Path::new(name)
        .file_name()
        .filter(|n| n.len() == name.len() && name != "." && name != "..")
        .map(PathBuf::from);
    let path = plain.unwrap_or_else(|| PathBuf::from(id));
    if path.exists() {
        return Err(Failure::new(
            LOCAL_IO,
            format!("{} exists: give LOCAL to write it anyway", path.display()),
        ));
    }
    Ok(path)
}

/// A bar with bytes, throughput and time left; hidden with `--json` and when stderr is not
/// a terminal.
fn progress_bar(cx: &Context, total: Option<u64>, what: &'static str) -> ProgressBar {
    if cx.out.json {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::new(total),
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{msg} {spinner} {bytes} {binary_bytes_per_sec}",
        ),
    };
    let style = ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// `12.3 MB in 1.2 s (10.2 MB/s)`.
fn summary(moved: Transferred, took: Duration) -> String {
    let mb = moved.bytes as f64 / 1e6;
    let secs = took.as_secs_f64();
    let rate = if secs > 0.0 { mb / secs } else { 0.0 };
    format!(
        "{} bytes ({mb:.1} MB) in {secs:.1} s ({rate:.1} MB/s)",
        moved.bytes
    )
}
