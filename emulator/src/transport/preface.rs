//! The HTTP/2 connection preface, read within the handshake timeout before a connection is
//! handed to hyper (which would wait for it as long as the client likes), then replayed to
//! hyper as if unread.

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
        Ok(Ok(_)) if &head == PREFACE => Ok(Replayed {
            replayed: 0,
            inner: stream,
        }),
        Ok(Ok(_)) => Err("not an HTTP/2 connection"),
    }
}

/// A stream whose first bytes read are the preface already taken from it.
pub(crate) struct Replayed<S> {
    replayed: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let rest = &PREFACE[self.replayed..];
        if rest.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        self.replayed += n;
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
