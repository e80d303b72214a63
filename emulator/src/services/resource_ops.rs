//! MoveResource, CopyResource and SaveSymbolicLink.
//!
//! - **MoveResource** moves a resource, with what it holds, into the folder `to_resource_id`.
//!   A move takes the resource out of its folder and puts it in another, so it needs what a
//!   delete there and a create here need: `volt:resource-delete` on the resource and
//!   `volt:resource-create` on the target folder. `from_resource_id`, when given, must be the
//!   resource's folder now (FAILED_PRECONDITION otherwise). The Volt root cannot be moved, and
//!   nothing moves into itself or its own descendant (INVALID_ARGUMENT); the target must be a
//!   folder (INVALID_ARGUMENT) that exists (NOT_FOUND).
//! - **CopyResource** (mode COPY, or unset) copies a resource into the folder `to_resource_id`
//!   under a fresh id, with its metadata, kinds and attributes, and its content: a database's
//!   SQLite file, a file's bytes. With `recursive`, everything it holds is copied too, in the
//!   same shape. Copies belong to the caller and carry no aliases (an alias names one resource
//!   only); access rules are not copied, as the API says. It needs `volt:resource-read` on every
//!   resource copied and `volt:resource-create` on the target folder. Mode LINK is not
//!   implemented: it answers UNIMPLEMENTED as the response's status.
//! - **SaveSymbolicLink** (`volt:api-call` / `volt:save-symbolic-link`) creates or updates a
//!   resource of kind [`SYMBOLIC_LINK_KIND`] (the vendor's packages name none; this follows
//!   their `volt:` spelling), as SaveResource does, with the same access (`volt:resource-create`
//!   on the parent, `volt:resource-write` to update one; updating a resource that is not a
//!   symbolic link is INVALID_ARGUMENT). The emulator keeps the link's metadata and attributes
//!   only: it follows no link and serves nothing of the host's file system through one.

use std::sync::Arc;

use tdx_volt::proto::volt::{self as pb, CopyResourceMode};

use crate::call::{Caller, Code, Failure, Inbound, Outbound};

use super::access::names;
use super::resources::kind;
use super::{unary, Services};

/// The methods [`dispatch`] routes.
pub const METHODS: [&str; 3] = ["MoveResource", "CopyResource", "SaveSymbolicLink"];

/// The kind of a symbolic link resource.
pub const SYMBOLIC_LINK_KIND: &str = "volt:symbolic-link";

/// The most resources one CopyResource may copy.
pub const MAX_COPY_RESOURCES: usize = 10_000;

/// Routes one of the [`METHODS`].
pub async fn dispatch(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    match name {
        "MoveResource" => unary(inbound, outbound, |r| move_resource(svc, caller, r)).await,
        "CopyResource" => unary(inbound, outbound, |r| copy_resource(svc, caller, r)).await,
        "SaveSymbolicLink" => {
            unary(inbound, outbound, |r| save_symbolic_link(svc, caller, r)).await
        }
        _ => Err(Failure::unimplemented(&format!(
            "/tdx.volt_api.volt.v1.VoltAPI/{name}"
        ))),
    }
}

async fn move_resource(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::MoveResourceRequest,
) -> Result<pb::MoveResourceResponse, Failure> {
    if r.resource_id.is_empty() || r.to_resource_id.is_empty() {
        return Err(Failure::invalid(
            "MoveResource needs resource_id and to_resource_id",
        ));
    }
    if svc.resources().get(&r.resource_id).map(|x| x.id).as_deref()
        == Some(svc.resources().root_id())
    {
        return Err(Failure::invalid("the Volt root cannot be moved"));
    }
    svc.authorize(caller, &r.resource_id, names::DELETE)?;
    svc.authorize(caller, &r.to_resource_id, names::CREATE)?;
    svc.resources()
        .move_to(&r.resource_id, &r.from_resource_id, &r.to_resource_id)
        .await?;
    Ok(pb::MoveResourceResponse { status: None })
}

