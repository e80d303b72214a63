//! The task that owns a session: it serves the live Connect call (pings, events, the Volt's
//! silence), makes new attempts when the call is lost, and closes it when told to or when
//! every handle is gone.

use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use super::attempt::{establish, session_invalid, Established, Refused};
use super::event::{decode_event, SessionEvent};
use super::liveness::Liveness;
use super::options::SessionOptions;
use super::state::SessionState;
use crate::client::{Call, CallEvent, VoltClient};
use crate::{ConnectionState, Error, ErrorKind};

/// What a handle asks of the task.
pub(crate) enum Command {
    /// Say goodbye and end; answer when done.
    Close(oneshot::Sender<()>),
    /// Send a message on the live call (a hosted service's answer); fails while there is
    /// none.
    Send {
        message: Value,
        reply: oneshot::Sender<crate::Result<()>>,
    },
}

impl Command {
    /// The reply of a `Close`; a `Send` made while no call is live fails at once (what it
    /// answered was for a call that is gone).
    fn closing(self) -> Option<oneshot::Sender<()>> {
        match self {
            Command::Close(reply) => Some(reply),
            Command::Send { reply, .. } => {
                let _ = reply.send(Err(Error::new(
                    ErrorKind::Closed,
                    "the session's Connect call is gone (reconnecting)",
                )));
                None
            }
        }
    }
}

/// Why serving (or reconnecting) stopped.
enum Ended {
    /// The call is gone, for a reason a new attempt may cure.
    Lost(Error),
    /// The Volt no longer accepts the client's session.
    Invalid(Error),
    /// Closed by a handle (with its answer), or every handle is gone (`None`).
    Stop(Option<oneshot::Sender<()>>),
}

impl From<Refused> for Ended {
    fn from(refused: Refused) -> Ended {
        match refused {
            Refused::Failed(e) => Ended::Lost(e),
            Refused::Invalid(e) => Ended::Invalid(e),
        }
    }
}

pub(super) struct Task {
    client: VoltClient,
    options: SessionOptions,
    state: watch::Sender<SessionState>,
    events: mpsc::Sender<SessionEvent>,
    /// Events dropped since the reader last had room.
    missed: u64,
    commands: mpsc::Receiver<Command>,
    /// Where invocations go, when the session hosts services.
    host: Option<mpsc::Sender<Value>>,
}

impl Task {
    pub(super) fn new(
        client: VoltClient,
        options: SessionOptions,
        state: watch::Sender<SessionState>,
        events: mpsc::Sender<SessionEvent>,
        commands: mpsc::Receiver<Command>,
        host: Option<mpsc::Sender<Value>>,
    ) -> Task {
        Task {
            client,
            options,
            state,
            events,
            missed: 0,
            commands,
            host,
        }
    }

    /// Runs the session from its first acknowledged call until it is over.
    pub(super) async fn run(mut self, mut live: Established) {
        // The session this task last connected in (renewed at most once per loss).
        let mut session = self.client.session_id();
        let reply = loop {
            let cause = match self.serve(live).await {
                Ended::Lost(cause) => cause,
                Ended::Invalid(error) => match self.renewed(&error, &session).await {
                    Some(cause) => cause,
                    None => break self.invalid(&error).await,
                },
                Ended::Stop(reply) => break reply,
            };
            tracing::debug!(%cause, "volt session lost");
            match self.reconnect(cause).await {
                Ok(fresh) => {
                    session = self.client.session_id();
                    self.emit(SessionEvent::Reconnected {
                        connection_id: fresh.connection_id.clone(),
                    });
                    live = fresh;
                }
                Err(Ended::Lost(last)) => {
                    tracing::debug!(%last, "volt session over: no more attempts");
                    break None;
                }
                Err(Ended::Invalid(error)) => break self.invalid(&error).await,
                Err(Ended::Stop(reply)) => break reply,
            }
        };
        // Closed before the events stream ends (when `self` goes), so a reader that sees the
        // end finds the state final.
        self.state.send_replace(SessionState::Closed);
        if let Some(reply) = reply {
            let _ = reply.send(());
        }
    }

    fn set(&self, state: SessionState) {
        self.state.send_if_modified(|now| {
            let changed = *now != state;
            *now = state;
            changed
        });
    }

