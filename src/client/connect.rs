//! Opening a client's connection: which transport the configuration and the settings call
//! for, and the settings each transport gets.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::builder::Options;
use super::TransportHandle;
use crate::client::Transport;
use crate::protocol::config::Relay;
use crate::protocol::frame::MAX_FRAME_LEN;
use crate::transport::grpc;
use crate::transport::tls::{self, Trust};
use crate::transport::websocket::{self, Target};
use crate::{ClientConfig, Error, ErrorKind, KeyAlgorithm, PrivateKey, Result};

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
    options: &Options,
    config: &ClientConfig,
    key: &Arc<PrivateKey>,
) -> Result<TransportHandle> {
    match (options.transport, resolve(options.transport, config, key)) {
        (Transport::Auto, Transport::Grpc) => match grpc(options, config, key).await {
            Err(e) if (e.is_connect() || e.is_timeout()) && config.websocket_url().is_ok() => {
                tracing::debug!("gRPC unreachable ({e}); using the websocket gateway");
                websocket(options, config, key, false).await.map_err(|_| e)
            }
            other => other,
        },
        (_, Transport::Grpc) => grpc(options, config, key).await,
        (_, Transport::LegacyWebsocket) => websocket(options, config, key, true).await,
        _ => websocket(options, config, key, false).await,
    }
}

async fn grpc(
    options: &Options,
    config: &ClientConfig,
    key: &Arc<PrivateKey>,
) -> Result<TransportHandle> {
    if config.volt().relay.is_some() {
        return Err(Error::new(
            ErrorKind::Config,
            "volt.relay: calls through a relay are not supported over gRPC; use the websocket \
             gateway (Transport::Websocket or Auto)",
        ));
    }
    let address = config.volt().address.clone().ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            "volt.address: missing, so there is no gRPC endpoint (use the websocket gateway)",
        )
    })?;
    let trust = Trust {
        public_roots: options.public_roots,
        via_relay: false,
    };
    let settings = grpc::Settings {
        address,
        tls: tls::client_config(config, trust, &[b"h2"], Some(key))?,
        connect_timeout: options.connect_timeout,
        keepalive: options.keepalive,
        key: key.clone(),
        audience: config.volt().id.clone(),
        subject: config.credential().session_id.clone(),
        max_outbound: options.max_message_len,
        max_inbound: MAX_FRAME_LEN,
        call_buffer: options.call_buffer,
    };
    Ok(TransportHandle::Grpc(
        grpc::Connection::connect(settings).await?,
    ))
}

async fn websocket(
    options: &Options,
    config: &ClientConfig,
    key: &Arc<PrivateKey>,
    legacy: bool,
) -> Result<TransportHandle> {
    let url = config.websocket_url()?;
    let volt_key = config.volt_public_key()?;
    // The URL comes from the relay exactly when the relay names a gateway address.
    let via_relay = matches!(
        &config.volt().relay,
        Some(Relay::Url(_))
            | Some(Relay::Detailed {
                http_address: Some(_),
                ..
            })
    );
    let tls = if url.starts_with("wss:") {
        let trust = Trust {
            public_roots: options.public_roots,
            via_relay,
        };
        Some(tls::client_config(config, trust, &[b"http/1.1"], None)?)
    } else {
        None
    };
    let mut meta = Map::new();
    let protocol = if legacy {
        if key.algorithm() != KeyAlgorithm::Rsa || volt_key.algorithm() != KeyAlgorithm::Rsa {
            return Err(Error::new(
                ErrorKind::Config,
                "the older websocket protocol (RSA era) needs an RSA credential key and an RSA \
                 Volt key (volt.public_key or the volt.ca_pem certificate)",
            ));
        }
        // The relay routes the call by the fingerprint of its target Volt.
        let hops = if via_relay {
            vec![config.volt_fingerprint()?]
        } else {
            Vec::new()
        };
        websocket::Protocol::Legacy { hops }
    } else {
        if via_relay {
            // The relay routes the call to its target Volt.
            meta.insert("d".into(), Value::from(vec![config.volt().id.clone()]));
        }
        websocket::Protocol::V1
    };
    let settings = websocket::Settings {
        protocol,
        target: Target {
            url,
            tls,
            connect_timeout: options.connect_timeout,
            max_inbound: MAX_FRAME_LEN,
        },
        key: key.clone(),
        volt_key,
        audience: config.volt().id.clone(),
        subject: config.credential().session_id.clone(),
        meta,
        keepalive: options.keepalive,
        max_outbound: options.max_message_len,
        call_buffer: options.call_buffer,
    };
    Ok(TransportHandle::Websocket(
        websocket::Connection::connect(settings).await?,
    ))
}
