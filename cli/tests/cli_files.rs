//! `volt file put` and `volt file get`: content back identical (sha256) at 0 B, 1 B, the
//! block boundaries, and a large file; the output and exit codes around them.

mod support;

use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use support::Volt;
use tdx_volt::client::UPLOAD_BLOCK_BYTES;

fn sha256_of(path: &Path) -> String {
    let mut file = std::fs::File::open(path).expect("open");
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).expect("read");
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A file of `size` pseudo-random bytes.
fn write_file(path: &Path, size: usize) {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ size as u64;
    let mut left = size;
    while left > 0 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        let n = left.min(8);
        out.write_all(&bytes[..n]).expect("write");
        left -= n;
    }
    out.flush().expect("flush");
}

/// Puts `size` bytes with `volt file put` over `transport`, gets them back with
/// `volt file get`, and compares the two files' sha256.
async fn round_trip(volt: &Volt, transport: &str, size: usize) {
    let local = volt.scratch.join(format!("in-{transport}-{size}.bin"));
    write_file(&local, size);
    let local_arg = local.display().to_string();
    let run = volt
        .run(
            &[
                "--transport",
                transport,
                "--json",
                "file",
                "put",
                &local_arg,
            ],
            b"",
        )
        .await;
    assert_eq!(run.code, 0, "{size}: {run:?}");
    let put: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let id = put["id"].as_str().expect("the new file's id").to_owned();
    assert_eq!(put["bytes"], json!(size), "{size}");
    assert_eq!(put["blocks"], json!(size.div_ceil(UPLOAD_BLOCK_BYTES)));

    let back = volt.scratch.join(format!("out-{transport}-{size}.bin"));
    let back_arg = back.display().to_string();
    let run = volt
        .run(
            &[
                "--transport",
                transport,
                "--json",
                "file",
                "get",
                &id,
                &back_arg,
            ],
            b"",
        )
        .await;
    assert_eq!(run.code, 0, "{size}: {run:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).expect("JSON"),
        json!({"id": id, "path": back_arg, "bytes": size})
    );
    assert_eq!(sha256_of(&back), sha256_of(&local), "{transport} {size}");
    let _ = std::fs::remove_file(&local);
    let _ = std::fs::remove_file(&back);
}

#[tokio::test(flavor = "multi_thread")]
async fn files_come_back_identical_at_block_boundaries() {
    let volt = Volt::start("files").await;
    let block = UPLOAD_BLOCK_BYTES;
    for transport in ["grpc", "websocket"] {
        for size in [0, 1, block - 1, block, block + 1, 2 * block] {
            round_trip(&volt, transport, size).await;
        }
    }
}

/// 200 MB by default (the size of the check); `VOLT_CLI_TEST_LARGE_MB` sets another.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_file_comes_back_identical() {
    let mb: usize = std::env::var("VOLT_CLI_TEST_LARGE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let volt = Volt::start("large").await;
    round_trip(&volt, "grpc", mb * 1_000_000 + 12_345).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn file_commands_print_for_people_and_fail_cleanly() {
    let volt = Volt::start("file-output").await;
    std::fs::create_dir_all(volt.scratch.join("src")).expect("dir");
    let local = volt.scratch.join("src").join("notes.txt");
    std::fs::write(&local, b"hello file\n").expect("write");
    let local_arg = local.display().to_string();

    // A new resource named after the file; a summary line for people.
    let run = volt.run(&["file", "put", &local_arg], b"").await;
    assert_eq!(run.code, 0, "{run:?}");
    let line = volt.normalise(&run.stdout);
    assert!(
        line.starts_with("<DIR>/scratch/src/notes.txt -> <ID>: 11 bytes (0.0 MB) in "),
        "{line}"
    );
    let id = run
        .stdout
        .split(" -> ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .expect("the id")
        .to_owned();
    let resource = volt
        .client
        .get_resource(json!({"resource_id": id}))
        .await
        .expect("GetResource");
    assert_eq!(resource["resource"]["name"], json!("notes.txt"));

    // Into an existing resource.
    std::fs::write(&local, b"second version\n").expect("write");
    let run = volt
        .run(&["--json", "file", "put", &local_arg, &id], b"")
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).expect("JSON"),
        json!({"id": id, "bytes": 15, "blocks": 1})
    );

    // Get: to stdout with `-`; by default to a new file named after the resource, never
    // over one that exists.
    let run = volt.run(&["file", "get", &id, "-"], b"").await;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "second version\n"),
        "{run:?}"
    );
    let run = volt.run(&["file", "get", &id], b"").await;
    assert_eq!(run.code, 0, "{run:?}");
    let written = volt.scratch.join("notes.txt");
    assert_eq!(std::fs::read(&written).expect("read"), b"second version\n");
    let run = volt.run(&["file", "get", &id], b"").await;
    assert_eq!(run.code, 5, "{run:?}");
    assert_eq!(
        run.stderr,
        "volt: notes.txt exists: give LOCAL to write it anyway\n"
    );

    // A bad id: 1, and no file is made.
    let run = volt
        .run(&["file", "get", "no-such-file", "out.bin"], b"")
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr,
        "volt: Volt status error (NOT_FOUND, code 5): file not found: no-such-file\n"
    );
    assert!(!volt.scratch.join("out.bin").exists());
    let run = volt
        .run(&["file", "put", &local_arg, "no-such-file"], b"")
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    // A missing local file: 5.
    let run = volt.run(&["file", "put", "no-such-local-file"], b"").await;
    assert_eq!(run.code, 5, "{run:?}");
    assert!(
        run.stderr
            .starts_with("volt: opening no-such-local-file: No such file or directory"),
        "{run:?}"
    );
}
