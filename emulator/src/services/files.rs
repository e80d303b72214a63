//! FileAPI: file contents kept in the data directory.

use std::path::Path;
use std::sync::Arc;

use crate::call::{Caller, Failure, Inbound, Outbound};

use super::Services;

/// File contents.
pub struct FileStore {}

impl FileStore {
    /// Opens the file area of the data directory.
    pub fn open(_dir: &Path) -> tdx_volt::Result<FileStore> {
        Ok(FileStore {})
    }
}

impl FileStore {
    /// Drops whatever is kept for a deleted resource.
    pub fn forget(&self, _resource_id: &str) {}
}

/// Routes a FileAPI method.
pub async fn dispatch(
    _svc: &Arc<Services>,
    _caller: &Caller,
    name: &str,
    _inbound: Inbound,
    _outbound: &Outbound,
) -> Result<(), Failure> {
    Err(Failure::unimplemented(name))
}
