//! What a caller chooses about connecting: the transport, and the settings every transport
//! takes. Below both the choice of transport and the transports themselves.

use std::sync::Arc;
use std::time::Duration;

use super::reconnect::Supervisor;

/// Which protocol carries the calls. Each is a cargo feature: [`Grpc`](Self::Grpc) `grpc`,
/// [`Websocket`](Self::Websocket) `websocket`, [`LegacyWebsocket`](Self::LegacyWebsocket)
/// `websocket` and `legacy`. [`Auto`](Self::Auto) picks among those the build has; asking for
/// one it leaves out fails to connect with [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// Native gRPC when the configuration has a gRPC endpoint: the Volt's (`volt.address`),
    /// or, when it names a relay, the relay's (`volt.relay.address`), through which each call
    /// is tunnelled; the websocket gateway otherwise, and also when the gRPC endpoint cannot be
    /// reached (refused, unreachable, or silent for the connect timeout) but the gateway can.
    /// With an RSA credential key (an RSA-era configuration) it is the gateway in the older
    /// protocol ([`LegacyWebsocket`](Self::LegacyWebsocket)) whenever there is a gateway.
    /// [`VoltClient::transport`](crate::VoltClient::transport) tells which was chosen.
    #[default]
    Auto,
    /// The websocket gateway (`volt.http_address`, or the relay): protocol v1, or the older
    /// protocol when the credential key is RSA (see [`LegacyWebsocket`](Self::LegacyWebsocket)).
    Websocket,
    /// Native gRPC (`volt.address`) over one HTTP/2 connection, with mutual TLS when the
    /// credential has a certificate. With a relay (`volt.relay.address`) the connection goes
    /// to the relay and every call, of any shape, is tunnelled through `VoltAPI/Invoke`,
    /// end-to-end encrypted with the Volt: its key exchange is checked against the Volt's key
    /// before anything of the call leaves. The methods, responses and errors are the same;
    /// a failure of the tunnel itself is [`ErrorKind::Tunnel`](crate::ErrorKind::Tunnel).
    Grpc,
    /// The websocket gateway of an RSA-era Volt, in the older protocol its clients (the Python
    /// `volt_client_web` 0.1.x) speak: JSON text frames, and each call's AES key sent
    /// RSA-encrypted to the Volt in an RS256 identity token. Needs an RSA credential key and an
    /// RSA Volt key. [`Auto`](Self::Auto) and [`Websocket`](Self::Websocket) choose it by
    /// themselves when the credential key is RSA; the API, calls and errors are the same.
    LegacyWebsocket,
}

/// How to connect, as the client's settings say (kept to connect again after Authenticate).
#[derive(Debug, Clone)]
pub(crate) struct ConnectOptions {
    /// The transport asked for.
    pub transport: Transport,
    /// Bound on each step of connecting.
    pub connect_timeout: Duration,
    /// Ping after this long without traffic.
    pub keepalive: Duration,
    /// Largest message sent.
    pub max_message_len: usize,
    /// Unread responses a call may hold.
    pub call_buffer: usize,
    /// Also trust the public web PKI.
    pub public_roots: bool,
    /// When to connect again, and the connection's state (shared by every connection the
    /// client makes, Authenticate's included).
    pub supervisor: Arc<Supervisor>,
}

/// The error for something this build's cargo features leave out: `what` needs the feature(s)
/// `feature` of tdx-volt.
#[allow(dead_code)] // builds with every transport
pub(crate) fn left_out(what: &str, feature: &str) -> crate::Error {
    crate::Error::unsupported(format!(
        "{what} needs the cargo feature `{feature}` of tdx-volt, which this build leaves out"
    ))
}
