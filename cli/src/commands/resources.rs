//! `volt get ID`, `volt ls [ID]` and `volt rm ID`.

use std::collections::HashSet;

use serde_json::{json, Value};
use tdx_volt::VoltClient;

use super::Context;
use crate::exit::{Failure, PROTOCOL};
use crate::output::{key_values, text_of};

/// The most resources `volt ls` lists (and so the most calls it makes).
const MAX_LISTED: usize = 10_000;

/// Prints a resource: its fields for people, the whole response with `--json`.
pub async fn get(cx: &Context, id: &str) -> Result<(), Failure> {
    let client = cx.connect().await?;
    let response = client.get_resource(json!({ "resource_id": id })).await?;
    if cx.out.json {
        return cx.out.json_line(&response);
    }
    let resource = resource_of(&response)?;
    cx.out.line(&key_values(resource))
}

/// Prints a resource and its descendants down to `depth` levels, as a tree; with `--json`
/// the resource with each one's children in `child`, as in the API's `Resource`.
pub async fn ls(cx: &Context, id: Option<&str>, depth: u32) -> Result<(), Failure> {
    let client = cx.connect().await?;
    let id = id.unwrap_or(client.volt_id()).to_owned();
    let response = client.get_resource(json!({ "resource_id": id })).await?;
    let mut root = Value::Object(resource_of(&response)?.clone());
    let mut seen = HashSet::from([id]);
    fill_children(&client, &mut root, depth, &mut seen).await?;
    if cx.out.json {
        return cx.out.json_line(&root);
    }
    let mut lines = vec![label(&root)];
    tree_lines(&root, "", &mut lines);
    cx.out.line(&lines.join("\n"))
}

/// Deletes a resource (with `--recursive`, its descendants too).
pub async fn rm(cx: &Context, id: &str, recursive: bool) -> Result<(), Failure> {
    let client = cx.connect().await?;
    let response = client
        .delete_resource(json!({ "resource_id": id, "recursive": recursive }))
        .await?;
    if cx.out.json {
        cx.out.json_line(&response)
    } else {
        cx.out.line(&format!("deleted {id}"))
    }
}

fn resource_of(response: &Value) -> Result<&serde_json::Map<String, Value>, Failure> {
    response
        .get("resource")
        .and_then(Value::as_object)
        .ok_or_else(|| Failure::new(PROTOCOL, "the Volt's answer holds no resource"))
}

/// Puts the children of `node` (and theirs, to `depth` levels) in its `child` list, one
/// `GetResourceDescendants` call per resource; each resource is listed once.
async fn fill_children(
    client: &VoltClient,
    node: &mut Value,
    depth: u32,
    seen: &mut HashSet<String>,
) -> Result<(), Failure> {
    // Breadth first, with the path of indices to each resource still to expand.
    let mut level: Vec<Vec<usize>> = vec![Vec::new()];
    for _ in 0..depth {
        let mut next = Vec::new();
        for path in level {
            let Some(parent) = at(node, &path) else {
                continue;
            };
            let Some(id) = parent.get("id").and_then(Value::as_str).map(str::to_owned) else {
                continue;
            };
            let response = client
                .get_resource_descendants(json!({ "resource_id": id, "depth": 1 }))
                .await?;
            let children: Vec<Value> = response
                .get("descendant")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|c| {
                    c.get("id")
                        .and_then(Value::as_str)
                        .is_some_and(|id| seen.insert(id.to_owned()))
                })
                .cloned()
                .collect();
            if seen.len() > MAX_LISTED {
                return Err(Failure::new(
                    PROTOCOL,
                    format!(
                        "more than {MAX_LISTED} resources: list a smaller part (ls ID, --depth)"
                    ),
                ));
            }
            for i in 0..children.len() {
                let mut child_path = path.clone();
                child_path.push(i);
                next.push(child_path);
            }
            if let Some(parent) = at_mut(node, &path) {
                parent["child"] = Value::Array(children);
            }
        }
        level = next;
    }
    Ok(())
}

fn at<'a>(node: &'a Value, path: &[usize]) -> Option<&'a Value> {
    path.iter()
        .try_fold(node, |n, &i| n.get("child").and_then(|c| c.get(i)))
}

fn at_mut<'a>(node: &'a mut Value, path: &[usize]) -> Option<&'a mut Value> {
    path.iter()
        .try_fold(node, |n, &i| n.get_mut("child").and_then(|c| c.get_mut(i)))
}

/// `name  id  [kinds]`.
fn label(resource: &Value) -> String {
    let name = resource.get("name").map(text_of).unwrap_or_default();
    let id = resource.get("id").map(text_of).unwrap_or_default();
    let kinds = resource.get("kind").map(text_of).unwrap_or_default();
    let mut line = if name.is_empty() {
        id
    } else {
        format!("{name}  {id}")
    };
    if !kinds.is_empty() {
        line.push_str(&format!("  [{kinds}]"));
    }
    line
}

fn tree_lines(node: &Value, prefix: &str, lines: &mut Vec<String>) {
    let children = node
        .get("child")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, child) in children.iter().enumerate() {
        let last = i + 1 == children.len();
        let (branch, indent) = if last {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        lines.push(format!("{prefix}{branch}{}", label(child)));
        tree_lines(child, &format!("{prefix}{indent}"), lines);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_draw_branches() {
        let root = json!({"id": "r", "name": "root", "child": [
            {"id": "a", "name": "a", "kind": ["folder"], "child": [{"id": "a1"}]},
            {"id": "b", "name": "b"},
        ]});
        let mut lines = vec![label(&root)];
        tree_lines(&root, "", &mut lines);
        assert_eq!(
            lines.join("\n"),
            "root  r\n├── a  a  [folder]\n│   └── a1\n└── b  b"
        );
    }
}
