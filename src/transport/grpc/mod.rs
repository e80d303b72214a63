//! The native gRPC transport (tonic over HTTP/2).
//!
//! One HTTP/2 connection carries every call; tonic's channel owns it (and reconnects when a
//! call finds it gone). Each call is a bidirectional stream run by its own small task, which
//! hands the Volt's protobuf responses to the caller as they arrived; the caller's side turns
//! them into proto3 JSON with the method's descriptors as it reads them (so a response reads
//! the same as on the websocket gateway), or reads them typed (SQL rows). Requests are encoded
//! on the caller's side; every call carries an identity token as `volt-token` metadata, signed once and reused
//! by the calls of the next [`TOKEN_REUSE_SECS`] (a token is valid for
//! [`DEFAULT_TOKEN_TTL_SECS`] either side of its signing).

mod call;
mod connector;
mod observed;
mod requests;
mod setup;
mod tunnel;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::uri::PathAndQuery;
use prost_reflect::MessageDescriptor;
use serde_json::Value;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use super::delivery;
use super::link::{CallSpec, Link, Opened, RawOpened, ServiceSpec};
use super::Transport;
use crate::protocol::schema;
use crate::protocol::token::TokenSigner;
use crate::protocol::token::{unix_now, DEFAULT_TOKEN_TTL_SECS};
use crate::{Error, ErrorKind, Result};

use call::CallHandle;
use connector::Connector;
pub(crate) use setup::connect;

/// HTTP/2 flow-control window of each call: what the Volt may send ahead of a caller that is
/// not reading (1 MiB).
const STREAM_WINDOW: u32 = 1 << 20;
/// HTTP/2 flow-control window of the connection: HTTP/2's largest (2 GiB), so that the
/// windows of calls whose callers are not reading seldom add up to it.
const CONNECTION_WINDOW: u32 = (1 << 31) - 1;

/// Everything the transport needs, fixed at connect time.
pub(crate) struct Settings {
    /// `volt.address`: `host:port` of the gRPC endpoint.
    pub address: String,
    /// TLS trusting the Volt CA, with the client certificate when there is one.
    pub tls: Arc<rustls::ClientConfig>,
    /// Bound on TCP connect + TLS handshake (each reconnect too), and on the HTTP/2 handshake.
    pub connect_timeout: Duration,
    /// HTTP/2 ping interval while calls are open; a ping unanswered for as long fails the
    /// connection.
    pub keepalive: Duration,
    /// Signs each call's identity token.
    pub signer: TokenSigner,
    /// Largest message sent.
    pub max_outbound: usize,
    /// Largest message accepted.
    pub max_inbound: usize,
    /// Unread responses a call may hold before its reader waits for the caller.
    pub call_buffer: usize,
    /// When to connect again; the connection's state.
    pub supervisor: Arc<super::reconnect::Supervisor>,
    /// With a relay: where each call's tunnel goes (`address` is then the relay's).
    pub tunnel: Option<tunnel::Route>,
}

/// How long a signed gRPC identity token is reused, in seconds: half its validity after
/// signing, so a reused token always has at least half its life left when a call sends it
/// (room for clock skew and a slow call's opening).
pub(crate) const TOKEN_REUSE_SECS: i64 = DEFAULT_TOKEN_TTL_SECS / 2;

/// The identity token the connection's calls share while it is fresh.
struct SharedToken {
    /// When it was signed (unix seconds).
    signed_at: i64,
    value: MetadataValue<tonic::metadata::Ascii>,
}

/// Whether a token signed at `signed_at` may still be sent at `now` (unix seconds).
fn reusable(signed_at: i64, now: i64) -> bool {
    (0..TOKEN_REUSE_SECS).contains(&now.saturating_sub(signed_at))
}

/// A handle on the connection; cheap to clone.
#[derive(Clone)]
pub(crate) struct Connection {
    channel: Channel,
    settings: Arc<Settings>,
    /// Held only to read or replace the token, never across an `.await`.
    token: Arc<Mutex<Option<SharedToken>>>,
}

