//! [`VoltClient::upload_file_from`] and [`VoltClient::download_file_to`]: a file's content
//! streamed from any [`AsyncRead`] to the Volt, and from the Volt to any [`AsyncWrite`],
//! block by block (never the whole file in memory), with a progress callback.

use base64::Engine as _;
use futures_util::{FutureExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::{Call, CallEvent, VoltClient};
use crate::{Error, ErrorKind, Result, Status};

const UPLOAD: &str = "/tdx.volt_api.volt.v1.FileAPI/UploadFile";
const DOWNLOAD: &str = "/tdx.volt_api.volt.v1.FileAPI/DownloadFile";

/// The size of the blocks [`VoltClient::upload_file_from`] sends (the last may be shorter).
pub const UPLOAD_BLOCK_BYTES: usize = 64 * 1024;

/// Once the Volt has acknowledged blocks during an upload, at most this many blocks are sent
/// ahead of its latest `ack`.
pub const UPLOAD_WINDOW_BLOCKS: u64 = 64;

/// What a finished transfer moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transferred {
    /// Bytes moved.
    pub bytes: u64,
    /// Blocks moved.
    pub blocks: u64,
}

impl VoltClient {
    /// Replaces the content of file resource `resource_id` with everything `reader` gives,
    /// sent with `FileAPI/UploadFile` in blocks of [`UPLOAD_BLOCK_BYTES`]. `progress` is
    /// called with the bytes sent so far after each block.
    ///
    /// Flow control: the Volt's responses during the upload are obeyed. A response with
    /// `back_off` set stops the sending until one without it arrives; once the Volt has sent
    /// an `ack` (blocks received so far), at most [`UPLOAD_WINDOW_BLOCKS`] blocks go out
    /// ahead of the latest one. A Volt that answers only at the end (as volt-emulator does)
    /// is held back by the transport's own flow control. Each wait for the Volt is bounded by
    /// the request timeout. The upload fails if the Volt reports an error, or acknowledges
    /// fewer blocks at the end than were sent.
    ///
    /// ```no_run
    /// # async fn demo(client: tdx_volt::VoltClient, file_id: &str) -> tdx_volt::Result<()> {
    /// let file = tokio::fs::File::open("report.pdf").await.expect("readable");
    /// let sent = client
    ///     .upload_file_from(file_id, file, |bytes| eprintln!("{bytes} bytes sent"))
    ///     .await?;
    /// println!("{} bytes in {} blocks", sent.bytes, sent.blocks);
    /// # Ok(()) }
    /// ```
    pub async fn upload_file_from<R>(
        &self,
        resource_id: &str,
        mut reader: R,
        mut progress: impl FnMut(u64),
    ) -> Result<Transferred>
    where
        R: AsyncRead + Unpin,
    {
        let start = json!({"start": {"resource_id": resource_id}});
        let mut call = self.streaming(UPLOAD, Some(start)).await?;
        let mut pacing = Pacing::default();
        let mut sent = Transferred {
            bytes: 0,
            blocks: 0,
        };
        let mut block = vec![0u8; UPLOAD_BLOCK_BYTES];
        loop {
            // Whatever the Volt said meanwhile, without waiting for it.
            while !pacing.ended {
                match call.next().now_or_never() {
                    Some(event) => pacing.hear(event)?,
                    None => break,
                }
            }
            if pacing.ended {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!("{UPLOAD}: the Volt ended the upload before it was sent"),
                ));
            }
            while pacing.must_wait(sent.blocks) {
                let event = self.next_event(&mut call).await?;
                pacing.hear(Some(event))?;
            }
            let filled = fill(&mut reader, &mut block).await?;
            if filled == 0 {
                break;
            }
            let encoded = base64::engine::general_purpose::STANDARD.encode(&block[..filled]);
            if let Err(refused) = call.send(json!({ "block": encoded })).await {
                return Err(self.why_ended(&mut call, &mut pacing, refused).await);
            }
            sent.bytes += filled as u64;
            sent.blocks += 1;
            progress(sent.bytes);
        }
        if let Err(refused) = call.end().await {
            return Err(self.why_ended(&mut call, &mut pacing, refused).await);
        }
        while !pacing.ended {
            let event = self.next_event(&mut call).await?;
            pacing.hear(Some(event))?;
        }
        match pacing.acked {
            Some(acked) if acked < sent.blocks => Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "{UPLOAD}: the Volt acknowledged {acked} of {} blocks",
                    sent.blocks
                ),
            )),
            _ => Ok(sent),
        }
    }

    /// Writes the content of file resource `resource_id` to `writer` as `FileAPI/DownloadFile`
    /// streams it, block by block, then flushes it. `progress` is called with the bytes
    /// written so far after each block. Returns what was written; fails with the Volt's error
    /// (an unknown file is a status error), and each wait for the next block is bounded by the
    /// request timeout.
    ///
    /// ```no_run
    /// # async fn demo(client: tdx_volt::VoltClient, file_id: &str) -> tdx_volt::Result<()> {
    /// let file = tokio::fs::File::create("copy.pdf").await.expect("writable");
    /// client.download_file_to(file_id, file, |_| {}).await?;
    /// # Ok(()) }
    /// ```
    pub async fn download_file_to<W>(
        &self,
        resource_id: &str,
        mut writer: W,
        mut progress: impl FnMut(u64),
    ) -> Result<Transferred>
    where
        W: AsyncWrite + Unpin,
    {
        let request = json!({ "resource_id": resource_id });
        let mut call = self.streaming(DOWNLOAD, Some(request)).await?;
        let mut got = Transferred {
            bytes: 0,
            blocks: 0,
        };
        loop {
            match self.next_event(&mut call).await? {
                CallEvent::Data(message) => {
                    if let Some(status) = message.get("status").and_then(Status::from_json) {
                        if status.is_error() {
                            return Err(Error::from_status(status));
                        }
                    }
                    let Some(block) = message.get("block") else {
                        continue;
                    };
                    let bytes = block
                        .as_str()
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                        .ok_or_else(|| {
                            Error::new(ErrorKind::Protocol, format!("{DOWNLOAD}: a bad block"))
                        })?;
                    writer.write_all(&bytes).await.map_err(write_error)?;
                    got.bytes += bytes.len() as u64;
                    got.blocks += 1;
                    progress(got.bytes);
                }
                CallEvent::Error(e) | CallEvent::Failed(e) => return Err(e),
                CallEvent::End => break,
            }
        }
        writer.flush().await.map_err(write_error)?;
        Ok(got)
    }

    /// The call's next event, within the request timeout; the end of its events is an error.
    /// A send refused because the call is over: the call's own ending (the Volt's status, an
    /// unknown file say) is the error, when it has one; else the refusal.
    async fn why_ended(&self, call: &mut Call, pacing: &mut Pacing, refused: Error) -> Error {
        if !refused.is_closed() {
            return refused;
        }
        while !pacing.ended {
            match self.next_event(call).await {
                Ok(event) => {
                    if let Err(e) = pacing.hear(Some(event)) {
                        return e;
                    }
                }
                Err(_) => break,
            }
        }
        refused
    }

    async fn next_event(&self, call: &mut Call) -> Result<CallEvent> {
        let timeout = self.request_timeout;
        match tokio::time::timeout(timeout, call.next()).await {
            Ok(Some(event)) => Ok(event),
            Ok(None) => Err(Error::new(
                ErrorKind::Closed,
                format!("{}: the call is over", call.path()),
            )),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("{}: nothing from the Volt within {timeout:?}", call.path()),
            )),
        }
    }
}

