//! Reconnecting: the policy (capped exponential backoff with jitter, from `backon`), the
//! connection's state as callers watch it, and the bookkeeping both transports share.
//!
//! Each transport has one owner that makes connections (the websocket task; tonic's channel
//! worker, which calls our connector one connection at a time), so there is one attempt at a
//! time however many callers wait. The [`Supervisor`] tells that owner when the next attempt
//! may start, records how it went, and publishes the state.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder};
use tokio::sync::watch;

use super::trace::ConnectAttempt;
use crate::{Error, ErrorKind, Result};

/// The first delay between reconnection attempts, by default.
pub const DEFAULT_RECONNECT_INITIAL: Duration = Duration::from_millis(250);
/// The longest delay between reconnection attempts, by default (before jitter).
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(30);
/// How much each delay grows on the one before, by default.
pub const DEFAULT_RECONNECT_FACTOR: f32 = 2.0;

/// When and how often to connect again after the connection is lost or an attempt fails.
///
/// The default is capped exponential backoff with jitter: once the connection is lost the
/// next call (or session) tries again at once; after the `n`th failed attempt in a row the
/// wait is `d = min(initial × factor^(n-1), max)`, and jitter adds up to as much again, so
/// each wait lies in `[d, 2d)`. It never gives up unless
/// [`with_max_attempts`](Self::with_max_attempts) says so. [`never`](Self::never) turns
/// reconnecting off: once the connection is lost every call fails with
/// [`ErrorKind::Closed`].
///
/// ```
/// use std::time::Duration;
/// use tdx_volt::ReconnectPolicy;
///
/// let policy = ReconnectPolicy::default()
///     .with_initial_delay(Duration::from_millis(100))
///     .with_max_delay(Duration::from_secs(5))
///     .with_max_attempts(20);
/// assert!(policy.is_enabled());
/// assert!(!ReconnectPolicy::never().is_enabled());
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct ReconnectPolicy {
    enabled: bool,
    initial: Duration,
    max: Duration,
    factor: f32,
    jitter: bool,
    max_attempts: Option<usize>,
}

impl Default for ReconnectPolicy {
    fn default() -> ReconnectPolicy {
        ReconnectPolicy {
            enabled: true,
            initial: DEFAULT_RECONNECT_INITIAL,
            max: DEFAULT_RECONNECT_MAX,
            factor: DEFAULT_RECONNECT_FACTOR,
            jitter: true,
            max_attempts: None,
        }
    }
}

impl ReconnectPolicy {
    /// Never connect again once the connection is lost.
    pub fn never() -> ReconnectPolicy {
        ReconnectPolicy {
            enabled: false,
            ..ReconnectPolicy::default()
        }
    }

    /// The first wait after a failed attempt ([`DEFAULT_RECONNECT_INITIAL`] by default).
    pub fn with_initial_delay(mut self, delay: Duration) -> ReconnectPolicy {
        self.initial = delay;
        self
    }

    /// The cap on each wait before jitter ([`DEFAULT_RECONNECT_MAX`] by default).
    pub fn with_max_delay(mut self, delay: Duration) -> ReconnectPolicy {
        self.max = delay;
        self
    }

    /// How much each wait grows ([`DEFAULT_RECONNECT_FACTOR`] by default; at least 1).
    pub fn with_factor(mut self, factor: f32) -> ReconnectPolicy {
        self.factor = if factor.is_finite() {
            factor.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// Waits exactly as computed, without jitter (for tests that time the attempts).
    pub fn without_jitter(mut self) -> ReconnectPolicy {
        self.jitter = false;
        self
    }

    /// Gives up after this many failed attempts in a row: the connection is then closed for
    /// good, and calls fail with [`ErrorKind::Closed`].
    pub fn with_max_attempts(mut self, attempts: usize) -> ReconnectPolicy {
        self.max_attempts = Some(attempts);
        self
    }

    /// Whether the client connects again at all.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The waits after each failed attempt in a row, as this policy spaces them (endless
    /// unless [`with_max_attempts`](Self::with_max_attempts) caps them; empty when
    /// reconnecting is off). For whoever reconnects on its own schedule (a session).
    pub(crate) fn delays(&self) -> impl Iterator<Item = Duration> + Send + 'static {
        let cap = match (self.enabled, self.max_attempts) {
            (false, _) => 0,
            (true, Some(max)) => max,
            (true, None) => usize::MAX,
        };
        self.backoff().take(cap)
    }

    fn backoff(&self) -> ExponentialBackoff {
        let mut builder = ExponentialBuilder::new()
            .with_min_delay(self.initial)
            .with_max_delay(self.max.max(self.initial))
            .with_factor(self.factor)
            .without_max_times();
        if self.jitter {
            builder = builder.with_jitter();
        }
        builder.build()
    }
}

/// Where the connection to the Volt stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// An attempt to connect is under way.
    Connecting,
    /// Connected: calls go straight out.
    Connected,
    /// The connection was lost; the next call (or session) connects again.
    Disconnected,
    /// The last attempt failed; the next may start at `until`.
    BackingOff {
        /// When the next attempt may start.
        until: Instant,
        /// Failed attempts in a row so far.
        failures: u32,
    },
    /// No more connections: reconnecting is off, or the policy gave up.
    Closed,
}

