//! The resource tree: the Volt root, a home folder per client, and everything created under
//! them (databases, wires, files, folders). Persisted as proto3 JSON in `DIR/resources.json`,
//! rewritten atomically to hold the latest tree.
//!
//! A change is made in memory under the tree's lock, where it gets its version; it returns
//! once the file holds that version. The file is written by one caller at a time, with every
//! change made so far, after the lock is released (`crate::snapshot_file` tells how changes
//! are committed in groups), so a burst of changes costs a few writes, not one each.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};
use tdx_volt::proto::volt::{Resource, ResourceStatus, ShareMode};

use crate::call::{Code, Failure};
use crate::files::read_optional;
use crate::proto_json::{from_json, to_json};
use crate::snapshot_file::{Render, Snapshot, SnapshotFile};

pub mod changes;
pub mod service_state;
pub use changes::{Change, ChangeKind, Listener};

/// The file the tree is kept in.
pub const RESOURCES_FILE: &str = "resources.json";

/// Resource kinds. What the emulator creates carries the vendor's `volt:` kinds, as its
/// `@tdxvolt/volt-utility` package names them (`volt:folder`, `volt:wire`, `volt:database`
/// with `volt:sqlite-database`, `volt:file`); the bare kinds earlier emulator versions wrote
/// (`folder`, `wire`, `database`, `file`) are recognised as the same.
pub mod kind {
    /// The Volt itself (the root).
    pub const VOLT: &str = "volt";
    /// A folder.
    pub const FOLDER: &str = "volt:folder";
    /// A client's home folder.
    pub const HOME: &str = "home";
    /// A database, of whatever engine.
    pub const DATABASE: &str = "volt:database";
    /// A SQLite database.
    pub const SQLITE_DATABASE: &str = "volt:sqlite-database";
    /// A wire.
    pub const WIRE: &str = "volt:wire";
    /// A file.
    pub const FILE: &str = "volt:file";

    /// What a kind makes a resource, for the services that serve it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Role {
        /// Holds other resources: the Volt, a home, a folder.
        Container,
        /// A SQLite database (SqliteDatabaseAPI).
        Database,
        /// A wire (WireAPI).
        Wire,
        /// A file (FileAPI).
        File,
    }

    /// The role `kind` gives a resource, if any.
    pub fn role(kind: &str) -> Option<Role> {
        match kind {
            VOLT | HOME | FOLDER | "folder" | "volt:system-folder" => Some(Role::Container),
            DATABASE | SQLITE_DATABASE | "database" => Some(Role::Database),
            WIRE | "wire" => Some(Role::Wire),
            FILE | "file" => Some(Role::File),
            _ => None,
        }
    }

    /// Whether one of `kinds` gives the resource `role`.
    pub fn has(kinds: &[String], role: Role) -> bool {
        kinds.iter().any(|k| self::role(k) == Some(role))
    }

    /// The kinds a new database gets.
    pub fn database() -> Vec<String> {
        vec![DATABASE.to_owned(), SQLITE_DATABASE.to_owned()]
    }
}

#[derive(Clone)]
struct Node {
    parent: Option<String>,
    resource: Resource,
}

struct Tree {
    nodes: HashMap<String, Node>,
    /// Insertion order, so listings are stable.
    order: Vec<String>,
    /// Changes made since the store was opened: the version of the latest change.
    version: u64,
    /// What the change being made did, for the listener.
    pending: Vec<Change>,
}

/// The resource tree, shared by every service.
pub struct ResourceStore {
    volt_id: String,
    tree: Arc<Mutex<Tree>>,
    file: Arc<SnapshotFile>,
    changes: changes::ChangeSink,
}

