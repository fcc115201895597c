//! Typed messages: a [`Codec`] turns values into message bodies and back, so applications
//! send and handle their own types while the broker sees bytes and a content type.

use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Destination, Error, ErrorKind, Message, Publisher, Result, SendFuture};

/// Encodes values of `T` into message bodies and decodes them back. Implement it for another
/// format (Protobuf, MessagePack, CBOR…); [`Json`] is the default.
///
/// Decoding failures are permanent [`ErrorKind::Codec`] errors: the same bytes fail the same
/// way on every redelivery, so typed workers dead-letter them at once.
pub trait Codec<T>: Send + Sync + 'static {
    /// The content type encoded bodies carry (`application/json`).
    fn content_type(&self) -> &str;

    /// The body for `value`.
    ///
    /// # Errors
    /// `Codec` when the format cannot hold the value.
    fn encode(&self, value: &T) -> Result<Bytes>;

    /// The value in `message`'s body (the message is given whole so a codec can look at its
    /// content type or headers, e.g. a schema version).
    ///
    /// # Errors
    /// `Codec` when the body is not a valid encoding of `T`.
    fn decode(&self, message: &Message) -> Result<T>;
}

/// JSON through serde, the default codec (Spring AMQP's `Jackson2JsonMessageConverter`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json;

impl<T: Serialize + DeserializeOwned> Codec<T> for Json {
    fn content_type(&self) -> &str {
        crate::JSON_CONTENT_TYPE
    }

    fn encode(&self, value: &T) -> Result<Bytes> {
        serde_json::to_vec(value).map(Bytes::from).map_err(|e| {
            Error::new(
                ErrorKind::Codec,
                format!("cannot encode the value as JSON: {e}"),
            )
            .set_temporary(false)
            .with_source(e)
        })
    }

    fn decode(&self, message: &Message) -> Result<T> {
        serde_json::from_slice(&message.body).map_err(|e| {
            Error::new(
                ErrorKind::Codec,
                format!(
                    "the body is not the expected JSON ({}): {e}",
                    std::any::type_name::<T>()
                ),
            )
            .set_temporary(false)
            .with_context("message_id", message.id.clone())
            .with_source(e)
        })
    }
}

impl Message {
    /// A message whose body is `value` encoded by `codec`, with the codec's content type.
    ///
    /// # Errors
    /// `Codec` when the value cannot be encoded.
    pub fn encode<T, C: Codec<T>>(codec: &C, value: &T) -> Result<Message> {
        let body = codec.encode(value)?;
        Ok(Message::new(body).with_content_type(codec.content_type()))
    }

    /// The body decoded by `codec`.
    ///
    /// # Errors
    /// `Codec` when the body is not a valid encoding of `T`.
    pub fn decode<T, C: Codec<T>>(&self, codec: &C) -> Result<T> {
        codec.decode(self)
    }
}

/// A [`Publisher`] for values of one type: each send encodes the value with the codec.
/// Made by [`Publisher::typed`] (JSON) or [`Publisher::typed_with`].
///
/// ```no_run
/// # async fn example(broker: coolmq_core::Broker) -> coolmq_core::Result<()> {
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Order { id: u32 }
///
/// let orders = broker.publisher().await?.typed::<Order>();
/// let queue = coolmq_core::Destination::queue("orders");
/// orders.send(&queue, &Order { id: 7 })?.await?;
/// # Ok(()) }
/// ```
pub struct TypedPublisher<T, C = Json> {
    publisher: Publisher,
    codec: C,
    _values: PhantomData<fn(&T)>,
}

impl<T, C: fmt::Debug> fmt::Debug for TypedPublisher<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedPublisher")
            .field("type", &std::any::type_name::<T>())
            .field("codec", &self.codec)
            .field("publisher", &self.publisher)
            .finish()
    }
}

impl<T, C: Clone> Clone for TypedPublisher<T, C> {
    fn clone(&self) -> Self {
        TypedPublisher {
            publisher: self.publisher.clone(),
            codec: self.codec.clone(),
            _values: PhantomData,
        }
    }
}

impl<T, C: Codec<T>> TypedPublisher<T, C> {
    pub(crate) fn new(publisher: Publisher, codec: C) -> Self {
        TypedPublisher {
            publisher,
            codec,
            _values: PhantomData,
        }
    }

    /// Encode `value` and send it like [`Publisher::send`]: the returned future takes the
    /// same per-send options and resolves on the broker's confirm.
    ///
    /// # Errors
    /// `Codec` when the value cannot be encoded (nothing is sent).
    pub fn send<'a>(&'a self, destination: &'a Destination, value: &T) -> Result<SendFuture<'a>> {
        Ok(self.publisher.send(destination, self.message(value)?))
    }

    /// The message `value` becomes, for setting its id, headers or other properties before
    /// sending it with [`TypedPublisher::publisher`].
    ///
    /// # Errors
    /// `Codec` when the value cannot be encoded.
    pub fn message(&self, value: &T) -> Result<Message> {
        Message::encode(&self.codec, value)
    }

    /// The untyped publisher underneath (pipelined sends, transactions).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The codec.
    pub fn codec(&self) -> &C {
        &self.codec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Order {
        id: u32,
        sku: String,
    }

    #[test]
    fn json_round_trips_and_sets_the_content_type() {
        let order = Order {
            id: 1,
            sku: "a-1".into(),
        };
        let m = Message::encode(&Json, &order).unwrap();
        assert_eq!(m.content_type.as_deref(), Some(crate::JSON_CONTENT_TYPE));
        assert_eq!(m.decode::<Order, _>(&Json).unwrap(), order);
    }

    #[test]
    fn a_body_that_is_not_the_type_is_a_permanent_codec_error() {
        let m = Message::new_with_id("m-1", "{\"id\": \"not a number\"}");
        let e = m.decode::<Order, _>(&Json).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Codec);
        assert!(!e.is_temporary());
        assert_eq!(e.context("message_id"), Some("m-1"));
    }
}
