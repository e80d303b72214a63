//! The session registry's tests: several registries on one directory, as a serving emulator
//! and `volt-emulator client` are.

use super::*;

fn session(id: &str) -> Session {
    Session {
        session_id: id.to_owned(),
        client_id: format!("client-{id}"),
        client_name: "test".to_owned(),
        public_key_pem: "-----BEGIN PUBLIC KEY-----".to_owned(),
        home_id: String::new(),
        identity_did: String::new(),
        cert_pem: String::new(),
        cert_der_b64: String::new(),
        revoked: false,
    }
}

fn tempdir() -> PathBuf {
    crate::files::test_dir("clients")
}

#[test]
fn sessions_written_by_another_process_are_found_and_misses_do_not_reread() {
    let dir = tempdir();
    let served = ClientRegistry::open(&dir).unwrap();
    served.insert(session("s1")).unwrap();
    // `volt-emulator client` in another process: its own registry on the same file.
    let other = ClientRegistry::open(&dir).unwrap();
    other.insert(session("s2")).unwrap();

    assert_eq!(served.by_session("s2").unwrap().client_id, "client-s2");
    assert!(served.by_session("nobody").is_none());
    // The file is the one last read: further misses stat it, and read nothing.
    let on_disk = std::fs::metadata(dir.join(CLIENTS_FILE)).unwrap();
    assert_eq!(served.lock().read, Some(FileStamp::of(&on_disk)));
    assert!(served.by_session("nobody").is_none());

    // A later write by the other process is seen at the next miss.
    other.insert(session("s3")).unwrap();
    assert!(served.by_session("s3").is_some());
    // Both processes' sessions survive either one's write.
    served.insert(session("s4")).unwrap();
    let reopened = ClientRegistry::open(&dir).unwrap();
    for id in ["s1", "s2", "s3", "s4"] {
        assert!(reopened.by_session(id).is_some(), "{id}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn concurrent_inserts_from_two_registries_keep_every_session_and_leave_no_temp_files() {
    const THREADS_PER_REGISTRY: usize = 3;
    const INSERTS: usize = 30;
    let dir = tempdir();
    // Two registries stand for two processes: each has its own in-memory lock, so only the
    // file lock keeps their writes apart.
    let registries = [
        std::sync::Arc::new(ClientRegistry::open(&dir).unwrap()),
        std::sync::Arc::new(ClientRegistry::open(&dir).unwrap()),
    ];
    let start = std::sync::Arc::new(std::sync::Barrier::new(2 * THREADS_PER_REGISTRY));
    let mut threads = Vec::new();
    for (r, registry) in registries.iter().enumerate() {
        for t in 0..THREADS_PER_REGISTRY {
            let registry = std::sync::Arc::clone(registry);
            let start = std::sync::Arc::clone(&start);
            threads.push(std::thread::spawn(move || {
                start.wait();
                for i in 0..INSERTS {
                    registry.insert(session(&format!("r{r}-t{t}-{i}"))).unwrap();
                }
            }));
        }
    }
    for thread in threads {
        thread.join().unwrap();
    }

    let reopened = ClientRegistry::open(&dir).unwrap();
    assert_eq!(
        reopened.lock().sessions.len(),
        2 * THREADS_PER_REGISTRY * INSERTS
    );
    for r in 0..2 {
        for t in 0..THREADS_PER_REGISTRY {
            for i in 0..INSERTS {
                let id = format!("r{r}-t{t}-{i}");
                assert!(reopened.by_session(&id).is_some(), "{id} lost");
            }
        }
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [CLIENTS_FILE, CLIENTS_LOCK_FILE]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_revocation_by_another_registry_is_noticed_and_never_undone() {
    let dir = tempdir();
    let served = ClientRegistry::open(&dir).unwrap();
    served.insert(session("s1")).unwrap();
    let stale = served.by_session("s1").unwrap();
    let watch = served.revocations();
    assert!(!watch.has_changed().unwrap());

    // `volt-emulator revoke` in another process.
    let other = ClientRegistry::open(&dir).unwrap();
    assert!(other.revoke("s1").unwrap());
    assert!(!other.revoke("nobody").unwrap());

    served.refresh();
    assert!(watch.has_changed().unwrap(), "the revocation is announced");
    assert!(served.is_revoked("s1"));
    // A copy taken before the revocation, saved again, leaves it revoked.
    served.insert(stale).unwrap();
    assert!(ClientRegistry::open(&dir).unwrap().is_revoked("s1"));
    std::fs::remove_dir_all(dir).unwrap();
}
