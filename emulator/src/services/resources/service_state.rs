//! The fields of a service resource the Volt keeps for its clients: `online_status` and the
//! host's connection in `service_description`. Clients describe a service; the Volt says
//! whether it is online and on which connection.

use tdx_volt::proto::volt::{OnlineStatus, Resource};

use crate::call::Failure;

use super::{now_millis, record, resolved, ChangeKind, ResourceStore};

/// Whether a resource is a service: one with a `service_description`.
pub fn is_service(resource: &Resource) -> bool {
    resource.service_description.is_some()
}

/// The client that hosts a service: its `host_client_id`, else its owner.
pub fn host_of(resource: &Resource) -> &str {
    match resource.service_description.as_ref() {
        Some(d) if !d.host_client_id.is_empty() => &d.host_client_id,
        _ => &resource.owner,
    }
}

/// A service created by a client starts offline, on no connection, whatever the template
/// says: only its host's Connect stream brings it online.
pub(super) fn created_offline(template: &mut Resource) {
    if let Some(d) = template.service_description.as_mut() {
        template.online_status = OnlineStatus::Offline as i32;
        d.host_connection_id.clear();
        d.host_session_id.clear();
    }
}

/// A SaveResource update of a service: the client's description replaces the old one, but the
/// connection the Volt recorded stays, and so does the host's key unless a new one is given.
pub(super) fn merge_description(existing: &mut Resource, incoming: &Resource) {
    let Some(new) = incoming.service_description.as_ref() else {
        return;
    };
    let mut new = new.clone();
    if let Some(old) = existing.service_description.as_ref() {
        new.host_connection_id.clone_from(&old.host_connection_id);
        new.host_session_id.clone_from(&old.host_session_id);
        if new.host_public_key.is_empty() {
            new.host_public_key.clone_from(&old.host_public_key);
        }
    } else {
        new.host_connection_id.clear();
        new.host_session_id.clear();
        existing.online_status = OnlineStatus::Offline as i32;
    }
    existing.service_description = Some(new);
}

impl ResourceStore {
    /// Every service resource, in creation order.
    pub fn services(&self) -> Vec<Resource> {
        self.all()
            .into_iter()
            .map(|(_, r)| r)
            .filter(is_service)
            .collect()
    }

    /// Changes the Volt's fields of the service `id` with `set`; bumps `version` and
    /// `modified` (an update, as subscribers hear it). NOT_FOUND for no such service.
    pub async fn set_service_state(
        &self,
        id: &str,
        set: impl FnOnce(&mut Resource),
    ) -> Result<Resource, Failure> {
        let change = self.change(|tree| {
            let id = resolved(tree, id);
            let node = tree
                .nodes
                .get_mut(&id)
                .filter(|n| is_service(&n.resource))
                .ok_or_else(|| Failure::not_found(format!("service not found: {id}")))?;
            let r = &mut node.resource;
            set(r);
            r.version += 1;
            r.modified = now_millis();
            let updated = r.clone();
            record(tree, ChangeKind::Updated, &updated);
            Ok(updated)
        });
        self.saved(change).await
    }

    /// At start no host is connected: every service that a previous run left online goes
    /// offline (written at once, only when there is one).
    pub fn services_offline_at_start(&self) -> Result<(), Failure> {
        let stale = self
            .services()
            .iter()
            .any(|r| r.online_status == OnlineStatus::Online as i32);
        if !stale {
            return Ok(());
        }
        let change = self.change(|tree| {
            for node in tree.nodes.values_mut() {
                if let Some(d) = node.resource.service_description.as_mut() {
                    node.resource.online_status = OnlineStatus::Offline as i32;
                    d.host_connection_id.clear();
                }
            }
            Ok(())
        });
        self.saved_blocking(change)
    }
}
