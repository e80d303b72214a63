//! The Volt protocol, sans-IO: configuration, keys, identity tokens, the API schema, and the
//! websocket gateway's frame codec and per-call encryption. Nothing here opens a socket, so
//! clients, the emulator, tests and fuzzers all share it.

/// Defines a function that hands out a third-party type (an `ed25519-dalek` or
/// `x25519-dalek` key, a `prost-reflect` descriptor): public with the feature
/// `third-party-types`, for tests and servers built on these crates; crate-internal without it,
/// so that the default public API does not tie this crate's versions to theirs.
macro_rules! third_party_fn {
    ($(#[$meta:meta])* fn $name:ident $($rest:tt)*) => {
        #[cfg(feature = "third-party-types")]
        $(#[$meta])*
        pub fn $name $($rest)*

        #[cfg(not(feature = "third-party-types"))]
        #[allow(dead_code)]
        $(#[$meta])*
        pub(crate) fn $name $($rest)*
    };
}

pub mod body;
pub mod config;
pub(crate) mod error;
pub mod exchange;
pub mod frame;
pub mod grpc;
pub mod json_text;
pub mod keys;
#[cfg(feature = "legacy")]
pub mod legacy;
pub mod limits;
mod pbes2;
mod pem;
#[cfg(feature = "legacy")]
mod rsa_keys;
pub mod schema;
#[cfg(feature = "service-protos")]
pub mod service_protos;
pub(crate) mod status;
pub mod token;
pub mod tunnel;
pub mod wire_chunk;
