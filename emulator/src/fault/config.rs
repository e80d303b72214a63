//! Pointing a client configuration at fault proxies.

use std::net::SocketAddr;

use serde_json::Value;

/// A copy of a client configuration (the JSON the emulator writes) whose client goes through
/// the proxies given: `grpc` replaces `volt.address` (host:port), `gateway` the host and port
/// of `volt.http_address` (its scheme is kept). TLS still verifies: the proxies listen on
/// `127.0.0.1`, which the emulator's certificate names. The rest is unchanged.
pub fn route_config_through(
    config: &Value,
    grpc: Option<SocketAddr>,
    gateway: Option<SocketAddr>,
) -> tdx_volt::Result<Value> {
    let bad = |what: &str| tdx_volt::Error::new(tdx_volt::ErrorKind::Config, what.to_owned());
    let mut routed = config.clone();
    let volt = routed
        .get_mut("volt")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| bad("the configuration has no \"volt\" object"))?;
    if let Some(proxy) = grpc {
        volt.insert("address".to_owned(), Value::String(proxy.to_string()));
    }
    if let Some(proxy) = gateway {
        let scheme = match volt.get("http_address").and_then(Value::as_str) {
            Some(old) => old
                .split_once("://")
                .map(|(scheme, _)| scheme.to_owned())
                .ok_or_else(|| bad("volt.http_address has no scheme"))?,
            None => "https".to_owned(),
        };
        volt.insert(
            "http_address".to_owned(),
            Value::String(format!("{scheme}://{proxy}")),
        );
    }
    Ok(routed)
}
