//! Calling services that Volt clients host: a [`ServiceRef`] taken from the service's
//! resource, and [`ServiceCall`]s of raw protobuf messages (or prost types) to its methods,
//! end-to-end encrypted with the host through the Volt (and its relay, if any).

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use super::VoltClient;
use crate::protocol::schema::MethodKind;
use crate::transport::ServiceSpec;
use crate::{Error, ErrorKind, PublicKey, Result};

/// A service hosted by a Volt client, as its resource describes it: who hosts it, and the key
/// the host signs its key exchanges with. Made with [`ServiceRef::from_resource`].
#[derive(Debug, Clone)]
pub struct ServiceRef {
    service_id: String,
    host_client_id: String,
    host_key: PublicKey,
    service_api: Vec<String>,
}

impl ServiceRef {
    /// Reads a service resource (as GetResource's `resource`, or an entry of
    /// DiscoverServices' answer). It must be hosted by a Volt client
    /// (`service_description.host_type` RELAYED) and name its host
    /// (`host_client_id`) and the host's key (`host_public_key`, PEM).
    pub fn from_resource(resource: &Value) -> Result<ServiceRef> {
        let bad = |what: &str| Error::new(ErrorKind::Config, format!("service resource: {what}"));
        let description = resource
            .get("service_description")
            .filter(|d| d.is_object())
            .ok_or_else(|| bad("no service_description"))?;
        let text = |field: &str| {
            description
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let relayed = match description.get("host_type") {
            Some(Value::String(t)) => t == "SERVICE_HOST_TYPE_RELAYED",
            Some(Value::Number(n)) => n.as_u64() == Some(RELAYED),
            _ => false,
        };
        if !relayed {
            return Err(bad(
                "not hosted by a Volt client (service_description.host_type is not RELAYED)",
            ));
        }
        let host_client_id = text("host_client_id");
        if host_client_id.is_empty() {
            return Err(bad("no service_description.host_client_id"));
        }
        let host_key = PublicKey::from_pem(&text("host_public_key"))
            .map_err(|e| e.in_field("service_description.host_public_key"))?;
        let mut service_id = text("host_service_id");
        if service_id.is_empty() {
            service_id = resource
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
        }
        if service_id.is_empty() {
            return Err(bad("no id"));
        }
        let service_api = description
            .get("service_api")
            .and_then(Value::as_array)
            .map(|apis| {
                apis.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(ServiceRef {
            service_id,
            host_client_id,
            host_key,
            service_api,
        })
    }

    /// The service's id (`target_service_id` of its calls).
    pub fn service_id(&self) -> &str {
        &self.service_id
    }

    /// The hosting client's id.
    pub fn host_client_id(&self) -> &str {
        &self.host_client_id
    }

    /// The gRPC services it implements (`service_api`, full names).
    pub fn service_api(&self) -> &[String] {
        &self.service_api
    }
}

/// `SERVICE_HOST_TYPE_RELAYED`.
const RELAYED: u64 = 2;

/// One call to a hosted service's method: raw protobuf messages (or prost types) both ways.
/// Dropping it cancels the call.
pub struct ServiceCall {
    path: String,
    requests: Option<mpsc::Sender<Bytes>>,
    responses: mpsc::Receiver<Result<Bytes>>,
    task: tokio::task::AbortHandle,
}

impl std::fmt::Debug for ServiceCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCall")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Drop for ServiceCall {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ServiceCall {
    /// Sends a request (protobuf bytes of the method's input); it waits for the key exchange
    /// with the host, and leaves only once that verified.
    pub async fn send_bytes(&self, request: impl Into<Bytes>) -> Result<()> {
        let requests = self.requests.as_ref().ok_or_else(|| {
            Error::new(ErrorKind::Closed, "the client side of this call has ended")
        })?;
        requests
            .send(request.into())
            .await
            .map_err(|_| Error::new(ErrorKind::Closed, "the call has ended"))
    }

    /// Sends a request.
    pub async fn send<T: prost::Message>(&self, request: &T) -> Result<()> {
        self.send_bytes(request.encode_to_vec()).await
    }

    /// Ends the client side (after what was sent).
    pub fn end(&mut self) {
        self.requests = None;
    }

    /// The next response as bytes; `None` when the call has ended, an error when it failed
    /// (the host's status, or the tunnel's).
    pub async fn next_bytes(&mut self) -> Option<Result<Bytes>> {
        self.responses.recv().await
    }

    /// The next response decoded as `T`.
    pub async fn next<T: prost::Message + Default>(&mut self) -> Option<Result<T>> {
        let bytes = match self.responses.recv().await? {
            Ok(bytes) => bytes,
            Err(e) => return Some(Err(e)),
        };
        Some(T::decode(bytes).map_err(|e| {
            Error::new(
                ErrorKind::Protocol,
                format!("{}: a response that does not decode", self.path),
            )
            .with_source(e)
        }))
    }
}

impl VoltClient {
    /// Opens a call to `method` (`/package.Service/Method`, of shape `kind`) of a service a
    /// Volt client hosts. The call goes through the Volt (over gRPC, tunnelled through
    /// `VoltAPI/Invoke`, through the relay when there is one) to the host, end-to-end
    /// encrypted with it: the host's key exchange is checked against the service's
    /// `host_public_key` before anything of the call leaves.
    pub fn call_service(
        &self,
        service: &ServiceRef,
        method: &str,
        kind: MethodKind,
    ) -> Result<ServiceCall> {
        let opened = self.connection().open_service(ServiceSpec {
            path: method.into(),
            kind,
            host_client_id: service.host_client_id.clone(),
            service_id: service.service_id.clone(),
            host_key: service.host_key.clone(),
        })?;
        Ok(ServiceCall {
            path: method.to_owned(),
            requests: opened.requests,
            responses: opened.responses,
            task: opened.task,
        })
    }

    /// Calls a unary `method` of a hosted service, within the request timeout.
    pub async fn call_service_unary<Req, Resp>(
        &self,
        service: &ServiceRef,
        method: &str,
        request: &Req,
    ) -> Result<Resp>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let timeout = self.request_timeout();
        let exchange = async {
            let mut call = self.call_service(service, method, MethodKind::Unary)?;
            call.send(request).await?;
            call.end();
            let response = call.next::<Resp>().await.ok_or_else(|| {
                Error::new(
                    ErrorKind::Protocol,
                    format!("{method}: the call ended without a response"),
                )
            })??;
            // The call's outcome follows its response.
            match call.next_bytes().await {
                None => Ok(response),
                Some(Err(e)) => Err(e),
                Some(Ok(_)) => Err(Error::new(
                    ErrorKind::Protocol,
                    format!("{method}: a unary call with more than one response"),
                )),
            }
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!("{method}: no response within {timeout:?}"),
            )
        })?
    }
}
