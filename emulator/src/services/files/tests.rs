//! FileAPI's unit tests: calls made through `dispatch`, as a transport makes them.

use super::*;
use crate::call::{InboundSender, OutboundReceiver};
use crate::services::test_support::{caller, recv, send, TestServices};
use pb::upload_file_request::Payload as Up;
use prost::Message;
use tokio::task::JoinHandle;

/// The shared fixture, with this module's helpers on top (fields reached through Deref).
struct Fixture(TestServices);

impl std::ops::Deref for Fixture {
    type Target = TestServices;

    fn deref(&self) -> &TestServices {
        &self.0
    }
}

impl Fixture {
    fn new() -> Fixture {
        Fixture(TestServices::new("files"))
    }

    fn start(
        &self,
        method: &'static str,
    ) -> (
        InboundSender,
        OutboundReceiver,
        JoinHandle<Result<(), Failure>>,
    ) {
        let (tx, inbound) = Inbound::channel();
        let (outbound, rx) = Outbound::channel();
        let svc = Arc::clone(&self.svc);
        let handle =
            tokio::spawn(
                async move { dispatch(&svc, &caller(), method, inbound, &outbound).await },
            );
        (tx, rx, handle)
    }

    /// Runs a unary call to completion: its one response, or its failure.
    async fn unary<Req: Message, Resp: Message + Default>(
        &self,
        method: &'static str,
        request: &Req,
    ) -> Result<Resp, Failure> {
        let (tx, mut rx, handle) = self.start(method);
        send(&tx, request).await;
        handle.await.unwrap()?;
        Ok(recv(&mut rx).await.unwrap())
    }

    fn new_file(&self, name: &str) -> String {
        let root = self.svc.resources().root_id().to_owned();
        self.svc
            .resources()
            .create_blocking(
                &root,
                "client-1",
                pb::Resource {
                    name: name.into(),
                    kind: vec![kind::FILE.into()],
                    ..pb::Resource::default()
                },
            )
            .unwrap()
            .id
    }
}

fn set(id: &str, content: &[u8]) -> pb::SetFileContentRequest {
    pb::SetFileContentRequest {
        resource_id: id.into(),
        content: content.to_vec(),
        ..pb::SetFileContentRequest::default()
    }
}

