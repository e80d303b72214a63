//! `volt auth`: Authenticate, and keep the session in the configuration file.

use serde_json::json;
use tdx_volt::client::Authentication;

use super::Context;
use crate::args::IdentityArg;
use crate::exit::Failure;

/// Asks the Volt for a session (waiting while the decision is pending) and saves what it
/// grants into the configuration file. Prints the session and identity, never a key or
/// certificate.
pub async fn run(cx: &Context, name: Option<String>, identity: IdentityArg) -> Result<(), Failure> {
    let client = cx.connect().await?;
    let mut authentication = match identity {
        IdentityArg::Default => Authentication::new(),
        IdentityArg::SessionOnly => Authentication::session_only(),
        IdentityArg::VoltDid => Authentication::volt_did(),
        IdentityArg::OwnDid => Authentication::own_did(),
    };
    if let Some(name) = name {
        authentication = authentication.client_name(name);
    }
    let granted = client.authenticate(authentication).await?;
    let config = cx.config_path().display().to_string();
    if cx.out.json {
        return cx.out.json_line(&json!({
            "session_id": granted.session_id(),
            "identity_did": granted.identity_did(),
            "certificate": granted.has_certificate(),
            "config": config,
        }));
    }
    let mut line = format!("authenticated: session {}", granted.session_id());
    if let Some(did) = granted.identity_did() {
        line.push_str(&format!(", identity {did}"));
    }
    if granted.has_certificate() {
        line.push_str(", with a client certificate");
    }
    line.push_str(&format!(" (saved in {config})"));
    cx.out.line(&line)
}
