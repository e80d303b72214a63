//! FileAPI: file contents kept in the data directory.
//!
//! A file is a resource (normally of kind `file`, made with `VoltAPI/SaveResource`); its bytes
//! live in `DIR/files/<resource id>`, always replaced whole and atomically (temporary file,
//! then rename), and the resource's `size` follows every write. The FileAPI never creates
//! resources: every request names an existing `resource_id` (the protos have no way to
//! return a new id), and an unknown id is a `NOT_FOUND` status reply. A resource that exists
//! but has no content yet reads as empty. Resources whose kind makes them something else
//! (the Volt, folders, homes, databases, wires) are refused with `INVALID_ARGUMENT`; any other
//! resource may hold content. `file_path` (paths inside linked folders) is not supported:
//! a non-empty one is `INVALID_ARGUMENT`.
//!
//! * `SetFileContent` / `GetFileContent` (unary) move the whole content in one message, at
//!   most [`MAX_CONTENT_BYTES`] (64 MiB, the limit the official protos document); a bigger
//!   content is `INVALID_ARGUMENT` on set and `FAILED_PRECONDITION` on get (use the streams).
//! * `UploadFile` (declared bidi; used as a client stream, as the official web client does):
//!   the first request is `{start: {resource_id, store_name?, ...}}`, then `{block}`s. When the
//!   client ends its side, the collected bytes replace the content and the call answers one
//!   `UploadFileResponse {status: {code 0}, ack: <blocks received>}`. Uploads are held in memory
//!   until then and limited to [`MAX_UPLOAD_BYTES`] (256 MiB) in total; going over is
//!   `INVALID_ARGUMENT` and nothing is written. `streaming_mode`, `truncate` and `eager_flush`
//!   are accepted and ignored: content is always replaced whole when the upload completes, and
//!   an upload whose client has gone is discarded.
//! * `DownloadFile` (server stream): `{block}`s of [`DOWNLOAD_BLOCK_BYTES`] (64 KiB; the last
//!   may be shorter), then a final `{status: {code 0}}` (the official protos say a status marks
//!   the end of a download; the JS client waits for the stream's end after it), then the end.
//! * `GetFile`: the file's metadata as the `File` message.
//! * `store_name` (or else the resource's name) gives the extension recorded as the resource
//!   kind `tdx:ext:<extension>`, as the official protos describe.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::FutureExt as _;
use tdx_volt::proto::volt as pb;
use tokio::io::AsyncReadExt as _;

use crate::call::{Caller, Code, Failure, Inbound, Outbound};
use crate::files::{write_atomic, Access};

use super::access::names;
use super::resources::kind;
use super::{unary, Services};

/// The folder, inside the data directory, that holds file contents.
pub const FILES_DIR: &str = "files";

/// The largest content `SetFileContent` takes and `GetFileContent` returns, in bytes.
pub const MAX_CONTENT_BYTES: usize = 64 * 1024 * 1024;

/// The largest content an `UploadFile` call may deliver, in bytes.
pub const MAX_UPLOAD_BYTES: usize = 256 * 1024 * 1024;

/// The size of the blocks `DownloadFile` sends, in bytes.
pub const DOWNLOAD_BLOCK_BYTES: usize = 64 * 1024;

/// File contents.
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// Opens the file area of the data directory.
    pub fn open(dir: &Path) -> tdx_volt::Result<FileStore> {
        let dir = dir.join(FILES_DIR);
        crate::files::create_dir(&dir)?;
        Ok(FileStore { dir })
    }

    /// Where a resource's content is kept. Ids made of letters, digits, `-` and `_` (every id
    /// the emulator issues) are used as they are; any other id is hex-encoded behind `x.`, so a
    /// client-chosen id can never leave the folder or collide with another id's name.
    fn path_of(&self, resource_id: &str) -> PathBuf {
        let plain = !resource_id.is_empty()
            && resource_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if plain {
            self.dir.join(resource_id)
        } else {
            let hex: String = resource_id.bytes().map(|b| format!("{b:02x}")).collect();
            self.dir.join(format!("x.{hex}"))
        }
    }

    /// Replaces a resource's content atomically.
    fn write(&self, resource_id: &str, bytes: &[u8]) -> Result<(), Failure> {
        write_atomic(&self.path_of(resource_id), bytes, Access::Private)
            .map_err(|e| Failure::internal("saving file content", e))
    }

    /// Drops whatever is kept for a deleted resource.
    pub fn forget(&self, resource_id: &str) {
        let path = self.path_of(resource_id);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("removing {}: {e}", path.display()),
        }
    }
}

