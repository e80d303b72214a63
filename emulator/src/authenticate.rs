//! VoltAPI/Authenticate: sessions, identity DIDs and client certificates.

use std::sync::Arc;

use crate::call::{Failure, Inbound, Outbound};
use crate::services::Services;

/// Answers one Authenticate call.
pub async fn handle(
    _svc: &Arc<Services>,
    _inbound: Inbound,
    _outbound: &Outbound,
) -> Result<(), Failure> {
    Err(Failure::unimplemented(
        "/tdx.volt_api.volt.v1.VoltAPI/Authenticate",
    ))
}