/// Milliseconds since the epoch, for `created` / `modified` (the API's unit).
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A fresh random resource id (128 bits, hex, in the 8-4-4-4-12 layout).
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl ResourceStore {
    /// Loads the tree from `dir`, creating the Volt root when it is missing.
    pub fn open(dir: &Path, volt_id: &str, volt_name: &str) -> tdx_volt::Result<ResourceStore> {
        let path = dir.join(RESOURCES_FILE);
        let mut tree = Tree {
            nodes: HashMap::new(),
            order: Vec::new(),
            version: 0,
            pending: Vec::new(),
        };
        if let Some(text) = read_optional(&path)? {
            load_into(&mut tree, &text).map_err(|e| {
                tdx_volt::Error::new(tdx_volt::ErrorKind::Io, format!("{}: {e}", path.display()))
            })?;
        }
        let tree = Arc::new(Mutex::new(tree));
        let store = ResourceStore {
            volt_id: volt_id.to_owned(),
            file: SnapshotFile::new(path, renderer(Arc::clone(&tree))),
            tree,
            changes: changes::ChangeSink::default(),
        };
        if store.get(volt_id).is_none() {
            let now = now_millis();
            let root = Resource {
                id: volt_id.to_owned(),
                name: volt_name.to_owned(),
                description: "volt-emulator".to_owned(),
                kind: vec![kind::VOLT.to_owned(), kind::FOLDER.to_owned()],
                volt_id: volt_id.to_owned(),
                owner: volt_id.to_owned(),
                created: now,
                modified: now,
                status: ResourceStatus::Live as i32,
                share_mode: ShareMode::Trusted as i32,
                ..Resource::default()
            };
            store
                .saved_blocking(store.change(|tree| Ok(insert(tree, None, root))))
                .map_err(|f| tdx_volt::Error::new(tdx_volt::ErrorKind::Io, f.to_string()))?;
        }
        Ok(store)
    }

    /// Sets who hears of every change from now on (once; `false` when one was set already).
    /// See [`Listener`] for what it may do.
    pub fn set_listener(&self, listener: Listener) -> bool {
        self.changes.set(listener)
    }

    /// The Volt root's id.
    pub fn root_id(&self) -> &str {
        &self.volt_id
    }

    fn lock(&self) -> MutexGuard<'_, Tree> {
        lock(&self.tree)
    }

    /// One resource, by id or `@alias`.
    pub fn get(&self, id: &str) -> Option<Resource> {
        let tree = self.lock();
        let id = resolved(&tree, id);
        tree.nodes.get(&id).map(|n| n.resource.clone())
    }

    /// One resource, or a NOT_FOUND reply naming it.
    pub fn require(&self, id: &str) -> Result<Resource, Failure> {
        self.get(id)
            .ok_or_else(|| Failure::not_found(format!("resource not found: {id}")))
    }

    /// The parent id of a resource (`None` for the root or an unknown id).
    pub fn parent_of(&self, id: &str) -> Option<String> {
        let tree = self.lock();
        let id = resolved(&tree, id);
        tree.nodes.get(&id).and_then(|n| n.parent.clone())
    }

    /// Creates a resource under `parent_id` (which must exist). `template` supplies name,
    /// description, kinds and attributes; id, volt_id, owner and times are filled in when
    /// empty.
    pub async fn create(
        &self,
        parent_id: &str,
        owner: &str,
        template: Resource,
    ) -> Result<Resource, Failure> {
        self.saved(self.created(parent_id, owner, template)).await
    }

    /// [`ResourceStore::create`] for code that is not async: writes the file on this thread.
    pub fn create_blocking(
        &self,
        parent_id: &str,
        owner: &str,
        template: Resource,
    ) -> Result<Resource, Failure> {
        self.saved_blocking(self.created(parent_id, owner, template))
    }

    /// Creates a client's home folder under the Volt root; returns its id.
    pub async fn create_home_folder(&self, client_id: &str, name: &str) -> Result<String, Failure> {
        let home = self
            .create(self.root_id(), client_id, home_folder(name))
            .await?;
        Ok(home.id)
    }

    /// [`ResourceStore::create_home_folder`] for code that is not async (issuing a client):
    /// writes the file on this thread.
    pub fn create_home_folder_blocking(
        &self,
        client_id: &str,
        name: &str,
    ) -> Result<String, Failure> {
        let home = self.create_blocking(self.root_id(), client_id, home_folder(name))?;
        Ok(home.id)
    }

    fn created(
        &self,
        parent_id: &str,
        owner: &str,
        mut template: Resource,
    ) -> Result<(Resource, u64), Failure> {
        if template.id.is_empty() {
            template.id = new_id();
        }
        let now = now_millis();
        template.volt_id = self.volt_id.clone();
        // The creator owns what it creates, whatever the template says: an owner grants
        // every access, so a client must not be able to name someone else (or the Volt).
        template.owner = owner.to_owned();
        template.created = now;
        template.modified = now;
        template.version = 1;
        if template.status == 0 {
            template.status = ResourceStatus::Live as i32;
        }
        template.child.clear();
        service_state::created_offline(&mut template);
        self.change(|tree| {
            let parent_id = resolved(tree, parent_id);
            if !tree.nodes.contains_key(&parent_id) {
                return Err(Failure::not_found(format!(
                    "parent resource not found: {parent_id}"
                )));
            }
            if tree.nodes.contains_key(&template.id) {
                return Err(Failure::reply(
                    Code::AlreadyExists,
                    format!("resource exists: {}", template.id),
                ));
            }
            check_aliases(tree, &template.alias, &template.id)?;
            let created = insert(tree, Some(parent_id), template);
            record(tree, ChangeKind::Created, &created);
            Ok(created)
        })
    }

    /// Updates an existing resource's descriptive fields (name, description, kinds,
    /// attributes, share mode, aliases, a service's description); bumps `version` and `modified`.
    pub async fn update(
        &self,
        incoming: &Resource,
        purge_attributes: bool,
    ) -> Result<Resource, Failure> {
        let change = self.change(|tree| {
            let id = resolved(tree, &incoming.id);
            if !incoming.alias.is_empty() {
                check_aliases(tree, &incoming.alias, &id)?;
            }
            let node = tree.nodes.get_mut(&id).ok_or_else(|| {
                Failure::not_found(format!("resource not found: {}", incoming.id))
            })?;
            let r = &mut node.resource;
            if !incoming.name.is_empty() {
                r.name = incoming.name.clone();
            }
            if !incoming.description.is_empty() {
                r.description = incoming.description.clone();
            }
            if !incoming.kind.is_empty() {
                r.kind = incoming.kind.clone();
            }
            if incoming.share_mode != 0 {
                r.share_mode = incoming.share_mode;
            }
            if !incoming.alias.is_empty() {
                r.alias = incoming.alias.clone();
            }
            service_state::merge_description(r, incoming);
            if purge_attributes {
                r.attribute = incoming.attribute.clone();
            } else {
                for attr in &incoming.attribute {
                    match r
                        .attribute
                        .iter_mut()
                        .find(|a| a.attribute_id == attr.attribute_id)
                    {
                        Some(existing) => *existing = attr.clone(),
                        None => r.attribute.push(attr.clone()),
                    }
                }
            }
            r.version += 1;
            r.modified = now_millis();
            let updated = r.clone();
            record(tree, ChangeKind::Updated, &updated);
            Ok(updated)
        });
        self.saved(change).await
    }

    /// Sets `size` and `content_hash`-style bookkeeping after content changes (an
    /// [`ChangeKind::Updated`]).
    pub async fn touch(&self, id: &str, size: Option<u64>) -> Result<(), Failure> {
        self.saved(self.touched(id, size, ChangeKind::Updated))
            .await
    }

    /// [`ResourceStore::touch`] for code that is not async (a blocking thread): writes the
    /// file on this thread.
    pub fn touch_blocking(&self, id: &str, size: Option<u64>) -> Result<(), Failure> {
        self.saved_blocking(self.touched(id, size, ChangeKind::Updated))
    }

    /// Records a committed SQL write to database `id` (its size, modified time and version),
    /// as a [`ChangeKind::DatabaseWritten`]; writes the file on this thread.
    pub fn database_written_blocking(&self, id: &str, size: u64) -> Result<(), Failure> {
        self.saved_blocking(self.touched(id, Some(size), ChangeKind::DatabaseWritten))
    }

    fn touched(&self, id: &str, size: Option<u64>, kind: ChangeKind) -> Result<((), u64), Failure> {
        self.change(|tree| {
            let id = resolved(tree, id);
            let Some(node) = tree.nodes.get_mut(&id) else {
                return Err(Failure::not_found(format!("resource not found: {id}")));
            };
            if let Some(size) = size {
                node.resource.size = size;
            }
            node.resource.modified = now_millis();
            node.resource.version += 1;
            let touched = node.resource.clone();
            record(tree, kind, &touched);
            Ok(())
        })
    }

    /// Deletes a resource; with children it needs `recursive`. The root cannot be deleted.
    /// Returns the ids removed.
    pub async fn delete(&self, id: &str, recursive: bool) -> Result<Vec<String>, Failure> {
        let change = self.change(|tree| {
            let named = id;
            let id = resolved(tree, named);
            if id == self.volt_id {
                return Err(Failure::denied("the Volt root cannot be deleted"));
            }
            if !tree.nodes.contains_key(&id) {
                return Err(Failure::not_found(format!("resource not found: {named}")));
            }
            let doomed = descendants_of(tree, &id, None);
            if !doomed.is_empty() && !recursive {
                return Err(Failure::reply(
                    Code::FailedPrecondition,
                    format!("resource {id} has children; delete with recursive"),
                ));
            }
            let mut removed: Vec<String> = doomed;
            removed.push(id);
            // Told deepest first, the named resource last; lineages are taken before any
            // removal.
            for r in removed.iter().rev().skip(1).chain(removed.last()) {
                if let Some(gone) = tree.nodes.get(r).map(|n| n.resource.clone()) {
                    record(tree, ChangeKind::Deleted, &gone);
                }
            }
            for r in &removed {
                tree.nodes.remove(r);
            }
            tree.order.retain(|x| !removed.contains(x));
            Ok(removed)
        });
        self.saved(change).await
    }

    /// The chain of ancestors from the parent up to the root.
    pub fn ancestors(&self, id: &str) -> Result<Vec<Resource>, Failure> {
        let tree = self.lock();
        let mut node = tree
            .nodes
            .get(&resolved(&tree, id))
            .ok_or_else(|| Failure::not_found(format!("resource not found: {id}")))?;
        let mut out = Vec::new();
        while let Some(parent) = node.parent.as_deref().and_then(|p| tree.nodes.get(p)) {
            out.push(parent.resource.clone());
            node = parent;
        }
        Ok(out)
    }

    /// The resource `id` names and the folders above it, nearest first: each one's id and
    /// owner (what access decisions need, without copying whole resources). `None` when there
    /// is no such resource.
    pub fn lineage(&self, id: &str) -> Option<Vec<(String, String)>> {
        let tree = self.lock();
        lineage_in(&tree, &resolved(&tree, id))
    }

    /// Descendants breadth first, to `depth` levels (0 = unlimited).
    pub fn descendants(&self, id: &str, depth: u32) -> Result<Vec<Resource>, Failure> {
        let tree = self.lock();
        let named = id;
        let id = resolved(&tree, named);
        if !tree.nodes.contains_key(&id) {
            return Err(Failure::not_found(format!("resource not found: {named}")));
        }
        let depth = if depth == 0 { None } else { Some(depth) };
        Ok(descendants_of(&tree, &id, depth)
            .iter()
            .filter_map(|d| tree.nodes.get(d).map(|n| n.resource.clone()))
            .collect())
    }

    /// Every resource, in creation order, with its parent id.
    pub fn all(&self) -> Vec<(Option<String>, Resource)> {
        let tree = self.lock();
        tree.order
            .iter()
            .filter_map(|id| tree.nodes.get(id))
            .map(|n| (n.parent.clone(), n.resource.clone()))
            .collect()
    }

    /// The direct children of a resource.
    pub fn children(&self, id: &str) -> Vec<Resource> {
        let tree = self.lock();
        let id = resolved(&tree, id);
        tree.order
            .iter()
            .filter_map(|c| tree.nodes.get(c))
            .filter(|n| n.parent.as_deref() == Some(id.as_str()))
            .map(|n| n.resource.clone())
            .collect()
    }

    /// Applies `change` to the tree and, when it succeeds, numbers it (its version), under
    /// the same lock: versions follow the order of the changes.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut Tree) -> Result<T, Failure>,
    ) -> Result<(T, u64), Failure> {
        let mut tree = self.lock();
        let value = change(&mut tree);
        let told = std::mem::take(&mut tree.pending);
        let value = value?;
        tree.version += 1;
        // Under the lock, so listeners hear of changes in the order they were made.
        self.changes.tell(&told);
        Ok((value, tree.version))
    }

    /// Returns a change's value once the file holds it (waiting off the async runtime).
    async fn saved<T>(&self, change: Result<(T, u64), Failure>) -> Result<T, Failure> {
        let (value, version) = change?;
        self.file.save(version).await?;
        Ok(value)
    }

    /// Returns a change's value once the file holds it, waiting on this thread.
    fn saved_blocking<T>(&self, change: Result<(T, u64), Failure>) -> Result<T, Failure> {
        let (value, version) = change?;
        self.file.save_blocking(version)?;
        Ok(value)
    }
}

