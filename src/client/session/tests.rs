//! Unit tests: decoding events, the hello, the acknowledge, liveness, `session invalid`.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::attempt::{parse_acknowledge, session_invalid};
use super::event::{decode_event, ResourceEventKind, SessionEvent, Undecodable};
use super::liveness::Liveness;
use super::options::SessionOptions;
use crate::{Error, ErrorKind, Status};

#[test]
fn resource_events_decode_every_kind_by_name_and_number() {
    let names = [
        (
            "CONNECT_RESOURCE_EVENT_CREATE",
            ResourceEventKind::Created,
            "created",
        ),
        (
            "CONNECT_RESOURCE_EVENT_UPDATE",
            ResourceEventKind::Updated,
            "updated",
        ),
        (
            "CONNECT_RESOURCE_EVENT_DELETE",
            ResourceEventKind::Deleted,
            "deleted",
        ),
        (
            "CONNECT_RESOURCE_EVENT_CREATE_CHILD",
            ResourceEventKind::ChildCreated,
            "child_created",
        ),
        (
            "CONNECT_RESOURCE_EVENT_DELETE_CHILD",
            ResourceEventKind::ChildDeleted,
            "child_deleted",
        ),
        (
            "CONNECT_RESOURCE_EVENT_DATABASE_WRITE",
            ResourceEventKind::DatabaseWrite,
            "database_write",
        ),
    ];
    for (number, (name, kind, short)) in (1u64..).zip(names) {
        let resource = json!({"id": format!("r{number}"), "name": "n", "kind": ["note"]});
        for event in [json!(name), json!(number)] {
            let evt = json!({"connect_resource": {"event": event, "resource": resource}});
            assert_eq!(
                decode_event(&evt),
                Ok(SessionEvent::Resource {
                    kind,
                    resource: resource.clone()
                }),
                "{evt}"
            );
        }
        assert_eq!(kind.as_str(), short);
        assert_eq!(kind.proto_name(), name);
        assert_eq!(kind.to_string(), short);
    }
}

#[test]
fn malformed_or_unknown_events_are_errors_not_panics() {
    let malformed = [
        json!("evt"),
        json!({"connect_resource": {"resource": {"id": "r"}}}),
        json!({"connect_resource": {"event": "CONNECT_RESOURCE_EVENT_UNKNOWN"}}),
        json!({"connect_resource": {"event": 0}}),
        json!({"connect_resource": {"event": 7}}),
        json!({"connect_resource": {"event": -1}}),
        json!({"connect_resource": {"event": "CONNECT_RESOURCE_EVENT_CREATE", "resource": 3}}),
        json!({"connect_auth_request": "x"}),
        json!({"connect_auth_request": {"challenge": 5}}),
        json!({"connect_auth_request": {"timestamp": "soon"}}),
        json!({"connect_auth_request": {"timestamp": -2}}),
        json!({"did_registry_update": []}),
    ];
    for evt in malformed {
        assert!(
            matches!(decode_event(&evt), Err(Undecodable::Malformed(_))),
            "{evt}"
        );
    }
    assert_eq!(
        decode_event(&json!({"connect_relay": {}})),
        Err(Undecodable::UnknownMember)
    );
    assert_eq!(decode_event(&json!({})), Err(Undecodable::UnknownMember));
}

#[test]
fn a_resource_event_without_a_resource_has_null() {
    let evt = json!({"connect_resource": {"event": "CONNECT_RESOURCE_EVENT_DELETE"}});
    assert_eq!(
        decode_event(&evt),
        Ok(SessionEvent::Resource {
            kind: ResourceEventKind::Deleted,
            resource: Value::Null
        })
    );
}

#[test]
fn auth_requests_decode_with_their_context_parsed() {
    let evt = json!({"connect_auth_request": {
        "session": {"id": "s1"},
        "request_type": "CONNECT_AUTH_REQUEST_TYPE_NEW_SESSION",
        "context": "{\"access_request\":{\"id\":\"a1\"}}",
        "challenge": "1234",
        "timestamp": "1767225600000",
    }});
    assert_eq!(
        decode_event(&evt),
        Ok(SessionEvent::AuthRequest {
            request_type: "CONNECT_AUTH_REQUEST_TYPE_NEW_SESSION".into(),
            session: json!({"id": "s1"}),
            context: json!({"access_request": {"id": "a1"}}),
            challenge: "1234".into(),
            timestamp_ms: 1_767_225_600_000,
        })
    );
    // Defaults left out; a context that is not JSON stays text.
    let evt = json!({"connect_auth_request": {"context": "plain words", "request_type": 9}});
    assert_eq!(
        decode_event(&evt),
        Ok(SessionEvent::AuthRequest {
            request_type: "9".into(),
            session: Value::Null,
            context: json!("plain words"),
            challenge: String::new(),
            timestamp_ms: 0,
        })
    );
    let evt = json!({"did_registry_update": {"update": {"did": "did:x"}}});
    assert_eq!(
        decode_event(&evt),
        Ok(SessionEvent::DidRegistryUpdate(json!({"did": "did:x"})))
    );
}

