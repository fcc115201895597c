//! The portable message: what a producer sends and a consumer receives on every broker.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};

use crate::{Error, ErrorKind, HeaderValue, Headers, Result};

/// The content type the JSON helpers set and expect.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// A message with its properties.
///
/// The `id` is stable across resends (the outbox reuses it, the inbox deduplicates on it);
/// `persistent` defaults to `true` so that a confirm means "on disk".
///
/// ```
/// use coolmq_core::Message;
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Order { id: u32 }
/// let m = Message::json(&Order { id: 7 }).unwrap().with_header("tenant", "acme");
/// assert!(m.persistent);
/// assert_eq!(m.body_json::<Order>().unwrap(), Order { id: 7 });
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Unique id, kept across resends; the consumer's deduplication key.
    pub id: String,
    /// The payload: any bytes, possibly empty.
    pub body: Bytes,
    /// MIME type of the body, e.g. `application/json`.
    pub content_type: Option<String>,
    /// Application headers with typed values.
    pub headers: Headers,
    /// Id of the message this one answers or belongs with.
    pub correlation_id: Option<String>,
    /// Where replies should go (a queue name).
    pub reply_to: Option<String>,
    /// Application message type (AMQP `type`, JMS `JMSType`).
    pub kind: Option<String>,
    /// Priority 0–9 (JMS range); carried as a property.
    pub priority: Option<u8>,
    /// Survive a broker restart (AMQP delivery-mode 2 / durable header). Default `true`.
    pub persistent: bool,
    /// Time to live; the broker may discard (or dead-letter) the message after it.
    pub ttl: Option<Duration>,
    /// When the message was created (millisecond precision on the wire).
    pub timestamp: Option<SystemTime>,
}

impl Message {
    /// A persistent message with a fresh time-ordered id and the current timestamp.
    pub fn new(body: impl Into<Bytes>) -> Self {
        // One clock read for both the id and the timestamp.
        let now = truncate_to_millis(SystemTime::now());
        Self::made_at(message_id_at(now), body.into(), now)
    }

    /// A persistent message with the caller's id (a business key, an outbox row id) and the
    /// current timestamp: [`Message::new`] followed by [`Message::with_id`] would generate an
    /// id only to drop it, which is a measurable share of a fast send path.
    ///
    /// ```
    /// use coolmq_core::Message;
    /// let m = Message::new_with_id("order-7", "{}");
    /// assert_eq!(m.id, "order-7");
    /// let mut same = Message::new("{}").with_id("order-7");
    /// same.timestamp = m.timestamp;
    /// assert_eq!(m, same);
    /// ```
    pub fn new_with_id(id: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Self::made_at(
            id.into(),
            body.into(),
            truncate_to_millis(SystemTime::now()),
        )
    }

    fn made_at(id: String, body: Bytes, now: SystemTime) -> Self {
        Message {
            id,
            body,
            content_type: None,
            headers: Headers::new(),
            correlation_id: None,
            reply_to: None,
            kind: None,
            priority: None,
            persistent: true,
            ttl: None,
            timestamp: Some(now),
        }
    }

    /// A message whose body is `value` serialized as JSON, with content type set.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        let body = serde_json::to_vec(value).map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                "cannot serialize message body as JSON",
            )
            .with_source(e)
        })?;
        Ok(Message::new(body).with_content_type(JSON_CONTENT_TYPE))
    }

    /// Decode the body as JSON.
    pub fn body_json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                "message body is not the expected JSON",
            )
            .with_context("message_id", self.id.clone())
            .with_source(e)
            .set_temporary(false)
        })
    }

    /// Set the id (e.g. a business key or an outbox row id).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Set the content type.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Add or replace a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<HeaderValue>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Set the correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Set the reply-to queue.
    pub fn with_reply_to(mut self, queue: impl Into<String>) -> Self {
        self.reply_to = Some(queue.into());
        self
    }

    /// Set the application message type.
    pub fn with_kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Set the priority (0–9).
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Make the message transient (lost if the broker restarts) — only for data you can lose.
    pub fn transient(mut self) -> Self {
        self.persistent = false;
        self
    }

    /// Set the time to live.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The size the backends compare against their maximum: body plus headers, roughly.
    pub fn approximate_size(&self) -> usize {
        self.body.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + approximate_value_size(v))
                .sum::<usize>()
    }
}

fn approximate_value_size(v: &HeaderValue) -> usize {
    match v {
        HeaderValue::String(s) => s.len(),
        HeaderValue::Bytes(b) => b.len(),
        HeaderValue::List(l) => l.iter().map(approximate_value_size).sum(),
        HeaderValue::Map(m) => m
            .iter()
            .map(|(k, v)| k.len() + approximate_value_size(v))
            .sum(),
        _ => 8,
    }
}

/// A new unique message id: a UUIDv7, so ids sort by creation millisecond.
pub fn new_message_id() -> String {
    message_id_at(SystemTime::now())
}

/// A UUIDv7 for `at`, its 74 random bits from the thread's fastrand generator: uuid's own
/// `now_v7` draws from a ChaCha generator and orders ids within a millisecond through a shared
/// counter, costly on every send; ids need to be unique, and sorting by millisecond is what
/// brokers and logs show anyway.
fn message_id_at(at: SystemTime) -> String {
    let millis = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    random[8..].copy_from_slice(&fastrand::u16(..).to_le_bytes());
    let mut buf = uuid::Uuid::encode_buffer();
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut buf)
        .to_owned()
}

/// Drop sub-millisecond precision, which no wire format keeps.
pub fn truncate_to_millis(t: SystemTime) -> SystemTime {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_millis(since.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuid_v7_of_the_timestamp() {
        let m = Message::new("x");
        let id = uuid::Uuid::parse_str(&m.id).expect("a uuid");
        assert_eq!(id.get_version_num(), 7);
        let (secs, nanos) = id.get_timestamp().expect("v7 has one").to_unix();
        let at = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
        assert_eq!(Some(at), m.timestamp);
        let many: std::collections::HashSet<String> =
            (0..10_000).map(|_| new_message_id()).collect();
        assert_eq!(many.len(), 10_000);
    }

    #[test]
    fn ids_are_unique_and_persistent_is_default() {
        let a = Message::new("x");
        let b = Message::new("x");
        assert_ne!(a.id, b.id);
        assert!(a.persistent);
        assert!(!a.clone().transient().persistent);
    }

    #[test]
    fn bad_json_is_a_permanent_error() {
        let m = Message::new("not json");
        let e = m.body_json::<u32>().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unexpected);
        assert!(!e.is_temporary());
    }
}
