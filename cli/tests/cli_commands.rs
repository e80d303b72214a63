//! The `volt` binary against an in-process emulator: what each command prints (snapshots,
//! with volatile ids replaced) and its exit code.

mod support;

use serde_json::{json, Value};
use support::{bare_command, run_command, terminate, within, Volt};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _};

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_one_line_with_a_documented_exit_code() {
    let volt = Volt::start("errors").await;

    // A missing configuration: 3.
    let missing = volt.dir.join("missing.json");
    let mut command = bare_command(&volt.scratch, &["get", "x"]);
    command.arg("--config").arg(&missing);
    let run = run_command(command, b"").await;
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(
        volt.normalise(&run.stderr),
        "volt: no client configuration at <DIR>/missing.json (give --config FILE or set \
         VOLT_CONFIG)\n"
    );
    assert_eq!(run.stdout, "");

    // No --config, no VOLT_CONFIG and no ./client.config.json: 3 as well.
    let run = run_command(bare_command(&volt.scratch, &["ls"]), b"").await;
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(
        run.stderr,
        "volt: no client configuration at client.config.json (give --config FILE or set \
         VOLT_CONFIG)\n"
    );

    // A bad id: the Volt's status, 1.
    let run = volt.run(&["get", "no-such-id"], b"").await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr,
        "volt: Volt status error (NOT_FOUND, code 5): resource not found: no-such-id\n"
    );
    assert_eq!(run.stdout, "");
    let run = volt.run(&["--json", "get", "no-such-id"], b"").await;
    assert_eq!(run.code, 1, "{run:?}");
    let error: Value = serde_json::from_str(&run.stderr).expect("a JSON error line");
    assert_eq!(
        error,
        json!({"error": {
            "exit_code": 1,
            "message": "Volt status error (NOT_FOUND, code 5): resource not found: no-such-id",
            "status": {"code": 5, "name": "NOT_FOUND",
                       "message": "resource not found: no-such-id", "description": ""},
        }})
    );

    // Usage: 2.
    for (args, stderr) in [
        (
            &["call", "NoSuchMethod"][..],
            "volt: unknown method NoSuchMethod (give Service/Method or the full path)\n",
        ),
        (
            &["call", "GetResource", "{not json"][..],
            "volt: the request is not JSON: key must be a string at line 1 column 2\n",
        ),
        (
            &["call", "GetResource", r#"{"resource_id": {"x": 1}}"#][..],
            "",
        ),
    ] {
        let run = volt.run(args, b"").await;
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        if !stderr.is_empty() {
            assert_eq!(run.stderr, stderr, "{args:?}");
        }
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {run:?}");
    }
    let run = run_command(bare_command(&volt.scratch, &[]), b"").await;
    assert_eq!(run.code, 2, "{run:?}");

    // Nothing answers: 4.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(volt.config_path()).expect("config"))
            .expect("config JSON");
    config["volt"]["address"] = json!(format!("127.0.0.1:{port}"));
    config["volt"]["http_address"] = json!(format!("https://127.0.0.1:{port}"));
    let unreachable = volt.scratch.join("unreachable.json");
    std::fs::write(&unreachable, config.to_string()).expect("write config");
    let mut command = bare_command(&volt.scratch, &["--timeout", "5", "ls"]);
    command.arg("--config").arg(&unreachable);
    let run = run_command(command, b"").await;
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.starts_with("volt: "), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");

    // The exit codes are in --help.
    let run = run_command(bare_command(&volt.scratch, &["--help"]), b"").await;
    assert_eq!(run.code, 0);
    for line in [
        "  1  the Volt answered with an error status",
        "  3  configuration:",
        "  4  connection:",
    ] {
        assert!(run.stdout.contains(line), "{line}: {}", run.stdout);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_configuration_comes_from_the_option_the_environment_or_the_current_directory() {
    let volt = Volt::start("config").await;
    let id = volt.volt_id();
    // VOLT_CONFIG.
    let mut command = bare_command(&volt.scratch, &["--json", "get", &id]);
    command.env("VOLT_CONFIG", volt.config_path());
    let run = run_command(command, b"").await;
    assert_eq!(run.code, 0, "{run:?}");
    // ./client.config.json (the emulator wrote one in its directory).
    let run = run_command(bare_command(&volt.dir, &["--json", "get", &id]), b"").await;
    assert_eq!(run.code, 0, "{run:?}");
    let got: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(got["resource"]["id"], json!(id));
    // Either transport.
    for transport in ["grpc", "websocket"] {
        let run = volt
            .run(&["--transport", transport, "--json", "get", &id], b"")
            .await;
        assert_eq!(run.code, 0, "{transport}: {run:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn get_ls_and_rm_print_for_people_and_scripts() {
    let volt = Volt::start("resources").await;
    let volt_id = volt.volt_id();
    let folder = volt
        .new_resource(
            json!({"name": "notes", "kind": ["volt:folder"]}),
            Some(&volt_id),
        )
        .await;
    let note = volt
        .new_resource(
            json!({"name": "first", "kind": ["note"], "description": "a note"}),
            Some(&folder),
        )
        .await;

    let run = volt.run(&["get", &note], b"").await;
    assert_eq!(run.code, 0, "{run:?}");
    let shown: Vec<String> = run
        .stdout
        .lines()
        .filter(|l| !l.starts_with("created") && !l.starts_with("modified"))
        .map(|l| volt.normalise(l))
        .collect();
    assert_eq!(
        shown.join("\n"),
        "id           <ID>\n\
         description  a note\n\
         name         first\n\
         volt_id      <VOLT>\n\
         version      1\n\
         owner        <ID>\n\
         status       RESOURCE_STATUS_LIVE\n\
         kind         note"
    );
    // --json: the response as it is.
    let run = volt.run(&["--json", "get", &note], b"").await;
    let printed: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let direct = volt
        .client
        .get_resource(json!({"resource_id": note}))
        .await
        .expect("GetResource");
    assert_eq!(printed, direct);
    assert_eq!(run.stdout.lines().count(), 1);

    let run = volt.run(&["ls"], b"").await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        volt.normalise(&run.stdout),
        "tdx-volt emulator  <VOLT>  [volt, volt:folder]\n\
         ├── volt-emulator client  <ID>  [home, volt:folder]\n\
         └── notes  <ID>  [volt:folder]\n    \
             └── first  <ID>  [note]\n"
    );
    let run = volt.run(&["ls", "--depth", "1"], b"").await;
    assert_eq!(run.stdout.lines().count(), 3, "{run:?}");
    let run = volt.run(&["--json", "ls", &folder], b"").await;
    let tree: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(tree["id"], json!(folder));
    assert_eq!(tree["child"][0]["id"], json!(note));

    let run = volt.run(&["rm", &note], b"").await;
    assert_eq!(
        (run.code, volt.normalise(&run.stdout)),
        (0, "deleted <ID>\n".to_owned())
    );
    let run = volt.run(&["get", &note], b"").await;
    assert_eq!(run.code, 1, "{run:?}");
    let run = volt.run(&["--json", "rm", &folder], b"").await;
    assert_eq!(run.code, 0, "{run:?}");
    let _: Value = serde_json::from_str(&run.stdout).expect("JSON");
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_prints_a_table_csv_or_json() {
    let volt = Volt::start("sql").await;
    let created = volt
        .client
        .create_database(json!({"name": "shop"}))
        .await
        .expect("CreateDatabase");
    let db = created["resource"]["id"].as_str().expect("id").to_owned();
    let run = volt
        .run(
            &[
                "sql",
                &db,
                "CREATE TABLE fruit (id INTEGER PRIMARY KEY, name TEXT, price REAL)",
            ],
            b"",
        )
        .await;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "(0 rows affected)\n"),
        "{run:?}"
    );
    let insert = "INSERT INTO fruit (name, price) VALUES ('apple', 0.5), ('pear', 0.75), \
                  ('fig, \"dried\"', NULL), ('two\nlines', 12)";
    let run = volt.run(&["sql", &db, insert], b"").await;
    assert_eq!((run.code, run.stdout.as_str()), (0, "(4 rows affected)\n"));
    let select = "SELECT * FROM fruit ORDER BY id";

    let run = volt.run(&["sql", &db, select], b"").await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "id  name          price\n\
         --  ------------  -----\n \
          1  apple           0.5\n \
          2  pear           0.75\n \
          3  fig, \"dried\"   NULL\n \
          4  two\\nlines     12.0\n\
         (4 rows)\n"
    );
    let run = volt
        .run(&["sql", &db, select, "--format", "csv"], b"")
        .await;
    assert_eq!(
        run.stdout,
        "id,name,price\n1,apple,0.5\n2,pear,0.75\n3,\"fig, \"\"dried\"\"\",\n4,\"two\nlines\",12.0\n"
    );
    let run = volt.run(&["--json", "sql", &db, select], b"").await;
    let rows: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(
        rows,
        json!([
            {"id": 1, "name": "apple", "price": 0.5},
            {"id": 2, "name": "pear", "price": 0.75},
            {"id": 3, "name": "fig, \"dried\"", "price": null},
            {"id": 4, "name": "two\nlines", "price": 12.0},
        ])
    );
    let run = volt
        .run(&["sql", &db, "SELECT name FROM fruit WHERE id > 10"], b"")
        .await;
    assert_eq!(run.stdout, "name\n----\n(0 rows)\n");
    let run = volt
        .run(
            &[
                "sql",
                &db,
                "SELECT name FROM fruit WHERE id > 10",
                "--format",
                "json",
            ],
            b"",
        )
        .await;
    assert_eq!(run.stdout, "[]\n");
    // More rows than the widths are fitted to: the rest stream out in the same layout.
    let many = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1500) \
                SELECT x AS n, 'row ' || x AS name FROM c";
    let run = volt.run(&["sql", &db, many], b"").await;
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2 + 1500 + 1);
    assert_eq!(lines[..3], ["   n  name", "----  --------", "   1  row 1"]);
    assert_eq!(lines[1001..1003], ["1000  row 1000", "1001  row 1001"]);
    assert_eq!(lines[1502], "(1500 rows)");
    let run = volt.run(&["sql", &db, "SELEC nonsense"], b"").await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr,
        "volt: Volt status error (INVALID_ARGUMENT, code 3): near \"SELEC\": syntax error\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn call_runs_unary_and_streaming_methods() {
    let volt = Volt::start("call").await;
    let volt_id = volt.volt_id();
    let request = json!({"resource_id": volt_id}).to_string();
    let run = volt
        .run(&["--json", "call", "GetResource", &request], b"")
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    let direct = volt
        .client
        .get_resource(json!({"resource_id": volt_id}))
        .await
        .expect("GetResource");
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).expect("JSON"),
        direct
    );
    // The request from stdin, by full path; indented for people.
    let run = volt
        .run(
            &["call", "/tdx.volt_api.volt.v1.VoltAPI/GetResource", "-"],
            request.as_bytes(),
        )
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("{\n  \"resource\": {\n"), "{run:?}");

    // A bidirectional stream: requests as JSON lines in, responses as JSON lines out.
    let created = volt
        .client
        .create_database(json!({"name": "d"}))
        .await
        .expect("CreateDatabase");
    let db = created["resource"]["id"].as_str().expect("id").to_owned();
    volt.client
        .bulk_update(json!({"database_id": db, "statement": [
            "CREATE TABLE t (n INTEGER)", "INSERT INTO t VALUES (1), (2)"]}))
        .await
        .expect("BulkUpdate");
    let input = format!(
        "{}\n\n",
        json!({"start": {"database_id": db, "statement": "SELECT n FROM t ORDER BY n"}})
    );
    let run = volt
        .run(&["call", "SqliteDatabaseAPI/Execute"], input.as_bytes())
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "{\"header\":{\"column\":[{\"name\":\"n\",\"type\":\"DATA_TYPE_INTEGER\"}]}}\n\
         {\"row\":{\"column\":[{\"integer\":\"1\"}]}}\n\
         {\"row\":{\"column\":[{\"integer\":\"2\"}]}}\n"
    );
    // A server stream that fails: its error line, and 1.
    let run = volt
        .run(&["call", "DownloadFile", r#"{"resource_id": "nope"}"#], b"")
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr,
        "volt: Volt status error (NOT_FOUND, code 5): file not found: nope\n"
    );
    // A bad line on stdin is a usage error.
    let run = volt
        .run(&["call", "SqliteDatabaseAPI/Execute"], b"{oops\n")
        .await;
    assert_eq!(run.code, 2, "{run:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wire_sub_receives_what_wire_pub_sends() {
    let volt = Volt::start("wire").await;
    let saved = volt
        .client
        .save_wire(json!({"resource": {"name": "w"}, "create": true}))
        .await
        .expect("SaveWire");
    let wire = saved["resource"]["id"].as_str().expect("id").to_owned();
    let mut sub = volt
        .command(&["wire", "sub", &wire])
        .spawn()
        .expect("volt wire sub");
    // The Volt says nothing when a subscription starts: watch for it.
    within("the subscription", async {
        while volt.emulator().wire_subscribers(&wire) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    let sent = "hello\nwire é\nno newline at the end";
    let run = volt.run(&["wire", "pub", &wire], sent.as_bytes()).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        format!("published 3 chunks ({} bytes) to {wire}\n", sent.len())
    );
    let mut stdout = sub.stdout.take().expect("stdout");
    let mut got = vec![0u8; sent.len()];
    within("the chunks", stdout.read_exact(&mut got))
        .await
        .expect("read");
    assert_eq!(String::from_utf8_lossy(&got), sent);

    // A file, and --json on both sides.
    let file = volt.scratch.join("payload.bin");
    std::fs::write(&file, vec![7u8; 70_000]).expect("write");
    let path = file.display().to_string();
    let run = volt
        .run(&["--json", "wire", "pub", &wire, "--file", &path], b"")
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).expect("JSON"),
        json!({"wire_id": wire, "chunks": 2, "bytes": 70_000})
    );
    let mut got = vec![0u8; 70_000];
    within("the file", stdout.read_exact(&mut got))
        .await
        .expect("read");
    assert!(got.iter().all(|&b| b == 7));

    // Ctrl-C (here SIGTERM) ends it cleanly.
    terminate(&sub);
    let status = within("sub to stop", sub.wait()).await.expect("wait");
    assert_eq!(status.code(), Some(0));
    within("the subscription to go", async {
        while volt.emulator().wire_subscribers(&wire) != 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;

    // The raw call, kept open after the end of its (empty) stdin.
    let request = json!({"wire_id": wire}).to_string();
    let mut call = volt
        .command(&["call", "--keep-open", "SubscribeWire", &request])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("volt call");
    within("the subscription", async {
        while volt.emulator().wire_subscribers(&wire) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    let publisher = volt
        .client
        .publish_wire_chunks(&wire)
        .await
        .expect("publish");
    publisher.send(b"raw").await.expect("send");
    publisher.finish().await.expect("finish");
    let mut lines = tokio::io::BufReader::new(call.stdout.take().expect("stdout")).lines();
    let line = within("the chunk", lines.next_line())
        .await
        .expect("read")
        .expect("a line");
    assert_eq!(line, r#"{"chunk":"cmF3"}"#);
    terminate(&call);
    let status = within("call to stop", call.wait()).await.expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn session_prints_events_as_json_lines() {
    let volt = Volt::start("session").await;
    let mut session = volt.command(&["session"]).spawn().expect("volt session");
    let mut lines = tokio::io::BufReader::new(session.stdout.take().expect("stdout")).lines();
    let first = within("the first line", lines.next_line())
        .await
        .expect("read")
        .expect("a line");
    let first: Value = serde_json::from_str(&first).expect("JSON");
    assert_eq!(first["event"], json!("connected"));
    let note = volt
        .new_resource(json!({"name": "n", "kind": ["note"]}), None)
        .await;
    volt.client
        .delete_resource(json!({"resource_id": note}))
        .await
        .expect("DeleteResource");
    let event = within("the delete event", async {
        loop {
            let line = lines.next_line().await.expect("read").expect("a line");
            let event: Value = serde_json::from_str(&line).expect("JSON");
            if event["event"] == json!("deleted") {
                return event;
            }
        }
    })
    .await;
    assert_eq!(event["resource"]["id"], json!(note));
    terminate(&session);
    let status = within("session to stop", session.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_saves_a_session_and_prints_no_secret() {
    let volt = Volt::start("auth").await;
    let before = std::fs::read_to_string(volt.config_path()).expect("config");
    let run = volt
        .run(&["--json", "auth", "--name", "cli test"], b"")
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    let granted: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let session = granted["session_id"].as_str().expect("session id");
    let after = std::fs::read_to_string(volt.config_path()).expect("config");
    assert_ne!(before, after);
    assert!(after.contains(session));
    let config: Value = serde_json::from_str(&after).expect("config JSON");
    let key = config["credential"]["key"].as_str().expect("key");
    assert!(!run.stdout.contains(key) && !run.stderr.contains(key));
    // The new session works.
    let run = volt.run(&["ls", "--depth", "1"], b"").await;
    assert_eq!(run.code, 0, "{run:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn emulator_runs_in_the_foreground_until_stopped() {
    let dir = support::temp_dir("emulator");
    std::fs::create_dir_all(&dir).expect("dir");
    let data = dir.join("volt-data");
    let mut emulator = bare_command(&dir, &["emulator"])
        .spawn()
        .expect("volt emulator");
    let mut lines = tokio::io::BufReader::new(emulator.stdout.take().expect("stdout")).lines();
    let path = within("the config path", lines.next_line())
        .await
        .expect("read")
        .expect("a line");
    assert_eq!(path, "./volt-data/client.config.json");
    assert!(data.join("client.config.json").is_file());
    let run = run_command(bare_command(&data, &["ls", "--depth", "1"]), b"").await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("tdx-volt emulator  did:volt:"),
        "{run:?}"
    );
    terminate(&emulator);
    let status = within("the emulator to stop", emulator.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
