//! One direction of a proxied connection: a reader that stamps each chunk with when it is
//! due, a bounded queue, and a writer that waits for the due time, for the end of a pause and
//! for the bandwidth cap before it writes.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Bytes read at once.
pub const CHUNK: usize = 16 * 1024;
/// Chunks queued per direction: at most this many × [`CHUNK`] bytes are held, then the
/// proxy stops reading and TCP flow control holds the sender.
pub const QUEUE: usize = 16;

/// The faults one direction watches.
pub struct Faults {
    pub latency: watch::Receiver<Duration>,
    pub throttle: watch::Receiver<Option<u64>>,
    pub paused: watch::Receiver<bool>,
}

/// Copies `from` to `to` under `faults` until `from` ends (then `to` is shut down, passing
/// the half-close on) or either fails.
pub async fn forward(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    faults: &Faults,
) {
    let (queue, mut due) = mpsc::channel::<(Instant, Bytes)>(QUEUE);
    let latency = faults.latency.clone();
    let read = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let at = Instant::now() + *latency.borrow();
                    let chunk = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                    if queue.send((at, chunk)).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let mut paused = faults.paused.clone();
    let throttle = faults.throttle.clone();
    let write = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if paused.wait_for(|p| !*p).await.is_err() {
                return;
            }
            if write_capped(&mut to, &chunk, &throttle).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::pin!(write);
    tokio::select! {
        // The reader is done: what it queued is still written, then the half-close.
        () = read => (&mut write).await,
        // The writer failed (or finished): nothing more can go this way.
        () = &mut write => {}
    }
}

/// Writes `chunk`; under a cap, in pieces of about a twentieth of a second each, each
/// written once its time has passed.
async fn write_capped(
    to: &mut (impl AsyncWrite + Unpin),
    chunk: &[u8],
    throttle: &watch::Receiver<Option<u64>>,
) -> std::io::Result<()> {
    let mut rest = chunk;
    while !rest.is_empty() {
        let cap = *throttle.borrow();
        let take = match cap {
            None => rest.len(),
            Some(rate) => {
                let piece = usize::try_from(rate / 20).unwrap_or(CHUNK).clamp(1, CHUNK);
                rest.len().min(piece)
            }
        };
        let (piece, after) = rest.split_at(take);
        // The piece's time is spent before it goes: `n` bytes never arrive sooner than
        // `n / rate` seconds after they were due.
        if let Some(rate) = cap {
            let secs = piece.len() as f64 / rate.max(1) as f64;
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        }
        to.write_all(piece).await?;
        to.flush().await?;
        rest = after;
    }
    Ok(())
}
