//! Choosing a transport: which one the configuration and the settings call for, with the
//! fallback from gRPC to the websocket gateway. Each transport builds its own settings from
//! the configuration; adding one is a folder beside these and one line in [`open`].

use std::sync::Arc;

#[cfg(feature = "grpc")]
use super::grpc;
use super::link::Link;
use super::options::{ConnectOptions, Transport};
#[cfg(feature = "websocket")]
use super::websocket;
use crate::protocol::config::Relay;
use crate::{ClientConfig, KeyAlgorithm, PrivateKey, Result};

/// The transport `wanted` comes to with this configuration and key. An RSA key belongs to an
/// RSA-era Volt, whose gateway speaks the older protocol: [`Transport::Websocket`] is then
/// [`Transport::LegacyWebsocket`], and so is [`Transport::Auto`] when there is a gateway.
/// Otherwise [`Transport::Auto`] is gRPC when there is a gRPC endpoint and this build has the
/// gRPC transport: the Volt's (`volt.address`), or with a relay the relay's
/// (`volt.relay.address`), which tunnels. A transport this build leaves out is still the
/// answer when nothing else fits: [`open`] then says which feature it needs.
pub(crate) fn resolve(wanted: Transport, config: &ClientConfig, key: &PrivateKey) -> Transport {
    let rsa = key.algorithm() == KeyAlgorithm::Rsa;
    match wanted {
        Transport::Auto if rsa && config.websocket_url().is_ok() => Transport::LegacyWebsocket,
        // Without the gRPC transport, gRPC is still the answer when it is the only endpoint,
        // so that the error says what is missing.
        Transport::Auto
            if has_grpc_endpoint(config)
                && (cfg!(feature = "grpc") || config.websocket_url().is_err()) =>
        {
            Transport::Grpc
        }
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
/// the websocket gateway when the configuration has one (and the build has the websocket
/// transport); a TLS or configuration failure does not (it would fail the same way, or hides
/// something to fix). A transport the build leaves out is an
/// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) error naming its feature.
pub(crate) async fn open(
    options: &ConnectOptions,
    config: &ClientConfig,
    key: &Arc<PrivateKey>,
) -> Result<Arc<dyn Link>> {
    match (options.transport, resolve(options.transport, config, key)) {
        #[cfg(all(feature = "grpc", feature = "websocket"))]
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
        #[cfg(feature = "grpc")]
        (_, Transport::Grpc) => grpc::connect(options, config, key).await,
        #[cfg(not(feature = "grpc"))]
        (_, Transport::Grpc) => Err(super::options::left_out("the gRPC transport", "grpc")),
        #[cfg(all(feature = "websocket", feature = "legacy"))]
        (_, Transport::LegacyWebsocket) => websocket::connect(options, config, key, true).await,
        #[cfg(not(all(feature = "websocket", feature = "legacy")))]
        (_, Transport::LegacyWebsocket) => Err(super::options::left_out(
            "the older websocket protocol (RSA era)",
            "websocket` and `legacy",
        )),
        #[cfg(feature = "websocket")]
        _ => websocket::connect(options, config, key, false).await,
        #[cfg(not(feature = "websocket"))]
        _ => Err(super::options::left_out(
            "the websocket gateway transport (this configuration has no gRPC endpoint, or asks \
             for the gateway)",
            "websocket",
        )),
    }
}
