//! SaveDatabase (VoltAPI) and SaveSyncDatabase (SyncAPI), and copying a database's content.
//!
//! **SaveDatabase** creates a database as CreateDatabase does (a real SQLite file and a
//! resource of kinds `volt:database` and `volt:sqlite-database`) when `create` is set or the
//! resource's id names nothing; it needs `volt:resource-create` on the parent
//! (`create_in_parent_id`, else the caller's home folder). Otherwise it updates the database
//! resource's name, description, aliases, kinds (the database kinds are always kept) and
//! attributes (`purge_attributes` as SaveResource has it), which needs `volt:resource-write`
//! on it; a resource that is not a database is INVALID_ARGUMENT. `encrypted`, `read_audit` and
//! `write_audit` are accepted and ignored, as CreateDatabase does.
//!
//! **SaveSyncDatabase** is the same with the kind `volt:sync-database` added, as the vendor's
//! helpers make a sync database (a SQLite database the sync service keeps documents in);
//! `no_compaction` and `batch_size` are accepted and ignored. Its documents are served by
//! `services/sync` (SyncDocument), which keeps them in a table of the same SQLite file.

use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags};
use tdx_volt::proto::data::CreateDatabaseRequest;
use tdx_volt::proto::volt::{self as pb, Resource};

use crate::call::{Caller, Code, Failure, Inbound, Outbound};
use crate::services::access::names;
use crate::services::resources::kind;
use crate::services::{unary, Services};

use super::{databases, run_blocking};

/// The VoltAPI methods [`dispatch`] routes (it also routes SyncAPI's SaveSyncDatabase).
pub const METHODS: [&str; 1] = ["SaveDatabase"];

/// The kind a sync database carries besides the database kinds.
pub const SYNC_DATABASE_KIND: &str = "volt:sync-database";

/// What SaveDatabase and SaveSyncDatabase ask for.
struct Save {
    resource: Resource,
    create: bool,
    create_in_parent_id: String,
    purge_attributes: bool,
    extra_kind: Option<&'static str>,
}

/// Routes SaveDatabase and SaveSyncDatabase.
pub async fn dispatch(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    match name {
        "SaveDatabase" => {
            unary(inbound, outbound, |r: pb::SaveDatabaseRequest| async move {
                let save = Save {
                    resource: r.resource.unwrap_or_default(),
                    create: r.create,
                    create_in_parent_id: r.create_in_parent_id,
                    purge_attributes: r.purge_attributes,
                    extra_kind: None,
                };
                Ok(pb::SaveDatabaseResponse {
                    status: None,
                    resource: Some(save_database(svc, caller, save).await?),
                })
            })
            .await
        }
        "SaveSyncDatabase" => {
            unary(
                inbound,
                outbound,
                |r: pb::SaveSyncDatabaseRequest| async move {
                    let save = Save {
                        resource: r.resource.unwrap_or_default(),
                        create: r.create,
                        create_in_parent_id: r.create_in_parent_id,
                        purge_attributes: r.purge_attributes,
                        extra_kind: Some(SYNC_DATABASE_KIND),
                    };
                    Ok(pb::SaveSyncDatabaseResponse {
                        status: None,
                        resource: Some(save_database(svc, caller, save).await?),
                    })
                },
            )
            .await
        }
        _ => Err(Failure::unimplemented(&format!(
            "/tdx.volt_api.volt.v1.VoltAPI/{name}"
        ))),
    }
}

/// The kinds a saved database gets: the requested ones with the database kinds (and the
/// extra kind) added.
fn database_kinds(asked: &[String], extra: Option<&str>) -> Vec<String> {
    let mut kinds = asked.to_vec();
    for k in kind::database().into_iter().chain(extra.map(str::to_owned)) {
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    kinds
}

async fn save_database(
    svc: &Arc<Services>,
    caller: &Caller,
    save: Save,
) -> Result<Resource, Failure> {
    let store = svc.resources();
    let existing = (!save.resource.id.is_empty())
        .then(|| store.get(&save.resource.id))
        .flatten();
    let mut resource = save.resource;
    match existing {
        Some(existing) if save.create => Err(Failure::reply(
            Code::AlreadyExists,
            format!("resource exists: {}", existing.id),
        )),
        Some(existing) => {
            if !kind::has(&existing.kind, kind::Role::Database) {
                return Err(Failure::invalid(format!(
                    "resource {} is not a database",
                    existing.id
                )));
            }
            svc.authorize(caller, &existing.id, names::WRITE)?;
            resource.id = existing.id;
            if !resource.kind.is_empty() || save.extra_kind.is_some() {
                let asked = if resource.kind.is_empty() {
                    existing.kind
                } else {
                    resource.kind
                };
                resource.kind = database_kinds(&asked, save.extra_kind);
            }
            store.update(&resource, save.purge_attributes).await
        }
        None => {
            let parent = if save.create_in_parent_id.is_empty() {
                svc.home_folder(caller).await
            } else {
                save.create_in_parent_id
            };
            svc.authorize(caller, &parent, names::CREATE)?;
            let request = CreateDatabaseRequest {
                name: resource.name.clone(),
                create_in_parent_id: parent,
                alias: resource.alias.clone(),
                description: resource.description.clone(),
                ..CreateDatabaseRequest::default()
            };
            let created = databases::create_database(svc, caller, request)
                .await?
                .resource
                .ok_or_else(|| Failure::internal("creating database", "no resource"))?;
            let kinds = database_kinds(&resource.kind, save.extra_kind);
            if kinds == created.kind && resource.attribute.is_empty() {
                return Ok(created);
            }
            let update = Resource {
                id: created.id,
                kind: kinds,
                attribute: resource.attribute,
                ..Resource::default()
            };
            store.update(&update, false).await
        }
    }
}

/// Copies the database of resource `from` into a new file for resource `to` (nothing when
/// `from` has no file yet). The copy is a consistent snapshot (`VACUUM INTO`), also while
/// other calls write to the source.
pub async fn copy_database(svc: &Arc<Services>, from: &str, to: &str) -> Result<(), Failure> {
    let sqlite = svc.sqlite();
    let (Some(source), Some(target)) = (sqlite.path_of(from), sqlite.path_of(to)) else {
        return Err(Failure::internal(
            "copying database",
            "an id that names no database file",
        ));
    };
    run_blocking(move || vacuum_into(&source, &target)).await
}

fn vacuum_into(source: &Path, target: &Path) -> Result<(), Failure> {
    if !source.is_file() {
        return Ok(());
    }
    let conn = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Failure::internal("copying database", e))?;
    conn.busy_timeout(super::BUSY_TIMEOUT)
        .map_err(|e| Failure::internal("copying database", e))?;
    let target = target
        .to_str()
        .ok_or_else(|| Failure::internal("copying database", "a path that is not UTF-8"))?;
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(|e| Failure::internal("copying database", e))?;
    drop(conn);
    // The copy is in rollback-journal mode; databases here are kept in WAL mode.
    let copy = Connection::open_with_flags(
        target,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Failure::internal("copying database", e))?;
    copy.query_row("PRAGMA journal_mode=WAL", [], |row| row.get::<_, String>(0))
        .map_err(|e| Failure::internal("copying database", e))?;
    Ok(())
}
