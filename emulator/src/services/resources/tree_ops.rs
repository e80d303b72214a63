//! Moving and copying resources within the tree (MoveResource, CopyResource).

use tdx_volt::proto::volt::Resource;

use crate::call::{Code, Failure};

use super::{
    descendants_of, insert, kind, new_id, now_millis, record, resolved, ChangeKind, ResourceStore,
    Tree,
};

/// Refuses a target that is not an existing folder.
fn check_folder(tree: &Tree, id: &str, named: &str) -> Result<(), Failure> {
    let target = tree
        .nodes
        .get(id)
        .ok_or_else(|| Failure::not_found(format!("target folder not found: {named}")))?;
    if !kind::has(&target.resource.kind, kind::Role::Container) {
        return Err(Failure::invalid(format!("{named} is not a folder")));
    }
    Ok(())
}

impl ResourceStore {
    /// Moves a resource (and what it holds) into the folder `to_id`. With `from_id`, the
    /// resource must be in that folder now. The root cannot be moved, nor a resource into
    /// itself or one of its descendants. Returns the moved resource.
    pub async fn move_to(&self, id: &str, from_id: &str, to_id: &str) -> Result<Resource, Failure> {
        let change = self.change(|tree| {
            let named = id;
            let id = resolved(tree, named);
            let to = resolved(tree, to_id);
            if id == self.volt_id {
                return Err(Failure::invalid("the Volt root cannot be moved"));
            }
            let parent = tree
                .nodes
                .get(&id)
                .ok_or_else(|| Failure::not_found(format!("resource not found: {named}")))?
                .parent
                .clone();
            check_folder(tree, &to, to_id)?;
            if !from_id.is_empty() && parent.as_deref() != Some(resolved(tree, from_id).as_str()) {
                return Err(Failure::reply(
                    Code::FailedPrecondition,
                    format!("resource {named} is not in {from_id}"),
                ));
            }
            if to == id || descendants_of(tree, &id, None).contains(&to) {
                return Err(Failure::invalid(format!(
                    "resource {named} cannot be moved into itself or its own descendant"
                )));
            }
            // Told as leaving the old folder and arriving in the new one, so that views of
            // either folder stay right (readers of the resource hear DELETE then CREATE).
            if let Some(before) = tree.nodes.get(&id).map(|n| n.resource.clone()) {
                record(tree, ChangeKind::Deleted, &before);
            }
            let node = tree
                .nodes
                .get_mut(&id)
                .ok_or_else(|| Failure::not_found(format!("resource not found: {named}")))?;
            node.parent = Some(to);
            node.resource.modified = now_millis();
            node.resource.version += 1;
            let moved = node.resource.clone();
            record(tree, ChangeKind::Created, &moved);
            Ok(moved)
        });
        self.saved(change).await
    }

    /// The resources a copy of `id` would take, source first then its descendants breadth
    /// first (only the source unless `recursive`), or NOT_FOUND.
    pub fn copy_sources(&self, id: &str, recursive: bool) -> Result<Vec<Resource>, Failure> {
        let tree = self.lock();
        let id_resolved = resolved(&tree, id);
        let source = tree
            .nodes
            .get(&id_resolved)
            .ok_or_else(|| Failure::not_found(format!("resource not found: {id}")))?;
        let mut out = vec![source.resource.clone()];
        if recursive {
            out.extend(
                descendants_of(&tree, &id_resolved, None)
                    .iter()
                    .filter_map(|d| tree.nodes.get(d).map(|n| n.resource.clone())),
            );
        }
        Ok(out)
    }

    /// Copies `sources` (as [`ResourceStore::copy_sources`] lists them) into the folder
    /// `to_id`, under fresh ids, owned by `owner` and without aliases (an alias names one
    /// resource). Returns each source id with its copy, in the same order.
    pub async fn copy_into(
        &self,
        sources: &[Resource],
        to_id: &str,
        owner: &str,
    ) -> Result<Vec<(String, Resource)>, Failure> {
        let change = self.change(|tree| {
            let to = resolved(tree, to_id);
            check_folder(tree, &to, to_id)?;
            if sources.iter().any(|s| s.id == to) {
                return Err(Failure::invalid(
                    "a resource cannot be copied into itself or its own descendant",
                ));
            }
            let mut copies: Vec<(String, Resource)> = Vec::with_capacity(sources.len());
            let now = now_millis();
            for source in sources {
                let Some(node) = tree.nodes.get(&source.id) else {
                    return Err(Failure::not_found(format!(
                        "resource not found: {}",
                        source.id
                    )));
                };
                // The source's parent is the target, or the copy of one copied before it.
                let parent = match copies
                    .iter()
                    .find(|(old, _)| Some(old) == node.parent.as_ref())
                {
                    Some((_, copy)) => copy.id.clone(),
                    None => to.clone(),
                };
                let mut copy = node.resource.clone();
                copy.id = new_id();
                copy.alias.clear();
                copy.owner = owner.to_owned();
                copy.created = now;
                copy.modified = now;
                copy.version = 1;
                copy.child.clear();
                let copy = insert(tree, Some(parent), copy);
                copies.push((source.id.clone(), copy));
            }
            Ok(copies)
        });
        self.saved(change).await
    }
}
