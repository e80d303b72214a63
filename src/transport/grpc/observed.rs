//! What a call's HTTP/2 stream showed, seen beneath tonic: whether the Volt sent a gRPC status
//! (in the response headers or the trailers), and whether the body ended. tonic makes statuses
//! of its own for what it refuses (a message over the size limit, a stream cut mid-message, a
//! stream with no status) and gives them no cause; these facts tell them from the Volt's
//! statuses without reading their wording.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use tonic::transport::Channel;
use tower_service::Service;

/// The header (or trailer) that carries a gRPC status.
const GRPC_STATUS: &str = "grpc-status";

/// What one call's stream showed.
#[derive(Debug, Default)]
pub(super) struct Seen {
    volt_status: AtomicBool,
    body_ended: AtomicBool,
}

impl Seen {
    /// The Volt sent a gRPC status: a status tonic reports is the Volt's.
    pub(super) fn volt_status(&self) -> bool {
        self.volt_status.load(Ordering::Acquire)
    }

    /// The response body ended (cleanly, whatever it held).
    pub(super) fn body_ended(&self) -> bool {
        self.body_ended.load(Ordering::Acquire)
    }
}

/// The connection's channel, watching one call's response.
#[derive(Debug, Clone)]
pub(super) struct Observed {
    channel: Channel,
    seen: Arc<Seen>,
}

impl Observed {
    pub(super) fn new(channel: Channel) -> (Observed, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        (
            Observed {
                channel,
                seen: seen.clone(),
            },
            seen,
        )
    }
}

impl Service<http::Request<tonic::body::Body>> for Observed {
    type Response = http::Response<ObservedBody>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.channel.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let response = self.channel.call(request);
        let seen = self.seen.clone();
        Box::pin(async move {
            let response = response.await?;
            // A status in the headers: the Volt answered with no messages at all.
            if response.headers().contains_key(GRPC_STATUS) {
                seen.volt_status.store(true, Ordering::Release);
            }
            Ok(response.map(|body| ObservedBody { body, seen }))
        })
    }
}

/// A response body, passed through as it is read.
pub(super) struct ObservedBody {
    body: tonic::body::Body,
    seen: Arc<Seen>,
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if frame
                    .trailers_ref()
                    .is_some_and(|trailers| trailers.contains_key(GRPC_STATUS))
                {
                    this.seen.volt_status.store(true, Ordering::Release);
                }
            }
            Poll::Ready(None) => this.seen.body_ended.store(true, Ordering::Release),
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
