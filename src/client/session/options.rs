//! [`SessionOptions`]: what a session subscribes to and how it keeps the Volt in sight, and
//! the hello that says so.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::event::ResourceEventKind;

/// How often a session pings the Volt, by default: 10 s (as the official client does).
pub const DEFAULT_SESSION_PING_EVERY: Duration = Duration::from_secs(10);
/// Events a session holds for its reader, by default: 256 (see
/// [`SessionOptions::event_buffer`]).
pub const DEFAULT_SESSION_EVENT_BUFFER: usize = 256;
/// How long [`Session::close`](super::Session::close) waits for the Volt's goodbye, by
/// default: 2 s.
pub const DEFAULT_SESSION_CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The least ping period a session takes (a shorter one is raised to it): 10 ms.
const MIN_PING_EVERY: Duration = Duration::from_millis(10);
/// The most events a session may hold for its reader.
const MAX_EVENT_BUFFER: usize = 1 << 16;

/// What a [`Session`](super::Session) subscribes to, and its timing. A by-value builder:
/// start from [`SessionOptions::new`] (everything off, the defaults below) and chain.
///
/// | Setting | Default |
/// | --- | --- |
/// | `resource_events`, `resource_event_kinds` | off; all kinds once on |
/// | `auth_requests`, `did_registry_updates`, `accept_invocation`, `online_services` | off |
/// | `ping_every` | [`DEFAULT_SESSION_PING_EVERY`] (10 s) |
/// | `event_buffer` | [`DEFAULT_SESSION_EVENT_BUFFER`] (256 events) |
/// | `close_wait` | [`DEFAULT_SESSION_CLOSE_WAIT`] (2 s) |
///
/// ```
/// use tdx_volt::client::{ResourceEventKind, SessionOptions};
///
/// let options = SessionOptions::new()
///     .resource_event_kinds([ResourceEventKind::Created, ResourceEventKind::Deleted])
///     .auth_requests(true);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct SessionOptions {
    pub(super) resource_events: bool,
    pub(super) resource_kinds: Vec<ResourceEventKind>,
    pub(super) auth_requests: bool,
    pub(super) did_registry_updates: bool,
    pub(super) accept_invocation: bool,
    pub(super) online_services: bool,
    pub(super) ping_every: Duration,
    pub(super) event_buffer: usize,
    pub(super) close_wait: Duration,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions {
            resource_events: false,
            resource_kinds: Vec::new(),
            auth_requests: false,
            did_registry_updates: false,
            accept_invocation: false,
            online_services: false,
            ping_every: DEFAULT_SESSION_PING_EVERY,
            event_buffer: DEFAULT_SESSION_EVENT_BUFFER,
            close_wait: DEFAULT_SESSION_CLOSE_WAIT,
        }
    }
}

impl SessionOptions {
    /// No subscriptions, default timing.
    pub fn new() -> SessionOptions {
        SessionOptions::default()
    }

    /// Resource events (`subscribe_resource_events`), of every kind unless
    /// [`resource_event_kinds`](Self::resource_event_kinds) narrows them. Off by default.
    pub fn resource_events(mut self, on: bool) -> SessionOptions {
        self.resource_events = on;
        self
    }

    /// Resource events of these kinds only (`resource_event_list`); turns resource events on.
    /// An empty list means every kind.
    pub fn resource_event_kinds(
        mut self,
        kinds: impl IntoIterator<Item = ResourceEventKind>,
    ) -> SessionOptions {
        self.resource_events = true;
        self.resource_kinds = kinds.into_iter().collect();
        self
    }

    /// Access requests this identity may decide on (`subscribe_auth_requests`). Off by
    /// default.
    pub fn auth_requests(mut self, on: bool) -> SessionOptions {
        self.auth_requests = on;
        self
    }

    /// DID registry updates (`subscribe_did_registry_updates`). Off by default.
    pub fn did_registry_updates(mut self, on: bool) -> SessionOptions {
        self.did_registry_updates = on;
        self
    }

    /// Tell the Volt this connection takes invocations (`accept_invocation`). Off by default.
    /// A plain session does not answer invocations: host services with
    /// [`VoltClient::host`](crate::VoltClient::host), which turns it on.
    pub fn accept_invocation(mut self, on: bool) -> SessionOptions {
        self.accept_invocation = on;
        self
    }

    /// Mark every service the identity owns as online while the session lasts
    /// (`online_services`). Off by default.
    pub fn online_services(mut self, on: bool) -> SessionOptions {
        self.online_services = on;
        self
    }

    /// How often to ping the Volt; [`DEFAULT_SESSION_PING_EVERY`] by default (at least
    /// 10 ms). The Volt is declared gone when a ping goes unanswered for the acknowledge's
    /// `ping_interval`, or three of these periods when the Volt gave none.
    pub fn ping_every(mut self, period: Duration) -> SessionOptions {
        self.ping_every = period.max(MIN_PING_EVERY);
        self
    }

    /// Events held for the reader of [`Session::events`](super::Session::events);
    /// [`DEFAULT_SESSION_EVENT_BUFFER`] by default, kept between 1 and 65,536. The session
    /// never waits for its reader: when the buffer is full, further events are dropped and
    /// counted, and the reader gets [`SessionEvent::Lagged`](super::SessionEvent::Lagged)
    /// before the next one.
    pub fn event_buffer(mut self, events: usize) -> SessionOptions {
        self.event_buffer = events.clamp(1, MAX_EVENT_BUFFER);
        self
    }

    /// How long [`Session::close`](super::Session::close) waits for the Volt's goodbye;
    /// [`DEFAULT_SESSION_CLOSE_WAIT`] by default.
    pub fn close_wait(mut self, wait: Duration) -> SessionOptions {
        self.close_wait = wait;
        self
    }

    /// How long to wait for a ping's answer when the acknowledge names no `ping_interval`.
    pub(super) fn fallback_ping_timeout(&self) -> Duration {
        self.ping_every.saturating_mul(3)
    }

    /// The hello (a whole `ConnectRequest`), stamped with the time now.
    pub(super) fn hello(&self) -> Value {
        let mut hello = Map::new();
        let ping_ms = u32::try_from(self.ping_every.as_millis()).unwrap_or(u32::MAX);
        hello.insert("ping_interval".into(), json!(ping_ms));
        // uint64 travels as a string in proto3 JSON.
        hello.insert("timestamp".into(), json!(unix_millis().to_string()));
        let flags = [
            ("subscribe_resource_events", self.resource_events),
            ("subscribe_auth_requests", self.auth_requests),
            ("subscribe_did_registry_updates", self.did_registry_updates),
            ("accept_invocation", self.accept_invocation),
            ("online_services", self.online_services),
        ];
        for (field, on) in flags {
            if on {
                hello.insert(field.into(), Value::Bool(true));
            }
        }
        if self.resource_events && !self.resource_kinds.is_empty() {
            let kinds: Vec<Value> = self
                .resource_kinds
                .iter()
                .map(|k| Value::String(k.proto_name().to_owned()))
                .collect();
            hello.insert("resource_event_list".into(), Value::Array(kinds));
        }
        json!({ "hello": hello })
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
