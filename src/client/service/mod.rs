//! Calling services that Volt clients host: a [`ServiceRef`] taken from the service's
//! resource, and [`ServiceCall`]s to its methods, end-to-end encrypted with the host through
//! the Volt (and its relay, if any).
//!
//! - `call`: [`ServiceCall`], one call, in protobuf (bytes or prost types) or proto3 JSON;
//! - here: [`ServiceRef`] and the [`VoltClient`] methods that open calls.
//!
//! Over gRPC a call is tunnelled through `VoltAPI/Invoke` and carries protobuf; over the
//! websocket gateway (protocol v1) it is routed by its opening frame and carries JSON. Either
//! way the messages convert to the other form with the service's own proto files, which its
//! resource carries (`proto_file`), compiled at run time.

mod call;

use std::sync::Arc;

use serde_json::Value;

pub use call::ServiceCall;

use super::trace::CallSpan;
use super::VoltClient;
use crate::protocol::schema::{Method, MethodKind};
use crate::protocol::service_protos::ServiceProtos;
use crate::transport::{Link, ServiceRoute, ServiceSpec};
use crate::{Error, ErrorKind, PublicKey, Result, Transport};

/// `SERVICE_HOST_TYPE_RELAYED`.
const RELAYED: u64 = 3;

/// A service hosted by a Volt client, as its resource describes it: who hosts it, the key the
/// host signs its key exchanges with, and its methods (from the proto files the resource
/// carries). Made with [`ServiceRef::from_resource`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct ServiceRef {
    route: ServiceRoute,
    service_api: Vec<String>,
    protos: Option<Arc<ServiceProtos>>,
}

impl ServiceRef {
    /// Reads a service resource (as GetResource's `resource`, or an entry of
    /// DiscoverServices' answer). It must be hosted by a Volt client
    /// (`service_description.host_type` RELAYED) and name its host
    /// (`host_client_id`) and the host's key (`host_public_key`, PEM). Its proto files
    /// (`proto_file`, as DiscoverServices gives them with `include_protobuf`) are compiled
    /// here; ones that do not compile are a [`Schema`](ErrorKind::Schema) error.
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
        let protos = ServiceProtos::from_description(description)?.map(Arc::new);
        Ok(ServiceRef {
            route: ServiceRoute {
                host_client_id,
                service_id,
                host_key,
            },
            service_api,
            protos,
        })
    }

    /// The same service, with its methods taken from `protos` (say, compiled from files of
    /// your own when the resource carries none).
    #[must_use]
    pub fn with_protos(mut self, protos: ServiceProtos) -> ServiceRef {
        self.protos = Some(Arc::new(protos));
        self
    }

    /// The service's id (`target_service_id` of its calls).
    pub fn service_id(&self) -> &str {
        &self.route.service_id
    }

    /// The hosting client's id.
    pub fn host_client_id(&self) -> &str {
        &self.route.host_client_id
    }

    /// The gRPC services it implements (`service_api`, full names).
    pub fn service_api(&self) -> &[String] {
        &self.service_api
    }

    /// The method at `path` (`/package.Service/Method`), when the service's proto files are
    /// known and have it: its shape and message types.
    pub fn method(&self, path: &str) -> Option<&Method> {
        self.protos.as_ref()?.method(path)
    }
}

