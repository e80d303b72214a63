//! Clients that host services: their Connect streams ([`registry`]), the online state of the
//! services they host, and the RPCs about services ([`rpc`]: DiscoverServices,
//! SetServiceStatus). Routing a caller's tunnel to a host is `services::invoke::routed`.
//!
//! A Connect stream whose hello sets `accept_invocation` registers its client as a host, on
//! the connection id of its acknowledge. With `online_services` too, every service that client
//! hosts ([`host_of`]) comes online on that connection before the acknowledge is sent:
//! `online_status` ONLINE, `service_description.host_connection_id` = the connection, and
//! `host_public_key` = the client's key when the description has none. When the stream ends,
//! each service on that connection moves to another live connection of its host that asked
//! for `online_services`, or goes offline.

pub mod registry;
pub mod rpc;

use std::sync::Arc;
use std::time::Duration;

use tdx_volt::proto::volt::OnlineStatus;
use tracing::warn;

pub use registry::{HostRegistry, Registration};

use super::resources::now_millis;
pub use super::resources::service_state::{host_of, is_service};
use super::Services;
use crate::call::{Caller, Failure};

/// How long a routed invocation waits, by default, for its host's key exchange before the
/// caller gets `DEADLINE_EXCEEDED` (and the host a `client_end`).
pub const DEFAULT_HOST_KEY_EXCHANGE_WAIT: Duration = Duration::from_secs(10);

/// The key of the caller's session (PEM), for `host_public_key`: what a host signs its key
/// exchanges with.
pub fn public_key_of(svc: &Services, caller: &Caller) -> String {
    svc.clients()
        .by_session(&caller.session_id)
        .map(|s| s.public_key_pem)
        .unwrap_or_default()
}

/// Brings every service `caller` hosts online on `connection_id` (a hello with
/// `accept_invocation` and `online_services`).
pub async fn bring_online(
    svc: &Services,
    caller: &Caller,
    connection_id: &str,
) -> Result<(), Failure> {
    let key = public_key_of(svc, caller);
    for service in svc.resources().services() {
        if host_of(&service) != caller.client_id {
            continue;
        }
        svc.resources()
            .set_service_state(&service.id, |r| {
                mark_online(r, connection_id, &key);
            })
            .await?;
    }
    Ok(())
}

/// Sets a service online on `connection_id`; `key` becomes `host_public_key` when it has none.
pub fn mark_online(r: &mut tdx_volt::proto::volt::Resource, connection_id: &str, key: &str) {
    r.online_status = OnlineStatus::Online as i32;
    if let Some(d) = r.service_description.as_mut() {
        d.host_connection_id = connection_id.to_owned();
        if d.host_public_key.is_empty() {
            d.host_public_key = key.to_owned();
        }
        d.ping_timestamp = i64::try_from(now_millis()).unwrap_or(i64::MAX);
    }
}

/// Sets a service offline, on no connection.
pub fn mark_offline(r: &mut tdx_volt::proto::volt::Resource) {
    r.online_status = OnlineStatus::Offline as i32;
    if let Some(d) = r.service_description.as_mut() {
        d.host_connection_id.clear();
    }
}

/// The host connection `connection_id` has ended (it is unregistered already): each service
/// on it moves to another live `online_services` connection of its host, or goes offline.
pub async fn connection_ended(svc: &Services, connection_id: &str) {
    for service in svc.resources().services() {
        let on_it = service
            .service_description
            .as_ref()
            .is_some_and(|d| d.host_connection_id == connection_id);
        if !on_it {
            continue;
        }
        let next = svc
            .hosts()
            .connection_of(host_of(&service), "", connection_id, true);
        let result = svc
            .resources()
            .set_service_state(&service.id, |r| match &next {
                Some(next) => {
                    if let Some(d) = r.service_description.as_mut() {
                        d.host_connection_id.clone_from(next);
                    }
                }
                None => mark_offline(r),
            })
            .await;
        if let Err(e) = result {
            warn!("service {} stays as it was: {e}", service.id);
        }
    }
}

/// A Connect stream's hosting: its registration, and its services' state when it ends. Call
/// [`Hosted::end`] where the stream ends normally; dropped without it (the stream was
/// cancelled), it still unregisters at once and updates its services on a task of its own.
pub struct Hosted {
    registration: Option<Registration>,
    svc: Arc<Services>,
}

impl Hosted {
    /// Registers `caller`'s stream as a host on `connection_id` (and brings its services
    /// online with `online_services`). Returns the hosting and the requests for its client.
    pub async fn start(
        svc: &Arc<Services>,
        caller: &Caller,
        connection_id: &str,
        online_services: bool,
    ) -> Result<(Hosted, registry::HostRequests), Failure> {
        let (registration, requests) =
            svc.hosts()
                .register(&caller.client_id, connection_id, online_services);
        let hosted = Hosted {
            registration: Some(registration),
            svc: Arc::clone(svc),
        };
        if online_services {
            bring_online(svc, caller, connection_id).await?;
        }
        Ok((hosted, requests))
    }

    /// The registration, for delivering the host's answers.
    pub fn registration(&self) -> Option<&Registration> {
        self.registration.as_ref()
    }

    /// Unregisters (failing what is in flight) and updates the services it hosted.
    pub async fn end(mut self) {
        if let Some(registration) = self.registration.take() {
            let connection_id = registration.connection_id().to_owned();
            drop(registration);
            connection_ended(&self.svc, &connection_id).await;
        }
    }
}

impl Drop for Hosted {
    fn drop(&mut self) {
        let Some(registration) = self.registration.take() else {
            return;
        };
        let connection_id = registration.connection_id().to_owned();
        drop(registration);
        let svc = Arc::clone(&self.svc);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { connection_ended(&svc, &connection_id).await });
        }
    }
}
