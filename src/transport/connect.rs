//! Choosing a transport: which one the configuration and the settings call for, with the
//! fallback from gRPC to the websocket gateway. Each transport builds its own settings from
//! the configuration; adding one is a folder beside these and one line in [`open`].

use std::sync::Arc;

use std::time::Duration;

use super::link::Link;
use super::{grpc, websocket};
use crate::{ClientConfig, KeyAlgorithm, PrivateKey, Result};

/// Which protocol carries the calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// Native gRPC when the configuration has a gRPC address (`volt.address`) and names no
    /// relay; the websocket gateway otherwise, and also when the gRPC endpoint cannot be
    /// reached (refused, unreachable, or silent for the connect timeout) but the gateway can.
    /// With an RSA credential key (an RSA-era configuration) it is the gateway in the older
    /// protocol ([`LegacyWebsocket`](Self::LegacyWebsocket)) whenever there is a gateway.
    /// [`VoltClient::transport`](crate::VoltClient::transport) tells which was chosen.
    #[default]
    Auto,
    /// The websocket gateway (`volt.http_address`, or the relay): protocol v1, or the older
    /// protocol when the credential key is RSA (see [`LegacyWebsocket`](Self::LegacyWebsocket)).
    Websocket,
    /// Native gRPC (`volt.address`) over one HTTP/2 connection, with mutual TLS when the
    /// credential has a certificate. Calls through a relay are not supported on it.
    Grpc,
    /// The websocket gateway of an RSA-era Volt, in the older protocol its clients (the Python
    /// `volt_client_web` 0.1.x) speak: JSON text frames, and each call's AES key sent
    /// RSA-encrypted to the Volt in an RS256 identity token. Needs an RSA credential key and an
    /// RSA Volt key. [`Auto`](Self::Auto) and [`Websocket`](Self::Websocket) choose it by
    /// themselves when the credential key is RSA; the API, calls and errors are the same.
    LegacyWebsocket,
}

/// How to connect, as the client's settings say (kept to connect again after Authenticate).
#[derive(Debug, Clone)]
pub(crate) struct ConnectOptions {
    /// The transport asked for.
    pub transport: Transport,
    /// Bound on each step of connecting.
    pub connect_timeout: Duration,
    /// Ping after this long without traffic.
    pub keepalive: Duration,
    /// Largest message sent.
    pub max_message_len: usize,
    /// Unread responses a call may hold.
    pub call_buffer: usize,
    /// Also trust the public web PKI.
    pub public_roots: bool,
}

/// The transport `wanted` comes to with this configuration and key. An RSA key belongs to an
/// RSA-era Volt, whose gateway speaks the older protocol: [`Transport::Websocket`] is then
/// [`Transport::LegacyWebsocket`], and so is [`Transport::Auto`] when there is a gateway.
/// Otherwise [`Transport::Auto`] is gRPC when there is a gRPC address and no relay.
pub(crate) fn resolve(wanted: Transport, config: &ClientConfig, key: &PrivateKey) -> Transport {
    let rsa = key.algorithm() == KeyAlgorithm::Rsa;
    match wanted {
        Transport::Auto if rsa && config.websocket_url().is_ok() => Transport::LegacyWebsocket,
        Transport::Auto if config.volt().address.is_some() && config.volt().relay.is_none() => {
            Transport::Grpc
        }
        Transport::Auto | Transport::Websocket if rsa => Transport::LegacyWebsocket,
        Transport::Auto => Transport::Websocket,
        other => other,
    }
}

/// Connects with `config` as `options` ask. With [`Transport::Auto`], a gRPC endpoint that
/// cannot be reached (refused, unreachable, or silent past the connect timeout) gives way to
/// the websocket gateway when the configuration has one; a TLS or configuration failure does
/// not (it would fail the same way, or hides something to fix).
pub(crate) async fn open(
    options: &ConnectOptions,
    config: &ClientConfig,
    key: &Arc<PrivateKey>,
) -> Result<Arc<dyn Link>> {
    match (options.transport, resolve(options.transport, config, key)) {
        (Transport::Auto, Transport::Grpc) => match grpc::connect(options, config, key).await {
            Err(e) if (e.is_connect() || e.is_timeout()) && config.websocket_url().is_ok() => {
                tracing::debug!("gRPC unreachable ({e}); using the websocket gateway");
                websocket::connect(options, config, key, false)
                    .await
                    .map_err(|_| e)
            }
            other => other,
        },
        (_, Transport::Grpc) => grpc::connect(options, config, key).await,
        (_, Transport::LegacyWebsocket) => websocket::connect(options, config, key, true).await,
        _ => websocket::connect(options, config, key, false).await,
    }
}
