//! The resource tree's unit tests.

use std::path::PathBuf;

use super::*;

fn folder(name: &str) -> Resource {
    Resource {
        name: name.into(),
        kind: vec![kind::FOLDER.into()],
        ..Resource::default()
    }
}

#[tokio::test]
async fn tree_survives_reopen_and_deletes_need_recursive() {
    let dir = tempdir();
    let store = ResourceStore::open(&dir, "did:volt:abc", "Test").unwrap();
    let a = store
        .create("did:volt:abc", "c1", folder("a"))
        .await
        .unwrap();
    let b = store.create(&a.id, "c1", folder("b")).await.unwrap();
    assert_eq!(store.ancestors(&b.id).unwrap().len(), 2);
    assert_eq!(store.descendants("did:volt:abc", 1).unwrap().len(), 1);
    assert_eq!(store.descendants("did:volt:abc", 0).unwrap().len(), 2);
    drop(store);

    let store = ResourceStore::open(&dir, "did:volt:abc", "Test").unwrap();
    assert_eq!(store.get(&b.id).unwrap().name, "b");
    assert_eq!(store.parent_of(&b.id).as_deref(), Some(a.id.as_str()));
    let err = store.delete(&a.id, false).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(store.delete(&a.id, true).await.unwrap().len(), 2);
    assert!(store.get(&b.id).is_none());
    assert_eq!(
        store.delete("did:volt:abc", true).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        store
            .create("nope", "c1", folder("x"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_leave_the_newest_tree_in_the_file() {
    let dir = tempdir();
    let store = Arc::new(ResourceStore::open(&dir, "did:volt:abc", "Test").unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let name = format!("f{i}");
            store.create("did:volt:abc", "c1", folder(&name)).await
        });
    }
    while let Some(created) = tasks.join_next().await {
        created.unwrap().unwrap();
    }
    drop(store);

    let store = ResourceStore::open(&dir, "did:volt:abc", "Test").unwrap();
    assert_eq!(store.children("did:volt:abc").len(), 32);
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn corrupt_file_is_an_error_not_a_panic() {
    let dir = tempdir();
    std::fs::write(
        dir.join(RESOURCES_FILE),
        b"{\"resources\": [{\"resource\": 7}]}",
    )
    .unwrap();
    assert!(ResourceStore::open(&dir, "did:volt:abc", "T").is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempdir() -> PathBuf {
    crate::files::test_dir("resources")
}