async fn copy_resource(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::CopyResourceRequest,
) -> Result<pb::CopyResourceResponse, Failure> {
    match CopyResourceMode::try_from(r.mode) {
        Ok(CopyResourceMode::Unknown | CopyResourceMode::Copy) => {}
        Ok(CopyResourceMode::Link) => {
            return Err(Failure::reply(
                Code::Unimplemented,
                "CopyResource: mode LINK is not implemented by volt-emulator",
            ))
        }
        Err(_) => return Err(Failure::invalid(format!("unknown copy mode {}", r.mode))),
    }
    if r.resource_id.is_empty() || r.to_resource_id.is_empty() {
        return Err(Failure::invalid(
            "CopyResource needs resource_id and to_resource_id",
        ));
    }
    let store = svc.resources();
    let sources = store.copy_sources(&r.resource_id, r.recursive)?;
    if sources.len() > MAX_COPY_RESOURCES {
        return Err(Failure::reply(
            Code::ResourceExhausted,
            format!("CopyResource copies at most {MAX_COPY_RESOURCES} resources"),
        ));
    }
    for source in &sources {
        svc.authorize(caller, &source.id, names::READ)?;
    }
    svc.authorize(caller, &r.to_resource_id, names::CREATE)?;
    let copies = store
        .copy_into(&sources, &r.to_resource_id, &caller.client_id)
        .await?;
    if let Err(failure) = copy_contents(svc, &copies).await {
        // A copy is whole or not made: drop what was made.
        if let Some((_, top)) = copies.first() {
            let _ = store.delete(&top.id, true).await;
        }
        for (_, copy) in &copies {
            svc.sqlite().forget(&copy.id);
            svc.files().forget(&copy.id);
        }
        return Err(failure);
    }
    Ok(pb::CopyResourceResponse { status: None })
}

/// Copies each source's content (database file, file bytes) to its copy.
async fn copy_contents(
    svc: &Arc<Services>,
    copies: &[(String, pb::Resource)],
) -> Result<(), Failure> {
    for (from, copy) in copies {
        if kind::has(&copy.kind, kind::Role::Database) {
            super::sqlite::save_database::copy_database(svc, from, &copy.id).await?;
        } else if kind::has(&copy.kind, kind::Role::File) {
            let files = svc.clone();
            let (from, to) = (from.clone(), copy.id.clone());
            tokio::task::spawn_blocking(move || files.files().copy_content(&from, &to))
                .await
                .map_err(|e| Failure::internal("copying file content", e))??;
        }
    }
    Ok(())
}

async fn save_symbolic_link(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::SaveResourceRequest,
) -> Result<pb::SaveResourceResponse, Failure> {
    svc.authorize_api(caller, "volt:save-symbolic-link")?;
    let mut link = r
        .resource
        .ok_or_else(|| Failure::invalid("SaveSymbolicLink needs a resource"))?;
    if !link.kind.iter().any(|k| k == SYMBOLIC_LINK_KIND) {
        link.kind.push(SYMBOLIC_LINK_KIND.to_owned());
    }
    let store = svc.resources();
    let existing = (!link.id.is_empty()).then(|| store.get(&link.id)).flatten();
    let saved = match existing {
        Some(existing) if !r.create => {
            if !existing.kind.iter().any(|k| k == SYMBOLIC_LINK_KIND) {
                return Err(Failure::invalid(format!(
                    "resource {} is not a symbolic link",
                    existing.id
                )));
            }
            svc.authorize(caller, &existing.id, names::WRITE)?;
            link.id = existing.id;
            store.update(&link, r.purge_attributes).await?
        }
        _ => {
            let parent = if r.create_in_parent_id.is_empty() {
                svc.home_folder(caller).await
            } else {
                r.create_in_parent_id
            };
            svc.authorize(caller, &parent, names::CREATE)?;
            store.create(&parent, &caller.client_id, link).await?
        }
    };
    Ok(pb::SaveResourceResponse {
        status: None,
        resource: Some(saved),
    })
}
