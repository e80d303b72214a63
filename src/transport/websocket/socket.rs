//! Opening the websocket: TCP, then TLS trusting the Volt CA (for `wss`), then the HTTP
//! upgrade, all inside the connect timeout. Each stage fails with its own error kind.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

use crate::transport::net;
use crate::{Error, ErrorKind, Result};

/// Any byte stream the websocket can run over (plain TCP or TLS).
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An open websocket to the gateway.
pub(crate) type Socket = WebSocketStream<Box<dyn Io>>;

/// Where and how to connect.
#[derive(Clone)]
pub(crate) struct Target {
    /// `ws://` or `wss://` URL of the gateway's API endpoint.
    pub url: String,
    /// TLS settings; required for `wss`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Bound on TCP connect + TLS handshake + upgrade.
    pub connect_timeout: Duration,
    /// Largest message accepted from the server.
    pub max_inbound: usize,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("tls", &self.tls.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// Opens the websocket, failing with a timeout error after `connect_timeout`.
pub(crate) async fn open(target: &Target) -> Result<Socket> {
    match tokio::time::timeout(target.connect_timeout, open_unbounded(target)).await {
        Ok(result) => result,
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "connecting to {} took longer than {:?}",
                target.url, target.connect_timeout
            ),
        )),
    }
}

async fn open_unbounded(target: &Target) -> Result<Socket> {
    let uri: Uri = target.url.parse().map_err(|e| {
        Error::new(ErrorKind::Config, format!("{}: not a URL", target.url)).with_source(e)
    })?;
    let secure = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => {
            return Err(Error::new(
                ErrorKind::Config,
                format!("{}: the scheme must be ws or wss", target.url),
            ))
        }
    };
    let host = uri
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::new(ErrorKind::Config, format!("{}: no host", target.url)))?;
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });

    let tcp = net::tcp(&host, port).await?;
    let io: Box<dyn Io> = if secure {
        let tls = target
            .tls
            .clone()
            .ok_or_else(|| Error::new(ErrorKind::Config, "wss needs TLS settings (volt.ca_pem)"))?;
        Box::new(net::tls(tls, &host, port, tcp).await?)
    } else {
        Box::new(tcp)
    };

    let config = WebSocketConfig::default()
        .max_message_size(Some(target.max_inbound))
        .max_frame_size(Some(target.max_inbound));
    let (socket, _response) =
        tokio_tungstenite::client_async_with_config(target.url.as_str(), io, Some(config))
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Connect,
                    format!("websocket upgrade at {}", target.url),
                )
                .with_source(e)
            })?;
    Ok(socket)
}
