//! The transport-neutral shape of one call, shared by the websocket gateway and the gRPC server.
//!
//! A transport authenticates the caller, decodes each request to protobuf bytes of the method's
//! input type and feeds them to an [`Inbound`]; the handler answers through an [`Outbound`] and
//! returns `Ok(())` or a [`Failure`]. Handlers never see JSON, frames or HTTP/2, so the same
//! handler serves both transports with identical results.

use std::fmt;

use bytes::Bytes;
use prost::Message;
use tokio::sync::mpsc;

/// Requests buffered per call before the transport stops reading for that call.
pub const INBOUND_CAPACITY: usize = 256;
/// Responses buffered per call before the handler waits for the transport.
pub const OUTBOUND_CAPACITY: usize = 128;

/// Who is calling, as established by the transport (identity token or client certificate).
#[derive(Clone, Debug)]
pub struct Caller {
    /// The client id this emulator issued.
    pub client_id: String,
    /// The session the token named (or the certificate was issued for).
    pub session_id: String,
}

/// gRPC status codes used by the emulator (numbers are gRPC's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Code {
    /// The client went away.
    Cancelled = 1,
    /// The request is malformed.
    InvalidArgument = 3,
    /// A deadline passed.
    DeadlineExceeded = 4,
    /// The named thing does not exist.
    NotFound = 5,
    /// The thing to create exists already.
    AlreadyExists = 6,
    /// The caller may not do this.
    PermissionDenied = 7,
    /// A bounded resource is full.
    ResourceExhausted = 8,
    /// The operation does not fit the current state.
    FailedPrecondition = 9,
    /// The emulator does not implement this method.
    Unimplemented = 12,
    /// Something failed inside the emulator.
    Internal = 13,
    /// What the call needs is not there now (a service whose host is offline).
    Unavailable = 14,
    /// No valid identity was presented.
    Unauthenticated = 16,
}

impl Code {
    /// The numeric gRPC code.
    pub fn as_i32(self) -> i32 {
        self as i32
    }
}

/// How a call failed, and how the failure reaches the client.
///
/// A *reply* failure is the Volt's usual application error: the handler's last response is the
/// method's response message carrying only `status {code, message}`, and the call then ends
/// normally (the official clients turn the non-empty status message into an error event). An
/// *abort* failure ends the call itself: a gRPC status on gRPC, `method_end.error` on the
/// websocket gateway. Unimplemented methods and authentication failures abort.
#[derive(Clone, PartialEq, Eq)]
pub struct Failure {
    code: Code,
    message: String,
    abort: bool,
}

impl Failure {
    /// An application error delivered as the response's `status`.
    pub fn reply(code: Code, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            abort: false,
        }
    }

    /// A call-level error (gRPC status / `method_end.error`).
    pub fn abort(code: Code, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            abort: true,
        }
    }

    /// `NOT_FOUND` as a reply.
    pub fn not_found(message: impl Into<String>) -> Failure {
        Failure::reply(Code::NotFound, message)
    }

    /// `INVALID_ARGUMENT` as a reply.
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::reply(Code::InvalidArgument, message)
    }

    /// `PERMISSION_DENIED` as a reply.
    pub fn denied(message: impl Into<String>) -> Failure {
        Failure::reply(Code::PermissionDenied, message)
    }

    /// `INTERNAL` as a reply; `context` says what was being done.
    pub fn internal(context: &str, cause: impl fmt::Display) -> Failure {
        Failure::reply(Code::Internal, format!("{context}: {cause}"))
    }

    /// The call-level error for a method the emulator does not implement.
    pub fn unimplemented(path: &str) -> Failure {
        Failure::abort(
            Code::Unimplemented,
            format!("{path} is not implemented by volt-emulator"),
        )
    }

    /// The call-level error for a client that went away.
    pub fn cancelled() -> Failure {
        Failure::abort(Code::Cancelled, "the call was cancelled")
    }

    /// The status code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The status message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether this ends the call itself rather than replying with a status.
    pub fn is_abort(&self) -> bool {
        self.abort
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Failure({:?}, {:?}", self.code, self.message)?;
        if self.abort {
            f.write_str(", abort")?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.message, self.code.as_i32())
    }
}

impl std::error::Error for Failure {}

