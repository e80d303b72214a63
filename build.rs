//! Compiles `proto/` without protoc: protox parses the files into a descriptor set, which is
//! embedded for runtime reflection (JSON <-> protobuf, the method table) and handed to
//! prost-build for the typed messages under `tdx_volt::proto`.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("proto");
    println!("cargo:rerun-if-changed=proto");

    let mut files = Vec::new();
    collect_protos(root, &mut files)?;
    files.sort();
    let relative: Vec<PathBuf> = files
        .iter()
        .map(|p| p.strip_prefix(root).map(Path::to_path_buf))
        .collect::<Result<_, _>>()?;

    let descriptors = protox::compile(&relative, [root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let encoded = prost::Message::encode_to_vec(&descriptors);
    std::fs::write(out_dir.join("volt_descriptor.bin"), encoded)?;

    std::fs::write(
        out_dir.join("client_methods.rs"),
        client_methods(&descriptors),
    )?;

    prost_build::Config::new()
        .out_dir(&out_dir)
        .enable_type_names()
        .compile_fds(descriptors)?;
    Ok(())
}

/// Generates one `VoltClient` method per RPC of the API, named as the official clients name
/// them (the RPC name in snake_case; `SqliteDatabaseAPI/Execute` is `sql_execute`, and
/// `VoltAPI/Authenticate` is `authenticate_once`, beside the full flow), plus the
/// table of those names for the completeness test.
fn client_methods(set: &prost_types::FileDescriptorSet) -> String {
    let mut methods = String::new();
    let mut table = String::new();
    for file in &set.file {
        let package = file.package();
        for (s, service) in file.service.iter().enumerate() {
            for (m, method) in service.method.iter().enumerate() {
                let path = format!("/{package}.{}/{}", service.name(), method.name());
                let name = match (service.name(), method.name()) {
                    ("SqliteDatabaseAPI", "Execute") => "sql_execute".to_owned(),
                    // `authenticate` is the whole flow (polling, saving the grant).
                    ("VoltAPI", "Authenticate") => "authenticate_once".to_owned(),
                    (_, rpc) => snake_case(rpc),
                };
                let input = method.input_type().trim_start_matches('.');
                let output = method.output_type().trim_start_matches('.');
                let comment = leading_comment(file, &[6, s as i32, 2, m as i32]);
                let (client, server) = (method.client_streaming(), method.server_streaming());
                let kind = match (client, server) {
                    (false, false) => "unary",
                    (false, true) => "server streaming",
                    (true, false) => "client streaming",
                    (true, true) => "bidirectional streaming",
                };
                let mut doc = String::new();
                for line in comment.lines() {
                    doc.push_str(&format!(
                        "    ///{}{}\n",
                        if line.is_empty() { "" } else { " " },
                        line
                    ));
                }
                if !comment.is_empty() {
                    doc.push_str("    ///\n");
                }
                doc.push_str(&format!(
                    "    /// `{path}` ({kind}): requests are `{input}`, responses `{output}`, in \
                     proto3 JSON.\n"
                ));
                let body = if !client && !server {
                    format!(
                        "{doc}    pub async fn {name}(&self, request: serde_json::Value) -> \
                         crate::Result<serde_json::Value> {{\n        \
                         self.unary(\"{path}\", request).await\n    }}\n\n"
                    )
                } else if !client {
                    format!(
                        "{doc}    ///\n    /// The client side ends after `request`, as in the official \
                         clients.\n    pub async fn {name}(&self, request: serde_json::Value) -> \
                         crate::Result<crate::client::Call> {{\n        \
                         self.streaming(\"{path}\", Some(request)).await\n    }}\n\n"
                    )
                } else {
                    format!(
                        "{doc}    ///\n    /// `request`, when given, is the first message; send more with \
                         [`Call::send`](crate::client::Call::send).\n    pub async fn {name}(\
                         &self, request: impl Into<Option<serde_json::Value>>) -> \
                         crate::Result<crate::client::Call> {{\n        \
                         self.streaming(\"{path}\", request.into()).await\n    }}\n\n"
                    )
                };
                methods.push_str(&body);
                table.push_str(&format!("    (\"{name}\", \"{path}\"),\n"));
            }
        }
    }
    format!(
        "// Generated by build.rs from proto/: one method per RPC.\n\n\
         impl crate::client::VoltClient {{\n{methods}}}\n\n\
         /// Every generated method: its name and the RPC path it calls.\n\
         #[cfg(test)]\n\
         pub(crate) const GENERATED: &[(&str, &str)] = &[\n{table}];\n"
    )
}

/// The comment written above a declaration, if any.
fn leading_comment(file: &prost_types::FileDescriptorProto, path: &[i32]) -> String {
    file.source_code_info
        .as_ref()
        .and_then(|info| info.location.iter().find(|l| l.path == path))
        .map(|l| {
            l.leading_comments()
                .lines()
                .map(|line| line.strip_prefix(' ').unwrap_or(line).trim_end().to_owned())
                .collect::<Vec<_>>()
                .join("\n")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// `GetResourceAncestors` -> `get_resource_ancestors`, `ImportCSV` -> `import_csv`,
/// `SearchDIDRegistry` -> `search_did_registry`.
fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                out.push('_');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
