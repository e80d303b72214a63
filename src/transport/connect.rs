//! Choosing a transport: which one the configuration and the settings call for, with the
//! fallback from gRPC to the websocket gateway. Each transport builds its own settings from
//! the configuration; adding one is a folder beside these and one line in [`open`].

use std::sync::Arc;

use super::link::Link;
use super::options::{ConnectOptions, Transport};
use super::{grpc, websocket};
use crate::protocol::config::Relay;
use crate::{ClientConfig, KeyAlgorithm, PrivateKey, Result};

/// The transport `wanted` comes to with this configuration and key. An RSA key belongs to an
/// RSA-era Volt, whose gateway speaks the older protocol: [`Transport::Websocket`] is then
/// [`Transport::LegacyWebsocket`], and so is [`Transport::Auto`] when there is a gateway.
/// Otherwise [`Transport::Auto`] is gRPC when there is a gRPC endpoint: the Volt's
/// (`volt.address`), or with a relay the relay's (`volt.relay.address`), which tunnels.
pub(crate) fn resolve(wanted: Transport, config: &ClientConfig, key: &PrivateKey) -> Transport {
    let rsa = key.algorithm() == KeyAlgorithm::Rsa;
    match wanted {
        Transport::Auto if rsa && config.websocket_url().is_ok() => Transport::LegacyWebsocket,
        Transport::Auto if has_grpc_endpoint(config) => Transport::Grpc,
        Transport::Auto | Transport::Websocket if rsa => Transport::LegacyWebsocket,
        Transport::Auto => Transport::Websocket,
        other => other,
    }
}

/// Whether gRPC can reach the Volt: directly, or tunnelled through the relay.
fn has_grpc_endpoint(config: &ClientConfig) -> bool {
    match &config.volt().relay {
        Some(Relay::Detailed { address, .. }) => address.is_some(),
        Some(Relay::Url(_)) => false,
        None => config.volt().address.is_some(),
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
                tracing::debug!(
                    target: "tdx_volt::connect",
                    error = %e,
                    "gRPC unreachable; using the websocket gateway"
                );
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