fn get(id: &str) -> pb::GetFileContentRequest {
    pb::GetFileContentRequest {
        resource_id: id.into(),
        file_path: String::new(),
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Downloads a file: the blocks' sizes and their bytes.
async fn download_all(f: &Fixture, id: &str) -> (Vec<usize>, Vec<u8>) {
    let (tx, mut rx, handle) = f.start("DownloadFile");
    send(
        &tx,
        &pb::DownloadFileRequest {
            resource_id: id.into(),
            file_path: String::new(),
        },
    )
    .await;
    let mut sizes = Vec::new();
    let mut bytes = Vec::new();
    let mut ended = false;
    while let Some(r) = recv::<pb::DownloadFileResponse>(&mut rx).await {
        assert!(!ended, "nothing may follow the final status");
        match r.payload.unwrap() {
            pb::download_file_response::Payload::Block(b) => {
                sizes.push(b.len());
                bytes.extend_from_slice(&b);
            }
            pb::download_file_response::Payload::Status(s) => {
                assert_eq!((s.code, s.message.as_str()), (0, ""));
                ended = true;
            }
        }
    }
    assert!(ended, "a download ends with a status");
    handle.await.unwrap().unwrap();
    (sizes, bytes)
}

#[tokio::test]
async fn set_and_get_content_round_trip() {
    let f = Fixture::new();
    let id = f.new_file("notes.txt");

    // No content yet: empty.
    let r: pb::GetFileContentResponse = f.unary("GetFileContent", &get(&id)).await.unwrap();
    assert!(r.content.is_empty());

    let body = b"hello, volt".to_vec();
    let r: pb::SetFileContentResponse = f.unary("SetFileContent", &set(&id, &body)).await.unwrap();
    assert_eq!(r.status, None);
    let r: pb::GetFileContentResponse = f.unary("GetFileContent", &get(&id)).await.unwrap();
    assert_eq!(r.content, body);

    let resource = f.svc.resources().get(&id).unwrap();
    assert_eq!(resource.size, body.len() as u64);
    assert!(resource.kind.iter().any(|k| k == "tdx:ext:txt"));
    assert!(resource.kind.iter().any(|k| k == kind::FILE));

    let r: pb::GetFileResponse = f
        .unary(
            "GetFile",
            &pb::GetFileRequest {
                resource_id: id.clone(),
                file_path: String::new(),
            },
        )
        .await
        .unwrap();
    let file = r.file.unwrap();
    assert_eq!(
        (file.file_name.as_str(), file.extension.as_str(), file.size),
        ("notes.txt", "txt", body.len() as u64)
    );

    // Replacing shrinks it.
    let _: pb::SetFileContentResponse = f.unary("SetFileContent", &set(&id, b"x")).await.unwrap();
    let r: pb::GetFileContentResponse = f.unary("GetFileContent", &get(&id)).await.unwrap();
    assert_eq!(r.content, b"x");

    // Deleting the resource drops the bytes.
    let path = f.svc.files().path_of(&id);
    assert!(path.exists());
    f.svc.files().forget(&id);
    assert!(!path.exists());
}

#[tokio::test]
async fn upload_in_blocks_then_download_matches() {
    let f = Fixture::new();
    let id = f.new_file("blob.bin");
    let body = pattern(3 * DOWNLOAD_BLOCK_BYTES + 1234);

    let (tx, mut rx, handle) = f.start("UploadFile");
    send(
        &tx,
        &pb::UploadFileRequest {
            payload: Some(Up::Start(pb::UploadFileStart {
                resource_id: id.clone(),
                store_name: "blob.dat".into(),
                ..pb::UploadFileStart::default()
            })),
        },
    )
    .await;
    let pieces: Vec<&[u8]> = body.chunks(50_000).collect();
    for piece in &pieces {
        send(
            &tx,
            &pb::UploadFileRequest {
                payload: Some(Up::Block(piece.to_vec())),
            },
        )
        .await;
    }
    drop(tx);
    handle.await.unwrap().unwrap();
    let done: pb::UploadFileResponse = recv(&mut rx).await.unwrap();
    assert_eq!(done.status, Some(pb::Status::default()));
    assert_eq!(done.ack as usize, pieces.len());
    assert!(recv::<pb::UploadFileResponse>(&mut rx).await.is_none());

    let resource = f.svc.resources().get(&id).unwrap();
    assert_eq!(resource.size, body.len() as u64);
    assert!(resource.kind.iter().any(|k| k == "tdx:ext:dat"));

    let (sizes, bytes) = download_all(&f, &id).await;
    assert_eq!(bytes, body);
    assert_eq!(
        sizes,
        vec![
            DOWNLOAD_BLOCK_BYTES,
            DOWNLOAD_BLOCK_BYTES,
            DOWNLOAD_BLOCK_BYTES,
            1234
        ]
    );

    // An empty file downloads as just the final status.
    let empty = f.new_file("empty");
    let (sizes, bytes) = download_all(&f, &empty).await;
    assert!(sizes.is_empty() && bytes.is_empty());
}

#[tokio::test]
async fn oversize_content_is_rejected() {
    let f = Fixture::new();
    let id = f.new_file("big");
    let failure = f
        .unary::<_, pb::SetFileContentResponse>(
            "SetFileContent",
            &set(&id, &vec![0u8; MAX_CONTENT_BYTES + 1]),
        )
        .await
        .unwrap_err();
    assert_eq!(failure.code(), Code::InvalidArgument);
    assert!(!failure.is_abort());
    assert!(!f.svc.files().path_of(&id).exists());
}

#[tokio::test]
async fn unknown_file_is_not_found() {
    let f = Fixture::new();
    let failure = f
        .unary::<_, pb::GetFileContentResponse>("GetFileContent", &get("nope"))
        .await
        .unwrap_err();
    assert_eq!(failure.code(), Code::NotFound);
    assert!(!failure.is_abort());
    let failure = f
        .unary::<_, pb::SetFileContentResponse>("SetFileContent", &set("nope", b"x"))
        .await
        .unwrap_err();
    assert_eq!(failure.code(), Code::NotFound);

    let (tx, _rx, handle) = f.start("DownloadFile");
    send(
        &tx,
        &pb::DownloadFileRequest {
            resource_id: "nope".into(),
            file_path: String::new(),
        },
    )
    .await;
    assert_eq!(handle.await.unwrap().unwrap_err().code(), Code::NotFound);

    let (tx, _rx, handle) = f.start("UploadFile");
    send(
        &tx,
        &pb::UploadFileRequest {
            payload: Some(Up::Start(pb::UploadFileStart {
                resource_id: "nope".into(),
                ..pb::UploadFileStart::default()
            })),
        },
    )
    .await;
    assert_eq!(handle.await.unwrap().unwrap_err().code(), Code::NotFound);

    // A folder is not a file.
    let root = f.svc.resources().root_id().to_owned();
    let failure = f
        .unary::<_, pb::GetFileContentResponse>("GetFileContent", &get(&root))
        .await
        .unwrap_err();
    assert_eq!(failure.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn upload_must_start_with_start_and_unknown_methods_abort() {
    let f = Fixture::new();
    let (tx, _rx, handle) = f.start("UploadFile");
    send(
        &tx,
        &pb::UploadFileRequest {
            payload: Some(Up::Block(b"x".to_vec())),
        },
    )
    .await;
    assert_eq!(
        handle.await.unwrap().unwrap_err().code(),
        Code::InvalidArgument
    );

    let (_tx, _rx, handle) = f.start("GetFileDescendants");
    let failure = handle.await.unwrap().unwrap_err();
    assert!(failure.is_abort());
    assert_eq!(failure.code(), Code::Unimplemented);
    assert!(failure
        .message()
        .starts_with("/tdx.volt_api.volt.v1.FileAPI/GetFileDescendants"));
}

#[test]
fn odd_ids_stay_inside_the_files_folder() {
    let dir = std::env::temp_dir().join(format!(
        "volt-files-ids-{}",
        super::super::resources::new_id()
    ));
    let store = FileStore::open(&dir).unwrap();
    let files = dir.join(FILES_DIR);
    assert_eq!(store.path_of("ab-12_c"), files.join("ab-12_c"));
    for odd in ["../../etc/passwd", "a/b", "", ".", "a.b"] {
        let p = store.path_of(odd);
        assert_eq!(p.parent(), Some(files.as_path()), "{odd}");
        assert!(p.file_name().unwrap().to_str().unwrap().starts_with("x."));
    }
    std::fs::remove_dir_all(dir).unwrap();
}
