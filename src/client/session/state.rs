//! [`SessionState`]: where a session stands.

use std::time::Instant;

/// Where a session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionState {
    /// An attempt to (re)open the session is under way.
    Connecting,
    /// The Volt acknowledged the hello: events flow.
    Connected {
        /// The id the Volt gave this connection (a new one on every reconnect).
        connection_id: String,
    },
    /// The last attempt failed (or the connection is waiting out its own backoff); the next
    /// starts at `until`.
    BackingOff {
        /// When the next attempt starts.
        until: Instant,
    },
    /// Over: closed, every handle dropped, the session invalid, or no more attempts (see
    /// [`ReconnectPolicy`](crate::ReconnectPolicy)).
    Closed,
}
