//! What changed in the resource tree, told to a listener as each change is made. The store
//! knows nothing of who may hear of a change: the listener (set by the services) decides.

use std::sync::OnceLock;

use tdx_volt::proto::volt::Resource;

/// What happened to a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// It was created.
    Created,
    /// Its description or its content (size, modified time) changed.
    Updated,
    /// It was deleted.
    Deleted,
    /// SQL wrote to it (a database), and the write is committed.
    DatabaseWritten,
}

/// One change to one resource.
#[derive(Clone, Debug)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// The resource as it is after the change (as it was, for a deletion).
    pub resource: Resource,
    /// The resource and the folders above it, nearest first: each one's id and owner, taken
    /// under the tree's lock with the change (before the removal, for a deletion).
    pub lineage: Vec<(String, String)>,
}

impl Change {
    /// The parent's lineage (the folders above the resource), or `None` for the root.
    pub fn parent_lineage(&self) -> Option<&[(String, String)]> {
        self.lineage.get(1..).filter(|rest| !rest.is_empty())
    }
}

/// Hears every change, in the order the changes are made. It is called with the tree's lock
/// held, so it must be quick, must not block and must not call back into the store.
pub type Listener = Box<dyn Fn(&Change) + Send + Sync>;

/// Where a store's changes go: nowhere until a listener is set (once).
#[derive(Default)]
pub struct ChangeSink {
    listener: OnceLock<Listener>,
}

impl ChangeSink {
    /// Sets the listener; `false` when one was set already (it is kept).
    pub fn set(&self, listener: Listener) -> bool {
        self.listener.set(listener).is_ok()
    }

    /// Tells the listener of `changes`, in order.
    pub fn tell(&self, changes: &[Change]) {
        if let Some(listener) = self.listener.get() {
            for change in changes {
                listener(change);
            }
        }
    }
}