/// The shared bookkeeping of one client's connection: attempts, backoff, and the state.
#[derive(Debug)]
pub(crate) struct Supervisor {
    policy: ReconnectPolicy,
    /// Whether calls wait through failed attempts (else the one that fails fails them).
    wait: bool,
    state: watch::Sender<ConnectionState>,
    attempts: Mutex<Attempts>,
}

#[derive(Debug, Default)]
struct Attempts {
    /// The delays still to come in this run of failures (`None`: no failure yet).
    backoff: Option<ExponentialBackoff>,
    /// When the next attempt may start.
    not_before: Option<Instant>,
    failures: u32,
    /// Whether a connection was ever made (reconnecting is what the policy governs).
    connected_once: bool,
    /// The number of the live connection (each one made gets the next).
    generation: u64,
    closed: Option<String>,
}

impl Supervisor {
    pub(crate) fn new(policy: ReconnectPolicy, wait_for_connection: bool) -> Supervisor {
        Supervisor {
            policy,
            wait: wait_for_connection,
            state: watch::Sender::new(ConnectionState::Connecting),
            attempts: Mutex::new(Attempts::default()),
        }
    }

    fn attempts(&self) -> MutexGuard<'_, Attempts> {
        // Plain numbers and instants: a poisoned lock still holds whole values.
        self.attempts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The policy it follows.
    pub(crate) fn policy(&self) -> &ReconnectPolicy {
        &self.policy
    }

