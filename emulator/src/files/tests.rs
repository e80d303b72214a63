//! Atomic writes and file locks under concurrency.

use super::*;

fn tempdir() -> PathBuf {
    test_dir("files")
}

#[test]
fn concurrent_atomic_writes_of_one_file_all_succeed_and_leave_it_whole() {
    let dir = tempdir();
    let path = dir.join("state.json");
    let start = std::sync::Arc::new(std::sync::Barrier::new(4));
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let path = path.clone();
            let start = std::sync::Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..50 {
                    write_atomic(&path, &[t; 4096], Access::Private).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let content = std::fs::read(&path).unwrap();
    assert_eq!(content.len(), 4096);
    assert!(content.iter().all(|b| *b == content[0]), "a mixed file");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["state.json"]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_file_lock_excludes_a_second_holder_until_dropped() {
    let dir = tempdir();
    let path = dir.join("x.lock");
    let held = FileLock::acquire(&path).unwrap();
    // Another open of the file (as another process makes) cannot take it meanwhile.
    let other = std::fs::File::open(&path).unwrap();
    assert!(matches!(
        other.try_lock(),
        Err(std::fs::TryLockError::WouldBlock)
    ));
    drop(held);
    other.try_lock().unwrap();
    drop(other);
    drop(FileLock::acquire(&path).unwrap());
    std::fs::remove_dir_all(dir).unwrap();
}
