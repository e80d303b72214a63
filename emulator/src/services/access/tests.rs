use tdx_volt::proto::volt::{self as pb, PolicyDecision};

use super::{names, AccessStore, Lineage, Subject};

const ROOT: &str = "root";

fn lineage(links: &[(&str, &str)]) -> Lineage {
    Lineage {
        links: links
            .iter()
            .map(|(id, owner)| ((*id).to_owned(), (*owner).to_owned()))
            .collect(),
    }
}

fn client(id: &str) -> Subject {
    Subject {
        client_id: id.to_owned(),
        ..Subject::default()
    }
}

fn rule(
    resource: &str,
    who: &str,
    access: &str,
    decision: PolicyDecision,
    recursive: bool,
) -> pb::Access {
    pb::Access {
        id: format!("{resource}/{who}/{access}/{}", decision as i32),
        resource_id: resource.to_owned(),
        subject: Some(pb::access::Subject::IdentityDid(who.to_owned())),
        access: access.to_owned(),
        decision: decision as i32,
        recursive,
        ..pb::Access::default()
    }
}

/// An access store in a fresh directory, removed when the guard drops.
fn store() -> (TempDir, AccessStore) {
    let dir = TempDir(crate::files::test_dir("access"));
    let store = AccessStore::open(&dir.0, ROOT).expect("open");
    (dir, store)
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn owners_and_rules_decide_in_order() {
    let (_dir, store) = store();
    let file = lineage(&[("file", "alice"), ("home", "alice"), (ROOT, ROOT)]);
    let inner = lineage(&[("doc", "carol"), ("home", "alice"), (ROOT, ROOT)]);
    let read = |who: &Subject, l: &Lineage| store.decide(who, l, names::READ, "");

    // Owners, and owners of a folder above, may do anything; others nothing by default.
    assert_eq!(read(&client("alice"), &file), PolicyDecision::Permit);
    assert_eq!(read(&client("alice"), &inner), PolicyDecision::Permit);
    assert_eq!(read(&client("bob"), &file), PolicyDecision::Deny);
    let owner = Subject {
        volt_owner: true,
        ..client("volt-owner")
    };
    assert_eq!(
        store.decide(&owner, &file, names::DELETE, ""),
        PolicyDecision::Permit
    );

    // Everyone may read the root itself, and nothing more of it.
    let root = lineage(&[(ROOT, ROOT)]);
    assert_eq!(read(&client("bob"), &root), PolicyDecision::Permit);
    assert_eq!(
        store.decide(&client("bob"), &root, names::CREATE, ""),
        PolicyDecision::Deny
    );

    // A rule on the folder reaches inside only when recursive.
    store
        .save(vec![rule(
            "home",
            "bob",
            names::READ,
            PolicyDecision::Permit,
            false,
        )])
        .await
        .expect("save");
    assert_eq!(
        read(&client("bob"), &lineage(&[("home", "alice"), (ROOT, ROOT)])),
        PolicyDecision::Permit
    );
    assert_eq!(read(&client("bob"), &file), PolicyDecision::Deny);
    store
        .save(vec![rule(
            "home",
            "bob",
            names::READ,
            PolicyDecision::Permit,
            true,
        )])
        .await
        .expect("save");
    assert_eq!(read(&client("bob"), &file), PolicyDecision::Permit);
    // The access is exactly the one named.
    assert_eq!(
        store.decide(&client("bob"), &file, names::WRITE, ""),
        PolicyDecision::Deny
    );

    // DENY wins over PERMIT; a rule naming the identity DID names the client too.
    let bob_did = Subject {
        identity_did: "did:volt:bob".into(),
        ..client("bob")
    };
    store
        .save(vec![rule(
            "file",
            "did:volt:bob",
            names::READ,
            PolicyDecision::Deny,
            false,
        )])
        .await
        .expect("save");
    assert_eq!(read(&bob_did, &file), PolicyDecision::Deny);
    assert_eq!(
        read(&client("bob"), &file),
        PolicyDecision::Permit,
        "another subject"
    );
}

#[tokio::test]
async fn requests_wait_then_count_and_decide_nothing_until_decided() {
    let (dir, store) = store();
    let file = lineage(&[("file", "alice"), (ROOT, ROOT)]);
    let bob = client("bob");
    let template = pb::Access {
        resource_id: "file".into(),
        access: names::READ.into(),
        ..pb::Access::default()
    };
    let first = store
        .request(&bob, template.clone(), 1)
        .await
        .expect("request");
    assert_eq!(first.decision, PolicyDecision::Pending as i32);
    let again = store.request(&bob, template, 2).await.expect("request");
    assert_eq!(
        (again.id.as_str(), again.request_count),
        (first.id.as_str(), 2)
    );
    assert_eq!(
        store.decide(&bob, &file, names::READ, ""),
        PolicyDecision::Deny
    );

    store
        .set_decision(&first.id, PolicyDecision::Permit, 3)
        .await
        .expect("decide");
    assert_eq!(
        store.decide(&bob, &file, names::READ, ""),
        PolicyDecision::Permit
    );

    // Kept across a restart, with the Volt's owner.
    store.claim_volt_owner_blocking("alice").expect("owner");
    store
        .claim_volt_owner_blocking("mallory")
        .expect("second claim is ignored");
    let reopened = AccessStore::open(&dir.0, ROOT).expect("reopen");
    assert_eq!(reopened.volt_owner(), "alice");
    assert_eq!(
        reopened.decide(&bob, &file, names::READ, ""),
        PolicyDecision::Permit
    );
}

#[test]
fn older_access_names_are_read_as_volt_names() {
    assert_eq!(names::canonical("VOLT_ACCESS_READ"), names::READ);
    assert_eq!(names::canonical("VOLT_ACCESS_WRITE"), names::WRITE);
    assert_eq!(
        names::canonical(names::DATABASE_WRITE),
        names::DATABASE_WRITE
    );
}
