//! Connect sessions: a long-lived `VoltAPI/Connect` call that keeps the Volt in sight
//! (pings), delivers the events the hello subscribed to, and comes back by itself after the
//! connection is lost.
//!
//! - `options`: [`SessionOptions`] and the hello;
//! - `attempt`: opening Connect up to the acknowledge;
//! - `task`: the one task that owns a session (pings, events, reconnects, goodbye);
//! - `liveness`: the deadline for a ping's answer;
//! - `event`: [`SessionEvent`] and the decoding of `evt`;
//! - `handle`: [`Session`] and [`SessionEvents`];
//! - `state`: [`SessionState`].

mod attempt;
mod event;
mod handle;
mod liveness;
mod options;
mod state;
mod task;
#[cfg(test)]
mod tests;

use tokio::sync::{mpsc, watch};

pub use event::{ResourceEventKind, SessionEvent};
pub use handle::{Session, SessionEvents};
pub use options::{
    SessionOptions, DEFAULT_SESSION_CLOSE_WAIT, DEFAULT_SESSION_EVENT_BUFFER,
    DEFAULT_SESSION_PING_EVERY,
};
pub use state::SessionState;

use super::VoltClient;
use crate::Result;
use attempt::{establish, Refused};

/// Commands a session's handles may have queued for its task.
const COMMAND_QUEUE: usize = 8;

// Handles are shared across tasks and threads; the events stream moves to its reader.
const _: fn() = || {
    fn shared<T: Clone + Send + Sync + 'static>() {}
    fn movable<T: Send + Sync + Unpin + 'static>() {}
    shared::<Session>();
    movable::<SessionEvents>();
    movable::<SessionEvent>();
};

impl VoltClient {
    /// Opens a Connect session: sends the hello of `options`, waits for the Volt's
    /// acknowledge (within the client's [connect timeout](crate::VoltClientBuilder::connect_timeout)),
    /// and returns the handle of a session that one spawned task keeps alive.
    ///
    /// The task pings every [`ping_every`](SessionOptions::ping_every) and declares the Volt
    /// gone when a ping goes unanswered for the acknowledge's `ping_interval`. When the call
    /// is lost it opens a new one at once, then after each failed attempt waits as the
    /// client's [`ReconnectPolicy`](crate::ReconnectPolicy) says (passing through
    /// [`SessionState::BackingOff`]); each new session says hello again and is reported as
    /// [`SessionEvent::Reconnected`]. With [`ReconnectPolicy::never`](crate::ReconnectPolicy::never)
    /// the first loss closes it. An error ending in `session invalid` closes it with
    /// [`SessionEvent::SessionInvalid`].
    ///
    /// Fails if the first attempt does: opening the call, the acknowledge's timeout, or an
    /// error from the Volt.
    ///
    /// ```no_run
    /// use futures_util::StreamExt as _;
    /// use tdx_volt::client::{SessionEvent, SessionOptions};
    ///
    /// # async fn demo(client: tdx_volt::VoltClient) -> tdx_volt::Result<()> {
    /// let session = client
    ///     .session(SessionOptions::new().resource_events(true).auth_requests(true))
    ///     .await?;
    /// let mut events = session.events().expect("taken once");
    /// while let Some(event) = events.next().await {
    ///     match event {
    ///         SessionEvent::Resource { kind, resource } => println!("{kind}: {}", resource["id"]),
    ///         SessionEvent::Reconnected { .. } => println!("back: refetch what matters"),
    ///         other => println!("{other:?}"),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn session(&self, options: SessionOptions) -> Result<Session> {
        self.session_hosting(options, None).await
    }

    /// [`VoltClient::session`], handing every `invoke_request` the Volt sends to `host`.
    pub(crate) async fn session_hosting(
        &self,
        options: SessionOptions,
        host: Option<mpsc::Sender<serde_json::Value>>,
    ) -> Result<Session> {
        let live = match establish(self, &options).await {
            Ok(live) => live,
            Err(Refused::Failed(e) | Refused::Invalid(e)) => return Err(e),
        };
        let (state, state_rx) = watch::channel(SessionState::Connected {
            connection_id: live.connection_id.clone(),
        });
        let (events, events_rx) = mpsc::channel(options.event_buffer);
        let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let task = task::Task::new(self.clone(), options, state, events, commands_rx, host);
        tokio::spawn(task.run(live));
        Ok(Session::new(commands, state_rx, events_rx))
    }
}
