//! Typed calls: the prost messages of [`crate::proto`] in and out, on either transport.
//!
//! The message types are checked against the method's descriptors (a request of the wrong
//! type is a [`Schema`](crate::ErrorKind::Schema) error), and messages go through the same
//! proto3 JSON mapping as every other call, so typed and JSON calls see the same data.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use prost_reflect::MessageDescriptor;
use serde_json::Value;

use super::{Call, CallEvent, VoltClient};
use crate::protocol::schema::{self, Method};
use crate::{Error, ErrorKind, Result};

impl VoltClient {
    /// Calls a unary method with a typed request and response.
    ///
    /// ```no_run
    /// use tdx_volt::proto::volt::{GetResourceRequest, GetResourceResponse};
    ///
    /// # async fn demo(client: tdx_volt::VoltClient) -> tdx_volt::Result<()> {
    /// let request = GetResourceRequest {
    ///     resource_id: client.volt_id().to_owned(),
    ///     ..Default::default()
    /// };
    /// let response: GetResourceResponse = client
    ///     .unary_typed("/tdx.volt_api.volt.v1.VoltAPI/GetResource", &request)
    ///     .await?;
    /// println!("{:?}", response.resource.map(|r| r.name));
    /// # Ok(()) }
    /// ```
    pub async fn unary_typed<Req, Resp>(&self, path: &str, request: &Req) -> Result<Resp>
    where
        Req: prost::Name,
        Resp: prost::Name + Default,
    {
        let method = typed_method::<Req, Resp>(path)?;
        let response = self.unary(path, to_json(method.input(), request)?).await?;
        from_json(method.output(), &response)
    }

    /// Opens a streaming call with typed messages. `request`, when given, is the first
    /// message, as for [`VoltClient::streaming`].
    pub async fn streaming_typed<Req, Resp>(
        &self,
        path: &str,
        request: Option<&Req>,
    ) -> Result<TypedCall<Req, Resp>>
    where
        Req: prost::Name,
        Resp: prost::Name + Default,
    {
        let method = typed_method::<Req, Resp>(path)?;
        let request = request.map(|r| to_json(method.input(), r)).transpose()?;
        let call = self.streaming(path, request).await?;
        Ok(TypedCall {
            call,
            input: method.input().clone(),
            output: method.output().clone(),
            types: PhantomData,
        })
    }
}

/// A streaming call with typed messages: a [`Stream`] of responses (`Err` items are the
/// call's errors; as with [`CallEvent::Error`], one the Volt reports in a response lets the
/// call go on), ending when the call ends. Dropping it cancels the call.
#[must_use = "dropping a call cancels it"]
pub struct TypedCall<Req, Resp> {
    call: Call,
    input: MessageDescriptor,
    output: MessageDescriptor,
    types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> std::fmt::Debug for TypedCall<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedCall")
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}

impl<Req: prost::Name, Resp: prost::Name + Default> TypedCall<Req, Resp> {
    /// Sends a request message; see [`Call::send`].
    pub async fn send(&self, message: &Req) -> Result<()> {
        self.call.send(to_json(&self.input, message)?).await
    }

    /// Ends the client's side of the call; see [`Call::end`].
    pub async fn end(&self) -> Result<()> {
        self.call.end().await
    }

    /// The next response: `Ok(None)` once the call has ended normally.
    pub async fn message(&mut self) -> Result<Option<Resp>> {
        match self.call.message().await? {
            Some(value) => from_json(&self.output, &value).map(Some),
            None => Ok(None),
        }
    }

    /// The untyped call underneath.
    pub fn into_inner(self) -> Call {
        self.call
    }
}

impl<Req, Resp: prost::Name + Default> Stream for TypedCall<Req, Resp> {
    type Item = Result<Resp>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Resp>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.call).poll_next(cx) {
            Poll::Ready(Some(CallEvent::Data(value))) => {
                Poll::Ready(Some(from_json(&this.output, &value)))
            }
            Poll::Ready(Some(CallEvent::Error(e) | CallEvent::Failed(e))) => {
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(CallEvent::End)) | Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The method at `path`, if `Req` and `Resp` are its message types.
fn typed_method<Req: prost::Name, Resp: prost::Name>(path: &str) -> Result<&'static Method> {
    let method = schema::methods().lookup(path)?;
    for (role, expected, given) in [
        ("request", method.input().full_name(), Req::full_name()),
        ("response", method.output().full_name(), Resp::full_name()),
    ] {
        if expected != given {
            return Err(Error::new(
                ErrorKind::Schema,
                format!("{path}: the {role} type is {expected}, not {given}"),
            ));
        }
    }
    Ok(method)
}

fn to_json(desc: &MessageDescriptor, message: &impl prost::Message) -> Result<Value> {
    schema::protobuf_to_json(desc, &message.encode_to_vec())
}

fn from_json<M: prost::Message + Default>(desc: &MessageDescriptor, value: &Value) -> Result<M> {
    let bytes = schema::json_to_protobuf(desc, value)?;
    M::decode(bytes.as_slice()).map_err(|e| {
        Error::new(
            ErrorKind::Schema,
            "a response that does not decode as its type",
        )
        .with_source(e)
    })
}
