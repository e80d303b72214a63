//! VoltAPI methods about the Volt itself: GetParameters, SaveParameters, Shutdown,
//! CheckCompatibility, SignVerify and GetOneTimeToken.
//!
//! - **GetParameters** / **SaveParameters** (`volt:api-call` / `volt:get-parameters`,
//!   `volt:save-parameters`): the parameters are the emulator's own (id, name, description, CA,
//!   TLS certificate, addresses, API version, start time). SaveParameters changes the name and
//!   the description, kept in `DIR/volt.json` (and on the Volt root resource); any other field
//!   that differs from what GetParameters answers is refused with FAILED_PRECONDITION naming
//!   it, and so is a key passphrase (the emulator's key is kept unencrypted and never
//!   replaced). A new name shows in GetParameters and the root resource at once, and in
//!   discovery and issued configurations from the next start.
//! - **Shutdown** (`volt:api-call` / `volt:shutdown`): answers, then stops the emulator as
//!   [`crate::Emulator::shutdown`] does; `volt-emulator serve` exits with status 0.
//! - **CheckCompatibility**: answers [`API_VERSION`]; the client's version is compatible when
//!   its major number is the same and, while that is 0, its minor number too (semantic
//!   versioning's rule for 0.x). Otherwise the response carries FAILED_PRECONDITION with the
//!   Volt's version.
//! - **SignVerify** and **GetOneTimeToken**: see [`super::volt_sign`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tdx_volt::proto::volt as pb;

use crate::call::{Caller, Code, Failure, Inbound, Outbound};
use crate::files::{read_optional, write_atomic, Access};
use crate::proto_json::to_json;

use super::resources::now_millis;
use super::{unary, Services};

/// The methods [`dispatch`] routes.
pub const METHODS: [&str; 6] = [
    "GetParameters",
    "SaveParameters",
    "Shutdown",
    "CheckCompatibility",
    "SignVerify",
    "GetOneTimeToken",
];

/// The Volt API version the emulator answers CheckCompatibility with: that of the vendor's
/// clients (`@tdxvolt/volt-client-grpc` 0.20.34) whose protos it serves.
pub const API_VERSION: pb::Version = pb::Version {
    version_major: 0,
    version_minor: 20,
    version_patch: 34,
};

/// How long after its answer has left the handler the emulator stops on Shutdown at most
/// waiting for the transport to take it; then a short grace lets it reach the socket.
const SHUTDOWN_FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// The file the Volt's id, name and description are kept in.
const VOLT_FILE: &str = "volt.json";

/// What the Volt's administration changes while it runs.
pub struct AdminState {
    volt_file: PathBuf,
    meta: Mutex<Meta>,
    started_ms: u64,
    shutdown: tokio::sync::watch::Sender<bool>,
    pub(super) tokens: super::volt_sign::OneTimeTokens,
}

#[derive(Clone)]
struct Meta {
    name: String,
    description: String,
}

impl AdminState {
    /// Reads the description kept in `DIR/volt.json` (the name is the identity's).
    pub fn open(dir: &Path, name: &str) -> tdx_volt::Result<AdminState> {
        let volt_file = dir.join(VOLT_FILE);
        let description = read_optional(&volt_file)?
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|doc| doc.get("description")?.as_str().map(str::to_owned))
            .unwrap_or_default();
        Ok(AdminState {
            volt_file,
            meta: Mutex::new(Meta {
                name: name.to_owned(),
                description,
            }),
            started_ms: now_millis(),
            shutdown: tokio::sync::watch::Sender::new(false),
            tokens: super::volt_sign::OneTimeTokens::default(),
        })
    }

    fn meta(&self) -> MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the emulator to stop (what Shutdown does once it has answered).
    pub fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once a stop has been asked for.
    pub fn shutdown_requested(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            // The sender lives as long as the services; should it go, so does the emulator.
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Whether a stop has been asked for.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Writes a new name and description into `volt.json`, keeping its other fields.
    fn save_meta(&self, meta: &Meta) -> Result<(), Failure> {
        let text = read_optional(&self.volt_file)
            .map_err(|e| Failure::internal("reading volt.json", e))?
            .ok_or_else(|| Failure::internal("reading volt.json", "missing"))?;
        let mut doc: Value =
            serde_json::from_str(&text).map_err(|e| Failure::internal("reading volt.json", e))?;
        let object = doc
            .as_object_mut()
            .ok_or_else(|| Failure::internal("reading volt.json", "not an object"))?;
        object.insert("display_name".into(), Value::String(meta.name.clone()));
        object.insert(
            "description".into(),
            Value::String(meta.description.clone()),
        );
        write_atomic(&self.volt_file, doc.to_string().as_bytes(), Access::Public)
            .map_err(|e| Failure::internal("saving volt.json", e))
    }
}

