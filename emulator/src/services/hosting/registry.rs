//! The live hosts: Connect streams whose hello set `accept_invocation`, by their client's id,
//! and the invocations routed to each.
//!
//! A [`Registration`] is one such stream. Its Connect loop sends what arrives on its
//! [`HostRequests`] down the stream (as `ConnectResponse.invoke_request`) and hands every
//! `ConnectRequest.invoke_response` to [`Registration::deliver`]. Dropping it (the stream
//! ended, however) unregisters the host and fails every invocation still routed to it: their
//! [`Invocation::next`] answers [`HostEvent::HostGone`].
//!
//! An [`Invocation`] is one caller's tunnel to a host, with an `invoke_id` that is unique and
//! never 0 on its host's connection. Dropping it forgets the id and, unless either side has
//! ended the call, tells the host the caller went (`client_end`).
//!
//! Locks guard maps only and are never held across an `.await`; every channel is bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tdx_volt::proto::volt::{InvokeRequest, InvokeResponse};
use tokio::sync::mpsc;
use tracing::debug;

/// Requests (openings, caller messages, ends) queued toward one host connection before the
/// callers wait for it to take them.
pub const HOST_REQUEST_BUFFER: usize = 256;
/// A host's answers queued for one invocation. A host that gets this far ahead of a caller
/// that does not read has that invocation failed (`RESOURCE_EXHAUSTED`), so that one stalled
/// caller never stalls the host's whole connection.
pub const INVOCATION_BUFFER: usize = 256;

/// The requests a host's Connect stream forwards to its client.
pub type HostRequests = mpsc::Receiver<InvokeRequest>;

/// Every live host connection, by client id.
#[derive(Default)]
pub struct HostRegistry {
    hosts: Mutex<HashMap<String, Vec<Arc<Link>>>>,
}

/// One host connection.
struct Link {
    client_id: String,
    connection_id: String,
    online_services: bool,
    requests: mpsc::Sender<InvokeRequest>,
    state: Mutex<LinkState>,
}

struct LinkState {
    /// False once the connection has ended: no invocation may start on it.
    open: bool,
    /// The last invoke id given out.
    last_id: u64,
    invocations: HashMap<u64, mpsc::Sender<InvokeResponse>>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under these locks is a single map operation: a panic cannot leave one
    // half-made, so a poisoned lock is still good.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Link {
    /// Starts an invocation: a fresh id (never 0, never one in use) and its answer queue.
    fn start(self: &Arc<Self>) -> Option<Invocation> {
        let (tx, rx) = mpsc::channel(INVOCATION_BUFFER);
        let mut state = locked(&self.state);
        if !state.open {
            return None;
        }
        let mut id = state.last_id;
        loop {
            id = id.wrapping_add(1);
            if id != 0 && !state.invocations.contains_key(&id) {
                break;
            }
        }
        state.last_id = id;
        state.invocations.insert(id, tx);
        drop(state);
        Some(Invocation {
            link: Arc::clone(self),
            id,
            answers: rx,
            client_ended: false,
            over: false,
        })
    }

    fn forget(&self, id: u64) {
        locked(&self.state).invocations.remove(&id);
    }

    fn is_open(&self) -> bool {
        locked(&self.state).open
    }
}

impl HostRegistry {
    /// Registers a Connect stream of `client_id` (acknowledged with `connection_id`) as a host;
    /// `online_services` is what its hello asked. Returns the registration, which unregisters
    /// when dropped, and the requests to send down the stream.
    pub fn register(
        self: &Arc<Self>,
        client_id: &str,
        connection_id: &str,
        online_services: bool,
    ) -> (Registration, HostRequests) {
        let (tx, rx) = mpsc::channel(HOST_REQUEST_BUFFER);
        let link = Arc::new(Link {
            client_id: client_id.to_owned(),
            connection_id: connection_id.to_owned(),
            online_services,
            requests: tx,
            state: Mutex::new(LinkState {
                open: true,
                last_id: 0,
                invocations: HashMap::new(),
            }),
        });
        locked(&self.hosts)
            .entry(client_id.to_owned())
            .or_default()
            .push(Arc::clone(&link));
        let registration = Registration {
            registry: Arc::clone(self),
            link,
        };
        (registration, rx)
    }

