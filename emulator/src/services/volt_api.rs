//! VoltAPI: the resource tree, access checks, the Connect stream and Authenticate.

use std::sync::Arc;

use tdx_volt::proto::volt as pb;

use crate::call::{Caller, Failure, Inbound, Outbound};

use super::access::names;
use super::resources::kind;
use super::{unary, Services};

/// Routes a VoltAPI method.
pub async fn dispatch(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    let store = svc.resources();
    match name {
        "GetResource" => {
            unary(inbound, outbound, |r: pb::GetResourceRequest| async move {
                let id = if r.resource_id.is_empty() {
                    store.root_id().to_owned()
                } else {
                    r.resource_id
                };
                svc.authorize(caller, &id, names::READ)?;
                Ok(pb::GetResourceResponse {
                    status: None,
                    resource: Some(store.require(&id)?),
                })
            })
            .await
        }
        "GetResources" => {
            unary(inbound, outbound, |r: pb::GetResourcesRequest| async move {
                Ok(pb::GetResourcesResponse {
                    status: None,
                    resource: query(store, &r, svc.readable_by(caller)),
                })
            })
            .await
        }
        "SaveResource" => {
            unary(inbound, outbound, |r: pb::SaveResourceRequest| async move {
                let resource = r
                    .resource
                    .ok_or_else(|| Failure::invalid("SaveResource needs a resource"))?;
                let saved = if r.create || store.get(&resource.id).is_none() {
                    let parent = if r.create_in_parent_id.is_empty() {
                        home_of(svc, caller).await
                    } else {
                        r.create_in_parent_id
                    };
                    svc.authorize(caller, &parent, names::CREATE)?;
                    let mut template = resource;
                    if template.kind.is_empty() {
                        template.kind = vec![kind::FOLDER.to_owned()];
                    }
                    store.create(&parent, &caller.client_id, template).await?
                } else {
                    svc.authorize(caller, &resource.id, names::WRITE)?;
                    store.update(&resource, r.purge_attributes).await?
                };
                Ok(pb::SaveResourceResponse {
                    status: None,
                    resource: Some(saved),
                })
            })
            .await
        }
        "DeleteResource" => {
            unary(
                inbound,
                outbound,
                |r: pb::DeleteResourceRequest| async move {
                    svc.authorize(caller, &r.resource_id, names::DELETE)?;
                    let removed = store.delete(&r.resource_id, r.recursive).await?;
                    for id in &removed {
                        svc.sqlite().forget(id);
                        svc.files().forget(id);
                    }
                    Ok(pb::DeleteResourceResponse { status: None })
                },
            )
            .await
        }
        "GetResourceAncestors" => {
            unary(
                inbound,
                outbound,
                |r: pb::GetResourceAncestorsRequest| async move {
                    svc.authorize(caller, &r.resource_id, names::READ)?;
                    let mut list = Vec::new();
                    if r.include_resource_id {
                        list.push(store.require(&r.resource_id)?);
                    }
                    let readable = svc.readable_by(caller);
                    list.extend(
                        store
                            .ancestors(&r.resource_id)?
                            .into_iter()
                            .filter(|a| readable(&a.id)),
                    );
                    if r.depth > 0 {
                        list.truncate(r.depth as usize + usize::from(r.include_resource_id));
                    }
                    if !r.ancestor_kind.is_empty() {
                        list.retain(|a| a.kind.contains(&r.ancestor_kind));
                    }
                    if !r.ancestor_id.is_empty() {
                        list.retain(|a| a.id == r.ancestor_id);
                    }
                    Ok(pb::GetResourceAncestorsResponse {
                        status: None,
                        ancestor: list,
                    })
                },
            )
            .await
        }
        "GetResourceDescendants" => {
            unary(
                inbound,
                outbound,
                |r: pb::GetResourceDescendantsRequest| async move {
                    svc.authorize(caller, &r.resource_id, names::READ)?;
                    let mut list = Vec::new();
                    if r.include_resource_id {
                        list.push(store.require(&r.resource_id)?);
                    }
                    let readable = svc.readable_by(caller);
                    list.extend(
                        store
                            .descendants(&r.resource_id, r.depth.max(0) as u32)?
                            .into_iter()
                            .filter(|d| readable(&d.id)),
                    );
                    if !r.descendant_kind.is_empty() {
                        list.retain(|d| d.kind.iter().any(|k| r.descendant_kind.contains(k)));
                    }
                    if !r.descendant_id.is_empty() {
                        list.retain(|d| d.id == r.descendant_id);
                    }
                    if !r.name.is_empty() {
                        list.retain(|d| d.name == r.name);
                    }
                    if r.modified_since > 0 {
                        list.retain(|d| d.modified >= r.modified_since);
                    }
                    if !r.parent_id.is_empty() {
                        list.retain(|d| {
                            store.parent_of(&d.id).as_deref() == Some(r.parent_id.as_str())
                        });
                    }
                    Ok(pb::GetResourceDescendantsResponse {
                        status: None,
                        descendant: list,
                    })
                },
            )
            .await
        }
        name if super::access::rpc::METHODS.contains(&name) => {
            super::access::rpc::dispatch(svc, caller, name, inbound, outbound).await
        }
        "Connect" => super::connect::connect(svc, caller, inbound, outbound).await,
        "Authenticate" => super::authenticate::handle(svc, inbound, outbound).await,
        _ => Err(Failure::unimplemented(&format!(
            "/tdx.volt_api.volt.v1.VoltAPI/{name}"
        ))),
    }
}

