#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod call;
pub mod clients;
pub mod fault;
pub mod files;
pub mod identity;
pub mod issue;
pub mod proto_json;
pub mod server;
pub mod services;
pub mod snapshot_file;
pub mod tls;
pub mod transport;

pub use identity::{Era, VoltIdentity};
pub use server::{issue_client_file, issue_client_file_as, Emulator, EmulatorBuilder};
pub use services::invoke::TunnelFault;
pub use services::{AuthenticatePolicy, ConnectionCounts};
