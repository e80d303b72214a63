//! # tdx-volt
//!
//! A Rust SDK for [tdx Volt](https://docs.tdxvolt.com): load the client configuration a Volt
//! issues, connect, and call any method of the Volt API from async Rust.
//!
//! ```no_run
//! use serde_json::json;
//! use tdx_volt::VoltClient;
//!
//! # async fn demo() -> tdx_volt::Result<()> {
//! let client = VoltClient::from_file("client.config.json").await?;
//! let volt = client.get_resource(json!({"resource_id": client.volt_id()})).await?;
//! let rows = client
//!     .sql_execute_json(json!({"database_id": "...", "statement": "SELECT 1 AS one"}))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! - [`VoltClient`] (feature `client`, turned on by the default transports `grpc` and
//!   `websocket`): every RPC as a method; unary ones return proto3 JSON, streaming ones a
//!   [`Call`]; over native gRPC or the websocket gateway ([`Transport`]), with the same values
//!   either way; Authenticate and mutual TLS. See [`client`]. RSA-era Volts need the opt-in
//!   feature `legacy`; a build missing what a configuration needs fails with
//!   [`ErrorKind::Unsupported`]. The README lists every feature.
//! - [`Error`]: one error type with an [`ErrorKind`], predicates and the Volt [`Status`].
//!
//! The protocol core below it is sans-IO and usable alone (`default-features = false`):
//!
//! - [`ClientConfig`]: the configuration JSON (unknown fields preserved, secrets redacted);
//! - [`PrivateKey`] / [`PublicKey`]: Ed25519 and (feature `legacy`) RSA keys, encrypted PKCS#8
//!   included;
//! - [`protocol::token`]: EdDSA and RS256 identity tokens, signing and verification;
//! - [`protocol::schema`]: the whole Volt API (every RPC and message) with proto3 JSON mapping;
//! - [`protocol::frame`], [`protocol::exchange`], [`protocol::body`]: the websocket gateway's
//!   protocol v1, for both client and server.
//!
//! ```
//! use tdx_volt::protocol::schema::{methods, MethodKind};
//!
//! let m = methods().lookup("/tdx.volt_api.volt.v1.VoltAPI/GetResource")?;
//! assert_eq!(m.kind(), MethodKind::Unary);
//! # Ok::<(), tdx_volt::Error>(())
//! ```
//!
//! ## Tracing
//!
//! The client reports through [`tracing`](https://docs.rs/tracing), at `debug` level, under
//! stable targets (select them with an `EnvFilter`, e.g. `RUST_LOG=tdx_volt::call=debug`):
//!
//! - `tdx_volt::call`: a span `volt.call` per call (unary, streaming, to hosted services), with
//!   `method` (the full path), `transport` (`grpc`, `tunnel`, `websocket`, `legacy`),
//!   `call_id` (the gateway's id; none over gRPC), and when it ends `status` (`ok`, the
//!   status code's name such as `NOT_FOUND`, the error's kind such as `timeout`, or
//!   `cancelled` for a call dropped before its end), `code` (the Volt's status code) and
//!   `elapsed_us`.
//! - `tdx_volt::connect`: a span `volt.connect` per connection attempt, with `transport`,
//!   `address` (`host:port`), `attempt`, `reconnect`, and when it ends `outcome`
//!   (`connected`, `failed`, `cancelled`), `error` and `elapsed_us`; events for a lost
//!   connection and for each backoff (`delay_ms`, `failures`).
//!
//! Other events (sessions, hosting, sync, frames skipped) are at `debug` under their module
//! paths (`tdx_volt::client::...`, `tdx_volt::transport::...`). No span or event holds a
//! token, a key, a passphrase or a message body. Disabled spans cost a check: nothing is
//! timed or formatted. The README's "Tracing" section shows a subscriber.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "client")]
pub mod client;
pub mod proto;
pub mod protocol;
#[cfg(feature = "client")]
mod transport;

#[cfg(feature = "client")]
pub use client::{
    Call, CallEvent, ConnectionState, ReconnectPolicy, ResourceEventKind, Session, SessionEvent,
    SessionEvents, SessionOptions, SessionState, Transport, VoltClient, VoltClientBuilder,
};
pub use protocol::config::ClientConfig;
pub use protocol::error::{Error, ErrorKind, Reached, Result};
pub use protocol::keys::{KeyAlgorithm, PrivateKey, PublicKey};
pub use protocol::status::Status;
/// The yrs version [`VoltClient::sync_document`] takes documents of.
#[cfg(feature = "sync")]
pub use yrs;

/// Compiles the README's code samples as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
