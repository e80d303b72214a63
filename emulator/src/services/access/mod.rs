//! Access control: who may do what to which resource, decided the way the Volt's default
//! policy describes it, and the access rules ("shares") clients save, request and decide.
//!
//! A decision for a subject, a resource and an access name:
//!
//! 1. The Volt's owner (the client of `DIR/client.config.json`) is permitted everything.
//! 2. The owner of the resource, or of any folder above it, is permitted everything on it.
//! 3. Otherwise the saved rules decide: a rule applies when it names the subject (its client id
//!    or identity DID), the access, and the resource itself or, when `recursive`, a folder
//!    above it. A DENY rule wins over a PERMIT rule. Rules still waiting for a decision
//!    (PENDING, PROMPT) decide nothing.
//! 4. Every client may read the Volt root itself (not what it holds).
//! 5. Anything else is denied.
//!
//! Rules, access requests and the custom policy are kept in `DIR/access.json`, rewritten
//! whole to hold the latest state (changes are committed in groups: `crate::snapshot_file`).

pub mod document_scope;
pub mod rpc;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};
use tdx_volt::proto::volt::{self as pb, PolicyDecision};

use crate::call::{Caller, Failure};
use crate::files::read_optional;
use crate::proto_json::{from_json, to_json};
use crate::snapshot_file::{Render, Snapshot, SnapshotFile};

use super::resources::ResourceStore;
use super::Services;

/// The file access rules are kept in.
pub const ACCESS_FILE: &str = "access.json";

/// The access names the emulator checks. `volt:database-read`, `volt:database-write`,
/// `volt:resource-write`, `volt:resource-create` and `volt:api-call` are the vendor's names
/// (its API comments use them); the vendor names no read, delete or invoke access, so the
/// emulator spells them in the same family.
pub mod names {
    /// See a resource: get it, list it, read a file's content, subscribe to a wire.
    pub const READ: &str = "volt:resource-read";
    /// Change a resource: save it, set a file's content, publish to a wire.
    pub const WRITE: &str = "volt:resource-write";
    /// Create resources inside a folder.
    pub const CREATE: &str = "volt:resource-create";
    /// Delete a resource.
    pub const DELETE: &str = "volt:resource-delete";
    /// Invoke a service a client hosts.
    pub const INVOKE: &str = "volt:resource-invoke";
    /// Run SQL that only reads on a database.
    pub const DATABASE_READ: &str = "volt:database-read";
    /// Run SQL that writes on a database (bulk updates and CSV imports too).
    pub const DATABASE_WRITE: &str = "volt:database-write";
    /// A privileged API method; the rule's `extra` names the method (`volt:get-policy`,
    /// `volt:shutdown`, ...) or is empty for every one.
    pub const API_CALL: &str = "volt:api-call";

    /// The access a request names, in the emulator's spelling: the official gRPC client's
    /// `RequestAccessBlocking` still sends the older `VOLT_ACCESS_READ` form by default,
    /// which is read as `volt:resource-read` (and likewise for WRITE, CREATE, DELETE, INVOKE).
    pub fn canonical(access: &str) -> String {
        match access.strip_prefix("VOLT_ACCESS_") {
            Some(rest) => format!("volt:resource-{}", rest.to_ascii_lowercase()),
            None => access.to_owned(),
        }
    }
}

/// Who is asking for access.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    /// The client id.
    pub client_id: String,
    /// The identity DID, when Authenticate made or named one.
    pub identity_did: String,
    /// Whether this client owns the Volt.
    pub volt_owner: bool,
}

impl Subject {
    /// Whether a rule's subject (a client id or identity DID) names this subject.
    pub fn is(&self, named: &str) -> bool {
        !named.is_empty() && (named == self.client_id || named == self.identity_did)
    }

    /// How the subject is named in what the Volt answers: its identity DID, else its client
    /// id.
    pub fn name(&self) -> &str {
        if self.identity_did.is_empty() {
            &self.client_id
        } else {
            &self.identity_did
        }
    }
}

