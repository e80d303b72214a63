//! The opt-in check of each caller ([`HostOptions::check_callers`](super::HostOptions)): the
//! host asks the Volt (`CanAccessResource`, with the caller's own token) whether the caller
//! has an access on the service it called, before the application sees the call. It fails
//! closed: a denial, an undecided answer, a call that names no service, or a Volt that does
//! not answer all refuse the call with `PERMISSION_DENIED` (or `UNAVAILABLE`).

use serde_json::json;
use tokio::sync::mpsc::{self, error::TrySendError};

use super::invocation::{status, Invocation};
use crate::client::VoltClient;
use crate::Status;

const PERMISSION_DENIED: i32 = 7;
const RESOURCE_EXHAUSTED: i32 = 8;
const UNAVAILABLE: i32 = 14;

/// What to ask of the Volt about each caller.
#[derive(Clone)]
pub(super) struct CallerCheck {
    pub client: VoltClient,
    /// The access the caller needs on the service, `volt:resource-invoke` say.
    pub access: String,
}

impl CallerCheck {
    /// Whether the Volt permits the caller of `invocation` the access on its service.
    async fn allows(&self, invocation: &Invocation) -> Result<(), Status> {
        if invocation.service_id().is_empty() {
            return Err(status(
                PERMISSION_DENIED,
                "the call names no service, so the caller's access cannot be checked",
            ));
        }
        let asked = self
            .client
            .can_access_resource(json!({
                "token": invocation.raw_token(),
                "resource_id": invocation.service_id(),
                "access": self.access,
            }))
            .await;
        match asked {
            Ok(answer) if answer["decision"] == "POLICY_DECISION_PERMIT" => Ok(()),
            Ok(_) => Err(status(
                PERMISSION_DENIED,
                format!("the caller may not {} this service", self.access),
            )),
            Err(e) => {
                tracing::debug!(%e, "volt host: a caller's access could not be checked");
                Err(status(
                    UNAVAILABLE,
                    "the caller's access could not be checked with the Volt",
                ))
            }
        }
    }
}

/// Hands a started call to the application, after the caller check when there is one (in a
/// task of its own, so that the dispatcher never waits on the Volt).
pub(super) async fn deliver(
    check: Option<&CallerCheck>,
    to: &mpsc::Sender<Invocation>,
    invocation: Invocation,
) {
    let Some(check) = check.cloned() else {
        return hand_over(to, invocation).await;
    };
    let to = to.clone();
    tokio::spawn(async move {
        match check.allows(&invocation).await {
            Ok(()) => hand_over(&to, invocation).await,
            Err(refusal) => {
                let _ = invocation.finish(Err(refusal)).await;
            }
        }
    });
}

async fn hand_over(to: &mpsc::Sender<Invocation>, invocation: Invocation) {
    match to.try_send(invocation) {
        Ok(()) => {}
        Err(TrySendError::Full(invocation) | TrySendError::Closed(invocation)) => {
            // Finished here, so that its drop sends nothing more.
            let _ = invocation
                .finish(Err(status(
                    RESOURCE_EXHAUSTED,
                    "the service has too many calls waiting",
                )))
                .await;
        }
    }
}
