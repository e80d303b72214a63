//! The Volt API schema at runtime: the embedded descriptor set, the table of every RPC, and
//! proto3 JSON <-> protobuf conversion for any API message.
//!
//! JSON follows the proto3 mapping with the original snake_case field names, enum values by
//! name, 64-bit integers as strings and bytes as base64. Input also accepts camelCase names,
//! enum numbers and integers as numbers; unknown fields are refused with an error naming them.

use std::collections::HashMap;
use std::sync::OnceLock;

use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, ReflectMessage as _,
    SerializeOptions,
};
use serde_json::Value;

use super::error::{Error, Result};

/// The compiled `FileDescriptorSet` of `proto/`, embedded at build time.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/volt_descriptor.bin"));

third_party_fn! {
    /// The descriptor pool of the whole Volt API.
    fn descriptor_pool() -> &'static DescriptorPool {
        static POOL: OnceLock<DescriptorPool> = OnceLock::new();
        POOL.get_or_init(|| {
            // The set was produced by protox in build.rs from the same sources; a failure here
            // is a build defect, covered by the `pool_loads` test.
            DescriptorPool::decode(DESCRIPTOR_SET)
                .unwrap_or_else(|e| unreachable!("embedded descriptor set is invalid: {e}"))
        })
    }
}

/// How many messages flow each way in an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodKind {
    /// One request, one response.
    Unary,
    /// Many requests, one response.
    ClientStreaming,
    /// One request, many responses.
    ServerStreaming,
    /// Many requests, many responses.
    BidiStreaming,
}

impl MethodKind {
    /// Whether the client may send more than one message.
    pub fn client_streams(self) -> bool {
        matches!(
            self,
            MethodKind::ClientStreaming | MethodKind::BidiStreaming
        )
    }

    /// Whether the server may send more than one message.
    pub fn server_streams(self) -> bool {
        matches!(
            self,
            MethodKind::ServerStreaming | MethodKind::BidiStreaming
        )
    }
}

/// One RPC of the Volt API.
#[derive(Debug, Clone)]
pub struct Method {
    path: String,
    service: String,
    name: String,
    kind: MethodKind,
    input: MessageDescriptor,
    output: MessageDescriptor,
}

impl Method {
    /// The full path, `/tdx.volt_api.volt.v1.VoltAPI/GetResource`.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The full service name, `tdx.volt_api.volt.v1.VoltAPI`.
    pub fn service(&self) -> &str {
        &self.service
    }
    /// The method name, `GetResource`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its streaming kind.
    pub fn kind(&self) -> MethodKind {
        self.kind
    }
    third_party_fn! {
        /// The request message type.
        fn input(&self) -> &MessageDescriptor {
            &self.input
        }
    }
    third_party_fn! {
        /// The response message type.
        fn output(&self) -> &MessageDescriptor {
            &self.output
        }
    }
    /// The full name of the request message, `tdx.volt_api.volt.v1.GetResourceRequest`.
    pub fn input_name(&self) -> &str {
        self.input.full_name()
    }
    /// The full name of the response message.
    pub fn output_name(&self) -> &str {
        self.output.full_name()
    }
    /// Encodes a request given as proto3 JSON; one that does not fit is a
    /// [`Schema`](crate::ErrorKind::Schema) error.
    pub fn encode_request(&self, request: &Value) -> Result<Vec<u8>> {
        json_to_protobuf(&self.input, request)
    }
    /// Decodes a request as proto3 JSON.
    pub fn decode_request(&self, bytes: &[u8]) -> Result<Value> {
        protobuf_to_json(&self.input, bytes)
    }
    /// Encodes a response given as proto3 JSON.
    pub fn encode_response(&self, response: &Value) -> Result<Vec<u8>> {
        json_to_protobuf(&self.output, response)
    }
    /// Decodes a response as proto3 JSON.
    pub fn decode_response(&self, bytes: &[u8]) -> Result<Value> {
        protobuf_to_json(&self.output, bytes)
    }
}

/// Every RPC of the API, by path.
#[derive(Debug)]
pub struct MethodTable {
    methods: Vec<Method>,
    by_path: HashMap<String, usize>,
}

impl MethodTable {
    /// The table of every method of every service in `pool`.
    pub(crate) fn from_pool(pool: &DescriptorPool) -> MethodTable {
        let mut methods = Vec::new();
        for service in pool.services() {
            for m in service.methods() {
                let kind = match (m.is_client_streaming(), m.is_server_streaming()) {
                    (false, false) => MethodKind::Unary,
                    (true, false) => MethodKind::ClientStreaming,
                    (false, true) => MethodKind::ServerStreaming,
                    (true, true) => MethodKind::BidiStreaming,
                };
                methods.push(Method {
                    path: format!("/{}/{}", service.full_name(), m.name()),
                    service: service.full_name().to_owned(),
                    name: m.name().to_owned(),
                    kind,
                    input: m.input(),
                    output: m.output(),
                });
            }
        }
        let by_path = methods
            .iter()
            .enumerate()
            .map(|(i, m)| (m.path.clone(), i))
            .collect();
        MethodTable { methods, by_path }
    }

    /// The method at `path`, if the API has one.
    pub fn get(&self, path: &str) -> Option<&Method> {
        self.by_path.get(path).map(|&i| &self.methods[i])
    }

