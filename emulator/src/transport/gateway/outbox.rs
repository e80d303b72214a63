//! The frames on their way to a socket, written while the socket's task goes on reading.
//!
//! A large frame can take a while to go out (the client reads it as fast as it can, but it is
//! sending too). If the socket's task waited for each write, it would read nothing meanwhile,
//! and a client writing to it would wait in turn: both sides would take turns instead of
//! moving together. So frames wait here, in order, and are written by one branch of the
//! task's loop while the others read.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::ready;

use futures_util::stream::SplitSink;
use futures_util::SinkExt as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::super::outgoing::{Progress, Queued};

/// Calls' frames the outbox holds before the socket's task takes no more from the calls until
/// some are written (they wait in the connection's capped queue meanwhile).
const OUTBOX_FRAMES: usize = 64;
/// The socket task's own answers the outbox holds before it stops reading the client until
/// some are written.
const OUTBOX_REPLIES: usize = 64;

/// What waits to be written, in order.
#[derive(Default)]
pub(super) struct Outbox {
    frames: VecDeque<Out>,
    /// How many of `frames` are replies.
    replies: usize,
    /// A frame has gone into the sink and has not been flushed since: the outbox needs a
    /// flush though it holds nothing.
    unflushed: bool,
}

enum Out {
    /// An answer of the socket's own task (a key exchange, an error).
    Reply(Message),
    /// A call's frame, holding its share of the connection's cap until it is written.
    Call(Queued),
}

impl Outbox {
    /// Whether the task may take another call's frame.
    pub(super) fn has_room_for_calls(&self) -> bool {
        self.frames.len() - self.replies < OUTBOX_FRAMES
    }

    /// Whether the task may read the client (and answer it).
    pub(super) fn has_room_for_replies(&self) -> bool {
        self.replies < OUTBOX_REPLIES
    }

    /// Whether nothing waits, in the outbox or in the sink.
    pub(super) fn is_done(&self) -> bool {
        self.frames.is_empty() && !self.unflushed
    }

    pub(super) fn push_replies(&mut self, replies: impl IntoIterator<Item = Message>) {
        for reply in replies {
            self.frames.push_back(Out::Reply(reply));
            self.replies += 1;
        }
    }

    pub(super) fn push_call(&mut self, queued: Queued) {
        self.frames.push_back(Out::Call(queued));
    }

    /// Writes what the outbox holds and flushes it. A frame leaves the outbox only into the
    /// sink, and the outbox remembers the sink is unflushed, so this may be dropped at any
    /// await and called again. A call frame's share of the connection's cap is released as it
    /// goes into the sink.
    pub(super) async fn flush<S>(
        &mut self,
        sink: &mut SplitSink<WebSocketStream<S>, Message>,
        progress: &Progress,
    ) -> Result<(), tungstenite::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        poll_fn(|cx| {
            while !self.frames.is_empty() {
                // Each frame is flushed on its own. Written together, a call's last response
                // and its end go out in one segment, and a client that leaves Nagle's
                // algorithm on (the vendor's Rust crate) then waits out the Volt's delayed
                // ACK (40 ms) before its next frame: measured, 1 call in flight went from
                // 7 to 20 ms a call.
                ready!(sink.poll_flush_unpin(cx))?;
                ready!(sink.poll_ready_unpin(cx))?;
                match self.frames.pop_front() {
                    Some(Out::Reply(message)) => {
                        self.replies -= 1;
                        self.unflushed = true;
                        sink.start_send_unpin(message)?;
                    }
                    Some(Out::Call(queued)) => {
                        let size = queued.message.len();
                        self.unflushed = true;
                        sink.start_send_unpin(queued.message)?;
                        // The frame's share of the cap is released with `queued`'s permit.
                        progress.wrote(size);
                    }
                    None => {}
                }
            }
            ready!(sink.poll_flush_unpin(cx))?;
            self.unflushed = false;
            std::task::Poll::Ready(Ok(()))
        })
        .await
    }
}
