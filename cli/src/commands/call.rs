//! `volt call METHOD [JSON|-]`: any RPC of the API.

use futures_util::StreamExt as _;
use serde_json::Value;
use tdx_volt::client::CallEvent;
use tdx_volt::protocol::schema::{methods, Method};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _};

use super::{interrupted, Context};
use crate::exit::{Failure, LOCAL_IO};

/// Calls `method`: a unary method prints its response; a streaming one prints each response
/// as a JSON line, and sends each JSON line of stdin (when it takes more than one request).
/// With `keep_open`, the end of stdin does not end the caller's side of the call.
pub async fn run(
    cx: &Context,
    method: &str,
    request: Option<&str>,
    keep_open: bool,
) -> Result<(), Failure> {
    let method = resolve(method)?;
    let kind = method.kind();
    if !kind.client_streams() && !kind.server_streams() {
        let request = match request {
            Some("-") => parse(&read_stdin().await?, "stdin")?,
            Some(text) => parse(text, "the request")?,
            None => Value::Object(Default::default()),
        };
        let client = cx.connect().await?;
        let response = client.unary(method.path(), request).await?;
        return cx.out.value(&response);
    }
    // Streaming: the argument, if any, is the first request. A method that takes more than
    // one request reads the rest from stdin, as JSON lines, and ends its side of the call at
    // the end of stdin (with --keep-open, only when the Volt ends the call or on Ctrl-C).
    let first = match request {
        Some("-") if !kind.client_streams() => Some(parse(&read_stdin().await?, "stdin")?),
        Some("-") => None,
        Some(text) => Some(parse(text, "the request")?),
        None if kind.client_streams() => None,
        None => Some(Value::Object(Default::default())),
    };
    let client = cx.connect().await?;
    let mut call = client.streaming(method.path(), first).await?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut reading = kind.client_streams();
    let mut reported: Option<Failure> = None;
    let mut line_number = 0u64;
    let stop = interrupted();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            // Ctrl-C: the call is dropped, which cancels it on the wire.
            () = &mut stop => break,
            line = lines.next_line(), if reading => match line {
                Ok(Some(line)) => {
                    line_number += 1;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let message = parse(&line, &format!("stdin line {line_number}"))?;
                    call.send(message).await?;
                }
                Ok(None) => {
                    reading = false;
                    if !keep_open {
                        call.end().await?;
                    }
                }
                Err(e) => return Err(Failure::new(LOCAL_IO, format!("reading stdin: {e}"))),
            },
            event = call.next() => match event {
                Some(CallEvent::Data(message)) => cx.out.json_line(&message)?,
                // The Volt reported an error and the call goes on: say so, fail at the end.
                Some(CallEvent::Error(e)) => {
                    let failure = Failure::from(e);
                    crate::output::note(&failure.line(cx.out.json));
                    reported = Some(failure);
                }
                Some(CallEvent::Failed(e)) => return Err(e.into()),
                Some(CallEvent::End) | None => break,
                Some(_) => {}
            },
        }
    }
    match reported {
        // Already printed: exit with its code and no second line.
        Some(failure) => Err(Failure {
            message: String::new(),
            ..failure
        }),
        None => Ok(()),
    }
}

/// The method a name means: a full path (`/pkg.Service/Method`), `Service/Method`, or a
/// method name alone (`GetResource` or `get_resource`) when only one service has it.
pub fn resolve(name: &str) -> Result<&'static Method, Failure> {
    let table = methods();
    if name.starts_with('/') {
        return table
            .get(name)
            .ok_or_else(|| Failure::usage(format!("unknown method {name}")));
    }
    let squash = |s: &str| s.replace('_', "").to_ascii_lowercase();
    let (service, wanted) = match name.rsplit_once('/') {
        Some((service, method)) => (Some(service), squash(method)),
        None => (None, squash(name)),
    };
    let found: Vec<&Method> = table
        .iter()
        .filter(|m| squash(m.name()) == wanted)
        .filter(|m| {
            service.is_none_or(|s| m.service() == s || m.service().ends_with(&format!(".{s}")))
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(Failure::usage(format!(
            "unknown method {name} (give Service/Method or the full path)"
        ))),
        many => Err(Failure::usage(format!(
            "{name} is ambiguous: {}",
            many.iter().map(|m| m.path()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn parse(text: &str, what: &str) -> Result<Value, Failure> {
    serde_json::from_str(text).map_err(|e| Failure::usage(format!("{what} is not JSON: {e}")))
}

async fn read_stdin() -> Result<String, Failure> {
    let mut text = String::new();
    tokio::io::stdin()
        .read_to_string(&mut text)
        .await
        .map_err(|e| Failure::new(LOCAL_IO, format!("reading stdin: {e}")))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_resolve_by_name_service_or_path() {
        let path = "/tdx.volt_api.volt.v1.VoltAPI/GetResource";
        for name in [path, "GetResource", "get_resource", "VoltAPI/GetResource"] {
            assert_eq!(resolve(name).map(|m| m.path()).ok(), Some(path), "{name}");
        }
        assert_eq!(
            resolve("SqliteDatabaseAPI/Execute").map(|m| m.path()).ok(),
            Some("/tdx.volt_api.data.v1.SqliteDatabaseAPI/Execute")
        );
        assert_eq!(
            resolve("NoSuchMethod").unwrap_err().code,
            crate::exit::USAGE
        );
    }
}