/// The requests of one call, as protobuf bytes of the method's input message.
pub struct Inbound {
    rx: mpsc::Receiver<Bytes>,
}

/// The transport's side of an [`Inbound`].
pub type InboundSender = mpsc::Sender<Bytes>;

impl Inbound {
    /// A bounded request channel: the transport keeps the sender and drops it when the client
    /// half-closes.
    pub fn channel() -> (InboundSender, Inbound) {
        let (tx, rx) = mpsc::channel(INBOUND_CAPACITY);
        (tx, Inbound { rx })
    }

    /// The next request, or `None` once the client has ended its side.
    pub async fn next<M: Message + Default>(&mut self) -> Result<Option<M>, Failure> {
        match self.rx.recv().await {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// [`Inbound::next`] for handlers that run on a blocking thread (SQLite).
    pub fn blocking_next<M: Message + Default>(&mut self) -> Result<Option<M>, Failure> {
        match self.rx.blocking_recv() {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// [`Inbound::blocking_next`] that waits at most `idle`: a client silent that long gets
    /// `DEADLINE_EXCEEDED`, with `what` in the message. Off a runtime's blocking thread it
    /// waits without the bound.
    pub fn blocking_next_within<M: Message + Default>(
        &mut self,
        idle: std::time::Duration,
        what: &str,
    ) -> Result<Option<M>, Failure> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return self.blocking_next();
        };
        match runtime.block_on(tokio::time::timeout(idle, self.rx.recv())) {
            Ok(Some(bytes)) => decode(&bytes).map(Some),
            Ok(None) => Ok(None),
            Err(_) => Err(Failure::reply(
                Code::DeadlineExceeded,
                format!("{what}: the client was silent for {idle:?}"),
            )),
        }
    }
}

fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, Failure> {
    M::decode(bytes).map_err(|e| Failure::abort(Code::InvalidArgument, format!("bad request: {e}")))
}

/// The responses of one call; cloneable so that a handler can answer from several tasks.
#[derive(Clone)]
pub struct Outbound {
    tx: mpsc::Sender<Bytes>,
}

/// The transport's side of an [`Outbound`].
pub type OutboundReceiver = mpsc::Receiver<Bytes>;

impl Outbound {
    /// A bounded response channel: the transport keeps the receiver.
    pub fn channel() -> (Outbound, OutboundReceiver) {
        let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
        (Outbound { tx }, rx)
    }

    /// Sends one response, waiting while the transport's buffer is full. Fails with
    /// [`Failure::cancelled`] once the client has gone.
    pub async fn send<M: Message>(&self, message: &M) -> Result<(), Failure> {
        self.tx
            .send(Bytes::from(message.encode_to_vec()))
            .await
            .map_err(|_| Failure::cancelled())
    }

    /// [`Outbound::send`] for handlers that run on a blocking thread (SQLite).
    pub fn blocking_send<M: Message>(&self, message: &M) -> Result<(), Failure> {
        self.tx
            .blocking_send(Bytes::from(message.encode_to_vec()))
            .map_err(|_| Failure::cancelled())
    }

    /// Sends responses already encoded, in order, from a blocking thread (SQLite), emptying
    /// `batch`. It waits until the transport's buffer has room for a whole batch (up to
    /// [`OUTBOUND_CAPACITY`] at a time) rather than for each message, so a batch costs each
    /// side one wake-up instead of one a message.
    pub fn blocking_send_batch(&self, batch: &mut Vec<Bytes>) -> Result<(), Failure> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            for bytes in batch.drain(..) {
                self.tx
                    .blocking_send(bytes)
                    .map_err(|_| Failure::cancelled())?;
            }
            return Ok(());
        };
        while !batch.is_empty() {
            let n = batch.len().min(OUTBOUND_CAPACITY);
            let permits = runtime
                .block_on(self.tx.reserve_many(n))
                .map_err(|_| Failure::cancelled())?;
            for (permit, bytes) in permits.zip(batch.drain(..n)) {
                permit.send(bytes);
            }
        }
        Ok(())
    }

    /// Sends already-encoded response bytes.
    pub async fn send_encoded(&self, bytes: Bytes) -> Result<(), Failure> {
        self.tx.send(bytes).await.map_err(|_| Failure::cancelled())
    }

    /// Resolves when the client has gone and no response can be delivered any more.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}
