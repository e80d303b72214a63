//! WireAPI: wires with fan-out to every subscriber.

use std::sync::Arc;

use crate::call::{Caller, Failure, Inbound, Outbound};

use super::Services;

/// The live wires of this Volt.
pub struct WireHub {}

impl WireHub {
    /// An empty hub.
    pub fn new() -> WireHub {
        WireHub {}
    }
}

/// Routes a WireAPI method.
pub async fn dispatch(
    _svc: &Arc<Services>,
    _caller: &Caller,
    name: &str,
    _inbound: Inbound,
    _outbound: &Outbound,
) -> Result<(), Failure> {
    Err(Failure::unimplemented(name))
}
