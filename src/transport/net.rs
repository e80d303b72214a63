//! The two stages every transport starts with: a TCP connection, then TLS to the Volt (or its
//! relay). Each stage fails with its own error kind ([`Connect`](ErrorKind::Connect),
//! [`Tls`](ErrorKind::Tls), [`Config`](ErrorKind::Config) for a bad host name).

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::{Error, ErrorKind, Result};

/// Connects to `host:port`, without Nagle's delay (small frames such as a key exchange or a
/// client end should go at once).
pub(crate) async fn tcp(host: &str, port: u16) -> Result<TcpStream> {
    let tcp = TcpStream::connect((host, port)).await.map_err(|e| {
        Error::new(ErrorKind::Connect, format!("connecting to {host}:{port}")).with_source(e)
    })?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Runs the TLS handshake over `tcp`, verifying the server's certificate for `host`.
pub(crate) async fn tls(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("{host}: not a valid TLS server name"),
        )
        .with_source(e)
    })?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            Error::new(ErrorKind::Tls, format!("TLS handshake with {host}:{port}")).with_source(e)
        })
}