/// A resource and the folders above it, nearest first: each one's id and owner.
#[derive(Clone, Debug, Default)]
pub struct Lineage {
    links: Vec<(String, String)>,
}

impl Lineage {
    /// The lineage of the resource `id` names (an id or `@alias`), or NOT_FOUND.
    pub fn of(store: &ResourceStore, id: &str) -> Result<Lineage, Failure> {
        let links = store
            .lineage(id)
            .ok_or_else(|| Failure::not_found(format!("resource not found: {id}")))?;
        Ok(Lineage { links })
    }

    /// A lineage as the resource tree reports it (`ResourceStore::lineage`): the resource and
    /// the folders above it, nearest first, each one's id and owner.
    pub fn from_links(links: Vec<(String, String)>) -> Lineage {
        Lineage { links }
    }

    /// The resource's own id.
    pub fn id(&self) -> &str {
        self.links.first().map(|(id, _)| id.as_str()).unwrap_or("")
    }

    fn owned_by(&self, subject: &Subject) -> bool {
        self.links.iter().any(|(_, owner)| subject.is(owner))
    }

    /// Whether a rule on `resource_id` reaches this resource.
    fn reached_by(&self, resource_id: &str, recursive: bool) -> bool {
        self.links
            .iter()
            .enumerate()
            .any(|(depth, (id, _))| id == resource_id && (depth == 0 || recursive))
    }
}

/// The access rules, requests and policy of this Volt.
pub struct AccessStore {
    state: Arc<Mutex<State>>,
    file: Arc<SnapshotFile>,
    root_id: String,
}

#[derive(Default)]
struct State {
    /// The client id of the Volt's owner (empty until one is named).
    volt_owner: String,
    /// Rules and requests, in the order they were made.
    rules: Vec<pb::Access>,
    /// The policy document saved with SetPolicy (JSON text; empty when none).
    custom_policy: String,
    version: u64,
}

