//! Transports: how calls reach a Volt. Each one (a folder here) turns calls (a method path,
//! JSON messages in, [`CallEvent`]s out) into its own wire protocol, behind one interface
//! ([`link`]); [`connect`] chooses among them. Nothing here knows of the client API above.

mod connect;
mod delivery;
mod grpc;
mod link;
mod net;
mod tls;
mod websocket;

pub use connect::Transport;
pub use delivery::CallEvent;

pub(crate) use connect::{open, ConnectOptions};
pub(crate) use delivery::{Receivers, Unread};
pub(crate) use link::{CallIo, CallSpec, Link, Opened};