/// The caller's home folder, created on first use for a client issued by another process.
/// Falls back to the Volt root when the session is unknown or the folder cannot be made.
pub async fn home_of(svc: &Services, caller: &Caller) -> String {
    let root = || svc.resources().root_id().to_owned();
    let Some(mut session) = svc.clients().by_session(&caller.session_id) else {
        return root();
    };
    if !session.home_id.is_empty() && svc.resources().get(&session.home_id).is_some() {
        return session.home_id;
    }
    match svc
        .resources()
        .create_home_folder(&session.client_id, &session.client_name)
        .await
    {
        Ok(home_id) => {
            session.home_id = home_id.clone();
            if svc.clients().insert(session).is_err() {
                tracing::warn!("could not record a home folder");
            }
            home_id
        }
        Err(_) => root(),
    }
}

fn query(
    store: &super::resources::ResourceStore,
    r: &pb::GetResourcesRequest,
    readable: impl Fn(&str) -> bool,
) -> Vec<pb::Resource> {
    let mut out: Vec<pb::Resource> = store
        .all()
        .into_iter()
        .filter(|(parent, x)| matches_query(r, parent.as_deref(), x) && readable(&x.id))
        .map(|(_, x)| x)
        .collect();
    if r.limit > 0 {
        out.truncate(r.limit as usize);
    }
    out
}

/// GetResources as the API's comments define it: each non-empty term is a filter, and terms
/// combine with AND, or with OR when `combine_terms_exclusive` is set. `alias`, `name`,
/// `description`, `kind` and `service_api` take wildcards ([`wildcard`]). The attribute
/// queries are one term: all of them must match, or any of them with `any_of`. An empty query
/// matches everything.
fn matches_query(r: &pb::GetResourcesRequest, parent: Option<&str>, x: &pb::Resource) -> bool {
    let like = |patterns: &[String], value: &str| patterns.iter().any(|p| wildcard(p, value));
    let like_any =
        |patterns: &[String], values: &[String]| values.iter().any(|v| like(patterns, v));
    let service_api = x
        .service_description
        .as_ref()
        .map(|d| d.service_api.as_slice())
        .unwrap_or_default();
    let terms: Vec<bool> = [
        (!r.id.is_empty()).then(|| r.id.contains(&x.id)),
        (!r.alias.is_empty()).then(|| like_any(&r.alias, &x.alias)),
        (!r.name.is_empty()).then(|| like(&r.name, &x.name)),
        (!r.description.is_empty()).then(|| like(&r.description, &x.description)),
        (!r.kind.is_empty()).then(|| like_any(&r.kind, &x.kind)),
        (!r.parent_id.is_empty())
            .then(|| parent.is_some_and(|p| r.parent_id.iter().any(|q| q == p))),
        (!r.service_api.is_empty()).then(|| like_any(&r.service_api, service_api)),
        (!r.owner.is_empty()).then(|| r.owner.contains(&x.owner)),
        (!r.store.is_empty()).then(|| r.store.contains(&x.store)),
        (!r.attribute.is_empty()).then(|| {
            let hit = |q: &pb::ResourceAttributeQuery| attribute_matches(q, x);
            if r.any_of {
                r.attribute.iter().any(hit)
            } else {
                r.attribute.iter().all(hit)
            }
        }),
        (r.modified_since > 0).then_some(x.modified > r.modified_since),
    ]
    .into_iter()
    .flatten()
    .collect();
    if terms.is_empty() {
        true
    } else if r.combine_terms_exclusive {
        terms.iter().any(|t| *t)
    } else {
        terms.iter().all(|t| *t)
    }
}

/// Whether the resource has the queried attribute, with the queried value when one is given.
fn attribute_matches(q: &pb::ResourceAttributeQuery, x: &pb::Resource) -> bool {
    x.attribute.iter().any(|a| {
        a.attribute_id == q.attribute_id
            && q.value
                .as_ref()
                .and_then(|v| v.value.as_ref())
                .is_none_or(|wanted| a.value.iter().any(|v| v.value.as_ref() == Some(wanted)))
    })
}

/// Matches `text` against a wildcard `pattern`: `*` (or SQL's `%`) stands for any run of
/// characters, `?` for exactly one; anything else matches itself. The API says wildcards are
/// permitted without naming them: these are the two spellings a user is likely to try
/// (`_` is not one, since names and aliases use it).
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Greedy matching with one backtrack point: the last star and where it resumed.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*' | '%') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| matches!(c, '*' | '%'))
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn wildcards_match_runs_and_single_characters() {
        for (pattern, text) in [
            ("*", ""),
            ("*", "anything"),
            ("volt:*", "volt:wire"),
            ("%wire", "volt:wire"),
            ("v?lt:w*e", "volt:wire"),
            ("a*b*c", "aXbYbZc"),
            ("report_2026", "report_2026"),
            ("é*", "été"),
        ] {
            assert!(wildcard(pattern, text), "{pattern} ~ {text}");
        }
        for (pattern, text) in [
            ("volt:*", "wire"),
            ("?", ""),
            ("a*b", "aXbY"),
            ("report_2026", "reportX2026"),
            ("", "x"),
        ] {
            assert!(!wildcard(pattern, text), "{pattern} !~ {text}");
        }
    }
}