#[test]
fn the_hello_says_what_the_options_ask() {
    let plain = SessionOptions::new().hello();
    let hello = plain["hello"].as_object().expect("hello");
    assert_eq!(hello["ping_interval"], json!(10_000));
    let stamp: u64 = hello["timestamp"]
        .as_str()
        .expect("a string")
        .parse()
        .expect("ms");
    assert!(stamp > 1_700_000_000_000, "milliseconds: {stamp}");
    assert_eq!(hello.len(), 2, "nothing else: {plain}");

    let all = SessionOptions::new()
        .resource_event_kinds([ResourceEventKind::Created, ResourceEventKind::DatabaseWrite])
        .auth_requests(true)
        .did_registry_updates(true)
        .accept_invocation(true)
        .online_services(true)
        .ping_every(Duration::from_millis(1500))
        .hello();
    assert_eq!(
        all["hello"],
        json!({
            "ping_interval": 1500,
            "timestamp": all["hello"]["timestamp"],
            "subscribe_resource_events": true,
            "resource_event_list": ["CONNECT_RESOURCE_EVENT_CREATE", "CONNECT_RESOURCE_EVENT_DATABASE_WRITE"],
            "subscribe_auth_requests": true,
            "subscribe_did_registry_updates": true,
            "accept_invocation": true,
            "online_services": true,
        })
    );
    // The hello is a valid ConnectRequest.
    let method = crate::protocol::schema::methods()
        .lookup(super::attempt::CONNECT)
        .expect("Connect");
    method.encode_request(&all).expect("encodes");
    // Resource events switched off again drop the filter too.
    let off = SessionOptions::new()
        .resource_event_kinds([ResourceEventKind::Deleted])
        .resource_events(false)
        .hello();
    assert!(off["hello"].get("resource_event_list").is_none(), "{off}");
    assert!(
        off["hello"].get("subscribe_resource_events").is_none(),
        "{off}"
    );
}

#[test]
fn option_bounds_are_kept() {
    let options = SessionOptions::new()
        .ping_every(Duration::ZERO)
        .event_buffer(0);
    assert_eq!(options.ping_every, Duration::from_millis(10));
    assert_eq!(options.event_buffer, 1);
    assert_eq!(
        SessionOptions::new().event_buffer(usize::MAX).event_buffer,
        1 << 16
    );
    assert_eq!(
        SessionOptions::new().fallback_ping_timeout(),
        Duration::from_secs(30)
    );
}

#[test]
fn acknowledges_parse_with_defaults_and_refuse_junk() {
    assert_eq!(
        parse_acknowledge(
            &json!({"connection_id": "c1", "timestamp": "5", "ping_interval": 30000})
        )
        .expect("ack"),
        ("c1".to_owned(), 30_000)
    );
    assert_eq!(
        parse_acknowledge(&json!({})).expect("ack"),
        (String::new(), 0)
    );
    for junk in [
        json!([]),
        json!({"connection_id": 3}),
        json!({"ping_interval": -1}),
        json!({"ping_interval": "x"}),
        json!({"ping_interval": true}),
    ] {
        assert!(
            parse_acknowledge(&junk).unwrap_err().is_protocol(),
            "{junk}"
        );
    }
}

#[test]
fn session_invalid_is_told_by_the_message_end() {
    let invalid = Error::from_status(Status::new(16, "Connect: session invalid", ""));
    assert_eq!(
        session_invalid(&invalid).as_deref(),
        Some("Connect: session invalid")
    );
    let other = Error::from_status(Status::new(16, "session invalid? no: expired token", ""));
    assert_eq!(session_invalid(&other), None);
    let plain = Error::new(ErrorKind::Closed, "the connection closed");
    assert_eq!(session_invalid(&plain), None);
}

#[test]
fn the_deadline_runs_from_the_oldest_unanswered_ping() {
    let mut liveness = Liveness::new(Duration::from_secs(30));
    assert_eq!(liveness.deadline(), None);
    let first = Instant::now();
    liveness.pinged(first);
    // A second ping does not move the deadline on.
    liveness.pinged(first + Duration::from_secs(10));
    assert_eq!(liveness.deadline(), Some(first + Duration::from_secs(30)));
    liveness.answered();
    assert_eq!(liveness.deadline(), None);
    let later = first + Duration::from_secs(20);
    liveness.pinged(later);
    assert_eq!(liveness.deadline(), Some(later + Duration::from_secs(30)));
}
