//! How tonic reaches the Volt: our own TCP and TLS (the Volt CA, and the client certificate
//! for mutual TLS), so certificate checks are the same as on the websocket transport and
//! every failure keeps its kind.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::transport::net;
use crate::{Error, ErrorKind, Result};

type Stream = TokioIo<TlsStream<TcpStream>>;

/// Connects to one address with one TLS configuration, whatever URI tonic asks for. The first
/// connection is made before tonic gets the connector (so that its errors reach the caller
/// whole); reconnections are made on demand.
#[derive(Clone)]
pub(crate) struct Connector {
    host: Arc<str>,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    first: Arc<Mutex<Option<Stream>>>,
}

impl Connector {
    /// Connects once, within `timeout` (as every later reconnection), and keeps the stream for
    /// tonic's first use.
    pub(crate) async fn connect(
        host: &str,
        port: u16,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<Connector> {
        let connector = Connector {
            host: Arc::from(host),
            port,
            tls,
            timeout,
            first: Arc::new(Mutex::new(None)),
        };
        let stream = connector.open().await?;
        *connector.lock() = Some(stream);
        Ok(connector)
    }

    /// TCP then TLS, within the connect timeout.
    fn open(&self) -> impl Future<Output = Result<Stream>> + Send + 'static {
        let this = self.clone();
        async move {
            let stages = async {
                let tcp = net::tcp(&this.host, this.port).await?;
                let tls = net::tls(this.tls.clone(), &this.host, this.port, tcp).await?;
                Ok(TokioIo::new(tls))
            };
            match tokio::time::timeout(this.timeout, stages).await {
                Ok(stream) => stream,
                Err(_) => Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "connecting to {}:{} took longer than {:?}",
                        this.host, this.port, this.timeout
                    ),
                )),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Stream>> {
        self.first.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<Stream>> + Send>>;

impl tower_service::Service<Uri> for Connector {
    type Response = Stream;
    type Error = Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Connecting {
        match self.lock().take() {
            Some(stream) => Box::pin(std::future::ready(Ok(stream))),
            None => Box::pin(self.open()),
        }
    }
}
