//! A client message for a call whose queue is full (its handler has not yet taken the
//! messages before it). The socket is not read until the handler makes room, so TCP holds the
//! client back, as HTTP/2's flow control holds back a gRPC client; a client publishing to a
//! wire as fast as it can is slowed down, not failed. A handler that takes nothing for
//! [`BACKLOG_WAIT`] fails its call instead, so that one stuck call cannot stop the socket's
//! other calls for longer than that.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tracing::debug;

use super::Connection;
use super::Protocol;
use crate::call::InboundSender;

/// How long the socket waits, unread, for a full call queue to make room.
pub(super) const BACKLOG_WAIT: Duration = Duration::from_secs(5);

/// One message waiting for room in its call's queue.
pub(super) struct Backlog {
    call_id: u64,
    /// Delivers the message once there is room (or drops it if the call has ended); `false`
    /// if [`BACKLOG_WAIT`] passed first.
    wait: Pin<Box<dyn Future<Output = bool> + Send>>,
}

impl Backlog {
    fn new(call_id: u64, queue: InboundSender, message: Bytes) -> Backlog {
        let wait = Box::pin(async move {
            match tokio::time::timeout(BACKLOG_WAIT, queue.reserve_owned()).await {
                Ok(Ok(room)) => {
                    room.send(message);
                    true
                }
                // The handler has stopped reading (its call ended): nothing to deliver.
                Ok(Err(_)) => true,
                Err(_) => false,
            }
        });
        Backlog { call_id, wait }
    }
}

/// Waits out the backlog, if there is one: its call id, and whether the message found room.
/// Cancel-safe: the wait stays in `backlog` until it is over.
pub(super) async fn settle(backlog: &mut Option<Backlog>) -> Option<(u64, bool)> {
    let waiting = backlog.as_mut()?;
    let delivered = waiting.wait.as_mut().await;
    let call_id = waiting.call_id;
    *backlog = None;
    Some((call_id, delivered))
}

impl<P: Protocol> Connection<P> {
    /// Holds `message` for `call_id` until its queue has room, with the socket unread; `false`
    /// (and nothing held) when a message is held already.
    pub(super) fn hold_back(&mut self, call_id: u64, queue: InboundSender, message: Bytes) -> bool {
        if self.backlog.is_some() {
            return false;
        }
        debug!(
            call_id,
            "a call's queue is full: the socket waits for its handler"
        );
        self.backlog = Some(Backlog::new(call_id, queue, message));
        true
    }

    /// The end of a backlog: a call whose handler took nothing for [`BACKLOG_WAIT`] fails.
    pub(super) fn backlog_settled(&mut self, call_id: u64, delivered: bool) {
        if !delivered && self.is_open(call_id) {
            self.fail_call(call_id, NOT_KEEPING_UP);
        }
    }
}

/// Why a call whose handler stopped taking its messages failed.
pub(super) const NOT_KEEPING_UP: &str =
    "too many requests waiting for this call (the handler is not keeping up)";

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio::sync::mpsc;

    use super::{settle, Backlog, BACKLOG_WAIT};

    #[tokio::test(start_paused = true)]
    async fn a_held_message_goes_in_once_the_handler_makes_room_and_in_order() {
        let (queue, mut handler) = mpsc::channel(1);
        queue.try_send(Bytes::from_static(b"first")).unwrap();
        let mut backlog = Some(Backlog::new(7, queue, Bytes::from_static(b"second")));
        // No room yet: the wait goes on, and survives being cancelled.
        let early = tokio::time::timeout(BACKLOG_WAIT / 2, settle(&mut backlog)).await;
        assert!(early.is_err() && backlog.is_some());
        assert_eq!(handler.recv().await.as_deref(), Some(&b"first"[..]));
        assert_eq!(settle(&mut backlog).await, Some((7, true)));
        assert!(backlog.is_none());
        assert_eq!(handler.recv().await.as_deref(), Some(&b"second"[..]));
        assert_eq!(settle(&mut backlog).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_that_takes_nothing_fails_after_the_wait() {
        let (queue, _handler) = mpsc::channel(1);
        queue.try_send(Bytes::from_static(b"first")).unwrap();
        let mut backlog = Some(Backlog::new(7, queue, Bytes::from_static(b"second")));
        let started = tokio::time::Instant::now();
        assert_eq!(settle(&mut backlog).await, Some((7, false)));
        assert_eq!(started.elapsed(), BACKLOG_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_ends_meanwhile_settles_the_backlog_at_once() {
        let (queue, handler) = mpsc::channel(1);
        queue.try_send(Bytes::from_static(b"first")).unwrap();
        let mut backlog = Some(Backlog::new(7, queue, Bytes::from_static(b"second")));
        drop(handler);
        let started = tokio::time::Instant::now();
        assert_eq!(settle(&mut backlog).await, Some((7, true)));
        assert_eq!(started.elapsed(), std::time::Duration::ZERO);
    }
}
