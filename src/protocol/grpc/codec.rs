//! The pass-through codec: messages cross tonic as protobuf bytes, encoded and decoded around
//! it with the method's descriptors, so one codec serves every method.

use bytes::{Buf as _, BufMut as _, Bytes};
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// The buffer each call's encoder and decoder start with. tonic's default (8 KiB each) is
/// held by every open call, idle or not. The buffers grow to the message when one is larger,
/// so a small start costs a large message nothing it would not cost anyway, and a request or
/// response of a few hundred bytes one reallocation.
const CALL_BUFFER: usize = 128;
/// tonic's default: how much is encoded before the encoder yields.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// Encoded protobuf messages in, encoded protobuf messages out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Encoded;

impl Codec for Encoded {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Encoded;
    type Decoder = Encoded;

    fn encoder(&mut self) -> Encoded {
        Encoded
    }

    fn decoder(&mut self) -> Encoded {
        Encoded
    }
}

impl Encoder for Encoded {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(CALL_BUFFER, YIELD_THRESHOLD)
    }
}

impl Decoder for Encoded {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(CALL_BUFFER, YIELD_THRESHOLD)
    }
}