    /// Starts an invocation on a live connection of `client_id`: the one named `prefer` when it
    /// is live, else the newest. `None` when the client hosts nothing now.
    pub fn start(&self, client_id: &str, prefer: &str) -> Option<Invocation> {
        let link = {
            let hosts = locked(&self.hosts);
            let links = hosts.get(client_id)?;
            links
                .iter()
                .find(|l| !prefer.is_empty() && l.connection_id == prefer)
                .or_else(|| links.last())
                .cloned()?
        };
        link.start()
    }

    /// Whether `client_id` has a live host connection.
    pub fn is_hosting(&self, client_id: &str) -> bool {
        locked(&self.hosts)
            .get(client_id)
            .is_some_and(|links| !links.is_empty())
    }

    /// The id of a live host connection of `client_id`: `prefer` when it is one of them, else
    /// the newest (of those whose hello set `online_services`, with `online_only`), leaving out
    /// `except`.
    pub fn connection_of(
        &self,
        client_id: &str,
        prefer: &str,
        except: &str,
        online_only: bool,
    ) -> Option<String> {
        let hosts = locked(&self.hosts);
        let links = hosts.get(client_id)?;
        let eligible = |l: &&Arc<Link>| l.connection_id != except;
        links
            .iter()
            .filter(eligible)
            .find(|l| !prefer.is_empty() && l.connection_id == prefer)
            .or_else(|| {
                links
                    .iter()
                    .filter(eligible)
                    .rfind(|l| l.online_services || !online_only)
            })
            .map(|l| l.connection_id.clone())
    }

    fn unregister(&self, link: &Arc<Link>) {
        let mut hosts = locked(&self.hosts);
        if let Some(links) = hosts.get_mut(&link.client_id) {
            links.retain(|l| !Arc::ptr_eq(l, link));
            if links.is_empty() {
                hosts.remove(&link.client_id);
            }
        }
    }
}

/// A live host connection, registered until dropped.
pub struct Registration {
    registry: Arc<HostRegistry>,
    link: Arc<Link>,
}

/// What became of an answer a host sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for its invocation.
    Delivered,
    /// No invocation has that id (it ended, or never was): ignored.
    Unknown,
    /// The invocation's caller is this far behind: the invocation is failed.
    Overflow,
}

impl Registration {
    /// The connection id the stream was acknowledged with.
    pub fn connection_id(&self) -> &str {
        &self.link.connection_id
    }

    /// Hands an answer of the host to the invocation its `invoke_id` names. Never waits: a
    /// caller that does not read fails its own invocation, not the host's connection.
    pub fn deliver(&self, answer: InvokeResponse) -> Delivery {
        let id = answer.invoke_id;
        let Some(tx) = locked(&self.link.state).invocations.get(&id).cloned() else {
            debug!(
                invoke_id = id,
                connection = %self.link.connection_id,
                "an invoke_response for no invocation: ignored"
            );
            return Delivery::Unknown;
        };
        match tx.try_send(answer) {
            Ok(()) => Delivery::Delivered,
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Unknown,
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Dropping its queue's sender ends it; the link still being open tells it why.
                self.link.forget(id);
                Delivery::Overflow
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.unregister(&self.link);
        let invocations = {
            let mut state = locked(&self.link.state);
            state.open = false;
            std::mem::take(&mut state.invocations)
        };
        // Their queues' senders go with them: every invocation here now hears its host left.
        drop(invocations);
    }
}

/// What an invocation hears from its host.
#[derive(Debug)]
pub enum HostEvent {
    /// An answer (`invoke_response`) of the host.
    Answer(InvokeResponse),
    /// The host's connection ended.
    HostGone,
    /// The caller fell [`INVOCATION_BUFFER`] answers behind; the invocation is over.
    Overflow,
}

/// The host went away: no request can reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostGone;

/// One caller's invocation of a host.
pub struct Invocation {
    link: Arc<Link>,
    id: u64,
    answers: mpsc::Receiver<InvokeResponse>,
    /// `client_end` has been sent.
    client_ended: bool,
    /// The host ended the call, or the host is gone: nothing more to tell it.
    over: bool,
}

impl Invocation {
    /// The invoke id, unique and non-zero on the host's connection.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The host connection's id.
    pub fn connection_id(&self) -> &str {
        &self.link.connection_id
    }