    /// The state, and its changes from now on.
    pub(crate) fn watch(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    /// Whether calls wait for the connection through failed attempts, within their own
    /// timeouts (else an attempt that fails fails the calls waiting for it, and calls made
    /// while backing off fail at once).
    pub(crate) fn waits_for_connection(&self) -> bool {
        self.wait
    }

    /// The state now.
    pub(crate) fn state(&self) -> ConnectionState {
        self.state.borrow().clone()
    }

    fn set(&self, state: ConnectionState) {
        self.state.send_if_modified(|now| {
            let changed = *now != state;
            *now = state;
            changed
        });
    }

    /// Before an attempt: when it may start (`None`: at once), or the error that ends every
    /// wait when no more attempts will be made.
    pub(crate) fn next_attempt(&self) -> Result<Option<Instant>> {
        let attempts = self.attempts();
        if let Some(why) = &attempts.closed {
            return Err(Error::new(ErrorKind::Closed, why.clone()));
        }
        Ok(attempts.not_before.filter(|at| *at > Instant::now()))
    }

    /// The number of the connection made last (0: none yet), and whether it is live: a call
    /// that saw no live connection from its start to its end never left.
    pub(crate) fn connection_seen(&self) -> (u64, bool) {
        let generation = self.attempts().generation;
        (generation, self.state() == ConnectionState::Connected)
    }

    /// An attempt is starting now.
    pub(crate) fn connecting(&self) {
        self.set(ConnectionState::Connecting);
    }

    /// The span of an attempt starting now (the state is [`Supervisor::connecting`]'s): its
    /// number in the current run of failures, and whether it reconnects.
    pub(crate) fn attempt(
        &self,
        transport: &'static str,
        address: &dyn std::fmt::Display,
    ) -> ConnectAttempt {
        let attempts = self.attempts();
        let (number, reconnect) = (attempts.failures.saturating_add(1), attempts.connected_once);
        drop(attempts);
        ConnectAttempt::start(transport, address, number, reconnect)
    }

    /// The attempt succeeded: backoff starts over. Returns the new connection's number, for
    /// [`Supervisor::lost_connection`].
    pub(crate) fn connected(&self) -> u64 {
        let mut attempts = self.attempts();
        attempts.backoff = None;
        attempts.not_before = None;
        attempts.failures = 0;
        attempts.connected_once = true;
        attempts.generation = attempts.generation.wrapping_add(1);
        let generation = attempts.generation;
        drop(attempts);
        self.set(ConnectionState::Connected);
        generation
    }

    /// The attempt failed with `error`: the next waits out the policy's next delay, or there
    /// is none (the first connection is the caller's to retry; reconnecting may be off or
    /// have given up).
    pub(crate) fn failed(&self, error: &Error) {
        let mut attempts = self.attempts();
        attempts.failures = attempts.failures.saturating_add(1);
        if !attempts.connected_once {
            // Connecting for the first time: the builder reports the error itself.
            drop(attempts);
            self.set(ConnectionState::Disconnected);
            return;
        }
        let gave_up = self
            .policy
            .max_attempts
            .is_some_and(|max| attempts.failures as usize >= max);
        let policy = &self.policy;
        let delay = attempts
            .backoff
            .get_or_insert_with(|| policy.backoff())
            .next();
        match delay {
            Some(delay) if !gave_up && policy.enabled => {
                let until = Instant::now() + delay;
                attempts.not_before = Some(until);
                let failures = attempts.failures;
                drop(attempts);
                tracing::debug!(
                    target: "tdx_volt::connect",
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    failures,
                    %error,
                    "volt connection: backing off"
                );
                self.set(ConnectionState::BackingOff { until, failures });
            }
            _ => {
                attempts.closed = Some(format!(
                    "gave up connecting to the Volt after {} failed attempts (last: {error})",
                    attempts.failures
                ));
                let failures = attempts.failures;
                drop(attempts);
                tracing::debug!(
                    target: "tdx_volt::connect",
                    failures,
                    %error,
                    "volt connection: no more attempts"
                );
                self.set(ConnectionState::Closed);
            }
        }
    }

    /// Connection number `generation` is gone: the state says so unless a newer one has been
    /// made meanwhile.
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))] // gRPC only
    pub(crate) fn lost_connection(&self, generation: u64) {
        if self.attempts().generation == generation {
            self.lost();
        }
    }

    /// The live connection was lost. With reconnecting off, that is the end.
    pub(crate) fn lost(&self) {
        if self.state() == ConnectionState::Connected {
            tracing::debug!(
                target: "tdx_volt::connect",
                reconnect = self.policy.enabled,
                "volt connection lost"
            );
        }
        if self.policy.enabled {
            self.set(ConnectionState::Disconnected);
        } else {
            self.close("the connection to the Volt was lost, and reconnecting is off");
        }
    }

    /// No more connections (the client is gone, or reconnecting is off).
    pub(crate) fn close(&self, why: &str) {
        self.attempts().closed.get_or_insert_with(|| why.to_owned());
        self.set(ConnectionState::Closed);
    }

    /// Waits until the next attempt may start (or fails when none will be made), then marks
    /// it started.
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))] // gRPC only
    pub(crate) async fn wait_turn(&self) -> Result<()> {
        if let Some(at) = self.next_attempt()? {
            tokio::time::sleep_until(at.into()).await;
            // Closed meanwhile?
            self.next_attempt()?;
        }
        self.connecting();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error() -> Error {
        Error::new(ErrorKind::Connect, "refused")
    }

    #[test]
    fn waits_grow_to_the_cap_within_the_jitter_and_reset_on_success() {
        let policy = ReconnectPolicy::default()
            .with_initial_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_millis(400));
        let supervisor = Supervisor::new(policy, true);
        supervisor.connected();
        let mut waits = Vec::new();
        for _ in 0..5 {
            let before = Instant::now();
            supervisor.failed(&error());
            let at = supervisor
                .next_attempt()
                .expect("more attempts")
                .expect("a wait");
            waits.push(at.duration_since(before));
        }
        for (wait, base) in waits.iter().zip([100, 200, 400, 400, 400]) {
            let base = Duration::from_millis(base);
            assert!(
                *wait >= base && *wait < base * 2 + Duration::from_millis(5),
                "{waits:?}"
            );
        }
        assert!(matches!(
            supervisor.state(),
            ConnectionState::BackingOff { failures: 5, .. }
        ));
        supervisor.connected();
        assert_eq!(supervisor.next_attempt().expect("open"), None);
        assert_eq!(supervisor.state(), ConnectionState::Connected);
    }

    #[test]
    fn never_and_max_attempts_close_for_good() {
        let never = Supervisor::new(ReconnectPolicy::never(), true);
        never.connected();
        never.lost();
        assert_eq!(never.state(), ConnectionState::Closed);
        assert!(never.next_attempt().unwrap_err().is_closed());

        let two = Supervisor::new(ReconnectPolicy::default().with_max_attempts(2), true);
        two.connected();
        two.failed(&error());
        assert!(two.next_attempt().is_ok());
        two.failed(&error());
        let closed = two.next_attempt().unwrap_err();
        assert!(
            closed.is_closed() && closed.to_string().contains("refused"),
            "{closed}"
        );
    }

    #[test]
    fn a_first_connection_is_not_retried_here() {
        let supervisor = Supervisor::new(ReconnectPolicy::default(), true);
        supervisor.failed(&error());
        assert_eq!(supervisor.next_attempt().expect("open"), None);
        assert_eq!(supervisor.state(), ConnectionState::Disconnected);
    }
}
