//! Whether the Volt is still there: the deadline by which it must answer a ping.

use std::time::Duration;

use tokio::time::Instant;

/// Pings and their answers. Unlike the official client, which moves its deadline with every
/// ping it sends (so a Volt that stops answering is only noticed once the pings stop too),
/// the deadline runs from the oldest ping still unanswered.
#[derive(Debug)]
pub(super) struct Liveness {
    /// How long an answer may take (the acknowledge's `ping_interval`).
    timeout: Duration,
    /// When the Volt must have answered by (`None`: no ping is waiting).
    deadline: Option<Instant>,
}

impl Liveness {
    pub(super) fn new(timeout: Duration) -> Liveness {
        Liveness {
            timeout,
            deadline: None,
        }
    }

    /// A ping went out at `now`.
    pub(super) fn pinged(&mut self, now: Instant) {
        if self.deadline.is_none() {
            self.deadline = Some(now + self.timeout);
        }
    }

    /// The Volt answered: every ping so far is answered (pings carry nothing to match on).
    pub(super) fn answered(&mut self) {
        self.deadline = None;
    }

    /// When the Volt is declared gone unless it answers first.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// How long an answer may take.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }
}