fn lock(tree: &Mutex<Tree>) -> MutexGuard<'_, Tree> {
    // A panic while holding the lock cannot leave the tree half-written (every mutation is
    // a single insert/remove), so a poisoned lock is still usable.
    tree.lock().unwrap_or_else(|p| p.into_inner())
}

/// Renders the tree for the file: copies it under the lock, with the version it holds, and
/// serialises the copy after the lock is released.
fn renderer(tree: Arc<Mutex<Tree>>) -> Render {
    Box::new(move || {
        let (version, nodes) = {
            let tree = lock(&tree);
            let nodes: Vec<Node> = tree
                .order
                .iter()
                .filter_map(|id| tree.nodes.get(id).cloned())
                .collect();
            (tree.version, nodes)
        };
        Ok(Snapshot {
            version,
            text: to_text(&nodes)?,
        })
    })
}

/// The lineage of the resource with exactly this id: it and the folders above it, nearest
/// first, each one's id and owner.
fn lineage_in(tree: &Tree, id: &str) -> Option<Vec<(String, String)>> {
    let mut node = tree.nodes.get(id)?;
    let mut out = vec![(node.resource.id.clone(), node.resource.owner.clone())];
    while let Some(parent) = node.parent.as_deref().and_then(|p| tree.nodes.get(p)) {
        out.push((parent.resource.id.clone(), parent.resource.owner.clone()));
        node = parent;
    }
    Some(out)
}

