//! What a connection sends first, read within the handshake timeout before the connection is
//! handed on (hyper would wait for the HTTP/2 preface, tungstenite for the upgrade request, as
//! long as the client likes), then replayed as if unread: the HTTP/2 preface, or an HTTP/1.1
//! request head (so that the gateway can answer `GET /discover` itself).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};

/// What every HTTP/2 client sends first.
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the preface from `stream` within `timeout`; on success the stream is wrapped so that
/// hyper reads it again.
pub(crate) async fn read<S>(mut stream: S, timeout: Duration) -> Result<Replayed<S>, &'static str>
where
    S: AsyncRead + Unpin,
{
    let mut head = [0u8; PREFACE.len()];
    match tokio::time::timeout(timeout, stream.read_exact(&mut head)).await {
        Err(_) => Err("no HTTP/2 preface within the handshake timeout"),
        Ok(Err(_)) => Err("the connection ended before the HTTP/2 preface"),
        Ok(Ok(_)) if &head == PREFACE => Ok(Replayed::new(PREFACE.to_vec(), stream)),
        Ok(Ok(_)) => Err("not an HTTP/2 connection"),
    }
}

/// The largest HTTP/1.1 request head read before the websocket upgrade.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// Reads an HTTP/1.1 request head (up to the blank line; at most [`MAX_HEAD`] bytes) from
/// `stream` within `timeout`; returns it, and the stream that replays everything read.
pub(crate) async fn read_head<S>(
    mut stream: S,
    timeout: Duration,
) -> Result<(Vec<u8>, Replayed<S>), &'static str>
where
    S: AsyncRead + Unpin,
{
    let mut head = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() >= MAX_HEAD {
                return Err("request head too large");
            }
            let n = stream.read(&mut chunk).await.map_err(|_| "read failed")?;
            if n == 0 {
                return Err("the connection ended before its request");
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, read).await {
        Err(_) => Err("no request within the handshake timeout"),
        Ok(Err(why)) => Err(why),
        Ok(Ok(())) => Ok((head.clone(), Replayed::new(head, stream))),
    }
}

/// A stream whose first bytes read are those already taken from it.
pub(crate) struct Replayed<S> {
    head: Vec<u8>,
    replayed: usize,
    inner: S,
}

impl<S> Replayed<S> {
    fn new(head: Vec<u8>, inner: S) -> Replayed<S> {
        Replayed {
            head,
            replayed: 0,
            inner,
        }
    }

    /// The stream itself, for writing an answer of one's own.
    pub(crate) fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let rest = &this.head[this.replayed..];
        if rest.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.replayed += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn the_preface_is_read_then_replayed() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(PREFACE).await.unwrap();
        client.write_all(b"frames").await.unwrap();
        let mut replayed = read(server, Duration::from_secs(5)).await.unwrap();
        let mut seen = vec![0u8; PREFACE.len() + 6];
        replayed.read_exact(&mut seen).await.unwrap();
        assert_eq!(&seen[..PREFACE.len()], PREFACE);
        assert_eq!(&seen[PREFACE.len()..], b"frames");

        let (mut client, server) = tokio::io::duplex(1024);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read(server, Duration::from_secs(5)).await.is_err());
    }
}
