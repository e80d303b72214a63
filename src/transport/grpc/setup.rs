//! The gRPC transport's settings, made from the client configuration.

use std::sync::Arc;

use super::{tunnel, Connection, Settings};
use crate::protocol::config::Relay;
use crate::protocol::frame::MAX_FRAME_LEN;
use crate::protocol::limits::MAX_MESSAGE_LEN;
use crate::protocol::token::TokenSigner;
use crate::transport::link::Link;
use crate::transport::options::ConnectOptions;
use crate::transport::tls::{self, Trust};
use crate::{ClientConfig, Error, ErrorKind, PrivateKey, Result};

/// Connects to the configuration's gRPC endpoint (`volt.address`), or with a relay to the
/// relay's (`volt.relay.address`), through which every call is tunnelled.
pub(crate) async fn connect(
    options: &ConnectOptions,
    config: &ClientConfig,
    key: &Arc<PrivateKey>,
) -> Result<Arc<dyn Link>> {
    // Through a relay each call is tunnelled over the relay's gRPC endpoint, end-to-end
    // encrypted with the Volt; TLS then trusts the relay (no client certificate: the token
    // in each call authenticates it).
    let (address, trust, client_key, tunnel) = match &config.volt().relay {
        Some(relay) => {
            let address = match relay {
                Relay::Detailed {
                    address: Some(address),
                    ..
                } => address.clone(),
                _ => {
                    return Err(Error::new(
                        ErrorKind::Config,
                        "volt.relay: no gRPC address (volt.relay.address), so calls cannot be \
                         tunnelled over gRPC; use the websocket gateway (Transport::Websocket \
                         or Auto)",
                    ))
                }
            };
            let cloud = matches!(
                relay,
                Relay::Detailed {
                    cloud: Some(true),
                    ..
                }
            );
            let route = tunnel::Route {
                target_did: vec![config.volt().id.clone()],
                service_id: None,
                audience: None,
                signer: config.volt_public_key()?,
                cloud_volt_id: cloud.then(|| config.volt().id.clone()),
            };
            let trust = Trust {
                public_roots: options.public_roots,
                via_relay: true,
            };
            (address, trust, None, Some(route))
        }
        None => {
            let address = config.volt().address.clone().ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    "volt.address: missing, so there is no gRPC endpoint (use the websocket \
                     gateway)",
                )
            })?;
            let trust = Trust {
                public_roots: options.public_roots,
                via_relay: false,
            };
            (address, trust, Some(&**key), None)
        }
    };
    let settings = Settings {
        address,
        tls: tls::client_config(config, trust, &[b"h2"], client_key)?,
        connect_timeout: options.connect_timeout,
        keepalive: options.keepalive,
        signer: TokenSigner::new(
            key.clone(),
            config.volt().id.clone(),
            config.credential().session_id.clone(),
        ),
        max_outbound: options.max_message_len.min(MAX_MESSAGE_LEN),
        max_inbound: MAX_FRAME_LEN,
        call_buffer: options.call_buffer,
        supervisor: options.supervisor.clone(),
        tunnel,
    };
    Ok(Arc::new(Connection::connect(settings).await?))
}