impl VoltClient {
    /// Opens a call to `method` (`/package.Service/Method`) of a service a Volt client hosts,
    /// of the shape its proto files give (see [`call_service_as`](VoltClient::call_service_as)
    /// for a service whose resource carries none).
    ///
    /// The call goes through the Volt (and its relay, if any) to the host, end-to-end
    /// encrypted with it: the host's key exchange is checked against the service's
    /// `host_public_key` before anything of the call leaves. Over gRPC it is tunnelled through
    /// `VoltAPI/Invoke`; over the websocket gateway it is routed by its opening frame.
    ///
    /// ```no_run
    /// # async fn demo(client: tdx_volt::VoltClient, resource: serde_json::Value)
    /// # -> tdx_volt::Result<()> {
    /// use serde_json::json;
    /// use tdx_volt::client::ServiceRef;
    ///
    /// let echo = ServiceRef::from_resource(&resource)?;
    /// let mut call = client.call_service(&echo, "/demo.v1.Echo/Chat").await?;
    /// call.send_json(json!({"text": "hello"})).await?;
    /// call.end().await?;
    /// while let Some(line) = call.next_json().await {
    ///     println!("{}", line?);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn call_service(&self, service: &ServiceRef, method: &str) -> Result<ServiceCall> {
        let kind = service.method(method).map(Method::kind).ok_or_else(|| {
            Error::new(
                ErrorKind::Schema,
                format!(
                    "{method}: not a method of the service's proto files (or it has none; \
                     call_service_as takes the method's shape instead)"
                ),
            )
        })?;
        self.call_service_as(service, method, kind).await
    }

    /// Opens a call to `method` of a hosted service, of shape `kind`.
    pub async fn call_service_as(
        &self,
        service: &ServiceRef,
        method: &str,
        kind: MethodKind,
    ) -> Result<ServiceCall> {
        let connection = self.connection();
        let trace = CallSpan::start(method, service_label(&*connection));
        self.service_call_on(connection, service, method, kind, trace)
            .await
    }

    /// Opens a call to a hosted service on `connection`, in span `trace`.
    async fn service_call_on(
        &self,
        connection: Arc<dyn Link>,
        service: &ServiceRef,
        method: &str,
        kind: MethodKind,
        mut trace: CallSpan,
    ) -> Result<ServiceCall> {
        if let Err(e) = super::check_path(method) {
            trace.failed(&e);
            return Err(e);
        }
        let schema = service.method(method).cloned();
        if connection.transport() == Transport::Grpc {
            let opened = connection.open_service(ServiceSpec {
                path: method.into(),
                kind,
                route: service.route.clone(),
            });
            return match opened {
                Ok(opened) => Ok(ServiceCall::raw(method, schema, opened, trace)),
                Err(e) => {
                    trace.failed(&e);
                    Err(e)
                }
            };
        }
        let input = schema.as_ref().map(|m| m.input().clone());
        let call = self
            .open_routed(connection, method, service.route.clone(), input, trace)
            .await?;
        Ok(ServiceCall::json(method, schema, call))
    }

    /// Calls a unary `method` of a hosted service with prost types, within the request
    /// timeout.
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
        let bytes = self
            .unary_exchange(
                service,
                method,
                call::Message::Bytes(request.encode_to_vec()),
            )
            .await?
            .into_bytes(method)?;
        Resp::decode(bytes).map_err(|e| call::undecodable(method, e))
    }

    /// Calls a unary `method` of a hosted service in proto3 JSON (converted with the
    /// service's proto files where the transport carries protobuf), within the request
    /// timeout.
    pub async fn call_service_json(
        &self,
        service: &ServiceRef,
        method: &str,
        request: Value,
    ) -> Result<Value> {
        self.unary_exchange(service, method, call::Message::Json(request))
            .await?
            .into_json(method)
    }

    async fn unary_exchange(
        &self,
        service: &ServiceRef,
        method: &str,
        request: call::Message,
    ) -> Result<call::Message> {
        let timeout = self.request_timeout();
        let json = matches!(request, call::Message::Json(_));
        let connection = self.connection();
        let mut trace = CallSpan::start(method, service_label(&*connection));
        let follower = trace.follower();
        let exchange = async {
            let mut call = self
                .service_call_on(connection, service, method, MethodKind::Unary, follower)
                .await?;
            call.send_message(request).await?;
            call.end().await?;
            let response = call.next_as(json).await.ok_or_else(|| {
                Error::new(
                    ErrorKind::Protocol,
                    format!("{method}: the call ended without a response"),
                )
            })??;
            // The call's outcome follows its response.
            match call.next_as(json).await {
                None => Ok(response),
                Some(Err(e)) => Err(e),
                Some(Ok(_)) => Err(Error::new(
                    ErrorKind::Protocol,
                    format!("{method}: a unary call with more than one response"),
                )),
            }
        };
        let result = tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!("{method}: no response within {timeout:?}"),
                ))
            });
        trace.outcome(&result);
        result
    }
}

/// How a call to a hosted service is named in spans: `tunnel` over gRPC (always through
/// `VoltAPI/Invoke`), else the connection's transport.
fn service_label(connection: &dyn Link) -> &'static str {
    if connection.transport() == Transport::Grpc {
        "tunnel"
    } else {
        connection.label()
    }
}
