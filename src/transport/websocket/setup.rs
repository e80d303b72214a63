//! The websocket transport's settings, made from the client configuration: the gateway URL
//! (or the relay's), TLS, the protocol generation and the relay route.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Connection, Protocol, Settings, Target};
use crate::protocol::config::Relay;
use crate::protocol::frame::MAX_FRAME_LEN;
use crate::protocol::token::TokenSigner;
use crate::transport::link::Link;
use crate::transport::options::ConnectOptions;
use crate::transport::tls::{self, Trust};
use crate::{ClientConfig, PrivateKey, Result};

/// Connects to the configuration's websocket gateway, in the older protocol when `legacy`.
pub(crate) async fn connect(
    options: &ConnectOptions,
    config: &ClientConfig,
    key: &Arc<PrivateKey>,
    legacy: bool,
) -> Result<Arc<dyn Link>> {
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
        legacy_protocol(config, key, &volt_key, via_relay)?
    } else {
        if via_relay {
            // The relay routes the call to its target Volt.
            meta.insert("d".into(), Value::from(vec![config.volt().id.clone()]));
        }
        Protocol::V1
    };
    let settings = Settings {
        protocol,
        target: Target {
            url,
            tls,
            connect_timeout: options.connect_timeout,
            max_inbound: MAX_FRAME_LEN,
        },
        signer: TokenSigner::new(
            key.clone(),
            config.volt().id.clone(),
            config.credential().session_id.clone(),
        ),
        volt_key,
        meta,
        keepalive: options.keepalive,
        max_outbound: options.max_message_len,
        call_buffer: options.call_buffer,
        supervisor: options.supervisor.clone(),
        #[cfg(feature = "legacy")]
        spare: Default::default(),
    };
    Ok(Arc::new(Connection::connect(settings).await?))
}

/// The older protocol's settings: it needs RSA keys on both sides, and routes through a relay
/// by the target Volt's fingerprint.
#[cfg(feature = "legacy")]
fn legacy_protocol(
    config: &ClientConfig,
    key: &PrivateKey,
    volt_key: &crate::PublicKey,
    via_relay: bool,
) -> Result<Protocol> {
    use crate::{Error, ErrorKind, KeyAlgorithm};
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
    Ok(Protocol::Legacy { hops })
}

/// Without the feature `legacy` there is no older protocol to speak.
#[cfg(not(feature = "legacy"))]
fn legacy_protocol(
    _: &ClientConfig,
    _: &PrivateKey,
    _: &crate::PublicKey,
    _: bool,
) -> Result<Protocol> {
    Err(crate::transport::options::left_out(
        "the older websocket protocol (RSA era)",
        "legacy",
    ))
}
