//! The emulator's two ways in: the websocket gateway (protocol v1, or the older JSON text
//! protocol for an RSA-era Volt) and native gRPC.

mod gateway;
pub mod grpc;
pub mod legacy_websocket;
pub mod outgoing;
pub(crate) mod preface;
pub mod websocket;
