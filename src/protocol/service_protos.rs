//! A hosted service's own schema, built at run time from the `.proto` sources its resource
//! carries (`service_description.proto_file[]`), so that its methods can be called and served
//! in proto3 JSON, and their shapes known, without code generated for them.
//!
//! The sources are compiled in memory (protox; no `protoc`): they may import each other by
//! their `file_path` and the well-known `google/protobuf/*.proto` files, nothing else. The
//! size of what is compiled is bounded ([`MAX_PROTO_BYTES`], [`MAX_PROTO_FILES`]).

use std::collections::HashMap;

use prost_reflect::DescriptorPool;
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use serde_json::Value;

use super::error::{Error, Result};
use super::schema::{Method, MethodTable};

/// The most source text compiled for one service (all its files).
pub const MAX_PROTO_BYTES: usize = 4 * 1024 * 1024;
/// The most files compiled for one service.
pub const MAX_PROTO_FILES: usize = 256;

/// The methods of a hosted service, with their message types, from its own proto files.
#[derive(Debug)]
pub struct ServiceProtos {
    methods: MethodTable,
}

impl ServiceProtos {
    /// Compiles `.proto` sources, given as `(file_path, source)`: the files a service's
    /// resource lists. A source that does not compile is a [`Schema`](crate::ErrorKind::Schema)
    /// error naming the problem.
    pub fn compile<'a, I>(files: I) -> Result<ServiceProtos>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut sources = HashMap::new();
        let mut names = Vec::new();
        let mut total = 0usize;
        for (name, source) in files {
            total = total.saturating_add(source.len());
            if total > MAX_PROTO_BYTES || names.len() >= MAX_PROTO_FILES {
                return Err(Error::schema(format!(
                    "a service's proto files are limited to {MAX_PROTO_FILES} files and \
                     {MAX_PROTO_BYTES} bytes"
                )));
            }
            if sources.insert(name.to_owned(), source.to_owned()).is_some() {
                return Err(Error::schema(format!("proto file {name:?} is given twice")));
            }
            names.push(name.to_owned());
        }
        if names.is_empty() {
            return Err(Error::schema("no proto files to compile"));
        }
        let mut resolver = ChainFileResolver::new();
        resolver.add(InMemory(sources));
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler
            .open_files(&names)
            .map_err(|e| Error::schema(format!("the service's proto files do not compile: {e}")))?;
        Ok(ServiceProtos::from_pool(&compiler.descriptor_pool()))
    }

    /// Compiles the proto files a service's `service_description` lists (`proto_file[]`, each
    /// `{file_path, protobuf}`; a file without a path is named after its place). `None` when
    /// it lists none.
    pub fn from_description(description: &Value) -> Result<Option<ServiceProtos>> {
        let Some(files) = description.get("proto_file").and_then(Value::as_array) else {
            return Ok(None);
        };
        let mut named = Vec::with_capacity(files.len());
        for (i, file) in files.iter().enumerate() {
            let source = file
                .get("protobuf")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::schema(format!("proto_file[{i}] has no protobuf source")))?;
            let path = file
                .get("file_path")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
                .map_or_else(|| format!("proto_file_{i}.proto"), str::to_owned);
            named.push((path, source));
        }
        if named.is_empty() {
            return Ok(None);
        }
        ServiceProtos::compile(named.iter().map(|(p, s)| (p.as_str(), *s))).map(Some)
    }

    /// Reads an encoded `FileDescriptorSet` (as `tonic-build` and `protox` write for
    /// reflection) holding the service.
    pub fn from_file_descriptor_set(bytes: &[u8]) -> Result<ServiceProtos> {
        let pool = DescriptorPool::decode(bytes)
            .map_err(|e| Error::schema(format!("not a usable FileDescriptorSet: {e}")))?;
        Ok(ServiceProtos::from_pool(&pool))
    }

    fn from_pool(pool: &DescriptorPool) -> ServiceProtos {
        ServiceProtos {
            methods: MethodTable::from_pool(pool),
        }
    }

    /// The method at `path` (`/package.Service/Method`), if the service has one.
    pub fn method(&self, path: &str) -> Option<&Method> {
        self.methods.get(path)
    }

    /// Every method of every service in the files.
    pub fn methods(&self) -> impl Iterator<Item = &Method> {
        self.methods.iter()
    }
}

/// The service's own files, by name.
struct InMemory(HashMap<String, String>);

impl FileResolver for InMemory {
    fn open_file(&self, name: &str) -> std::result::Result<File, protox::Error> {
        match self.0.get(name) {
            Some(source) => File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::schema::MethodKind;
    use serde_json::json;

    const ECHO: &str = r#"
        syntax = "proto3";
        package demo.v1;
        import "common.proto";
        import "google/protobuf/timestamp.proto";
        service Echo {
          rpc Say(Line) returns (Line);
          rpc Chat(stream Line) returns (stream Line);
        }
        message Line { string text = 1; Meta meta = 2; google.protobuf.Timestamp at = 3; }
    "#;
    const COMMON: &str = r#"
        syntax = "proto3";
        package demo.v1;
        message Meta { int64 seq = 1; }
    "#;

    #[test]
    fn methods_come_with_their_shapes_and_messages() {
        let protos = ServiceProtos::compile([("echo.proto", ECHO), ("common.proto", COMMON)])
            .expect("compiles");
        let say = protos.method("/demo.v1.Echo/Say").expect("Say");
        assert_eq!(say.kind(), MethodKind::Unary);
        assert_eq!(say.input_name(), "demo.v1.Line");
        let chat = protos.method("/demo.v1.Echo/Chat").expect("Chat");
        assert_eq!(chat.kind(), MethodKind::BidiStreaming);
        let line = json!({"text": "hi", "meta": {"seq": "7"}, "at": "2026-01-02T03:04:05Z"});
        let bytes = say.encode_request(&line).expect("encodes");
        assert_eq!(say.decode_response(&bytes).expect("decodes"), line);
        assert!(say.encode_request(&json!({"nope": 1})).is_err());
        assert!(protos.method("/demo.v1.Echo/Missing").is_none());
    }

    #[test]
    fn a_description_lists_its_files() {
        let description = json!({"proto_file": [
            {"file_path": "echo.proto", "protobuf": ECHO},
            {"file_path": "common.proto", "protobuf": COMMON},
        ]});
        let protos = ServiceProtos::from_description(&description)
            .expect("compiles")
            .expect("has files");
        assert_eq!(protos.methods().count(), 2);
        assert!(ServiceProtos::from_description(&json!({}))
            .expect("ok")
            .is_none());
        assert!(
            ServiceProtos::from_description(&json!({"proto_file": [{"file_path": "x"}]})).is_err()
        );
    }

    #[test]
    fn bad_sources_are_schema_errors() {
        for files in [
            vec![("echo.proto", ECHO)], // its import is missing
            vec![("bad.proto", "syntax = \"proto3\"; message {")],
            vec![],
        ] {
            let e = ServiceProtos::compile(files).expect_err("refused");
            assert_eq!(e.kind(), crate::ErrorKind::Schema, "{e}");
        }
        let huge = "x".repeat(MAX_PROTO_BYTES + 1);
        assert!(ServiceProtos::compile([("huge.proto", huge.as_str())]).is_err());
        assert!(ServiceProtos::from_file_descriptor_set(b"\xff\xff").is_err());
    }
}