/// Notes a change to `resource` (which is in the tree) for the listener.
fn record(tree: &mut Tree, kind: ChangeKind, resource: &Resource) {
    let lineage = lineage_in(tree, &resource.id).unwrap_or_default();
    tree.pending.push(Change {
        kind,
        resource: resource.clone(),
        lineage,
    });
}

/// Adds a node to the tree; returns its resource.
fn insert(tree: &mut Tree, parent: Option<String>, resource: Resource) -> Resource {
    let id = resource.id.clone();
    tree.order.push(id.clone());
    tree.nodes.insert(
        id,
        Node {
            parent,
            resource: resource.clone(),
        },
    );
    resource
}

/// The id `id` names: itself when a resource has it, else for `@alias` the resource holding
/// that alias (stored with or without its `@`); otherwise `id` unchanged (and not found).
fn resolved(tree: &Tree, id: &str) -> String {
    if tree.nodes.contains_key(id) {
        return id.to_owned();
    }
    let Some(alias) = id.strip_prefix('@') else {
        return id.to_owned();
    };
    tree.order
        .iter()
        .find(|rid| {
            tree.nodes
                .get(*rid)
                .is_some_and(|n| n.resource.alias.iter().any(|a| bare(a) == alias))
        })
        .cloned()
        .unwrap_or_else(|| id.to_owned())
}