/// Routes a FileAPI method.
pub async fn dispatch(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    match name {
        "SetFileContent" => {
            unary(
                inbound,
                outbound,
                |r: pb::SetFileContentRequest| async move {
                    let resource =
                        require_file(svc, caller, &r.resource_id, &r.file_path, names::WRITE)?;
                    if r.content.len() > MAX_CONTENT_BYTES {
                        return Err(Failure::invalid(format!(
                            "SetFileContent: {} bytes exceeds the {MAX_CONTENT_BYTES}-byte limit; \
                         use UploadFile",
                            r.content.len()
                        )));
                    }
                    store_content(svc, &resource, &r.store_name, r.content).await?;
                    Ok(pb::SetFileContentResponse { status: None })
                },
            )
            .await
        }
        "GetFileContent" => {
            unary(
                inbound,
                outbound,
                |r: pb::GetFileContentRequest| async move {
                    let resource =
                        require_file(svc, caller, &r.resource_id, &r.file_path, names::READ)?;
                    let path = svc.files().path_of(&resource.id);
                    let size = content_size(&path).await?;
                    if size > MAX_CONTENT_BYTES as u64 {
                        return Err(Failure::reply(
                            Code::FailedPrecondition,
                            format!(
                                "GetFileContent: the file is {size} bytes, over the \
                             {MAX_CONTENT_BYTES}-byte limit; use DownloadFile"
                            ),
                        ));
                    }
                    let content = match tokio::fs::read(&path).await {
                        Ok(bytes) => bytes,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                        Err(e) => return Err(Failure::internal("reading file content", e)),
                    };
                    Ok(pb::GetFileContentResponse {
                        status: None,
                        content,
                    })
                },
            )
            .await
        }
        "GetFile" => {
            unary(inbound, outbound, |r: pb::GetFileRequest| async move {
                let resource =
                    require_file(svc, caller, &r.resource_id, &r.file_path, names::READ)?;
                let size = content_size(&svc.files().path_of(&resource.id)).await?;
                Ok(pb::GetFileResponse {
                    status: None,
                    file: Some(pb::File {
                        file_path: String::new(),
                        absolute_path: String::new(),
                        extension: extension_of(&resource.name).unwrap_or_default(),
                        file_name: resource.name,
                        size,
                        media_type: String::new(),
                        is_directory: false,
                        modified: resource.modified,
                        resource_id: resource.id,
                        owner_resource_id: String::new(),
                    }),
                })
            })
            .await
        }
        "UploadFile" => upload(svc, caller, inbound, outbound).await,
        "DownloadFile" => download(svc, caller, inbound, outbound).await,
        _ => Err(Failure::unimplemented(&format!(
            "/tdx.volt_api.volt.v1.FileAPI/{name}"
        ))),
    }
}

/// The resource that holds the content, once `caller` is found to have `access` to it, or
/// the reply failure for an unusable request.
fn require_file(
    svc: &Services,
    caller: &Caller,
    resource_id: &str,
    file_path: &str,
    access: &str,
) -> Result<pb::Resource, Failure> {
    if resource_id.is_empty() {
        return Err(Failure::invalid("resource_id is required"));
    }
    if !file_path.is_empty() {
        return Err(Failure::invalid(
            "file_path (files inside linked folders) is not supported by volt-emulator",
        ));
    }
    let resource = svc
        .resources()
        .get(resource_id)
        .ok_or_else(|| Failure::not_found(format!("file not found: {resource_id}")))?;
    let is_file = kind::has(&resource.kind, kind::Role::File);
    if let Some(other) = resource
        .kind
        .iter()
        .find(|k| kind::role(k).is_some_and(|role| role != kind::Role::File))
        .filter(|_| !is_file)
    {
        return Err(Failure::invalid(format!(
            "resource {resource_id} is a {other}, not a file"
        )));
    }
    svc.authorize(caller, &resource.id, access)?;
    Ok(resource)
}

/// The size of the stored content (0 when there is none yet).
async fn content_size(path: &Path) -> Result<u64, Failure> {
    match tokio::fs::metadata(path).await {
        Ok(meta) => Ok(meta.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Failure::internal("reading file content", e)),
    }
}

/// The lower-cased extension of a file name, if it has one.
fn extension_of(name: &str) -> Option<String> {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .filter(|e| !e.is_empty())
        .map(str::to_ascii_lowercase)
}

