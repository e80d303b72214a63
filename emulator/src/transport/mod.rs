//! The emulator's two ways in: the websocket gateway and native gRPC.

pub mod grpc;
pub mod websocket;
