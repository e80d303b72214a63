//! How a host's answers reach the Volt: the session's live Connect call.

use super::wire;
use crate::client::session::Session;
use crate::proto::volt::InvokeResponse;
use crate::Result;

/// How the host's answers reach the Volt: the session's live Connect call.
#[derive(Clone)]
pub(super) struct Outgoing {
    session: Session,
}

impl Outgoing {
    pub(super) fn new(session: Session) -> Outgoing {
        Outgoing { session }
    }

    /// Sends one `invoke_response`, waiting while the call's queue is full.
    pub(super) async fn send(&self, response: InvokeResponse) -> Result<()> {
        self.session.send(wire::invoke_response(response)?).await
    }

    /// Sends one `invoke_response` from where no one can wait (a drop).
    pub(super) fn send_later(&self, response: InvokeResponse) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let outgoing = self.clone();
        runtime.spawn(async move {
            let _ = outgoing.send(response).await;
        });
    }
}
