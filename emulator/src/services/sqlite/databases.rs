//! Creating database files, and finding and opening them for a call.
//!
//! **CreateDatabase** (unary): needs a `name`; the parent is `create_in_parent_id` or the
//! caller's home folder; aliases must be unique across the Volt. `encrypted`, `read_audit`,
//! `write_audit` and `discoverable` are accepted and ignored. The response carries the new
//! resource (its `id` is the `database_id` for the other methods).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::config::DbConfig;
use rusqlite::limits::Limit;
use rusqlite::{Connection, OpenFlags};
use tdx_volt::proto::data as pb;
use tdx_volt::proto::volt::Resource;

use crate::call::{Caller, Code, Failure};
use crate::services::access::names;
use crate::services::resources::{kind, new_id};
use crate::services::Services;

use super::{run_blocking, SqliteService, BUSY_TIMEOUT};

impl SqliteService {
    /// The file holding a database resource's content, or `None` when the id could not name a
    /// file of ours (only ASCII letters, digits, `-` and `_` are accepted).
    pub fn path_of(&self, resource_id: &str) -> Option<PathBuf> {
        let plain = !resource_id.is_empty()
            && resource_id.len() <= 128
            && resource_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        plain.then(|| self.dir.join(format!("{resource_id}.sqlite")))
    }

    /// Drops whatever is kept for a deleted resource: the database file and its journals.
    pub fn forget(&self, resource_id: &str) {
        let Some(path) = self.path_of(resource_id) else {
            return;
        };
        for file in with_companions(&path) {
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("removing {}: {e}", file.display()),
            }
        }
    }
}

/// A database file and the journal files SQLite may keep next to it.
fn with_companions(path: &Path) -> Vec<PathBuf> {
    let mut files = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(PathBuf::from(name));
    }
    files
}

/// The size reported for a database resource: the file plus its write-ahead log.
fn file_size(path: &Path) -> u64 {
    with_companions(path)
        .iter()
        .take(2)
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

/// The database `database_id` names (an id or alias) and its file, once `caller` is found to
/// have `access` to it.
pub(crate) fn resolve_database(
    svc: &Services,
    caller: &Caller,
    database_id: &str,
    access: &str,
) -> Result<(Resource, PathBuf), Failure> {
    let (resource, path) = find_database(svc, database_id)?;
    svc.authorize(caller, &resource.id, access)?;
    Ok((resource, path))
}

/// The database `database_id` names (an id or alias) and its file, with no access checked:
/// for callers that check access their own way.
pub(crate) fn find_database(
    svc: &Services,
    database_id: &str,
) -> Result<(Resource, PathBuf), Failure> {
    if database_id.is_empty() {
        return Err(Failure::invalid("database_id is required"));
    }
    let is_database = |r: &Resource| kind::has(&r.kind, kind::Role::Database);
    let resource = match svc.resources().get(database_id) {
        Some(r) => r,
        None => svc
            .resources()
            .all()
            .into_iter()
            .map(|(_, r)| r)
            .find(|r| is_database(r) && r.alias.iter().any(|a| a == database_id))
            .ok_or_else(|| Failure::not_found(format!("database not found: {database_id}")))?,
    };
    if !is_database(&resource) {
        return Err(Failure::invalid(format!(
            "resource {database_id} is not a database"
        )));
    }
    // A resource saved with a database kind (as the vendor's helpers make one) gets its file
    // on first use: `connect` creates it.
    let path = svc.sqlite().path_of(&resource.id).ok_or_else(|| {
        Failure::invalid(format!(
            "database {database_id}: its id cannot name a database file"
        ))
    })?;
    Ok((resource, path))
}

/// Records that a committed SQL write changed a database (size, version, modified time;
/// Connect subscribers hear of it as DATABASE_WRITE). Blocks on writing the resource tree:
/// called on the call's blocking thread.
pub(super) fn touch(svc: &Services, resource_id: &str, path: &Path) {
    if let Err(e) = svc
        .resources()
        .database_written_blocking(resource_id, file_size(path))
    {
        tracing::debug!("updating database resource {resource_id}: {e}");
    }
}

/// Opens a connection to an existing database file for one call.
pub(crate) fn connect(path: &Path) -> Result<Connection, Failure> {
    if !path.is_file() {
        create_file(path)?;
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Failure::internal("opening database", e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| Failure::internal("configuring database", e))?;
    // Defensive mode stops SQL from corrupting the file (writable_schema and friends);
    // ATTACH would reach files outside the data directory.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
        .map_err(|e| Failure::internal("configuring database", e))?;
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)
        .map_err(|e| Failure::internal("configuring database", e))?;
    Ok(conn)
}

pub(super) async fn create_database(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::CreateDatabaseRequest,
) -> Result<pb::CreateDatabaseResponse, Failure> {
    if r.name.trim().is_empty() {
        return Err(Failure::invalid("CreateDatabase needs a name"));
    }
    let store = svc.resources();
    let parent = if r.create_in_parent_id.is_empty() {
        crate::services::volt_api::home_of(svc, caller).await
    } else {
        r.create_in_parent_id.clone()
    };
    if store.get(&parent).is_none() {
        return Err(Failure::not_found(format!("parent not found: {parent}")));
    }
    svc.authorize(caller, &parent, names::CREATE)?;
    let existing = store.all();
    for (i, alias) in r.alias.iter().enumerate() {
        if alias.trim().is_empty() {
            return Err(Failure::invalid("a database alias must not be empty"));
        }
        if r.alias[..i].contains(alias) || existing.iter().any(|(_, x)| x.alias.contains(alias)) {
            return Err(Failure::reply(
                Code::AlreadyExists,
                format!("alias already in use: {alias}"),
            ));
        }
    }

    let id = new_id();
    let path = svc
        .sqlite()
        .path_of(&id)
        .ok_or_else(|| Failure::internal("creating database", "unusable resource id"))?;
    let size = {
        let path = path.clone();
        run_blocking(move || create_file(&path)).await?
    };
    let template = Resource {
        id: id.clone(),
        name: r.name,
        description: r.description,
        kind: kind::database(),
        alias: r.alias,
        size,
        ..Resource::default()
    };
    match store.create(&parent, &caller.client_id, template).await {
        Ok(resource) => Ok(pb::CreateDatabaseResponse {
            status: None,
            resource: Some(resource),
        }),
        Err(failure) => {
            svc.sqlite().forget(&id);
            Err(failure)
        }
    }
}

/// Creates an empty database file in WAL mode; returns its size.
fn create_file(path: &Path) -> Result<u64, Failure> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Failure::internal("creating database file", e))?;
    conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get::<_, String>(0))
        .map_err(|e| Failure::internal("creating database file", e))?;
    drop(conn);
    Ok(file_size(path))
}
