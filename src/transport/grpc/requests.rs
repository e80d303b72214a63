//! A gRPC call's request side: what the caller's handle sends, and the body stream tonic
//! reads it from.
//!
//! Most calls send one request (unary calls, subscriptions) and many stay open for long, so
//! a call's queue is made only when a second request is sent: until then the first one waits
//! in a slot. A tokio channel allocates a block of slots when made (about 1.5 KB with its
//! shared state), which every idle subscription would otherwise hold.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use crate::{Error, ErrorKind, Result};

/// The requests a call may have queued for the wire before [`RequestSender::send`] waits.
pub(super) const REQUEST_QUEUE: usize = 16;

/// A call's request side, made with its first request (if any).
///
/// `end_after_first` ends the client side once that request has gone.
pub(super) fn requests(first: Option<Bytes>, end_after_first: bool) -> (RequestSender, Requests) {
    let pending = Arc::new(Mutex::new(Pending {
        first,
        queue: None,
        ended: end_after_first,
        waker: None,
        taken: false,
    }));
    let state = if end_after_first {
        SenderState::Ended
    } else {
        SenderState::Slot
    };
    let sender = RequestSender {
        state: Mutex::new(state),
        pending: Some(Arc::downgrade(&pending)),
    };
    (sender, Requests(pending))
}

/// The caller's side: sends requests and ends the client side. Dropping it ends the client
/// side too.
pub(super) struct RequestSender {
    state: Mutex<SenderState>,
    /// What the body reads, for a sender made by [`requests`]. Weak: once the call has ended
    /// and its body is gone, so is the queue's receiver, and sending fails.
    pending: Option<Weak<Mutex<Pending>>>,
}

enum SenderState {
    /// No queue yet: the next request makes one.
    Slot,
    /// Requests go through this queue.
    Queue(mpsc::Sender<Bytes>),
    /// The client side has ended.
    Ended,
}

impl RequestSender {
    /// A sender over a queue made elsewhere; `None` is an ended client side.
    pub(super) fn over(queue: Option<mpsc::Sender<Bytes>>) -> RequestSender {
        RequestSender {
            state: Mutex::new(queue.map_or(SenderState::Ended, SenderState::Queue)),
            pending: None,
        }
    }

    /// Queues a request; waits while the call's queue is full. Fails once the call has ended.
    pub(super) async fn send(&self, bytes: Bytes) -> Result<()> {
        self.queue()?.send(bytes).await.map_err(|_| call_ended())
    }

    /// The queue, made now if this is the first request sent after the call opened.
    pub(super) fn queue(&self) -> Result<mpsc::Sender<Bytes>> {
        let mut state = lock(&self.state);
        match &*state {
            SenderState::Queue(queue) => Ok(queue.clone()),
            SenderState::Ended => Err(Error::new(
                ErrorKind::Closed,
                "the client side of this call has ended",
            )),
            SenderState::Slot => {
                let pending = self
                    .pending
                    .as_ref()
                    .and_then(Weak::upgrade)
                    .ok_or_else(call_ended)?;
                let (queue, receiver) = mpsc::channel(REQUEST_QUEUE);
                let mut pending = lock(&pending);
                pending.queue = Some(receiver);
                pending.wake();
                *state = SenderState::Queue(queue.clone());
                Ok(queue)
            }
        }
    }

    /// Ends the client side: the body finishes once what is queued has gone out.
    pub(super) fn end(&self) {
        let ended = std::mem::replace(&mut *lock(&self.state), SenderState::Ended);
        let pending = self.pending.as_ref().and_then(Weak::upgrade);
        if let (SenderState::Slot, Some(pending)) = (ended, pending) {
            let mut pending = lock(&pending);
            pending.ended = true;
            pending.wake();
        }
    }
}

impl Drop for RequestSender {
    fn drop(&mut self) {
        self.end();
    }
}

/// The body's side, shared by the attempts at sending the call, so that one the connection
/// turned away before sending anything leaves every request for the next.
#[derive(Clone)]
pub(super) struct Requests(Arc<Mutex<Pending>>);

struct Pending {
    /// The request the call opened with, until it is taken for the wire.
    first: Option<Bytes>,
    /// The queue, once a second request was sent.
    queue: Option<mpsc::Receiver<Bytes>>,
    /// The client side ended before a queue was made.
    ended: bool,
    /// The body waiting for a queue or an end.
    waker: Option<Waker>,
    /// A request has been taken for the wire.
    taken: bool,
}

