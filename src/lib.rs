//! # tdx-volt
//!
//! A Rust SDK for [tdx Volt](https://docs.tdxvolt.com): load the client configuration a Volt
//! issues, authenticate with identity tokens, and speak the Volt protocols.
//!
//! This release provides the protocol core, shared by every transport and by the local
//! emulator:
//!
//! - [`ClientConfig`]: the configuration JSON (unknown fields preserved, secrets redacted);
//! - [`PrivateKey`] / [`PublicKey`]: Ed25519 and RSA keys, encrypted PKCS#8 included;
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

#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "client")]
pub mod client;
mod error;
pub mod proto;
pub mod protocol;
#[cfg(feature = "client")]
mod transport;

#[cfg(feature = "client")]
pub use client::{Call, CallEvent, Transport, VoltClient, VoltClientBuilder};
pub use error::{Error, ErrorKind, Result, Status};
pub use protocol::config::ClientConfig;
pub use protocol::keys::{KeyAlgorithm, PrivateKey, PublicKey};

/// Compiles the README's code samples as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