impl AccessStore {
    /// Loads the rules kept in `dir` (none when there is no file yet).
    pub fn open(dir: &Path, root_id: &str) -> tdx_volt::Result<AccessStore> {
        let path = dir.join(ACCESS_FILE);
        let mut state = State::default();
        if let Some(text) = read_optional(&path)? {
            load_into(&mut state, &text).map_err(|e| {
                tdx_volt::Error::new(tdx_volt::ErrorKind::Io, format!("{}: {e}", path.display()))
            })?;
        }
        let state = Arc::new(Mutex::new(state));
        Ok(AccessStore {
            file: SnapshotFile::new(path, renderer(Arc::clone(&state))),
            state,
            root_id: root_id.to_owned(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The Volt owner's client id (empty when none is named yet).
    pub fn volt_owner(&self) -> String {
        self.lock().volt_owner.clone()
    }

    /// Names the Volt's owner, unless one is named already; writes the file on this thread.
    pub fn claim_volt_owner_blocking(&self, client_id: &str) -> Result<(), Failure> {
        let claimed = self.change(|state| {
            if !state.volt_owner.is_empty() {
                return Ok(false);
            }
            state.volt_owner = client_id.to_owned();
            Ok(true)
        })?;
        match claimed {
            (true, version) => self.file.save_blocking(version),
            (false, _) => Ok(()),
        }
    }

    /// Applies `change` and numbers it (its version), under one lock.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut State) -> Result<T, Failure>,
    ) -> Result<(T, u64), Failure> {
        let mut state = self.lock();
        let value = change(&mut state)?;
        state.version += 1;
        Ok((value, state.version))
    }

    /// Makes a change and returns its value once the file holds it.
    async fn changed<T>(
        &self,
        change: impl FnOnce(&mut State) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let (value, version) = self.change(change)?;
        self.file.save(version).await?;
        Ok(value)
    }

    /// Decides whether `subject` may use `access` on the resource of `lineage`; for
    /// [`names::API_CALL`], `extra` names the method.
    pub fn decide(
        &self,
        subject: &Subject,
        lineage: &Lineage,
        access: &str,
        extra: &str,
    ) -> PolicyDecision {
        if subject.volt_owner || lineage.owned_by(subject) {
            return PolicyDecision::Permit;
        }
        let access = names::canonical(access);
        match self.ruled(subject, lineage, &access, extra) {
            Some(decision) => decision,
            None if access == names::READ && lineage.id() == self.root_id => PolicyDecision::Permit,
            None => PolicyDecision::Deny,
        }
    }

    /// What the saved rules alone decide (DENY over PERMIT), or `None` when none applies.
    pub fn ruled(
        &self,
        subject: &Subject,
        lineage: &Lineage,
        access: &str,
        extra: &str,
    ) -> Option<PolicyDecision> {
        let state = self.lock();
        let mut decision = None;
        for rule in &state.rules {
            let names_access = rule.access == access
                && if access == names::API_CALL {
                    rule.extra.is_empty() || rule.extra == extra
                } else {
                    document_scope::covers(&rule.extra, extra)
                };
            if !names_access
                || !subject.is(rule_subject(rule))
                || !lineage.reached_by(&rule.resource_id, rule.recursive)
            {
                continue;
            }
            match PolicyDecision::try_from(rule.decision) {
                Ok(PolicyDecision::Deny) => return Some(PolicyDecision::Deny),
                Ok(PolicyDecision::Permit) => decision = Some(PolicyDecision::Permit),
                _ => {}
            }
        }
        decision
    }

    /// The rules and requests `keep` selects, in the order they were made.
    pub fn rules(&self, keep: impl Fn(&pb::Access) -> bool) -> Vec<pb::Access> {
        self.lock()
            .rules
            .iter()
            .filter(|r| keep(r))
            .cloned()
            .collect()
    }

    /// One rule or request by id.
    pub fn rule(&self, id: &str) -> Option<pb::Access> {
        self.lock().rules.iter().find(|r| r.id == id).cloned()
    }

    /// Saves rules: each replaces the rule with its id, or is added (with a fresh id when it
    /// has none).
    pub async fn save(&self, rules: Vec<pb::Access>) -> Result<(), Failure> {
        self.changed(|state| {
            for rule in rules {
                match state.rules.iter_mut().find(|r| r.id == rule.id) {
                    Some(slot) => *slot = rule,
                    None => state.rules.push(rule),
                }
            }
            Ok(())
        })
        .await
    }

    /// Removes a rule or request; NOT_FOUND when there is none with that id.
    pub async fn delete(&self, id: &str) -> Result<(), Failure> {
        self.changed(|state| {
            let before = state.rules.len();
            state.rules.retain(|r| r.id != id);
            if state.rules.len() == before {
                return Err(Failure::not_found(format!("access rule not found: {id}")));
            }
            Ok(())
        })
        .await
    }

    /// Records a request by `subject` for `access` on a resource, or counts one more ask of
    /// a request made before (PENDING or PROMPT). Returns the request as kept.
    pub async fn request(
        &self,
        subject: &Subject,
        template: pb::Access,
        now_ms: i64,
    ) -> Result<pb::Access, Failure> {
        self.changed(|state| {
            let waiting = state.rules.iter_mut().find(|r| {
                r.resource_id == template.resource_id
                    && r.access == template.access
                    && waiting(r.decision)
                    && subject.is(rule_subject(r))
            });
            let request = match waiting {
                Some(request) => {
                    request.request_count = request.request_count.saturating_add(1);
                    request.clone()
                }
                None => {
                    let mut request = template;
                    request.id = super::resources::new_id();
                    request.subject =
                        Some(pb::access::Subject::IdentityDid(subject.name().to_owned()));
                    request.decision = PolicyDecision::Pending as i32;
                    request.recursive = true;
                    request.request_time = now_ms;
                    request.request_count = 1;
                    state.rules.push(request.clone());
                    request
                }
            };
            Ok(request)
        })
        .await
    }

    /// Decides a request (or changes a rule's decision); returns the rule as decided.
    pub async fn set_decision(
        &self,
        id: &str,
        decision: PolicyDecision,
        now_ms: i64,
    ) -> Result<pb::Access, Failure> {
        self.changed(|state| {
            let rule = state
                .rules
                .iter_mut()
                .find(|r| r.id == id)
                .ok_or_else(|| Failure::not_found(format!("access request not found: {id}")))?;
            rule.decision = decision as i32;
            rule.decision_time = now_ms;
            Ok(rule.clone())
        })
        .await
    }

    /// The policy document saved with SetPolicy (empty when none).
    pub fn custom_policy(&self) -> String {
        self.lock().custom_policy.clone()
    }

    /// Saves a policy document.
    pub async fn set_custom_policy(&self, policy: String) -> Result<(), Failure> {
        self.changed(|state| {
            state.custom_policy = policy;
            Ok(())
        })
        .await
    }

    /// The policy in force, as a JSON document: the built-in rules and every decided rule.
    pub fn active_policy(&self) -> Value {
        let state = self.lock();
        let shares: Vec<Value> = state
            .rules
            .iter()
            .filter(|r| !waiting(r.decision))
            .filter_map(|r| to_json(r).ok())
            .collect();
        json!({
            "id": "volt-emulator-default",
            "combining": "deny-overrides",
            "rules": [
                { "description": "the Volt's owner may do anything", "subject": state.volt_owner, "decision": "permit" },
                { "description": "a resource's owner, and the owners of the folders above it, may do anything to it", "decision": "permit" },
                { "description": "every client may read the Volt root itself", "resource": self.root_id, "access": names::READ, "decision": "permit" },
                { "description": "anything else is denied", "decision": "deny" },
            ],
            "shares": shares,
        })
    }
}

/// The identity a rule names (empty for a credential lookup, which the emulator does not
/// evaluate).
pub fn rule_subject(rule: &pb::Access) -> &str {
    match &rule.subject {
        Some(pb::access::Subject::IdentityDid(did)) => did,
        _ => "",
    }
}

/// Whether a rule's decision is still to be taken.
pub fn waiting(decision: i32) -> bool {
    matches!(
        PolicyDecision::try_from(decision),
        Ok(PolicyDecision::Pending | PolicyDecision::Prompt)
    )
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every change is a single push, replace or remove: a poisoned lock is still whole.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Renders the state for the file, under its lock (it is small).
fn renderer(state: Arc<Mutex<State>>) -> Render {
    Box::new(move || {
        let state = lock(&state);
        Ok(Snapshot {
            version: state.version,
            text: to_text(&state)?,
        })
    })
}

fn to_text(state: &State) -> Result<String, Failure> {
    let rules = state
        .rules
        .iter()
        .map(to_json)
        .collect::<Result<Vec<_>, _>>()?;
    serde_json::to_string_pretty(&json!({
        "volt_owner": state.volt_owner,
        "rules": rules,
        "custom_policy": state.custom_policy,
    }))
    .map_err(|e| Failure::internal("saving access rules", e))
}

fn load_into(state: &mut State, text: &str) -> Result<(), String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let text_field = |name: &str| {
        doc.get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    state.volt_owner = text_field("volt_owner");
    state.custom_policy = text_field("custom_policy");
    for rule in doc
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        state.rules.push(from_json::<pb::Access>(rule)?);
    }
    Ok(())
}

impl Services {
    /// The subject a caller is: its client, identity DID, and whether it owns the Volt.
    pub fn subject(&self, caller: &Caller) -> Subject {
        let identity_did = self
            .clients()
            .by_session(&caller.session_id)
            .map(|s| s.identity_did)
            .unwrap_or_default();
        let owner = self.access().volt_owner();
        Subject {
            volt_owner: !owner.is_empty() && owner == caller.client_id,
            client_id: caller.client_id.clone(),
            identity_did,
        }
    }

    /// Checks that `caller` may use `access` on the resource `resource_id` names; a refusal
    /// is PERMISSION_DENIED naming the access and the resource, and a resource that does not
    /// exist is NOT_FOUND.
    pub fn authorize(
        &self,
        caller: &Caller,
        resource_id: &str,
        access: &str,
    ) -> Result<(), Failure> {
        let lineage = Lineage::of(self.resources(), resource_id)?;
        self.authorize_lineage(caller, &lineage, access)
    }

    /// [`Services::authorize`] for one document of a sync database: rules narrowed to some
    /// documents (`document_scope`) count when they name `document_id`.
    pub fn authorize_document(
        &self,
        caller: &Caller,
        resource_id: &str,
        access: &str,
        document_id: &str,
    ) -> Result<(), Failure> {
        let lineage = Lineage::of(self.resources(), resource_id)?;
        let subject = self.subject(caller);
        let asked = document_scope::request_for(document_id);
        match self.access().decide(&subject, &lineage, access, &asked) {
            PolicyDecision::Permit => Ok(()),
            _ => Err(Failure::denied(format!(
                "permission denied: {access} on document {document_id} of resource {resource_id}"
            ))),
        }
    }

    /// [`Services::authorize`] for a resource whose lineage the caller has already.
    pub fn authorize_lineage(
        &self,
        caller: &Caller,
        lineage: &Lineage,
        access: &str,
    ) -> Result<(), Failure> {
        let subject = self.subject(caller);
        match self.access().decide(&subject, lineage, access, "") {
            PolicyDecision::Permit => Ok(()),
            _ => Err(denied(access, lineage.id())),
        }
    }

    /// Whether `caller` may decide on rules and requests for the resource of `lineage`: its
    /// owners may, the Volt's owner may, and so may clients with a `volt:api-call` rule for
    /// `method` (`volt:save-access`, `volt:set-access-request-decision`, ...) reaching it.
    pub fn may_decide(&self, caller: &Caller, lineage: &Lineage, method: &str) -> bool {
        let subject = self.subject(caller);
        self.access()
            .decide(&subject, lineage, names::API_CALL, method)
            == PolicyDecision::Permit
    }

    /// A test of whether `caller` may read a resource (by id), for filtering listings: the
    /// subject is looked up once.
    pub fn readable_by<'a>(&'a self, caller: &Caller) -> impl Fn(&str) -> bool + 'a {
        let subject = self.subject(caller);
        move |id| {
            Lineage::of(self.resources(), id).is_ok_and(|lineage| {
                self.access().decide(&subject, &lineage, names::READ, "") == PolicyDecision::Permit
            })
        }
    }

    /// Checks that `caller` may call the privileged API method `method` (`volt:get-policy`,
    /// `volt:shutdown`, ...): the Volt's owner may, and so may clients with a
    /// `volt:api-call` rule for it on the Volt root.
    pub fn authorize_api(&self, caller: &Caller, method: &str) -> Result<(), Failure> {
        let lineage = Lineage::of(self.resources(), self.resources().root_id())?;
        let subject = self.subject(caller);
        match self
            .access()
            .decide(&subject, &lineage, names::API_CALL, method)
        {
            PolicyDecision::Permit => Ok(()),
            _ => Err(Failure::denied(format!(
                "permission denied: {} / {method} is needed",
                names::API_CALL
            ))),
        }
    }
}

/// The refusal of `access` on a resource.
pub fn denied(access: &str, resource_id: &str) -> Failure {
    Failure::denied(format!(
        "permission denied: {access} on resource {resource_id}"
    ))
}
