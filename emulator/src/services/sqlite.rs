//! SqliteServerAPI and SqliteDatabaseAPI over real SQLite databases kept in the data directory.

use std::path::Path;
use std::sync::Arc;

use crate::call::{Caller, Failure, Inbound, Outbound};

use super::Services;

/// The SQLite databases of this Volt.
pub struct SqliteService {}

impl SqliteService {
    /// Opens the database area of the data directory.
    pub fn open(_dir: &Path) -> tdx_volt::Result<SqliteService> {
        Ok(SqliteService {})
    }
}

impl SqliteService {
    /// Drops whatever is kept for a deleted resource.
    pub fn forget(&self, _resource_id: &str) {}
}

/// Routes a SqliteServerAPI / SqliteDatabaseAPI method.
pub async fn dispatch(
    _svc: &Arc<Services>,
    _caller: &Caller,
    name: &str,
    _inbound: Inbound,
    _outbound: &Outbound,
) -> Result<(), Failure> {
    Err(Failure::unimplemented(name))
}
