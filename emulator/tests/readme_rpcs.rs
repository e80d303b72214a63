//! The README's "Every RPC" table lists exactly the protos' methods, service by service and in
//! their order, and every method it calls UNIMPLEMENTED answers so at once over gRPC.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use support::TestVolt;
use tdx_volt::protocol::token::{unix_now, Claims, IdentityToken};
use tdx_volt_emulator::transport::grpc::PassThrough;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// How long "at once" may take for one call.
const AT_ONCE: Duration = Duration::from_secs(5);

type Rpcs = BTreeMap<String, Vec<String>>;

/// Each service (`package.Service`) of the .proto files under `dir`, with its methods in order.
fn proto_rpcs(dir: &Path, into: &mut Rpcs) {
    for entry in std::fs::read_dir(dir).expect("proto dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            proto_rpcs(&path, into);
            continue;
        }
        if path.extension().and_then(|e| e.to_str()) != Some("proto") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("proto");
        let mut package = String::new();
        let mut service: Option<String> = None;
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("package ") {
                package = rest.trim_end_matches(';').trim().to_owned();
            } else if let Some(rest) = line.strip_prefix("service ") {
                // `service Name {`, or `service Name {}` for one without methods.
                let name = rest.split('{').next().unwrap_or("").trim();
                let full = format!("{package}.{name}");
                into.entry(full.clone()).or_default();
                service = (!line.ends_with('}')).then_some(full);
            } else if line == "}" {
                service = None;
            } else if let (Some(rest), Some(service)) = (line.strip_prefix("rpc "), &service) {
                let name = rest.split('(').next().unwrap_or("").trim().to_owned();
                into.entry(service.clone()).or_default().push(name);
            }
        }
    }
}

/// The README's table: each service with its methods in order, and whether each is
/// implemented.
fn readme_rpcs(text: &str) -> (Rpcs, Vec<String>) {
    let section = text
        .split("\n## Every RPC\n")
        .nth(1)
        .expect("an \"Every RPC\" section")
        .split("\n## ")
        .next()
        .unwrap_or("");
    let mut rpcs = Rpcs::new();
    let mut unimplemented = Vec::new();
    let mut service = None;
    for line in section.lines() {
        if let Some(name) = line.strip_prefix("### ") {
            service = Some(name.trim().to_owned());
            rpcs.entry(name.trim().to_owned()).or_default();
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || cells[1] == "RPC" || cells[1].starts_with("---") {
            continue;
        }
        let service = service.clone().expect("a row under a service heading");
        match cells[2] {
            "implemented" => {}
            "UNIMPLEMENTED" => unimplemented.push(format!("/{service}/{}", cells[1])),
            other => panic!(
                "{}: status must be implemented or UNIMPLEMENTED, not {other}",
                cells[1]
            ),
        }
        rpcs.entry(service).or_default().push(cells[1].to_owned());
    }
    (rpcs, unimplemented)
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(manifest_dir().join("README.md")).expect("README")
}

#[test]
fn the_readme_lists_every_rpc_of_the_protos() {
    let mut protos = Rpcs::new();
    proto_rpcs(&manifest_dir().join("../proto/tdx/volt_api"), &mut protos);
    let total: usize = protos.values().map(Vec::len).sum();
    assert!(total >= 90, "the protos were not read: {total} methods");
    let (listed, _) = readme_rpcs(&readme());
    assert_eq!(
        listed, protos,
        "README \"Every RPC\" and the protos disagree"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_listed_unimplemented_answers_unimplemented_at_once() {
    let (_, unimplemented) = readme_rpcs(&readme());
    assert!(unimplemented.len() > 10, "{unimplemented:?}");
    let volt = TestVolt::start("readme-rpcs").await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(volt.emulator().ca_pem()))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{}", volt.emulator().address()))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connects");
    let claims = Claims::new(volt.volt_id(), unix_now()).with_subject(volt.session());
    let token = IdentityToken::sign(&volt.key, &claims)
        .expect("token")
        .to_jwt();
    for path in unimplemented {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.expect("ready");
        let mut request = tonic::Request::new(Bytes::new());
        request
            .metadata_mut()
            .insert("volt-token", token.parse().expect("ascii"));
        let path_and_query = PathAndQuery::try_from(path.as_str()).expect("path");
        let answer = tokio::time::timeout(
            AT_ONCE,
            grpc.unary::<_, Bytes, _>(request, path_and_query, PassThrough),
        )
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer within {AT_ONCE:?}"));
        match answer {
            Err(status) => assert_eq!(status.code(), tonic::Code::Unimplemented, "{path}"),
            Ok(_) => panic!("{path} answered, but the README says UNIMPLEMENTED"),
        }
    }
}
