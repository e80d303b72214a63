//! Protobuf messages as proto3 JSON, the form the state files keep them in.

use serde_json::Value;
use tdx_volt::protocol::schema;

use crate::call::Failure;

/// `message` as proto3 JSON (field names as in the .proto files, defaults left out).
pub fn to_json<M: prost::Message + prost::Name>(message: &M) -> Result<Value, Failure> {
    let name = M::full_name();
    let desc = schema::message(&name).map_err(|e| Failure::internal("schema", e))?;
    schema::protobuf_to_json(&desc, &message.encode_to_vec())
        .map_err(|e| Failure::internal(&format!("encoding {name}"), e))
}

/// A message read back from proto3 JSON; the error says what is wrong with it.
pub fn from_json<M: prost::Message + prost::Name + Default>(value: &Value) -> Result<M, String> {
    let desc = schema::message(&M::full_name()).map_err(|e| e.to_string())?;
    let bytes = schema::json_to_protobuf(&desc, value).map_err(|e| e.to_string())?;
    M::decode(bytes.as_slice()).map_err(|e| e.to_string())
}
