//! A wire subscription that survives reconnects: [`VoltClient::subscribe_wire_resumable`].

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt as _};

use super::{ConnectionState, VoltClient, WireChunks};
use crate::{Error, Result};

/// What a resumable subscription yields.
#[derive(Debug)]
#[non_exhaustive]
pub enum WireItem {
    /// A chunk published to the wire.
    Chunk(Vec<u8>),
    /// The subscription was lost (the cause is given) and has been made again: chunks
    /// published in between were missed. Refetch what the app may have missed.
    Gap(Error),
}

/// A wire subscription that subscribes again after the connection is lost. Made by
/// [`VoltClient::subscribe_wire_resumable`]; dropping it ends the subscription.
#[must_use = "dropping a subscription cancels it"]
pub struct ResumableWire {
    inner: BoxStream<'static, Result<WireItem>>,
}

impl std::fmt::Debug for ResumableWire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumableWire").finish_non_exhaustive()
    }
}

impl Stream for ResumableWire {
    type Item = Result<WireItem>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

/// Whether a subscription that failed with `error` is worth making again: the connection
/// went (or timed out), and the client still reconnects.
fn resumable(client: &VoltClient, error: &Error) -> bool {
    (error.is_closed() || error.is_timeout() || error.is_connect())
        && *client.connection_state().borrow() != ConnectionState::Closed
}

struct Resume {
    client: VoltClient,
    wire_id: String,
    chunks: Option<WireChunks>,
    /// Why the last subscription was lost, until the next one is made.
    lost: Option<Error>,
}

impl VoltClient {
    /// Subscribes to a wire, and subscribes again whenever the subscription is lost with the
    /// connection (as the client's [`ReconnectPolicy`](crate::ReconnectPolicy) allows),
    /// yielding [`WireItem::Gap`] where chunks may have been missed. An error the Volt reports
    /// (say the wire was deleted), or a loss once the client no longer reconnects, is yielded
    /// and ends the stream; so does the Volt ending the subscription.
    ///
    /// ```no_run
    /// use futures_util::StreamExt as _;
    /// use tdx_volt::client::WireItem;
    ///
    /// # async fn demo(client: tdx_volt::VoltClient) -> tdx_volt::Result<()> {
    /// let mut wire = client.subscribe_wire_resumable("my-wire-id").await?;
    /// while let Some(item) = wire.next().await {
    ///     match item? {
    ///         WireItem::Chunk(bytes) => println!("{} bytes", bytes.len()),
    ///         WireItem::Gap(cause) => eprintln!("missed chunks while away ({cause})"),
    ///         _ => {}
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_wire_resumable(&self, wire_id: &str) -> Result<ResumableWire> {
        let first = self.subscribe_wire_chunks(wire_id).await?;
        let state = Resume {
            client: self.clone(),
            wire_id: wire_id.to_owned(),
            chunks: Some(first),
            lost: None,
        };
        let inner = futures_util::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            loop {
                let Some(chunks) = state.chunks.as_mut() else {
                    // Subscribe again: opening waits for the connection within the request
                    // timeout; each failure that the client may still get past is tried again.
                    match state.client.subscribe_wire_chunks(&state.wire_id).await {
                        Ok(fresh) => {
                            state.chunks = Some(fresh);
                            let cause = state.lost.take();
                            if let Some(cause) = cause {
                                return Some((Ok(WireItem::Gap(cause)), Some(state)));
                            }
                            continue;
                        }
                        Err(e) if resumable(&state.client, &e) => {
                            tracing::debug!(%e, "resubscribing to a wire failed; trying again");
                            // Not before the connection's state moves on (or a request
                            // timeout passes): no busy loop while the client backs off.
                            let mut moved = state.client.connection_state();
                            let wait = state.client.request_timeout();
                            let _ = tokio::time::timeout(wait, moved.changed()).await;
                            continue;
                        }
                        Err(e) => return Some((Err(e), None)),
                    }
                };
                match chunks.next().await {
                    Some(Ok(chunk)) => return Some((Ok(WireItem::Chunk(chunk)), Some(state))),
                    Some(Err(e)) if resumable(&state.client, &e) => {
                        state.chunks = None;
                        state.lost = Some(e);
                    }
                    Some(Err(e)) => return Some((Err(e), None)),
                    None => return None,
                }
            }
        })
        .boxed();
        Ok(ResumableWire { inner })
    }
}
