//! `volt wire sub ID` and `volt wire pub ID`.

use std::path::Path;

use base64::Engine as _;
use futures_util::StreamExt as _;
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _};

use super::{interrupted, Context};
use crate::args::WireCommand;
use crate::exit::{Failure, LOCAL_IO};

/// The longest chunk `volt wire pub` sends: a longer line, or a file, goes in pieces.
const MAX_CHUNK: u64 = 64 * 1024;

/// Runs a wire command.
pub async fn run(cx: &Context, action: WireCommand) -> Result<(), Failure> {
    match action {
        WireCommand::Sub { id } => subscribe(cx, &id).await,
        WireCommand::Pub { id, file } => publish(cx, &id, file.as_deref()).await,
    }
}

/// Writes each chunk to stdout as it comes (as it is; with `--json` one `{"chunk": base64}`
/// line each) until the subscription ends or Ctrl-C.
async fn subscribe(cx: &Context, id: &str) -> Result<(), Failure> {
    let client = cx.connect().await?;
    let mut chunks = client.subscribe_wire_chunks(id).await?;
    let stop = interrupted();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => {
                // Best effort: dropping the subscription ends it on the wire anyway.
                let _ = chunks.stop().await;
                return Ok(());
            }
            chunk = chunks.next() => match chunk {
                Some(Ok(bytes)) if cx.out.json => {
                    let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
                    cx.out.json_line(&json!({ "chunk": encoded }))?;
                }
                Some(Ok(bytes)) => cx.out.bytes(&bytes)?,
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
        }
    }
}

/// Publishes stdin line by line (each chunk a line with its newline), or a file in blocks.
async fn publish(cx: &Context, id: &str, file: Option<&Path>) -> Result<(), Failure> {
    let source: Box<dyn AsyncRead + Unpin + Send> = match file {
        Some(path) => Box::new(
            tokio::fs::File::open(path)
                .await
                .map_err(|e| Failure::io("opening", path, &e))?,
        ),
        None => Box::new(tokio::io::stdin()),
    };
    let mut reader = tokio::io::BufReader::new(source);
    let client = cx.connect().await?;
    let publisher = client.publish_wire_chunks(id).await?;
    let (mut chunks, mut bytes) = (0u64, 0u64);
    let mut chunk = Vec::new();
    loop {
        chunk.clear();
        let read = if file.is_some() {
            (&mut reader).take(MAX_CHUNK).read_to_end(&mut chunk).await
        } else {
            (&mut reader)
                .take(MAX_CHUNK)
                .read_until(b'\n', &mut chunk)
                .await
        };
        let n = read.map_err(|e| Failure::new(LOCAL_IO, format!("reading the input: {e}")))?;
        if n == 0 {
            break;
        }
        publisher.send(&chunk).await?;
        chunks += 1;
        bytes += n as u64;
    }
    publisher.finish().await?;
    if cx.out.json {
        cx.out
            .json_line(&json!({ "wire_id": id, "chunks": chunks, "bytes": bytes }))
    } else {
        cx.out.line(&format!(
            "published {chunks} chunks ({bytes} bytes) to {id}"
        ))
    }
}
