//! Events for Connect streams: each stream that said hello registers what it subscribed to,
//! and the services publish events to the streams whose subject should hear them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tdx_volt::proto::volt as pb;
use tokio::sync::mpsc;

use super::access::Subject;

/// Events queued per Connect stream; when a stream's client falls this far behind, further
/// events for it are dropped (and logged) rather than held.
pub const EVENT_QUEUE: usize = 256;

/// What a Connect stream subscribed to in its hello.
#[derive(Clone, Debug, Default)]
pub struct Interests {
    /// `subscribe_auth_requests`: access requests for resources the subject may decide on.
    pub auth_requests: bool,
    /// `subscribe_resource_events`: changes to resources the subject may read. `None` when
    /// not subscribed; otherwise the `resource_event_list` filter (`ConnectResourceEvent`
    /// values), where an empty list means every kind.
    pub resource_events: Option<Vec<i32>>,
}

impl Interests {
    /// Whether the stream subscribed to resource events of this kind.
    pub fn wants_resource_event(&self, event: pb::ConnectResourceEvent) -> bool {
        self.resource_events
            .as_ref()
            .is_some_and(|only| only.is_empty() || only.contains(&(event as i32)))
    }
}

struct Subscriber {
    key: u64,
    subject: Subject,
    interests: Interests,
    events: mpsc::Sender<pb::ConnectEvent>,
}

/// The Connect streams listening for events.
#[derive(Default)]
pub struct EventHub {
    subscribers: Arc<Mutex<Vec<Subscriber>>>,
    next_key: AtomicU64,
}

/// One stream's registration: its events, and its place in the hub until dropped.
pub struct Subscription {
    /// The events published to this stream.
    pub events: mpsc::Receiver<pb::ConnectEvent>,
    key: u64,
    subscribers: Arc<Mutex<Vec<Subscriber>>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        lock(&self.subscribers).retain(|s| s.key != self.key);
    }
}

fn lock(subscribers: &Mutex<Vec<Subscriber>>) -> MutexGuard<'_, Vec<Subscriber>> {
    // Every change is one push or retain: a poisoned list is still whole.
    subscribers.lock().unwrap_or_else(|p| p.into_inner())
}

impl EventHub {
    /// Registers a stream of `subject` with its interests.
    pub fn subscribe(&self, subject: Subject, interests: Interests) -> Subscription {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        lock(&self.subscribers).push(Subscriber {
            key,
            subject,
            interests,
            events: tx,
        });
        Subscription {
            events: rx,
            key,
            subscribers: Arc::clone(&self.subscribers),
        }
    }

    /// Sends `event` to every stream that `hears` picks; returns how many it was queued for.
    pub fn publish(
        &self,
        event: &pb::ConnectEvent,
        hears: impl Fn(&Subject, &Interests) -> bool,
    ) -> usize {
        let mut sent = 0;
        for s in lock(&self.subscribers).iter() {
            if !hears(&s.subject, &s.interests) {
                continue;
            }
            match s.events.try_send(event.clone()) {
                Ok(()) => sent += 1,
                Err(_) => {
                    tracing::warn!("a Connect stream is {EVENT_QUEUE} events behind: event dropped")
                }
            }
        }
        sent
    }
}