    /// Sends a request to the host, `invoke_id` set; waits while the host's queue is full.
    pub async fn send(&mut self, mut request: InvokeRequest) -> Result<(), HostGone> {
        request.invoke_id = self.id;
        if !self.link.is_open() {
            self.over = true;
            return Err(HostGone);
        }
        if request.client_end {
            self.client_ended = true;
        }
        let requests = self.link.requests.clone();
        requests.send(request).await.map_err(|_| {
            self.over = true;
            HostGone
        })
    }

    /// Tells the host the caller has no more to send (`client_end`, alone), once.
    pub async fn end_input(&mut self) -> Result<(), HostGone> {
        if self.client_ended {
            return Ok(());
        }
        self.send(InvokeRequest {
            client_end: true,
            ..InvokeRequest::default()
        })
        .await
    }

    /// The host's next answer, or why there is none.
    pub async fn next(&mut self) -> HostEvent {
        match self.answers.recv().await {
            Some(answer) => HostEvent::Answer(answer),
            None => {
                self.over = true;
                if self.link.is_open() {
                    HostEvent::Overflow
                } else {
                    HostEvent::HostGone
                }
            }
        }
    }

    /// The host has ended the call (`server_end`, or a status): nothing is sent on drop.
    pub fn host_ended(&mut self) {
        self.over = true;
    }
}

impl Drop for Invocation {
    fn drop(&mut self) {
        self.link.forget(self.id);
        if self.over || self.client_ended {
            return;
        }
        // The caller went: the host hears `client_end` (or nothing, if it is gone too).
        let end = InvokeRequest {
            invoke_id: self.id,
            client_end: true,
            ..InvokeRequest::default()
        };
        match self.link.requests.try_send(end) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(end)) => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let requests = self.link.requests.clone();
                    runtime.spawn(async move {
                        let _ = requests.send(end).await;
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: u64) -> InvokeResponse {
        InvokeResponse {
            invoke_id: id,
            server_end: true,
            ..InvokeResponse::default()
        }
    }

    #[tokio::test]
    async fn ids_are_non_zero_and_unique_per_connection() {
        let registry = Arc::new(HostRegistry::default());
        let (host, _requests) = registry.register("alice", "c1", false);
        let mut open: Vec<Invocation> = (0..50)
            .map(|_| registry.start("alice", "").expect("hosting"))
            .collect();
        let mut ids: Vec<u64> = open.iter().map(Invocation::id).collect();
        assert!(ids.iter().all(|id| *id != 0));
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 50);
        // Even after the counter wraps, an id in use is never given twice, nor 0.
        locked(&host.link.state).last_id = u64::MAX - 1;
        open.push(registry.start("alice", "").expect("hosting"));
        open.push(registry.start("alice", "").expect("hosting"));
        let late: Vec<u64> = open[50..].iter().map(Invocation::id).collect();
        assert_eq!(late, vec![u64::MAX, 51]);
    }

