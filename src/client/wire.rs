//! Wire helpers: chunks as bytes, both ways.

use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine as _;
use futures_util::{Stream, StreamExt as _};
use serde_json::{json, Value};

use super::{Call, CallEvent, VoltClient};
use crate::proto::volt::subscribe_wire_response::Payload;
use crate::proto::volt::SubscribeWireResponse;
use crate::protocol::wire_chunk;
use crate::transport::Arrival;
use crate::{Error, ErrorKind, Result};

const SUBSCRIBE: &str = "/tdx.volt_api.volt.v1.WireAPI/SubscribeWire";
const PUBLISH: &str = "/tdx.volt_api.volt.v1.WireAPI/PublishWire";

impl VoltClient {
    /// Subscribes to a wire: a [`Stream`] of each chunk published from now on, as bytes.
    ///
    /// ```no_run
    /// use futures_util::StreamExt as _;
    ///
    /// # async fn demo(client: tdx_volt::VoltClient) -> tdx_volt::Result<()> {
    /// let mut chunks = client.subscribe_wire_chunks("my-wire-id").await?;
    /// while let Some(chunk) = chunks.next().await {
    ///     println!("{} bytes", chunk?.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_wire_chunks(&self, wire_id: &str) -> Result<WireChunks> {
        let call = self
            .streaming(SUBSCRIBE, Some(json!({ "wire_id": wire_id })))
            .await?;
        Ok(WireChunks { call })
    }

    /// Starts publishing to a wire; send chunks with [`WirePublisher::send`] and end with
    /// [`WirePublisher::finish`].
    pub async fn publish_wire_chunks(&self, wire_id: &str) -> Result<WirePublisher> {
        let call = self
            .streaming(PUBLISH, Some(json!({ "wire_id": wire_id })))
            .await?;
        Ok(WirePublisher { call })
    }
}

/// The chunks of a wire subscription, decoded. Made by
/// [`VoltClient::subscribe_wire_chunks`]; dropping it ends the subscription.
///
/// Yields `Ok(bytes)` per chunk and `Err` for an error the Volt reports; the stream is over
/// when the subscription ends.
#[derive(Debug)]
#[must_use = "dropping a subscription cancels it"]
pub struct WireChunks {
    call: Call,
}

impl WireChunks {
    /// Asks the Volt to stop the subscription; the stream then ends.
    pub async fn stop(&self) -> Result<()> {
        self.call.send(json!({ "stop": true })).await
    }

    /// The underlying call.
    pub fn call(&self) -> &Call {
        &self.call
    }
}

impl Stream for WireChunks {
    type Item = Result<Vec<u8>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let arrival = match self.call.poll_arrival(cx) {
                Poll::Ready(Some(arrival)) => arrival,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            let event = match arrival {
                // gRPC's chunks are read straight from protobuf: no base64, no JSON.
                Arrival::Encoded(encoded) => {
                    match self.call.decode_as::<SubscribeWireResponse>(encoded) {
                        Ok(response) => match response.payload {
                            Some(Payload::Chunk(chunk)) => return Poll::Ready(Some(Ok(chunk))),
                            Some(Payload::Status(status)) => match self.call.status_error(status) {
                                Some(error) => return Poll::Ready(Some(Err(error))),
                                None => continue,
                            },
                            None => continue,
                        },
                        Err(event) => event,
                    }
                }
                // The gateway's chunks: base64 read straight from the JSON text when the
                // response is a chunk alone.
                Arrival::Json(text) => match wire_chunk::from_json(&text) {
                    Some(chunk) => return Poll::Ready(Some(Ok(chunk))),
                    None => self.call.decoded_json(&text),
                },
                Arrival::Event(event) => event,
            };
            match event {
                CallEvent::Data(message) => match message.get("chunk") {
                    Some(chunk) => return Poll::Ready(Some(decode_chunk(chunk))),
                    // A response without a chunk (an empty status) carries nothing to yield.
                    None => continue,
                },
                CallEvent::Error(e) | CallEvent::Failed(e) => return Poll::Ready(Some(Err(e))),
                CallEvent::End => return Poll::Ready(None),
            }
        }
    }
}

fn decode_chunk(chunk: &Value) -> Result<Vec<u8>> {
    let text = chunk
        .as_str()
        .ok_or_else(|| Error::new(ErrorKind::Protocol, "a wire chunk is not a base64 string"))?;
    decode_base64(text)
}

fn decode_base64(text: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| {
            Error::new(ErrorKind::Protocol, "a wire chunk is not valid base64").with_source(e)
        })
}

/// Publishes chunks to a wire. Made by [`VoltClient::publish_wire_chunks`]. Dropping it
/// without [`finish`](WirePublisher::finish) cancels the publication.
#[derive(Debug)]
#[must_use = "dropping a publisher without finish cancels the publication"]
pub struct WirePublisher {
    call: Call,
}

impl WirePublisher {
    /// Publishes one chunk.
    pub async fn send(&self, chunk: &[u8]) -> Result<()> {
        if self.call.carries_protobuf() {
            // Straight to protobuf: no base64, no JSON, one copy.
            return self.call.send_encoded(publish_request(chunk)).await;
        }
        self.call.send_json_text(wire_chunk::to_json(chunk)).await
    }

    /// Ends the publication and waits for the Volt to confirm it, reporting any error.
    pub async fn finish(mut self) -> Result<()> {
        self.call.end().await?;
        while let Some(event) = self.call.next().await {
            match event {
                CallEvent::Data(_) => {}
                CallEvent::Error(e) | CallEvent::Failed(e) => return Err(e),
                CallEvent::End => return Ok(()),
            }
        }
        Ok(())
    }
}

/// A `PublishWireRequest` carrying `chunk` alone, encoded (what prost would make of it,
/// without first copying the chunk into the message).
fn publish_request(chunk: &[u8]) -> bytes::Bytes {
    use prost::encoding::{encode_key, encode_varint, WireType};
    const CHUNK_FIELD: u32 = 2;
    let mut buf = Vec::with_capacity(chunk.len() + 11);
    if !chunk.is_empty() {
        encode_key(CHUNK_FIELD, WireType::LengthDelimited, &mut buf);
        encode_varint(chunk.len() as u64, &mut buf);
        buf.extend_from_slice(chunk);
    }
    buf.into()
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::proto::volt::PublishWireRequest;

    #[test]
    fn publish_requests_encode_as_prost_would() {
        for chunk in [&b""[..], b"x", &[7u8; 300], &[1u8; 70_000]] {
            let expected = PublishWireRequest {
                chunk: chunk.to_vec(),
                ..PublishWireRequest::default()
            }
            .encode_to_vec();
            assert_eq!(
                &publish_request(chunk)[..],
                &expected[..],
                "{} bytes",
                chunk.len()
            );
        }
    }
}
