//! Serving invocations with a tower `Service` of the shape tonic generates for a server
//! (`http::Request` in, `http::Response` out, gRPC framing in the bodies): each invocation
//! becomes a request whose body carries the caller's messages, and the response's messages and
//! its `grpc-status` go back to the caller.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf as _, Bytes, BytesMut};
use futures_util::future::poll_fn;
use http_body::{Body, Frame};
use tokio::sync::mpsc;
use tower_service::Service;

use super::{Host, Invocation};
use crate::Status;

/// A boxed error, as tower services and bodies give them.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// gRPC's length-prefixed message header: a compression flag, then the length (big-endian).
const FRAME_HEADER: usize = 5;

/// The body of a request made from an invocation: the caller's messages, gRPC-framed, until
/// the caller ends its side.
pub struct InvocationBody {
    requests: mpsc::Receiver<Bytes>,
}

impl std::fmt::Debug for InvocationBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvocationBody").finish_non_exhaustive()
    }
}

impl Body for InvocationBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.requests.poll_recv(cx).map(|message| {
            message.map(|message| {
                let mut framed = BytesMut::with_capacity(FRAME_HEADER + message.len());
                framed.extend_from_slice(&[0]);
                let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
                framed.extend_from_slice(&len.to_be_bytes());
                framed.extend_from_slice(&message);
                Ok(Frame::data(framed.freeze()))
            })
        })
    }
}

impl Host {
    /// Serves every call with `service`, a tower `Service` of the shape tonic generates for a
    /// server (say `EchoServer::new(MyEcho)`), until the session is over. Each call runs in a
    /// task of its own: a request to the call's method path, whose body streams the
    /// caller's messages; the response's messages go back as they come, and its
    /// `grpc-status` (and `grpc-message`) end the call.
    pub async fn serve<S, B>(mut self, service: S)
    where
        S: Service<http::Request<InvocationBody>, Response = http::Response<B>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError> + Send,
    {
        while let Some(invocation) = self.next_invocation().await {
            tokio::spawn(serve_one(service.clone(), invocation));
        }
    }
}

/// Serves one call with `service`.
async fn serve_one<S, B>(mut service: S, mut invocation: Invocation)
where
    S: Service<http::Request<InvocationBody>, Response = http::Response<B>> + Send,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send,
    B::Error: Into<BoxError> + Send,
{
    let outcome = answer(&mut service, &mut invocation).await;
    if let Err(e) = invocation.finish(outcome).await {
        tracing::debug!(%e, "volt host: a call's end not sent");
    }
}

async fn answer<S, B>(service: &mut S, invocation: &mut Invocation) -> Result<(), Status>
where
    S: Service<http::Request<InvocationBody>, Response = http::Response<B>> + Send,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send,
    B::Error: Into<BoxError> + Send,
{
    let internal = |what: &str, e: BoxError| Status::new(13, format!("{what}: {e}"), "");
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(invocation.method())
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .body(InvocationBody {
            requests: invocation.take_requests(),
        })
        .map_err(|e| internal("the call's method is not a path", e.into()))?;
    poll_fn(|cx| service.poll_ready(cx))
        .await
        .map_err(|e| internal("the service is not ready", e.into()))?;
    let response = service
        .call(request)
        .await
        .map_err(|e| internal("the service failed", e.into()))?;
    let (parts, body) = response.into_parts();
    // A status in the headers is a response without messages (gRPC's trailers-only form).
    if let Some(status) = grpc_status(&parts.headers) {
        return status;
    }
    let mut body = std::pin::pin!(body);
    let mut buffer = BytesMut::new();
    while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame.map_err(|e| internal("the response failed", e.into()))?;
        let frame = match frame.into_data() {
            Ok(data) => {
                buffer.extend_from_slice(&data);
                while let Some(message) = next_message(&mut buffer)? {
                    invocation
                        .respond_bytes(message.to_vec())
                        .await
                        .map_err(|e| internal("a response not sent", e.into()))?;
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            return grpc_status(&trailers)
                .unwrap_or_else(|| Err(Status::new(2, "the response ended without a status", "")));
        }
    }
    Err(Status::new(2, "the response ended without a status", ""))
}

/// Takes one whole message off the front of `buffer`, if it holds one.
fn next_message(buffer: &mut BytesMut) -> Result<Option<Bytes>, Status> {
    if buffer.len() < FRAME_HEADER {
        return Ok(None);
    }
    if buffer[0] != 0 {
        return Err(Status::new(12, "compressed responses are not relayed", ""));
    }
    let len = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
    if buffer.len() < FRAME_HEADER + len {
        return Ok(None);
    }
    buffer.advance(FRAME_HEADER);
    Ok(Some(buffer.split_to(len).freeze()))
}

/// The call's outcome from `grpc-status` and `grpc-message`, if the headers have them.
fn grpc_status(headers: &http::HeaderMap) -> Option<Result<(), Status>> {
    let code: i32 = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if code == 0 {
        return Some(Ok(()));
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some(Err(Status::new(code, message, "")))
}

/// Decodes gRPC's percent-encoding of `grpc-message`; anything malformed stays as it was.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_cut_from_the_framed_stream() {
        let mut buffer = BytesMut::new();
        buffer.extend_from_slice(&[0, 0, 0, 0, 2, b'h', b'i', 0, 0, 0]);
        assert_eq!(
            next_message(&mut buffer).unwrap(),
            Some(Bytes::from_static(b"hi"))
        );
        assert_eq!(next_message(&mut buffer).unwrap(), None, "half a header");
        buffer.extend_from_slice(&[0, 0]);
        assert_eq!(next_message(&mut buffer).unwrap(), Some(Bytes::new()));
        buffer.extend_from_slice(&[1, 0, 0, 0, 0]);
        assert!(next_message(&mut buffer).is_err(), "compressed");
    }

    #[test]
    fn statuses_are_read_from_headers() {
        let mut headers = http::HeaderMap::new();
        assert!(grpc_status(&headers).is_none());
        headers.insert("grpc-status", "0".parse().unwrap());
        assert!(matches!(grpc_status(&headers), Some(Ok(()))));
        headers.insert("grpc-status", "5".parse().unwrap());
        headers.insert("grpc-message", "no%20such%20thing%2".parse().unwrap());
        let status = grpc_status(&headers).unwrap().unwrap_err();
        assert_eq!(
            (status.code, status.message.as_str()),
            (5, "no such thing%2")
        );
    }
}
