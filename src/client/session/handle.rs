//! The application's side of a session: [`Session`] (the handle) and [`SessionEvents`] (its
//! events).

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::{mpsc, oneshot, watch};

use super::event::SessionEvent;
use super::state::SessionState;
use super::task::Command;

/// A live Connect session with the Volt. Made by
/// [`VoltClient::session`](crate::VoltClient::session).
///
/// Cheap to clone (`Arc` inside), `Send + Sync`. One task owns the session; it stops (ending
/// the Connect call) on [`close`](Session::close), or once every clone of the handle and the
/// [`SessionEvents`] stream are dropped.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<SessionState>,
    /// The events, until someone takes them.
    events: Mutex<Option<mpsc::Receiver<SessionEvent>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("state", &*self.inner.state.borrow())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(super) fn new(
        commands: mpsc::Sender<Command>,
        state: watch::Receiver<SessionState>,
        events: mpsc::Receiver<SessionEvent>,
    ) -> Session {
        Session {
            inner: Arc::new(Inner {
                commands,
                state,
                events: Mutex::new(Some(events)),
            }),
        }
    }

    /// The session's state now and as it changes.
    pub fn state(&self) -> watch::Receiver<SessionState> {
        self.inner.state.clone()
    }

    /// The id of the live connection, if the session is connected.
    pub fn connection_id(&self) -> Option<String> {
        match &*self.inner.state.borrow() {
            SessionState::Connected { connection_id } => Some(connection_id.clone()),
            _ => None,
        }
    }

    /// The session's events, in order. A session has one events stream: the first call takes
    /// it, later calls (on any clone) return `None`. Events that arrive before it is taken
    /// wait in the buffer (see [`SessionOptions::event_buffer`](super::SessionOptions::event_buffer)).
    /// The stream keeps the session alive, and ends once the session is
    /// [`Closed`](SessionState::Closed).
    pub fn events(&self) -> Option<SessionEvents> {
        let events = self
            .inner
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        Some(SessionEvents {
            events,
            _session: self.clone(),
        })
    }

    /// Sends `message` (a whole `ConnectRequest`) on the live Connect call; fails while the
    /// session is reconnecting or closed.
    pub(crate) async fn send(&self, message: serde_json::Value) -> crate::Result<()> {
        let gone = || crate::Error::new(crate::ErrorKind::Closed, "the session is closed");
        let (reply, answer) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Send { message, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Ends the session: says goodbye, waits for the Volt's goodbye (at most
    /// [`close_wait`](super::SessionOptions::close_wait)), and ends the call. The state is
    /// [`Closed`](SessionState::Closed) when it returns. Harmless on a session already over.
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::Close(reply))
            .await
            .is_ok()
        {
            // An error here is the task already gone, which is what is awaited.
            let _ = done.await;
        }
        let mut state = self.inner.state.clone();
        let _ = state.wait_for(|s| *s == SessionState::Closed).await;
    }
}

/// The events of a [`Session`]: a [`Stream`] of [`SessionEvent`]s, over once the session is
/// closed. Taken once with [`Session::events`]; it keeps the session alive while held.
pub struct SessionEvents {
    events: mpsc::Receiver<SessionEvent>,
    _session: Session,
}

impl std::fmt::Debug for SessionEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionEvents")
            .field("unread", &self.events.len())
            .finish_non_exhaustive()
    }
}

impl Stream for SessionEvents {
    type Item = SessionEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SessionEvent>> {
        self.events.poll_recv(cx)
    }
}