impl Connection {
    /// Opens the HTTP/2 connection (TCP and TLS within the connect timeout).
    pub(crate) async fn connect(settings: Settings) -> Result<Connection> {
        let (host, port) = host_port(&settings.address)?;
        let uri = |scheme: &str| {
            http::Uri::try_from(format!("{scheme}://{}", settings.address)).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("volt.address: {:?} is not host:port", settings.address),
                )
                .with_source(e)
            })
        };
        // TLS is the connector's: tonic is given an `http` URI so that it never tries TLS of
        // its own (it would with its TLS features on), while requests say `https`.
        let endpoint = Endpoint::from(uri("http")?)
            .origin(uri("https")?)
            .http2_keep_alive_interval(settings.keepalive)
            .keep_alive_timeout(settings.keepalive)
            // Pings only while calls are open: servers may refuse pings on an idle connection
            // (a dead idle connection is found by the next call's pings).
            .keep_alive_while_idle(false)
            // A call whose caller reads slowly stops reading (flow control holds the Volt
            // back), and what the Volt already sent it waits unread in its stream window. The
            // connection's window is made large enough that such calls do not hold back the
            // others: each holds at most STREAM_WINDOW of it, so it takes about 2,000 calls
            // stalled at once to fill it.
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW);
        let connector = Connector::connect(
            &host,
            port,
            settings.tls.clone(),
            settings.connect_timeout,
            settings.supervisor.clone(),
        )
        .await?;
        // The HTTP/2 handshake over the connection just made.
        let channel = match tokio::time::timeout(
            settings.connect_timeout,
            endpoint.connect_with_connector(connector),
        )
        .await
        {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => return Err(call::transport_error(&settings.address, &e)),
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "the HTTP/2 handshake with {} took longer than {:?}",
                        settings.address, settings.connect_timeout
                    ),
                ))
            }
        };
        Ok(Connection {
            channel,
            settings: Arc::new(settings),
            token: Arc::new(Mutex::new(None)),
        })
    }

    /// Opens a call: encodes the request (if given), signs the token and starts the call's
    /// task. Returns at once; the call's events arrive through the receivers.
    fn open_call(&self, spec: CallSpec) -> Result<Opened> {
        let CallSpec {
            path,
            first,
            end_after_first,
            unread,
            ..
        } = spec;
        let settings = &self.settings;
        let method = schema::methods().get(&path).ok_or_else(|| {
            Error::new(
                ErrorKind::Schema,
                format!("{path}: not a method of the Volt API, so it cannot be encoded for gRPC"),
            )
        })?;
        let rpc = PathAndQuery::try_from(&*path).map_err(|e| {
            Error::new(ErrorKind::Schema, format!("{path}: not a method path")).with_source(e)
        })?;
        let first = first
            .map(|request| encode(&path, method.input(), &request, settings.max_outbound))
            .transpose()?;
        if let Some(route) = &settings.tunnel {
            return tunnel::open(self, route, path, method, first, end_after_first, unread);
        }
        let token = self.token()?;

        let (requests, body) = requests::requests(first, end_after_first);
        let outgoing = call::Outgoing {
            requests: body,
            token,
        };

        let (service, seen) = observed::Observed::new(self.channel.clone());
        let grpc = tonic::client::Grpc::new(service)
            .max_decoding_message_size(settings.max_inbound)
            .max_encoding_message_size(settings.max_outbound);
        let (delivery, receivers) = delivery::channels(settings.call_buffer, unread);
        let starting = call::start(grpc, outgoing, rpc, path.clone(), seen.clone());
        let task = tokio::spawn(call::run(
            starting,
            path.clone(),
            method.output().clone(),
            delivery,
            seen,
        ));
        let handle = CallHandle::new(
            path,
            method.input().clone(),
            settings.clone(),
            requests,
            task.abort_handle(),
        );
        Ok(Opened {
            io: Box::new(handle),
            receivers,
        })
    }

    /// The identity token for a call, as ASCII metadata: the shared one while it is fresh
    /// (signed within [`TOKEN_REUSE_SECS`], and not in the future of a clock that went back),
    /// else a new one, which then becomes the shared one.
    fn token(&self) -> Result<MetadataValue<tonic::metadata::Ascii>> {
        let now = unix_now();
        if let Ok(shared) = self.token.lock() {
            if let Some(token) = shared.as_ref().filter(|t| reusable(t.signed_at, now)) {
                return Ok(token.value.clone());
            }
        }
        // Signed outside the lock: concurrent callers may each sign one, and the last kept
        // wins; every one of them is valid.
        let value = self.sign_token()?;
        if let Ok(mut shared) = self.token.lock() {
            *shared = Some(SharedToken {
                signed_at: now,
                value: value.clone(),
            });
        }
        Ok(value)
    }

    /// A newly signed identity token, as ASCII metadata.
    fn sign_token(&self) -> Result<MetadataValue<tonic::metadata::Ascii>> {
        let signer = &self.settings.signer;
        let jwt = signer.sign(&signer.session_claims())?.to_jwt();
        let mut value = MetadataValue::try_from(jwt).map_err(|e| {
            Error::new(ErrorKind::Token, "the identity token is not valid metadata").with_source(e)
        })?;
        // A credential: never indexed by HPACK, never shown by Debug.
        value.set_sensitive(true);
        Ok(value)
    }
}