impl Pending {
    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(first) = self.first.take() {
            self.taken = true;
            return Poll::Ready(Some(first));
        }
        match &mut self.queue {
            Some(queue) => {
                let polled = queue.poll_recv(cx);
                if let Poll::Ready(Some(_)) = polled {
                    self.taken = true;
                }
                polled
            }
            None if self.ended => Poll::Ready(None),
            None => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Requests {
    /// The body of one attempt.
    pub(super) fn stream(&self) -> impl Stream<Item = Bytes> + Send + 'static {
        let shared = self.0.clone();
        futures_util::stream::poll_fn(move |cx| lock(&shared).poll_next(cx))
    }

    /// No request has been taken for the wire yet.
    pub(super) fn untouched(&self) -> bool {
        !lock(&self.0).taken
    }
}

fn call_ended() -> Error {
    Error::new(ErrorKind::Closed, "the call has ended")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use futures_util::{FutureExt as _, StreamExt as _};

    use super::*;

    fn bytes(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[tokio::test]
    async fn the_first_request_goes_then_the_queued_ones_then_the_end() {
        let (sender, requests) = requests(Some(bytes("one")), false);
        let mut body = Box::pin(requests.stream());
        assert!(requests.untouched());
        assert_eq!(body.next().await, Some(bytes("one")));
        assert!(!requests.untouched());
        sender.send(bytes("two")).await.unwrap();
        sender.send(bytes("three")).await.unwrap();
        sender.end();
        assert_eq!(body.next().await, Some(bytes("two")));
        assert_eq!(body.next().await, Some(bytes("three")));
        assert_eq!(body.next().await, None);
        assert!(sender.send(bytes("four")).await.is_err());
    }

    #[tokio::test]
    async fn a_body_waiting_for_a_second_request_wakes_when_one_is_sent() {
        let (sender, requests) = requests(None, false);
        let body = tokio::spawn(requests.stream().collect::<Vec<_>>());
        tokio::task::yield_now().await;
        sender.send(bytes("late")).await.unwrap();
        drop(sender);
        let body = tokio::time::timeout(std::time::Duration::from_secs(10), body).await;
        assert_eq!(
            body.expect("the body was never woken").unwrap(),
            vec![bytes("late")]
        );
    }

    #[tokio::test]
    async fn ending_or_dropping_the_sender_with_no_queue_ends_the_body() {
        for end in [true, false] {
            let (sender, requests) = requests(Some(bytes("only")), false);
            let body = tokio::spawn(requests.stream().collect::<Vec<_>>());
            tokio::task::yield_now().await;
            if end {
                sender.end();
            } else {
                drop(sender);
            }
            let body = tokio::time::timeout(std::time::Duration::from_secs(10), body).await;
            assert_eq!(
                body.expect("the body was never ended").unwrap(),
                vec![bytes("only")]
            );
        }
    }

    #[tokio::test]
    async fn a_call_that_ends_after_its_first_request_sends_it_and_ends() {
        let (sender, requests) = requests(Some(bytes("only")), true);
        let body: Vec<_> = requests.stream().collect().await;
        assert_eq!(body, vec![bytes("only")]);
        assert!(sender.send(bytes("more")).await.is_err());
    }

    #[tokio::test]
    async fn an_attempt_turned_away_untouched_leaves_the_first_request_for_the_next() {
        let (_sender, requests) = requests(Some(bytes("one")), true);
        drop(requests.stream());
        assert!(requests.untouched());
        let body: Vec<_> = requests.stream().collect().await;
        assert_eq!(body, vec![bytes("one")]);
    }

    #[tokio::test]
    async fn sending_fails_once_the_body_is_gone() {
        // With no queue made yet, and with one.
        for queued in [false, true] {
            let (sender, requests) = requests(Some(bytes("one")), false);
            if queued {
                sender.send(bytes("two")).await.unwrap();
            }
            drop(requests);
            let error = sender.send(bytes("late")).await.unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Closed, "{error}");
        }
    }

    #[tokio::test]
    async fn a_full_queue_holds_the_sender_back() {
        let (sender, requests) = requests(None, false);
        for _ in 0..REQUEST_QUEUE {
            sender.send(bytes("x")).await.unwrap();
        }
        let more = sender.send(bytes("y"));
        tokio::pin!(more);
        assert!(more.as_mut().now_or_never().is_none());
        let mut body = Box::pin(requests.stream());
        assert_eq!(body.next().await, Some(bytes("x")));
        more.await.unwrap();
    }
}