    #[tokio::test]
    async fn answers_reach_their_invocation_and_unknown_ids_are_ignored() {
        let registry = Arc::new(HostRegistry::default());
        let (host, _requests) = registry.register("alice", "c1", false);
        let mut first = registry.start("alice", "").expect("hosting");
        let mut second = registry.start("alice", "").expect("hosting");
        assert_eq!(host.deliver(answer(second.id())), Delivery::Delivered);
        assert_eq!(host.deliver(answer(999)), Delivery::Unknown);
        assert_eq!(host.deliver(answer(0)), Delivery::Unknown);
        assert_eq!(host.deliver(answer(first.id())), Delivery::Delivered);
        for inv in [&mut first, &mut second] {
            let id = inv.id();
            match inv.next().await {
                HostEvent::Answer(a) => assert_eq!(a.invoke_id, id),
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn unregistering_fails_every_invocation_in_flight() {
        let registry = Arc::new(HostRegistry::default());
        let (host, _requests) = registry.register("alice", "c1", false);
        let mut a = registry.start("alice", "").expect("hosting");
        let mut b = registry.start("alice", "").expect("hosting");
        assert!(registry.is_hosting("alice"));
        drop(host);
        assert!(matches!(a.next().await, HostEvent::HostGone));
        assert!(matches!(b.next().await, HostEvent::HostGone));
        assert!(!registry.is_hosting("alice"));
        assert!(registry.start("alice", "").is_none());
        let request = InvokeRequest::default();
        assert_eq!(a.send(request).await, Err(HostGone));
    }

    #[tokio::test]
    async fn a_caller_that_does_not_read_fails_only_its_own_invocation() {
        let registry = Arc::new(HostRegistry::default());
        let (host, _requests) = registry.register("alice", "c1", false);
        let mut slow = registry.start("alice", "").expect("hosting");
        let mut fine = registry.start("alice", "").expect("hosting");
        for _ in 0..INVOCATION_BUFFER {
            assert_eq!(host.deliver(answer(slow.id())), Delivery::Delivered);
        }
        assert_eq!(host.deliver(answer(slow.id())), Delivery::Overflow);
        assert_eq!(host.deliver(answer(slow.id())), Delivery::Unknown);
        for _ in 0..INVOCATION_BUFFER {
            assert!(matches!(slow.next().await, HostEvent::Answer(_)));
        }
        assert!(matches!(slow.next().await, HostEvent::Overflow));
        assert_eq!(host.deliver(answer(fine.id())), Delivery::Delivered);
        assert!(matches!(fine.next().await, HostEvent::Answer(_)));
    }

    #[tokio::test]
    async fn a_caller_that_goes_tells_the_host_once() {
        let registry = Arc::new(HostRegistry::default());
        let (host, mut requests) = registry.register("alice", "c1", false);
        let gone = registry.start("alice", "").expect("hosting");
        let gone_id = gone.id();
        drop(gone);
        let end = requests.recv().await.expect("client_end");
        assert_eq!((end.invoke_id, end.client_end), (gone_id, true));
        assert_eq!(host.deliver(answer(gone_id)), Delivery::Unknown);
        // One that half-closed first, or whose host ended it, sends nothing more.
        let mut closed = registry.start("alice", "").expect("hosting");
        closed.end_input().await.expect("sent");
        closed.end_input().await.expect("once");
        drop(closed);
        let mut ended = registry.start("alice", "").expect("hosting");
        ended.host_ended();
        drop(ended);
        let only = requests.recv().await.expect("the half-close");
        assert!(only.client_end);
        assert!(requests.try_recv().is_err());
    }

    #[test]
    fn the_preferred_connection_is_taken_when_live() {
        let registry = Arc::new(HostRegistry::default());
        let (_a, _ra) = registry.register("alice", "c1", true);
        let (b, _rb) = registry.register("alice", "c2", false);
        let c = registry.start("alice", "c1").expect("hosting");
        assert_eq!(c.connection_id(), "c1");
        let d = registry.start("alice", "gone").expect("hosting");
        assert_eq!(d.connection_id(), "c2");
        assert_eq!(
            registry.connection_of("alice", "", "", true).as_deref(),
            Some("c1")
        );
        assert_eq!(registry.connection_of("alice", "", "c1", true), None);
        assert_eq!(
            registry.connection_of("alice", "", "c1", false).as_deref(),
            Some("c2")
        );
        drop(b);
        assert_eq!(
            registry.connection_of("alice", "", "", false).as_deref(),
            Some("c1")
        );
    }
}
