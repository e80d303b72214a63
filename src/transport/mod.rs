//! Transports: how calls reach a Volt. Each one turns the client's calls (a method path, JSON
//! messages in, [`CallEvent`](crate::client::CallEvent)s out) into its own wire protocol.

pub(crate) mod grpc;
mod net;
pub(crate) mod tls;
pub(crate) mod websocket;