/// An alias without the `@` it is referred to with.
fn bare(alias: &str) -> &str {
    alias.strip_prefix('@').unwrap_or(alias)
}

/// Each alias is unique to the Volt (the API enforces it): refuses `aliases` for resource
/// `owner_id` when another resource holds one of them.
fn check_aliases(tree: &Tree, aliases: &[String], owner_id: &str) -> Result<(), Failure> {
    for alias in aliases {
        let taken = tree.nodes.iter().any(|(id, n)| {
            id != owner_id && n.resource.alias.iter().any(|a| bare(a) == bare(alias))
        });
        if taken {
            return Err(Failure::reply(
                Code::AlreadyExists,
                format!("alias {alias} is already in use"),
            ));
        }
    }
    Ok(())
}

/// The template of a client's home folder.
fn home_folder(name: &str) -> Resource {
    Resource {
        name: name.to_owned(),
        description: format!("home of {name}"),
        kind: vec![kind::HOME.to_owned(), kind::FOLDER.to_owned()],
        ..Resource::default()
    }
}

/// The tree's nodes, in creation order, as the file holds them.
fn to_text(nodes: &[Node]) -> Result<String, Failure> {
    let mut entries = Vec::with_capacity(nodes.len());
    for n in nodes {
        entries.push(json!({
            "parent": n.parent,
            "resource": to_json(&n.resource)?,
        }));
    }
    serde_json::to_string_pretty(&json!({ "resources": entries }))
        .map_err(|e| Failure::internal("saving resources", e))
}

fn descendants_of(tree: &Tree, id: &str, depth: Option<u32>) -> Vec<String> {
    let mut out = Vec::new();
    let mut frontier = vec![id.to_owned()];
    let mut level = 0;
    while !frontier.is_empty() && depth.is_none_or(|d| level < d) {
        let mut next = Vec::new();
        for c in &tree.order {
            if let Some(n) = tree.nodes.get(c) {
                if n.parent.as_ref().is_some_and(|p| frontier.contains(p)) {
                    next.push(c.clone());
                }
            }
        }
        out.extend(next.iter().cloned());
        frontier = next;
        level += 1;
    }
    out
}

fn load_into(tree: &mut Tree, text: &str) -> Result<(), String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let list = doc
        .get("resources")
        .and_then(Value::as_array)
        .ok_or("missing \"resources\" array")?;
    for entry in list {
        let parent = entry
            .get("parent")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let resource =
            from_json::<Resource>(entry.get("resource").ok_or("entry without resource")?)?;
        tree.order.push(resource.id.clone());
        tree.nodes
            .insert(resource.id.clone(), Node { parent, resource });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
mod tree_ops;
