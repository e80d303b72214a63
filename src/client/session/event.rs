//! What a session tells the application: [`SessionEvent`], and how a Connect `evt` (proto3
//! JSON) becomes one.

use serde_json::Value;

/// What happened to a resource, as a Connect resource event says
/// (`ConnectResourceEvent` in the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResourceEventKind {
    /// The resource was created (`CONNECT_RESOURCE_EVENT_CREATE`).
    Created,
    /// The resource was changed (`CONNECT_RESOURCE_EVENT_UPDATE`).
    Updated,
    /// The resource was deleted (`CONNECT_RESOURCE_EVENT_DELETE`).
    Deleted,
    /// A child was created under the resource (`CONNECT_RESOURCE_EVENT_CREATE_CHILD`).
    ChildCreated,
    /// A child of the resource was deleted (`CONNECT_RESOURCE_EVENT_DELETE_CHILD`).
    ChildDeleted,
    /// The resource, a database, was written to (`CONNECT_RESOURCE_EVENT_DATABASE_WRITE`).
    DatabaseWrite,
}

/// Every kind with its proto enum name and its short name, in the API's order.
const KINDS: [(ResourceEventKind, &str, &str); 6] = [
    (
        ResourceEventKind::Created,
        "CONNECT_RESOURCE_EVENT_CREATE",
        "created",
    ),
    (
        ResourceEventKind::Updated,
        "CONNECT_RESOURCE_EVENT_UPDATE",
        "updated",
    ),
    (
        ResourceEventKind::Deleted,
        "CONNECT_RESOURCE_EVENT_DELETE",
        "deleted",
    ),
    (
        ResourceEventKind::ChildCreated,
        "CONNECT_RESOURCE_EVENT_CREATE_CHILD",
        "child_created",
    ),
    (
        ResourceEventKind::ChildDeleted,
        "CONNECT_RESOURCE_EVENT_DELETE_CHILD",
        "child_deleted",
    ),
    (
        ResourceEventKind::DatabaseWrite,
        "CONNECT_RESOURCE_EVENT_DATABASE_WRITE",
        "database_write",
    ),
];