/// Writes new content (on a blocking thread), then records size and extension kind.
async fn store_content(
    svc: &Arc<Services>,
    resource: &pb::Resource,
    store_name: &str,
    content: Vec<u8>,
) -> Result<(), Failure> {
    let size = content.len() as u64;
    let writer = Arc::clone(svc);
    let id = resource.id.clone();
    tokio::task::spawn_blocking(move || writer.files().write(&id, &content))
        .await
        .map_err(|e| Failure::internal("saving file content", e))??;
    if let Err(failure) = svc.resources().touch(&resource.id, Some(size)).await {
        // The resource was deleted while the content was being written: do not keep it.
        if failure.code() == Code::NotFound {
            svc.files().forget(&resource.id);
        }
        return Err(failure);
    }
    let name = if store_name.is_empty() {
        resource.name.as_str()
    } else {
        store_name
    };
    if let Some(ext) = extension_of(name) {
        let ext_kind = format!("tdx:ext:{ext}");
        if !resource.kind.contains(&ext_kind) {
            let mut kinds = resource.kind.clone();
            kinds.retain(|k| !k.starts_with("tdx:ext:"));
            kinds.push(ext_kind);
            let change = pb::Resource {
                id: resource.id.clone(),
                kind: kinds,
                ..pb::Resource::default()
            };
            svc.resources().update(&change, false).await?;
        }
    }
    Ok(())
}

async fn upload(
    svc: &Arc<Services>,
    caller: &Caller,
    mut inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    use pb::upload_file_request::Payload;
    let start = match inbound.next::<pb::UploadFileRequest>().await? {
        None => {
            return Err(Failure::invalid(
                "UploadFile: the call ended before the start request",
            ))
        }
        Some(pb::UploadFileRequest {
            payload: Some(Payload::Start(start)),
        }) => start,
        Some(_) => {
            return Err(Failure::invalid(
                "UploadFile: the first request must be start",
            ))
        }
    };
    let resource = require_file(svc, caller, &start.resource_id, "", names::WRITE)?;
    let mut content: Vec<u8> = Vec::new();
    let mut blocks: u32 = 0;
    while let Some(request) = inbound.next::<pb::UploadFileRequest>().await? {
        match request.payload {
            Some(Payload::Block(block)) => {
                if block.len() > MAX_UPLOAD_BYTES - content.len() {
                    return Err(Failure::invalid(format!(
                        "UploadFile: the upload exceeds the {MAX_UPLOAD_BYTES}-byte limit"
                    )));
                }
                content.extend_from_slice(&block);
                blocks = blocks.saturating_add(1);
            }
            Some(Payload::Start(_)) => {
                return Err(Failure::invalid(
                    "UploadFile: start may only be the first request",
                ))
            }
            None => {}
        }
    }
    // The requests ended; if that is because the client went away, keep the old content.
    if outbound.closed().now_or_never().is_some() {
        return Err(Failure::cancelled());
    }
    store_content(svc, &resource, &start.store_name, content).await?;
    outbound
        .send(&pb::UploadFileResponse {
            status: Some(pb::Status::default()),
            back_off: false,
            ack: blocks,
        })
        .await
}

async fn download(
    svc: &Arc<Services>,
    caller: &Caller,
    mut inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    use pb::download_file_response::Payload;
    let request = inbound
        .next::<pb::DownloadFileRequest>()
        .await?
        .ok_or_else(|| Failure::invalid("DownloadFile: the call ended without a request"))?;
    let resource = require_file(
        svc,
        caller,
        &request.resource_id,
        &request.file_path,
        names::READ,
    )?;
    let path = svc.files().path_of(&resource.id);
    match tokio::fs::File::open(&path).await {
        Ok(mut file) => loop {
            let mut block = vec![0u8; DOWNLOAD_BLOCK_BYTES];
            let mut filled = 0;
            while filled < block.len() {
                let n = file
                    .read(&mut block[filled..])
                    .await
                    .map_err(|e| Failure::internal("reading file content", e))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            block.truncate(filled);
            let last = filled < DOWNLOAD_BLOCK_BYTES;
            outbound
                .send(&pb::DownloadFileResponse {
                    payload: Some(Payload::Block(block)),
                })
                .await?;
            if last {
                break;
            }
        },
        // A file resource with no content yet downloads as empty.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Failure::internal("reading file content", e)),
    }
    outbound
        .send(&pb::DownloadFileResponse {
            payload: Some(Payload::Status(pb::Status::default())),
        })
        .await
}

mod copy;
#[cfg(test)]
mod tests;
