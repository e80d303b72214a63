//! The echo service of `examples/proto/echo.proto`, shared by the hosting examples: its
//! messages as prost types, its method paths, and its proto text (which the service resource
//! carries, so that any caller can build its descriptors).

#![allow(dead_code)]

/// The gRPC service's full name.
pub const SERVICE: &str = "tdx_volt.examples.echo.v1.Echo";
/// The unary method.
pub const ECHO: &str = "/tdx_volt.examples.echo.v1.Echo/Echo";
/// The bidirectional method.
pub const ECHO_STREAM: &str = "/tdx_volt.examples.echo.v1.Echo/EchoStream";
/// The service's proto file.
pub const PROTO: &str = include_str!("../proto/echo.proto");

/// `EchoRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub text: String,
}

/// `EchoResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoResponse {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(uint64, tag = "2")]
    pub sequence: u64,
}