/// What the Volt said so far during an upload.
#[derive(Debug, Default)]
struct Pacing {
    /// Blocks the Volt said it received, once it said so.
    acked: Option<u64>,
    /// The Volt asked to wait.
    backing_off: bool,
    /// The call has ended.
    ended: bool,
}

impl Pacing {
    fn hear(&mut self, event: Option<CallEvent>) -> Result<()> {
        match event {
            Some(CallEvent::Data(response)) => {
                if let Some(ack) = response.get("ack").and_then(number) {
                    self.acked = Some(ack);
                }
                self.backing_off = response
                    .get("back_off")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                Ok(())
            }
            Some(CallEvent::Error(e) | CallEvent::Failed(e)) => Err(e),
            Some(CallEvent::End) | None => {
                self.ended = true;
                Ok(())
            }
        }
    }

    /// Whether to wait for the Volt before sending block `sent + 1`.
    fn must_wait(&self, sent: u64) -> bool {
        if self.ended {
            return false;
        }
        self.backing_off
            || self
                .acked
                .is_some_and(|acked| sent.saturating_sub(acked) >= UPLOAD_WINDOW_BLOCKS)
    }
}

/// A JSON number, or a number in a string (64-bit integers in proto3 JSON).
fn number(value: &Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

/// Reads into `block` until it is full or the reader ends; returns how much was read.
async fn fill<R: AsyncRead + Unpin>(reader: &mut R, block: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < block.len() {
        let n = reader
            .read(&mut block[filled..])
            .await
            .map_err(|e| Error::new(ErrorKind::Io, "reading the upload").with_source(e))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

fn write_error(e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, "writing the download").with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_and_the_ack_window_hold_sending() {
        let mut pacing = Pacing::default();
        // A Volt that never acknowledges mid-upload does not hold sending back.
        assert!(!pacing.must_wait(10_000));
        pacing
            .hear(Some(CallEvent::Data(json!({"back_off": true}))))
            .unwrap();
        assert!(pacing.must_wait(0));
        pacing
            .hear(Some(CallEvent::Data(json!({"ack": 10}))))
            .unwrap();
        assert!(!pacing.must_wait(10 + UPLOAD_WINDOW_BLOCKS - 1));
        assert!(pacing.must_wait(10 + UPLOAD_WINDOW_BLOCKS));
        pacing
            .hear(Some(CallEvent::Data(json!({"ack": "100"}))))
            .unwrap();
        assert!(!pacing.must_wait(100 + UPLOAD_WINDOW_BLOCKS - 1));
        let error = Error::from_status(Status::new(5, "no such file", ""));
        assert!(pacing.hear(Some(CallEvent::Error(error))).is_err());
        pacing.hear(Some(CallEvent::End)).unwrap();
        assert!(pacing.ended && !pacing.must_wait(u64::MAX));
    }
}