impl ResourceEventKind {
    /// The short snake_case name: `created`, `updated`, `deleted`, `child_created`,
    /// `child_deleted`, `database_write`.
    pub fn as_str(self) -> &'static str {
        KINDS
            .iter()
            .find(|(kind, _, _)| *kind == self)
            .map_or("unknown", |(_, _, short)| short)
    }

    /// The proto3 JSON name of the kind (`CONNECT_RESOURCE_EVENT_CREATE`, ...).
    pub fn proto_name(self) -> &'static str {
        KINDS
            .iter()
            .find(|(kind, _, _)| *kind == self)
            .map_or("CONNECT_RESOURCE_EVENT_UNKNOWN", |(_, name, _)| name)
    }

    /// The kind a proto3 JSON enum value names (its name, or its number); `None` for
    /// `UNKNOWN` and anything the API does not define.
    pub fn from_proto(value: &Value) -> Option<ResourceEventKind> {
        match value {
            Value::String(name) => KINDS
                .iter()
                .find(|(_, proto, _)| proto == name)
                .map(|(kind, _, _)| *kind),
            Value::Number(n) => {
                let index = usize::try_from(n.as_u64()?).ok()?.checked_sub(1)?;
                KINDS.get(index).map(|(kind, _, _)| *kind)
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for ResourceEventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a [`Session`](super::Session) reports, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// A resource changed (with `resource_events` on in the options).
    Resource {
        /// What happened to it.
        kind: ResourceEventKind,
        /// The resource as the Volt sent it (proto3 JSON, `Resource`); `Null` if it sent none.
        resource: Value,
    },
    /// Someone asks for access that this identity may decide on (with `auth_requests` on).
    AuthRequest {
        /// The request's kind, as the proto enum name (`CONNECT_AUTH_REQUEST_TYPE_...`);
        /// empty when the Volt left it unset.
        request_type: String,
        /// The session asking (proto3 JSON `Session`); `Null` if the Volt sent none.
        session: Value,
        /// The request's context: parsed when it is JSON text (the Volt sends the access
        /// request there), else the text as it came; `Null` when empty.
        context: Value,
        /// The challenge the requester showed, if any.
        challenge: String,
        /// When the Volt made the request, in ms since the Unix epoch (0 when unset).
        timestamp_ms: u64,
    },
    /// A DID registry changed (with `did_registry_updates` on): the `update` as the Volt sent
    /// it (proto3 JSON `DIDRegistryUpdate`).
    DidRegistryUpdate(Value),
    /// The session was lost and is back, on a new connection. Events of the time between are
    /// gone: refetch what matters.
    Reconnected {
        /// The new connection's id.
        connection_id: String,
    },
    /// The events stream was full and this many events were dropped since the last one read
    /// (the session never waits for a slow reader). Refetch what matters.
    Lagged {
        /// How many events were dropped.
        missed: u64,
    },
    /// The Volt no longer accepts this client's session (an error ending in
    /// `session invalid`). The session is over ([`SessionState::Closed`](super::SessionState));
    /// authenticate again to get a new one.
    SessionInvalid {
        /// The Volt's message.
        message: String,
    },
}

/// Why an `evt` was not turned into an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Undecodable {
    /// No member this client knows (a newer API).
    UnknownMember,
    /// A member whose content is not as the API defines it.
    Malformed(&'static str),
}

/// The event in a `ConnectEvent` (`evt` of a Connect response, proto3 JSON).
pub(crate) fn decode_event(evt: &Value) -> Result<SessionEvent, Undecodable> {
    let Some(evt) = evt.as_object() else {
        return Err(Undecodable::Malformed("evt is not an object"));
    };
    if let Some(resource) = evt.get("connect_resource") {
        let kind = resource
            .get("event")
            .and_then(ResourceEventKind::from_proto)
            .ok_or(Undecodable::Malformed(
                "connect_resource has no known event kind",
            ))?;
        let resource = resource.get("resource").cloned().unwrap_or(Value::Null);
        if !(resource.is_object() || resource.is_null()) {
            return Err(Undecodable::Malformed(
                "connect_resource.resource is not an object",
            ));
        }
        return Ok(SessionEvent::Resource { kind, resource });
    }
    if let Some(request) = evt.get("connect_auth_request") {
        return decode_auth_request(request);
    }
    if let Some(update) = evt.get("did_registry_update") {
        if !update.is_object() {
            return Err(Undecodable::Malformed(
                "did_registry_update is not an object",
            ));
        }
        return Ok(SessionEvent::DidRegistryUpdate(
            update.get("update").cloned().unwrap_or(Value::Null),
        ));
    }
    Err(Undecodable::UnknownMember)
}

fn decode_auth_request(request: &Value) -> Result<SessionEvent, Undecodable> {
    if !request.is_object() {
        return Err(Undecodable::Malformed(
            "connect_auth_request is not an object",
        ));
    }
    let text = |field: &str| -> Result<String, Undecodable> {
        match request.get(field) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(Undecodable::Malformed(
                "a connect_auth_request field is not a string",
            )),
        }
    };
    let context = match text("context")? {
        c if c.is_empty() => Value::Null,
        c => serde_json::from_str(&c).unwrap_or(Value::String(c)),
    };
    // uint64 is a string in proto3 JSON; a number is accepted too.
    let timestamp_ms = match request.get("timestamp") {
        None | Some(Value::Null) => 0,
        Some(Value::String(s)) => s.parse().map_err(|_| {
            Undecodable::Malformed("connect_auth_request.timestamp is not a number")
        })?,
        Some(Value::Number(n)) => n.as_u64().ok_or(Undecodable::Malformed(
            "connect_auth_request.timestamp is not a number",
        ))?,
        Some(_) => {
            return Err(Undecodable::Malformed(
                "connect_auth_request.timestamp is not a number",
            ))
        }
    };
    let request_type = match request.get("request_type") {
        // An enum value this client's schema does not name arrives as its number.
        Some(Value::Number(n)) => n.to_string(),
        _ => text("request_type")?,
    };
    Ok(SessionEvent::AuthRequest {
        request_type,
        session: request.get("session").cloned().unwrap_or(Value::Null),
        context,
        challenge: text("challenge")?,
        timestamp_ms,
    })
}
