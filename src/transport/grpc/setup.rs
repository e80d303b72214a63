//! The gRPC transport's settings, made from the client configuration.

use std::sync::Arc;

use super::{Connection, Settings};
use crate::protocol::frame::MAX_FRAME_LEN;
use crate::protocol::limits::MAX_MESSAGE_LEN;
use crate::protocol::token::TokenSigner;
use crate::transport::link::Link;
use crate::transport::options::ConnectOptions;
use crate::transport::tls::{self, Trust};
use crate::{ClientConfig, Error, ErrorKind, PrivateKey, Result};

/// Connects to the configuration's gRPC endpoint (`volt.address`).
pub(crate) async fn connect(
    options: &ConnectOptions,
    config: &ClientConfig,
    key: &Arc<PrivateKey>,
) -> Result<Arc<dyn Link>> {
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
    let settings = Settings {
        address,
        tls: tls::client_config(config, trust, &[b"h2"], Some(key))?,
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
    };
    Ok(Arc::new(Connection::connect(settings).await?))
}