    /// Hands an event to the reader without ever waiting for it; what does not fit is
    /// counted and reported as [`SessionEvent::Lagged`] once there is room.
    fn emit(&mut self, event: SessionEvent) {
        if self.missed > 0 {
            match self.events.try_send(SessionEvent::Lagged {
                missed: self.missed,
            }) {
                Ok(()) => self.missed = 0,
                Err(TrySendError::Full(_)) => {
                    self.missed = self.missed.saturating_add(1);
                    return;
                }
                Err(TrySendError::Closed(_)) => return,
            }
        }
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.missed = self.missed.saturating_add(1),
            // The reader is gone: nobody is listening.
            Err(TrySendError::Closed(_)) => {}
        }
    }

    /// With the client set to re-authenticate: renews the session the Volt refused (once per
    /// session this task connected in), and returns the cause to reconnect with; `None` to
    /// end the session.
    async fn renewed(&mut self, error: &Error, session: &Option<String>) -> Option<Error> {
        if self.client.session_id() != *session {
            // Renewed already (by a call, or by this task for the session it is in).
            return Some(Error::new(ErrorKind::Closed, "the session was renewed"));
        }
        match self.client.renew_session(session.as_deref()).await {
            Ok(true) => Some(Error::new(
                ErrorKind::Closed,
                format!("authenticated again after: {error}"),
            )),
            Ok(false) => None,
            Err(e) => {
                tracing::debug!(%e, "authenticating again failed");
                None
            }
        }
    }

    /// The session is invalid: the reader is told (waiting a little for room, as it is the
    /// last word), and the session ends.
    async fn invalid(&mut self, error: &Error) -> Option<oneshot::Sender<()>> {
        let message = session_invalid(error).unwrap_or_else(|| error.to_string());
        tracing::debug!(%message, "volt session invalid");
        let _ = self
            .events
            .send_timeout(
                SessionEvent::SessionInvalid { message },
                self.options.close_wait,
            )
            .await;
        None
    }

    /// Serves a live call until it is lost, the session is invalid, or the session stops.
    async fn serve(&mut self, live: Established) -> Ended {
        let Established {
            mut call,
            connection_id,
            ping_timeout,
        } = live;
        self.set(SessionState::Connected { connection_id });
        let mut liveness = Liveness::new(ping_timeout);
        let every = self.options.ping_every;
        let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let deadline = liveness.deadline();
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Send { message, reply }) => {
                        let _ = reply.send(call.send(message).await);
                    }
                    Some(Command::Close(reply)) => {
                        self.goodbye(&mut call).await;
                        return Ended::Stop(Some(reply));
                    }
                    None => return Ended::Stop(None),
                },
                _ = ticker.tick() => {
                    liveness.pinged(Instant::now());
                    // A send waits while the call's queue is full: no longer than an answer may.
                    let sent =
                        tokio::time::timeout(liveness.timeout(), call.send(json!({"ping": {}})));
                    match sent.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Refused::from_error(e).into(),
                        Err(_) => return Ended::Lost(silent(&liveness)),
                    }
                }
                () = until(deadline) => return Ended::Lost(silent(&liveness)),
                event = call.next() => match event {
                    Some(CallEvent::Data(message)) => {
                        if let Some(ended) = self.on_message(&message, &mut liveness) {
                            return ended;
                        }
                    }
                    Some(CallEvent::Error(e) | CallEvent::Failed(e)) => {
                        return Refused::from_error(e).into();
                    }
                    Some(CallEvent::End) | None => {
                        return Ended::Lost(Error::new(
                            ErrorKind::Closed,
                            "Connect: the Volt ended the call",
                        ));
                    }
                },
            }
        }
    }

    /// One message of the live call.
    fn on_message(&mut self, message: &Value, liveness: &mut Liveness) -> Option<Ended> {
        if message.get("ping").is_some() {
            liveness.answered();
        } else if let Some(evt) = message.get("evt") {
            match decode_event(evt) {
                Ok(event) => self.emit(event),
                Err(why) => tracing::debug!(?why, "volt session: an event skipped"),
            }
        } else if message.get("goodbye").is_some() {
            return Some(Ended::Lost(Error::new(
                ErrorKind::Closed,
                "Connect: the Volt said goodbye",
            )));
        } else if let (Some(request), Some(host)) = (message.get("invoke_request"), &self.host) {
            // The host's dispatcher never waits on this task, so it drains its inbox; one
            // that is full has fallen far behind, and the message is lost (its caller's
            // call then fails).
            if host.try_send(request.clone()).is_err() {
                tracing::debug!(
                    "volt session: the host's inbox is full; an invocation message dropped"
                );
            }
        } else {
            // A second acknowledge (the official client ignores it too), or an invocation
            // when nothing here hosts a service.
            tracing::debug!("volt session: a message it does not handle, skipped");
        }
        None
    }

    /// Says goodbye and waits (a bounded time) for the Volt's goodbye or the call's end.
    async fn goodbye(&self, call: &mut Call) {
        let exchange = async {
            if call.send(json!({"goodbye": {}})).await.is_err() {
                return;
            }
            let _ = call.end().await;
            while let Some(event) = call.next().await {
                match event {
                    CallEvent::Data(message) if message.get("goodbye").is_some() => return,
                    CallEvent::Data(_) => {}
                    _ => return,
                }
            }
        };
        if tokio::time::timeout(self.options.close_wait, exchange)
            .await
            .is_err()
        {
            tracing::debug!("volt session: no goodbye from the Volt in time");
        }
    }

    /// After `cause` lost the call: new attempts, spaced by the client's reconnect policy,
    /// until one is acknowledged, none is left, or the session stops.
    async fn reconnect(&mut self, cause: Error) -> Result<Established, Ended> {
        let policy = self.client.reconnect_policy().clone();
        if !policy.is_enabled() {
            return Err(Ended::Lost(cause));
        }
        let mut delays = policy.delays();
        loop {
            let failed = match self.attempt().await {
                Ok(fresh) => return Ok(fresh),
                Err(Ended::Lost(e)) => e,
                Err(other) => return Err(other),
            };
            if *self.client.connection_state().borrow() == ConnectionState::Closed {
                // The client itself will not connect again.
                return Err(Ended::Lost(failed));
            }
            let Some(delay) = delays.next() else {
                return Err(Ended::Lost(failed));
            };
            tracing::debug!(%failed, ?delay, "volt session attempt failed");
            let until = Instant::now() + delay;
            self.set(SessionState::BackingOff {
                until: until.into_std(),
            });
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                command = self.commands.recv() => match command {
                    None => return Err(Ended::Stop(None)),
                    Some(command) => if let Some(reply) = command.closing() {
                        return Err(Ended::Stop(Some(reply)));
                    },
                },
            }
        }
    }

    /// One attempt, reporting the connection's own attempts and waits meanwhile (opening
    /// Connect waits for the client to reconnect, within its request timeout).
    async fn attempt(&mut self) -> Result<Established, Ended> {
        self.set(SessionState::Connecting);
        let client = self.client.clone();
        let options = self.options.clone();
        let establishing = establish(&client, &options);
        tokio::pin!(establishing);
        let mut connection = client.connection_state();
        let mut watching = true;
        loop {
            tokio::select! {
                result = &mut establishing => return result.map_err(Ended::from),
                command = self.commands.recv() => match command {
                    None => return Err(Ended::Stop(None)),
                    Some(command) => if let Some(reply) = command.closing() {
                        return Err(Ended::Stop(Some(reply)));
                    },
                },
                changed = connection.changed(), if watching => {
                    if changed.is_err() {
                        watching = false;
                        continue;
                    }
                    let now = connection.borrow_and_update().clone();
                    match now {
                        ConnectionState::BackingOff { until, .. } => {
                            self.set(SessionState::BackingOff { until });
                        }
                        ConnectionState::Connecting => self.set(SessionState::Connecting),
                        _ => {}
                    }
                }
            }
        }
    }
}

/// The error for a Volt that left a ping unanswered.
fn silent(liveness: &Liveness) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!(
            "Connect: the Volt did not answer a ping within {:?}",
            liveness.timeout()
        ),
    )
}

/// Resolves at `deadline`, or never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
