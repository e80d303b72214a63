//! The scenario run over several transports (or configurations) and compared: every shape of
//! call, answers and errors, recorded as a caller sees them.

use base64::Engine as _;
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tdx_volt::client::CallEvent;
use tdx_volt::protocol::schema;
use tdx_volt::{Error, VoltClient};

use super::within;

pub const VOLT_API: &str = "/tdx.volt_api.volt.v1.VoltAPI";
pub const FILE_API: &str = "/tdx.volt_api.volt.v1.FileAPI";
pub const SQL_EXECUTE: &str = "/tdx.volt_api.data.v1.SqliteDatabaseAPI/Execute";

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// An error as the scenario records it: what a caller can see of it, besides its text.
fn error_record(e: &Error) -> Value {
    json!({
        "kind": format!("{:?}", e.kind()),
        "status": e.status().map(|s| json!({"code": s.code, "message": s.message})),
    })
}

/// Calls `path` as its kind calls for and records everything that comes back: the response
/// or error of a unary call, every event of a streaming one.
pub async fn record(client: &VoltClient, path: &str, request: Value) -> Value {
    let method = schema::methods().get(path).expect("a method of the API");
    if !method.kind().server_streams() && !method.kind().client_streams() {
        return match within(path, client.unary(path, request)).await {
            Ok(response) => json!({ "response": response }),
            Err(e) => json!({ "error": error_record(&e) }),
        };
    }
    let mut call = match client.streaming(path, Some(request)).await {
        Ok(call) => call,
        Err(e) => return json!({ "refused": error_record(&e) }),
    };
    let mut events = Vec::new();
    while let Some(event) = within(path, call.next()).await {
        events.push(match event {
            CallEvent::Data(message) => json!({ "data": message }),
            CallEvent::Error(e) => json!({ "error": error_record(&e) }),
            CallEvent::Failed(e) => json!({ "failed": error_record(&e) }),
            CallEvent::End => json!("end"),
            other => json!({ "unknown": format!("{other:?}") }),
        });
    }
    Value::Array(events)
}

/// What the scenario reads, made once.
pub struct Fixture {
    pub database_id: String,
    pub note_id: String,
    pub file_id: String,
}

pub async fn fixture(client: &VoltClient) -> Fixture {
    let created = client
        .create_database(json!({"name": "kinds"}))
        .await
        .expect("CreateDatabase");
    let database_id = created["resource"]["id"].as_str().expect("id").to_owned();
    // One column per SQLite storage class, with values at their edges.
    let statements = [
        "CREATE TABLE t (id INTEGER PRIMARY KEY, big INTEGER, real REAL, text TEXT, data BLOB, \
         untyped)",
        "INSERT INTO t VALUES (1, 9007199254740993, -0.5, 'héllo \"quoted\"\n', x'00ff10', NULL)",
        "INSERT INTO t VALUES (2, -9223372036854775808, 1e300, '', x'', NULL)",
        "INSERT INTO t VALUES (3, 0, 3.0, '😀', NULL, 'x')",
    ];
    client
        .bulk_update(json!({"database_id": database_id, "statement": statements}))
        .await
        .expect("BulkUpdate");
    let note = client
        .save_resource(json!({"resource": {"name": "note", "kind": ["note"],
                                            "description": "a note"}, "create": true}))
        .await
        .expect("SaveResource");
    let file = client
        .save_resource(json!({"resource": {"name": "f.bin", "kind": ["file"]}, "create": true}))
        .await
        .expect("SaveResource");
    let file_id = file["resource"]["id"].as_str().expect("id").to_owned();
    let content: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    client
        .set_file_content(json!({"resource_id": file_id, "content": b64(&content)}))
        .await
        .expect("SetFileContent");
    Fixture {
        database_id,
        note_id: note["resource"]["id"].as_str().expect("id").to_owned(),
        file_id,
    }
}

/// Unary, server-streaming and bidirectional calls, answers and errors.
pub fn scenario(volt_id: &str, f: &Fixture) -> Vec<(String, Value)> {
    let select = |statement: &str, page_size: u32| {
        json!({"start": {"database_id": f.database_id, "statement": statement,
                         "page_size": page_size}})
    };
    vec![
        // A request that does not fit the method's schema: the same error on every transport.
        (
            format!("{VOLT_API}/GetResource"),
            json!({"resource_id": {"not": "a string"}}),
        ),
        (
            SQL_EXECUTE.to_owned(),
            json!({"start": {"database_id": f.database_id, "page_size": "many"}}),
        ),
        (
            format!("{VOLT_API}/GetResource"),
            json!({"resource_id": volt_id}),
        ),
        (
            format!("{VOLT_API}/GetResource"),
            json!({"resource_id": f.database_id}),
        ),
        (
            format!("{VOLT_API}/GetResource"),
            json!({"resource_id": f.note_id}),
        ),
        (
            format!("{VOLT_API}/GetResource"),
            json!({"resource_id": "no-such-resource"}),
        ),
        (
            format!("{VOLT_API}/GetResources"),
            json!({"id": [f.note_id, f.file_id]}),
        ),
        (
            format!("{VOLT_API}/GetResourceDescendants"),
            json!({"resource_id": volt_id, "depth": 3}),
        ),
        (
            format!("{VOLT_API}/GetResourceAncestors"),
            json!({"resource_id": f.note_id, "include_resource_id": true}),
        ),
        (
            format!("{VOLT_API}/CanAccessResource"),
            json!({"resource_id": f.note_id, "access": "read"}),
        ),
        (
            format!("{FILE_API}/GetFileContent"),
            json!({"resource_id": f.file_id}),
        ),
        (
            format!("{FILE_API}/DownloadFile"),
            json!({"resource_id": f.file_id}),
        ),
        (
            format!("{FILE_API}/DownloadFile"),
            json!({"resource_id": "no-such-file"}),
        ),
        (
            SQL_EXECUTE.to_owned(),
            select("SELECT * FROM t ORDER BY id", 0),
        ),
        (
            SQL_EXECUTE.to_owned(),
            select("SELECT id, text FROM t WHERE id > 1", 0),
        ),
        (SQL_EXECUTE.to_owned(), select("SELEC nonsense", 0)),
    ]
}

/// Uploads 40 blocks of 3,000 bytes with `uploader` (client streaming: every request written
/// before the answer), then checks that `reader` reads the same content back.
pub async fn upload_and_read_back(uploader: &VoltClient, reader: &VoltClient) {
    let saved = uploader
        .save_resource(json!({"resource": {"name": "up.txt", "kind": ["file"]}, "create": true}))
        .await
        .expect("SaveResource");
    let file_id = saved["resource"]["id"].as_str().expect("id").to_owned();
    let mut upload = uploader.upload_file(None).await.expect("UploadFile");
    upload
        .send(json!({"start": {"resource_id": file_id}}))
        .await
        .expect("start");
    let mut content = Vec::new();
    for i in 0..40u8 {
        let block = vec![b'a' + i % 26; 3000];
        upload
            .send(json!({"block": b64(&block)}))
            .await
            .expect("block");
        content.extend_from_slice(&block);
    }
    upload.end().await.expect("end");
    let answer = within("upload answer", upload.message())
        .await
        .expect("no error")
        .expect("answer");
    assert_eq!(answer["ack"], json!(40));
    assert!(matches!(
        within("end", upload.next()).await,
        Some(CallEvent::End)
    ));
    assert!(upload.send(json!({})).await.unwrap_err().is_closed());
    let got = reader
        .get_file_content(json!({"resource_id": file_id}))
        .await
        .expect("GetFileContent");
    assert_eq!(got["content"], json!(b64(&content)));
}
