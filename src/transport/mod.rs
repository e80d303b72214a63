//! Transports: how calls reach a Volt. Each one (a folder here) turns calls (a method path,
//! JSON messages in, [`CallEvent`]s out) into its own wire protocol, behind one interface
//! ([`link`]); [`connect`] chooses among them. Nothing here knows of the client API above.

// With `client` but neither transport, the code the transports share has no user.
#![cfg_attr(not(any(feature = "grpc", feature = "websocket")), allow(dead_code))]

mod connect;
mod delivery;
#[cfg(feature = "grpc")]
mod grpc;
mod link;
mod net;
mod options;
mod reconnect;
mod tls;
mod trace;
#[cfg(feature = "websocket")]
mod websocket;

pub use delivery::CallEvent;
pub use options::Transport;
pub use reconnect::{
    ConnectionState, ReconnectPolicy, DEFAULT_RECONNECT_FACTOR, DEFAULT_RECONNECT_INITIAL,
    DEFAULT_RECONNECT_MAX,
};

pub(crate) use connect::open;
pub(crate) use delivery::{Arrival, EncodedResponse, Receivers, Unread};
pub(crate) use link::{CallIo, CallSpec, Link, Opened, RawOpened, ServiceRoute, ServiceSpec};
pub(crate) use options::ConnectOptions;
pub(crate) use reconnect::Supervisor;
pub(crate) use trace::{elapsed_us, transport_label};