/// Routes one of the [`METHODS`].
pub async fn dispatch(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    mut inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    match name {
        "GetParameters" => {
            unary(
                inbound,
                outbound,
                |_: pb::GetParametersRequest| async move {
                    svc.authorize_api(caller, "volt:get-parameters")?;
                    Ok(pb::GetParametersResponse {
                        status: None,
                        parameters: Some(parameters(svc)),
                    })
                },
            )
            .await
        }
        "SaveParameters" => unary(inbound, outbound, |r| save_parameters(svc, caller, r)).await,
        "CheckCompatibility" => unary(
            inbound,
            outbound,
            |r: pb::CheckCompatibilityRequest| async move { Ok(check_compatibility(r.version)) },
        )
        .await,
        "Shutdown" => {
            let _request: pb::ShutdownRequest = inbound.next().await?.ok_or_else(|| {
                Failure::abort(Code::InvalidArgument, "the call ended without a request")
            })?;
            svc.authorize_api(caller, "volt:shutdown")?;
            outbound
                .send(&pb::ShutdownResponse { status: None })
                .await?;
            tracing::info!(client = %caller.client_id, "Shutdown: stopping");
            let svc = svc.clone();
            let answered = outbound.clone();
            tokio::spawn(async move {
                // The transport drops the call's responses once the answer and its end are
                // handed to the connection; then a moment more for them to reach the socket.
                let _ = tokio::time::timeout(SHUTDOWN_FLUSH_WAIT, answered.closed()).await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
                svc.admin().request_shutdown();
            });
            Ok(())
        }
        "SignVerify" => {
            unary(inbound, outbound, |r| {
                super::volt_sign::sign_verify(svc, caller, r)
            })
            .await
        }
        "GetOneTimeToken" => {
            unary(inbound, outbound, |r| {
                super::volt_sign::one_time_token(svc, caller, r)
            })
            .await
        }
        _ => Err(Failure::unimplemented(&format!(
            "/tdx.volt_api.volt.v1.VoltAPI/{name}"
        ))),
    }
}

/// The Volt's parameters as GetParameters answers them.
pub fn parameters(svc: &Services) -> pb::VoltParameters {
    let meta = svc.admin().meta().clone();
    let discovery: Value = serde_json::from_str(svc.discovery()).unwrap_or(Value::Null);
    let text = |key: &str| {
        discovery
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let port_of = |address: &str| {
        address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<i32>().ok())
            .unwrap_or(0)
    };
    let address = text("address");
    let http_address = text("http_address");
    let decision = match svc.authenticate_policy() {
        super::AuthenticatePolicy::Deny => pb::PolicyDecision::Deny,
        super::AuthenticatePolicy::PendingThenPermit(_) => pb::PolicyDecision::Pending,
        _ => pb::PolicyDecision::Permit,
    };
    pb::VoltParameters {
        id: svc.identity().id().to_owned(),
        name: meta.name,
        description: meta.description,
        db_driver: "sqlite".to_owned(),
        location: svc.dir().display().to_string(),
        key_strategy: "file".to_owned(),
        ca_pem: svc.identity().ca_pem().to_owned(),
        cert_pem: svc.identity().tls_cert_pem().to_owned(),
        fixed_host: "127.0.0.1".to_owned(),
        grpc_port: port_of(&address),
        http_port: port_of(&http_address),
        address,
        enable_websocket_api: true,
        version: Some(API_VERSION),
        catch_all_auth_decision: decision as i32,
        start_time: svc.admin().started_ms,
        ..pb::VoltParameters::default()
    }
}

async fn save_parameters(
    svc: &Arc<Services>,
    caller: &Caller,
    r: pb::SaveParametersRequest,
) -> Result<pb::SaveParametersResponse, Failure> {
    svc.authorize_api(caller, "volt:save-parameters")?;
    if !r.key_passphrase.is_empty() || !r.new_key_passphrase.is_empty() {
        return Err(Failure::reply(
            Code::FailedPrecondition,
            "volt-emulator keeps its key unencrypted and never replaces it: no passphrase applies",
        ));
    }
    let wanted = r
        .parameters
        .ok_or_else(|| Failure::invalid("SaveParameters needs parameters"))?;
    let id = svc.identity().id();
    if !wanted.id.is_empty() && wanted.id != id {
        return Err(Failure::invalid(format!(
            "parameters of {} cannot be saved on the Volt {id}",
            wanted.id
        )));
    }
    // Only the name and description change; any other field must be left as it is (or left
    // out, as proto3 leaves out defaults).
    let current = to_json(&parameters(svc))?;
    let asked = to_json(&wanted)?;
    if let Some(fields) = asked.as_object() {
        for (field, value) in fields {
            let editable = matches!(field.as_str(), "id" | "name" | "description");
            if !editable && current.get(field) != Some(value) {
                return Err(Failure::reply(
                    Code::FailedPrecondition,
                    format!("volt-emulator cannot change the parameter {field}"),
                ));
            }
        }
    }
    let mut meta = svc.admin().meta().clone();
    if !wanted.name.trim().is_empty() {
        meta.name = wanted.name.clone();
    }
    if !wanted.description.is_empty() {
        meta.description = wanted.description.clone();
    }
    svc.admin().save_meta(&meta)?;
    let root = pb::Resource {
        id: svc.resources().root_id().to_owned(),
        name: meta.name.clone(),
        description: meta.description.clone(),
        ..pb::Resource::default()
    };
    *svc.admin().meta() = meta;
    svc.resources().update(&root, false).await?;
    Ok(pb::SaveParametersResponse {
        status: None,
        parameters: Some(parameters(svc)),
        reconnect: false,
    })
}

/// The answer to CheckCompatibility for a client of API `version`.
pub fn check_compatibility(version: Option<pb::Version>) -> pb::CheckCompatibilityResponse {
    let ours = API_VERSION;
    let show = |v: &pb::Version| {
        format!(
            "{}.{}.{}",
            v.version_major, v.version_minor, v.version_patch
        )
    };
    let status = match version {
        None => Some((
            Code::InvalidArgument,
            "CheckCompatibility needs the client's version".to_owned(),
        )),
        Some(theirs)
            if theirs.version_major == ours.version_major
                && (ours.version_major > 0 || theirs.version_minor == ours.version_minor) =>
        {
            None
        }
        Some(theirs) => Some((
            Code::FailedPrecondition,
            format!(
                "client API version {} is not compatible with this Volt's {}",
                show(&theirs),
                show(&ours)
            ),
        )),
    };
    pb::CheckCompatibilityResponse {
        status: status.map(|(code, message)| pb::Status {
            code: code.as_i32(),
            message,
            description: String::new(),
        }),
        version: Some(ours),
    }
}