    /// The method at `path`, or a schema error naming it.
    pub fn lookup(&self, path: &str) -> Result<&Method> {
        self.get(path)
            .ok_or_else(|| Error::schema(format!("unknown method {path:?}")))
    }

    /// All methods, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = &Method> {
        self.methods.iter()
    }

    /// How many methods there are.
    pub fn len(&self) -> usize {
        self.methods.len()
    }

    /// Whether the table is empty (never, for the Volt API).
    pub fn is_empty(&self) -> bool {
        self.methods.is_empty()
    }
}

/// The table of every RPC of the Volt API.
pub fn methods() -> &'static MethodTable {
    static TABLE: OnceLock<MethodTable> = OnceLock::new();
    TABLE.get_or_init(|| MethodTable::from_pool(descriptor_pool()))
}

third_party_fn! {
    /// The descriptor of the message with this full name (`tdx.volt_api.volt.v1.Status`).
    fn message(full_name: &str) -> Result<MessageDescriptor> {
        descriptor_pool()
            .get_message_by_name(full_name)
            .ok_or_else(|| Error::schema(format!("unknown message {full_name:?}")))
    }
}

fn serialize_options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(true)
        .use_enum_numbers(false)
        .skip_default_fields(true)
}

third_party_fn! {
    /// Builds a message of type `desc` from proto3 JSON.
    fn message_from_json(desc: &MessageDescriptor, json: &Value) -> Result<DynamicMessage> {
        DynamicMessage::deserialize_with_options(desc.clone(), json, &DeserializeOptions::new())
            .map_err(|e| Error::schema(format!("JSON does not fit {}: {e}", desc.full_name())))
    }
}

third_party_fn! {
    /// The proto3 JSON of a message.
    fn message_to_json(message: &DynamicMessage) -> Result<Value> {
        message
            .serialize_with_options(serde_json::value::Serializer, &serialize_options())
            .map_err(|e| {
                Error::schema(format!(
                    "{} does not convert to JSON: {e}",
                    message.descriptor().full_name()
                ))
            })
    }
}

third_party_fn! {
    /// Encodes proto3 JSON as protobuf bytes of type `desc`.
    fn json_to_protobuf(desc: &MessageDescriptor, json: &Value) -> Result<Vec<u8>> {
        Ok(message_from_json(desc, json)?.encode_to_vec())
    }
}

third_party_fn! {
    /// Decodes protobuf bytes of type `desc` into proto3 JSON.
    fn protobuf_to_json(desc: &MessageDescriptor, bytes: &[u8]) -> Result<Value> {
        let message = DynamicMessage::decode(desc.clone(), bytes).map_err(|e| {
            Error::schema(format!("bytes are not a valid {}", desc.full_name())).with_source(e)
        })?;
        message_to_json(&message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pool_loads_and_table_is_complete() {
        let table = methods();
        assert!(table.len() >= 90, "{}", table.len());
        let get = table
            .lookup("/tdx.volt_api.volt.v1.VoltAPI/GetResource")
            .unwrap();
        assert_eq!(get.kind(), MethodKind::Unary);
        assert_eq!(get.name(), "GetResource");
        let exec = table
            .lookup("/tdx.volt_api.data.v1.SqliteDatabaseAPI/Execute")
            .unwrap();
        assert_eq!(exec.kind(), MethodKind::BidiStreaming);
        let err = table.lookup("/nope.Svc/Nope").unwrap_err();
        assert!(err.is_schema());
        assert!(err.to_string().contains("/nope.Svc/Nope"));
    }

    #[test]
    fn json_round_trip_uses_snake_case_enum_names_and_string_int64() {
        let desc = message("tdx.volt_api.data.v1.VariantRow").unwrap();
        let input = json!({"column": [{"integer": 9007199254740993i64}, {"text": "a"}, {"blob": "AQI="}, {"null": true}]});
        let bytes = json_to_protobuf(&desc, &input).unwrap();
        let out = protobuf_to_json(&desc, &bytes).unwrap();
        assert_eq!(
            out,
            json!({"column": [{"integer": "9007199254740993"}, {"text": "a"}, {"blob": "AQI="}, {"null": true}]})
        );
        let col = message("tdx.volt_api.data.v1.Column").unwrap();
        let v = json!({"name": "x", "type": "DATA_TYPE_TEXT"});
        assert_eq!(
            protobuf_to_json(&col, &json_to_protobuf(&col, &v).unwrap()).unwrap(),
            v
        );
    }

    #[test]
    fn camel_case_input_is_accepted_and_unknown_fields_refused() {
        let exec = methods()
            .lookup("/tdx.volt_api.data.v1.SqliteDatabaseAPI/Execute")
            .unwrap();
        let camel = json!({"start": {"databaseId": "db", "statement": "select 1"}});
        let snake = json!({"start": {"database_id": "db", "statement": "select 1"}});
        assert_eq!(
            json_to_protobuf(exec.input(), &camel).unwrap(),
            json_to_protobuf(exec.input(), &snake).unwrap()
        );
        let err = json_to_protobuf(exec.input(), &json!({"bogus": 1})).unwrap_err();
        assert!(err.is_schema());
        assert!(err.to_string().contains("bogus"), "{err}");
        assert!(message("no.Such").is_err());
    }

    #[test]
    fn garbage_bytes_are_an_error() {
        let desc = message("tdx.volt_api.volt.v1.Status").unwrap();
        assert!(protobuf_to_json(&desc, &[0xff, 0xff, 0xff]).is_err());
    }
}
