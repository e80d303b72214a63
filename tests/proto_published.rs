//! Compares our `proto/` transcription with the API definitions published in the official
//! gRPC client, `@tdxvolt/volt-client-grpc` (`src/volt-proto-literals.js`). The package is
//! installed at test time by `npm ci --prefix interop` (see README); it is never committed.
//!
//! Every service, method (types and streaming flags), message, field (name, number, type,
//! label, oneof) and enum value must be identical; any difference fails with a full list.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};
use tdx_volt::protocol::schema::descriptor_pool;

const LITERALS: &str = "interop/node_modules/@tdxvolt/volt-client-grpc/src/volt-proto-literals.js";

#[test]
fn our_protos_match_the_published_definitions() {
    let published = compile_published();
    let ours = describe(descriptor_pool());
    let theirs = describe(&published);

    let missing: Vec<_> = theirs.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&theirs).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "proto/ differs from the published definitions\n  missing or different in ours:\n    {}\n  not in the published ones:\n    {}",
        join(&missing),
        join(&extra)
    );

    let count = |prefix: &str| theirs.iter().filter(|l| l.starts_with(prefix)).count();
    let (services, methods) = (count("service "), count("method "));
    let (messages, fields) = (count("message "), count("field "));
    let (enums, values) = (count("enum "), count("value "));
    println!(
        "identical: {services} services, {methods} methods, {messages} messages, {fields} fields, {enums} enums, {values} enum values"
    );
    assert!(
        services >= 9 && methods >= 90,
        "suspiciously few: {services} services, {methods} methods"
    );
}

fn join(items: &[&String]) -> String {
    if items.is_empty() {
        return "(none)".into();
    }
    items
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join("\n    ")
}

/// Every fact of a pool that must match, one line each.
fn describe(pool: &DescriptorPool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for file in pool.files() {
        out.insert(format!(
            "file {} package {}",
            file.name(),
            file.package_name()
        ));
    }
    for service in pool.services() {
        out.insert(format!("service {}", service.full_name()));
        for m in service.methods() {
            out.insert(format!(
                "method /{}/{} ({}{}) returns ({}{})",
                service.full_name(),
                m.name(),
                if m.is_client_streaming() {
                    "stream "
                } else {
                    ""
                },
                m.input().full_name(),
                if m.is_server_streaming() {
                    "stream "
                } else {
                    ""
                },
                m.output().full_name(),
            ));
        }
    }
    for message in pool.all_messages() {
        describe_message(&message, &mut out);
    }
    for e in pool.all_enums() {
        out.insert(format!("enum {}", e.full_name()));
        for v in e.values() {
            out.insert(format!(
                "value {}.{} = {}",
                e.full_name(),
                v.name(),
                v.number()
            ));
        }
    }
    out
}

fn describe_message(message: &MessageDescriptor, out: &mut BTreeSet<String>) {
    out.insert(format!("message {}", message.full_name()));
    for field in message.fields() {
        let kind = match field.kind() {
            Kind::Message(m) => format!("message {}", m.full_name()),
            Kind::Enum(e) => format!("enum {}", e.full_name()),
            other => format!("{other:?}"),
        };
        let oneof = field
            .containing_oneof()
            .map(|o| format!(" oneof {}", o.name()))
            .unwrap_or_default();
        out.insert(format!(
            "field {}.{} = {} {:?} {kind}{oneof}{}",
            message.full_name(),
            field.name(),
            field.number(),
            field.cardinality(),
            if field.field_descriptor_proto().proto3_optional() {
                " proto3_optional"
            } else {
                ""
            },
        ));
    }
}

/// Extracts the published .proto texts and compiles them with protox.
fn compile_published() -> DescriptorPool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let literals = root.join(LITERALS);
    let js = std::fs::read_to_string(&literals).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); install the official packages first: npm ci --prefix interop",
            literals.display()
        )
    });
    let files = extract_literals(&js);
    assert!(
        files.len() >= 19,
        "found only {} proto literals",
        files.len()
    );

    let dir = scratch_dir();
    let mut names = Vec::new();
    for (name, text) in &files {
        let rel = proto_path(name, text);
        let path = dir.join(&rel);
        std::fs::create_dir_all(path.parent().expect("path has a parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write proto");
        names.push(rel);
    }
    let mut compiler = protox::Compiler::new([&dir]).expect("compiler");
    compiler.include_imports(true);
    for name in &names {
        compiler
            .open_file(name)
            .unwrap_or_else(|e| panic!("published {name:?}: {e}"));
    }
    let pool = compiler.descriptor_pool();
    let _ = std::fs::remove_dir_all(&dir);
    pool
}

/// (export name, unescaped text) of every `export const NAME = `...`;` template literal.
/// The published exports are named after their files (`sqlite_database_api`).
fn extract_literals(js: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = js;
    while let Some(start) = rest.find("export const ") {
        let after = &rest[start + "export const ".len()..];
        let Some((name, tail)) = after.split_once(" = `") else {
            rest = after;
            continue;
        };
        if name.contains(char::is_whitespace) {
            rest = after;
            continue;
        }
        let mut text = String::new();
        let mut chars = tail.char_indices();
        let mut end = tail.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => text.push('\n'),
                    Some((_, 't')) => text.push('\t'),
                    Some((_, other)) => text.push(other),
                    None => {}
                },
                '`' => {
                    end = i + 1;
                    break;
                }
                c => text.push(c),
            }
        }
        out.push((name.to_owned(), text));
        rest = &tail[end..];
    }
    out
}

/// `tdx/volt_api/<segment>/v1/<name>.proto`: the directory from the package line.
fn proto_path(name: &str, text: &str) -> String {
    let package = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("package "))
        .map(|p| p.trim_end_matches(';').trim().to_owned())
        .expect("every published file has a package");
    format!("{}/{name}.proto", package.replace('.', "/"))
}

fn scratch_dir() -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("tdx-volt-published-protos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}
