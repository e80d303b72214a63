//! Facts of the Volt's native gRPC API that clients and servers share: where the identity
//! token travels, which method needs no session, and (feature `grpc-codec`) the one codec that
//! carries every method as already-encoded protobuf bytes.

#[cfg(feature = "grpc-codec")]
mod codec;

#[cfg(feature = "grpc-codec")]
pub use codec::Encoded;

/// The metadata key that carries a call's identity token.
pub const TOKEN_METADATA: &str = "volt-token";

/// The method a client calls to obtain a session; its token is checked against the key its
/// request presents rather than a known client.
pub const AUTHENTICATE_PATH: &str = "/tdx.volt_api.volt.v1.VoltAPI/Authenticate";
