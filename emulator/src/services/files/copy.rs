//! Copying a file resource's content (CopyResource).

use crate::call::Failure;

use super::FileStore;

impl FileStore {
    /// Copies the content kept for `from` to `to` (nothing when `from` has none yet).
    pub fn copy_content(&self, from: &str, to: &str) -> Result<(), Failure> {
        let source = self.path_of(from);
        if !source.is_file() {
            return Ok(());
        }
        let target = self.path_of(to);
        std::fs::copy(&source, &target)
            .map(drop)
            .map_err(|e| Failure::internal("copying file content", e))
    }
}
