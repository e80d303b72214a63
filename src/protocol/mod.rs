//! The Volt protocol, sans-IO: configuration, keys, identity tokens, the API schema, and the
//! websocket gateway's frame codec and per-call encryption. Nothing here opens a socket, so
//! clients, the emulator, tests and fuzzers all share it.

pub mod body;
pub mod config;
pub(crate) mod error;
pub mod exchange;
pub mod frame;
pub mod grpc;
pub mod keys;
pub mod legacy;
pub mod limits;
mod pbes2;
mod pem;
pub mod schema;
pub(crate) mod status;
pub mod token;
