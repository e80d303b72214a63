//! # tdx-volt-emulator
//!
//! A local tdx Volt for development and tests, built on the `tdx-volt` protocol core.
//!
//! Work in progress (issue 3): this first part holds the Volt's persistent identity (signing
//! key, CA certificate, TLS server certificate) in a data directory. The gateways, services
//! and the `volt-emulator` binary follow.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod files;
pub mod identity;

pub use identity::VoltIdentity;
