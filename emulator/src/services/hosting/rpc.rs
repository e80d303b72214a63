//! DiscoverServices and SetServiceStatus.
//!
//! - **DiscoverServices** lists the service resources (those with a `service_description`) the
//!   caller may read (`volt:resource-read`) whose `service_api` holds a name matching any of the
//!   request's `service_api` terms (every service when there is none; `*` and `?` are
//!   wildcards, as in GetResources). Online services only, unless `include_offline`. Each
//!   comes without its `proto_file`s unless `include_protobuf`, and without its attributes
//!   unless `include_attributes`.
//! - **SetServiceStatus** sets a service's `online_status` (ONLINE or OFFLINE) as the resource
//!   `service` gives it, for the service's host ([`host_of`]) or a client that may write it
//!   (its owners). A service comes online only on a live Connect stream of its host that set
//!   `accept_invocation`: the one `service_description.host_connection_id` names, else the
//!   newest (FAILED_PRECONDITION when there is none). `host_public_key` is the one given, else
//!   the one recorded, else the host's own key; `ping_timestamp` the one given, else now.
//!   When that stream ends the service goes offline (see the module above). Answers the
//!   updated resource.

use std::sync::Arc;

use tdx_volt::proto::volt::{self as pb, OnlineStatus};

use crate::call::{Caller, Code, Failure, Inbound, Outbound};

use super::super::access::names;
use super::super::volt_api::wildcard;
use super::super::{unary, Services};
use super::{host_of, is_service, mark_offline, mark_online};

/// The methods [`dispatch`] routes.
pub const METHODS: [&str; 2] = ["DiscoverServices", "SetServiceStatus"];

/// Routes one of the [`METHODS`].
pub async fn dispatch(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    match name {
        "DiscoverServices" => {
            unary(
                inbound,
                outbound,
                |r| async move { discover(svc, caller, &r) },
            )
            .await
        }
        "SetServiceStatus" => unary(inbound, outbound, |r| set_status(svc, caller, r)).await,
        _ => Err(Failure::unimplemented(&format!(
            "/tdx.volt_api.volt.v1.VoltAPI/{name}"
        ))),
    }
}

fn discover(
    svc: &Services,
    caller: &Caller,
    r: &pb::DiscoverServicesRequest,
) -> Result<pb::DiscoverServicesResponse, Failure> {
    let readable = svc.readable_by(caller);
    let wanted = |s: &pb::Resource| {
        r.service_api.is_empty()
            || s.service_description.as_ref().is_some_and(|d| {
                d.service_api
                    .iter()
                    .any(|api| r.service_api.iter().any(|p| wildcard(p, api)))
            })
    };
    let resource = svc
        .resources()
        .services()
        .into_iter()
        .filter(|s| r.include_offline || s.online_status == OnlineStatus::Online as i32)
        .filter(|s| wanted(s))
        .filter(|s| readable(&s.id))
        .map(|mut s| {
            if !r.include_protobuf {
                if let Some(d) = s.service_description.as_mut() {
                    d.proto_file.clear();
                }
            }
            if !r.include_attributes {
                s.attribute.clear();
            }
            s
        })
        .collect();
    Ok(pb::DiscoverServicesResponse {
        status: None,
        resource,
    })
}

async fn set_status(
    svc: &Services,
    caller: &Caller,
    r: pb::SetServiceStatusRequest,
) -> Result<pb::SetServiceStatusResponse, Failure> {
    let asked = r
        .service
        .filter(|s| !s.id.is_empty())
        .ok_or_else(|| Failure::invalid("SetServiceStatus needs the service (with its id)"))?;
    let current = svc.resources().require(&asked.id)?;
    if !is_service(&current) {
        return Err(Failure::invalid(format!(
            "{} is not a service (it has no service_description)",
            asked.id
        )));
    }
    let host = host_of(&current).to_owned();
    if host != caller.client_id {
        svc.authorize(caller, &current.id, names::WRITE)?;
    }
    let given = asked.service_description.unwrap_or_default();
    let updated = match OnlineStatus::try_from(asked.online_status) {
        Ok(OnlineStatus::Online) => {
            let connection = svc
                .hosts()
                .connection_of(&host, &given.host_connection_id, "", false)
                .filter(|c| given.host_connection_id.is_empty() || *c == given.host_connection_id)
                .ok_or_else(|| {
                    Failure::reply(
                        Code::FailedPrecondition,
                        format!(
                            "{host} has no live Connect stream with accept_invocation{}: a \
                             service comes online on one",
                            if given.host_connection_id.is_empty() {
                                String::new()
                            } else {
                                format!(" named {}", given.host_connection_id)
                            }
                        ),
                    )
                })?;
            let own_key = svc
                .clients()
                .by_client(&host)
                .map(|s| s.public_key_pem)
                .unwrap_or_default();
            svc.resources()
                .set_service_state(&current.id, |x| {
                    if let Some(d) = x.service_description.as_mut() {
                        if !given.host_public_key.is_empty() {
                            d.host_public_key.clone_from(&given.host_public_key);
                        }
                    }
                    mark_online(x, &connection, &own_key);
                    if let Some(d) = x.service_description.as_mut() {
                        if given.ping_timestamp != 0 {
                            d.ping_timestamp = given.ping_timestamp;
                        }
                    }
                })
                .await?
        }
        Ok(OnlineStatus::Offline) => {
            svc.resources()
                .set_service_state(&current.id, mark_offline)
                .await?
        }
        _ => {
            return Err(Failure::invalid(
                "SetServiceStatus: online_status must be ONLINE or OFFLINE",
            ))
        }
    };
    Ok(pb::SetServiceStatusResponse {
        status: None,
        resource: Some(updated),
    })
}