impl Link for Connection {
    fn transport(&self) -> Transport {
        Transport::Grpc
    }

    fn label(&self) -> &'static str {
        if self.settings.tunnel.is_some() {
            "tunnel"
        } else {
            "grpc"
        }
    }

    fn holds_back_slow_readers(&self) -> bool {
        true
    }

    fn open(&self, spec: CallSpec) -> BoxFuture<'_, Result<Opened>> {
        let opened = self.open_call(spec);
        Box::pin(async move { opened })
    }

    fn open_service(&self, spec: ServiceSpec) -> Result<RawOpened> {
        // Through a relay the Volt is a hop before the host; on a direct connection the
        // host is the only one.
        let relay = self.settings.tunnel.as_ref();
        let mut target_did = relay
            .map(|relay| relay.target_did.clone())
            .unwrap_or_default();
        let service = spec.route;
        if target_did.last() != Some(&service.host_client_id) {
            target_did.push(service.host_client_id.clone());
        }
        let route = tunnel::Route {
            target_did,
            service_id: Some(service.service_id),
            audience: Some(service.host_client_id),
            signer: service.host_key,
            cloud_volt_id: relay.and_then(|relay| relay.cloud_volt_id.clone()),
        };
        tunnel::open_raw(self, &route, spec.path, spec.kind)
    }
}

/// Encodes a request (proto3 JSON) as the method's input message, within the size limit.
fn encode(path: &str, input: &MessageDescriptor, request: &Value, max: usize) -> Result<Bytes> {
    let bytes = Bytes::from(schema::json_to_protobuf(input, request)?);
    within_limit(path, &bytes, max)?;
    Ok(bytes)
}

/// A message over the size limit is not sent.
fn within_limit(path: &str, bytes: &[u8], max: usize) -> Result<()> {
    if bytes.len() > max {
        return Err(Error::new(
            ErrorKind::Limit,
            format!(
                "{path}: a message of {} bytes is over the {max}-byte limit",
                bytes.len()
            ),
        ));
    }
    Ok(())
}

/// Splits `volt.address` (`host:port`, `[v6]:port`, or a host alone for port 443).
fn host_port(address: &str) -> Result<(String, u16)> {
    let bad = || {
        Error::new(
            ErrorKind::Config,
            format!("volt.address: {address:?} is not host:port"),
        )
    };
    let authority: http::uri::Authority = address.parse().map_err(|_| bad())?;
    // A port that is there must be a number.
    let has_port = authority.as_str().len() > authority.host().len();
    if has_port && authority.port_u16().is_none() {
        return Err(bad());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if host.is_empty() || authority.as_str().contains('@') {
        return Err(bad());
    }
    Ok((host, authority.port_u16().unwrap_or(443)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_split() {
        assert_eq!(
            host_port("127.0.0.1:8443").unwrap(),
            ("127.0.0.1".into(), 8443)
        );
        assert_eq!(
            host_port("volt.example:50051").unwrap(),
            ("volt.example".into(), 50051)
        );
        assert_eq!(host_port("[::1]:9").unwrap(), ("::1".into(), 9));
        assert_eq!(
            host_port("volt.example").unwrap(),
            ("volt.example".into(), 443)
        );
        for bad in [
            "",
            "https://volt.example:1",
            "user@host:1",
            "host:port",
            "a b:1",
        ] {
            assert!(
                host_port(bad).is_err_and(|e| e.is_config()),
                "{bad}: {:?}",
                host_port(bad)
            );
        }
    }

    #[test]
    fn tokens_are_reused_for_half_their_life_and_never_from_the_future() {
        assert!(reusable(1_000, 1_000));
        assert!(reusable(1_000, 1_000 + TOKEN_REUSE_SECS - 1));
        assert!(!reusable(1_000, 1_000 + TOKEN_REUSE_SECS));
        // The clock went back: sign anew.
        assert!(!reusable(1_000, 999));
        assert!(!reusable(i64::MAX, i64::MIN));
        // Reused tokens keep at least half their validity.
        const { assert!(TOKEN_REUSE_SECS * 2 <= DEFAULT_TOKEN_TTL_SECS) };
    }
}
