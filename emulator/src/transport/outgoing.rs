//! The bytes a websocket connection's calls have queued toward its client, capped.
//!
//! Every frame a call sends (responses and its end) is counted from the moment it is framed
//! until the socket has written it. A call takes its turn (one at a time per connection), frames
//! its message, and waits until the frame fits under [`OutgoingLimits::max_queued_bytes`]; so
//! what a connection holds for its client is at most that, plus the one frame waiting, plus the
//! small replies the connection task writes itself. A client that reads slowly only slows its
//! calls down. A client that reads nothing while a frame waits for room for
//! [`OutgoingLimits::stall_timeout`] is let go: the socket is closed (logged with tracing) and
//! every call on it ends, while other connections are untouched. A single frame larger than the
//! cap fails its call with `RESOURCE_EXHAUSTED`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex, MutexGuard, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::Message;

/// The default cap on bytes queued toward one websocket client: 64 MiB plus the largest frame
/// the gateway sends.
pub const DEFAULT_MAX_QUEUED_BYTES: usize =
    64 * 1024 * 1024 + tdx_volt::protocol::frame::MAX_FRAME_LEN;
/// How long, by default, a frame may wait for room while the client reads nothing.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames queued for the socket writer, whatever their size.
const OUTGOING_FRAMES: usize = 256;

/// The per-connection limits on what waits for a websocket client.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingLimits {
    /// Bytes of frames queued toward the client at most.
    pub max_queued_bytes: usize,
    /// How long a frame waits for room while the client reads nothing before the socket is
    /// closed.
    pub stall_timeout: Duration,
}

impl Default for OutgoingLimits {
    fn default() -> Self {
        OutgoingLimits {
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }
}

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NotQueued {
    /// The frame alone is larger than the cap.
    TooLarge(usize),
    /// The connection is closing (its client stalled, or it is gone).
    Closing,
}

/// A frame on its way to the socket, holding its share of the cap until written.
pub(crate) struct Queued {
    pub message: Message,
    _room: OwnedSemaphorePermit,
}

/// The calls' side of a connection's outgoing queue (cloned into each call).
#[derive(Clone)]
pub(crate) struct Outgoing {
    tx: mpsc::Sender<Queued>,
    room: Arc<Semaphore>,
    turn: Arc<Mutex<()>>,
    progress: Arc<Progress>,
    limits: OutgoingLimits,
    cap: u32,
}

/// What the writer reports: bytes written so far, and whether the client was let go.
pub(crate) struct Progress {
    written: AtomicU64,
    stalled: Notify,
}

impl Progress {
    /// Records a frame written to the socket.
    pub fn wrote(&self, bytes: usize) {
        self.written.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Resolves once a call has found the client stalled.
    pub async fn stalled(&self) {
        self.stalled.notified().await
    }
}

/// A call's turn to frame and queue one message.
pub(crate) struct Turn<'a>(#[allow(dead_code)] MutexGuard<'a, ()>);

impl Outgoing {
    /// A queue under `limits`; the receiver and [`Progress`] are the writer's.
    pub fn new(limits: OutgoingLimits) -> (Outgoing, mpsc::Receiver<Queued>, Arc<Progress>) {
        let cap = u32::try_from(limits.max_queued_bytes.clamp(1, Semaphore::MAX_PERMITS))
            .unwrap_or(u32::MAX);
        let (tx, rx) = mpsc::channel(OUTGOING_FRAMES);
        let progress = Arc::new(Progress {
            written: AtomicU64::new(0),
            stalled: Notify::new(),
        });
        let outgoing = Outgoing {
            tx,
            room: Arc::new(Semaphore::new(cap as usize)),
            turn: Arc::new(Mutex::new(())),
            progress: Arc::clone(&progress),
            limits,
            cap,
        };
        (outgoing, rx, progress)
    }

    /// Waits for this call's turn: take it before framing, so that only one framed message
    /// per connection is ever outside the count.
    pub async fn turn(&self) -> Turn<'_> {
        Turn(self.turn.lock().await)
    }

    /// Queues `message` once it fits under the cap, ending the turn.
    pub async fn send(&self, turn: Turn<'_>, message: Message) -> Result<(), NotQueued> {
        let size = message.len();
        let Some(need) = u32::try_from(size.max(1)).ok().filter(|n| *n <= self.cap) else {
            return Err(NotQueued::TooLarge(size));
        };
        loop {
            let seen = self.progress.written.load(Ordering::Relaxed);
            let room = Arc::clone(&self.room).acquire_many_owned(need);
            match tokio::time::timeout(self.limits.stall_timeout, room).await {
                Ok(Ok(room)) => {
                    drop(turn);
                    let queued = Queued {
                        message,
                        _room: room,
                    };
                    return self.tx.send(queued).await.map_err(|_| NotQueued::Closing);
                }
                Ok(Err(_)) => return Err(NotQueued::Closing),
                // The client reads, slowly: keep waiting.
                Err(_) if self.progress.written.load(Ordering::Relaxed) != seen => {}
                Err(_) => {
                    tracing::warn!(
                        "closing a websocket connection: its client read nothing for {:?} \
                         while {} bytes were queued for it (limit {})",
                        self.limits.stall_timeout,
                        self.cap as usize - self.room.available_permits(),
                        self.cap
                    );
                    self.progress.stalled.notify_one();
                    return Err(NotQueued::Closing);
                }
            }
        }
    }
}
