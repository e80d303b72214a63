//! # tdx-volt-emulator
//!
//! A local tdx Volt for development and tests, built on the `tdx-volt` protocol core.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod authenticate;
pub mod call;
pub mod clients;
pub mod files;
pub mod identity;
pub mod services;

pub use identity::VoltIdentity;
