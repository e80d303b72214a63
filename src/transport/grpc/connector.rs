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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::transport::net;
use crate::transport::reconnect::Supervisor;
use crate::transport::trace::HostPort;
use crate::{Error, ErrorKind, Result};

type Stream = TokioIo<Watched<TlsStream<TcpStream>>>;

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
    supervisor: Arc<Supervisor>,
}

impl Connector {
    /// Connects once, within `timeout` (as every later reconnection), and keeps the stream for
    /// tonic's first use.
    pub(crate) async fn connect(
        host: &str,
        port: u16,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
        supervisor: Arc<Supervisor>,
    ) -> Result<Connector> {
        let connector = Connector {
            host: Arc::from(host),
            port,
            tls,
            timeout,
            first: Arc::new(Mutex::new(None)),
            supervisor,
        };
        connector.supervisor.connecting();
        let stream = connector.open().await?;
        *connector.lock() = Some(stream);
        Ok(connector)
    }

    /// TCP then TLS, within the connect timeout; the outcome is recorded for the state and
    /// the backoff.
    fn open(&self) -> impl Future<Output = Result<Stream>> + Send + 'static {
        let this = self.clone();
        async move {
            let address = HostPort(&this.host, this.port);
            let attempt = this.supervisor.attempt("grpc", &address);
            let stages = async {
                let tcp = net::tcp(&this.host, this.port).await?;
                net::tls(this.tls.clone(), &this.host, this.port, tcp).await
            };
            let result = match tokio::time::timeout(this.timeout, stages).await {
                Ok(stream) => stream,
                Err(_) => Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "connecting to {}:{} took longer than {:?}",
                        this.host, this.port, this.timeout
                    ),
                )),
            };
            match result {
                Ok(tls) => {
                    attempt.connected();
                    let generation = this.supervisor.connected();
                    Ok(TokioIo::new(Watched {
                        inner: tls,
                        supervisor: this.supervisor.clone(),
                        generation,
                    }))
                }
                Err(e) => {
                    attempt.failed(&e);
                    this.supervisor.failed(&e);
                    Err(e)
                }
            }
        }
    }

    /// A reconnection: waits for the policy's turn, then connects; when calls wait for the
    /// connection, tries again at each turn (tonic polls this only while calls wait, and each
    /// call gives up at its own timeout).
    fn reopen(&self) -> impl Future<Output = Result<Stream>> + Send + 'static {
        let this = self.clone();
        async move {
            loop {
                this.supervisor.wait_turn().await?;
                match this.open().await {
                    Err(e) if this.supervisor.waits_for_connection() && !e.is_config() => {}
                    done => return done,
                }
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
            None => Box::pin(self.reopen()),
        }
    }
}

/// The connection's byte stream, telling the supervisor when the Volt closes it or it fails
/// (tonic reconnects on the next call; the state says it is down meanwhile).
pub(crate) struct Watched<S> {
    inner: S,
    supervisor: Arc<Supervisor>,
    /// The connection's number: a report about an older one is ignored.
    generation: u64,
}

impl<S> Drop for Watched<S> {
    fn drop(&mut self) {
        // hyper lets go of the connection when it ends (a GOAWAY, an error, the client gone),
        // whether or not it read to the end.
        self.supervisor.lost_connection(self.generation);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                self.supervisor.lost_connection(self.generation);
            }
            Poll::Ready(Err(_)) => self.supervisor.lost_connection(self.generation),
            _ => {}
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Err(_)) = &polled {
            self.supervisor.lost_connection(self.generation);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
