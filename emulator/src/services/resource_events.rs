//! Resource events for Connect streams: every change the resource tree reports becomes a
//! `connect_resource` event, sent to each stream that subscribed to its kind and whose subject
//! may read the resource. CREATE_CHILD and DELETE_CHILD (whose resource is the child) go to
//! the subjects who may read the parent and the child both: an event never shows a subject a
//! resource it could not list.
//!
//! | change | to readers of the resource | to readers of it and its parent |
//! | --- | --- | --- |
//! | created | CREATE | CREATE_CHILD |
//! | description or content changed | UPDATE | |
//! | deleted (each resource a recursive delete removes) | DELETE | DELETE_CHILD |
//! | committed SQL write | DATABASE_WRITE | |

use std::sync::Arc;

use tdx_volt::proto::volt::{self as pb, ConnectResourceEvent as Event, PolicyDecision};

use super::access::{names, AccessStore, Lineage};
use super::events::EventHub;
use super::resources::{Change, ChangeKind, Listener};

/// The listener that turns the tree's changes into events on `hub`, checked against `access`.
/// It only queues (a full stream's event is dropped), so it never blocks a change.
pub fn listener(access: Arc<AccessStore>, hub: Arc<EventHub>) -> Listener {
    Box::new(move |change| publish(&access, &hub, change))
}

/// The events one change makes: for the resource itself, and for its parent's readers.
pub fn events_of(kind: ChangeKind) -> (Event, Option<Event>) {
    match kind {
        ChangeKind::Created => (Event::Create, Some(Event::CreateChild)),
        ChangeKind::Updated => (Event::Update, None),
        ChangeKind::Deleted => (Event::Delete, Some(Event::DeleteChild)),
        ChangeKind::DatabaseWritten => (Event::DatabaseWrite, None),
    }
}

fn publish(access: &AccessStore, hub: &EventHub, change: &Change) {
    let (own, child) = events_of(change.kind);
    let itself = Lineage::from_links(change.lineage.clone());
    send(
        access,
        hub,
        own,
        &change.resource,
        std::slice::from_ref(&itself),
    );
    if let (Some(child), Some(parent)) = (child, change.parent_lineage()) {
        let parent = Lineage::from_links(parent.to_vec());
        send(access, hub, child, &change.resource, &[parent, itself]);
    }
}

/// Sends `event` about `resource` to the streams that want it and may read every one of
/// `readable`.
fn send(
    access: &AccessStore,
    hub: &EventHub,
    event: Event,
    resource: &pb::Resource,
    readable: &[Lineage],
) {
    let message = pb::ConnectEvent {
        event: Some(pb::connect_event::Event::ConnectResource(
            pb::ConnectResource {
                event: event as i32,
                resource: Some(resource.clone()),
            },
        )),
    };
    hub.publish(&message, |subject, interests| {
        interests.wants_resource_event(event)
            && readable.iter().all(|lineage| {
                access.decide(subject, lineage, names::READ, "") == PolicyDecision::Permit
            })
    });
}

#[cfg(test)]
mod tests;
