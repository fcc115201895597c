//! coolmq messages ↔ AMQP 0-9-1 properties and field tables, losslessly for every header type.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use coolmq_core::{Error, ErrorKind, HeaderValue, Headers, Message, Result};
use lapin::types::{AMQPValue, ByteArray, FieldArray, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

/// Header carrying the timestamp in milliseconds (the property has seconds only); the name
/// RabbitMQ's message-timestamp plugin uses.
pub(crate) const TIMESTAMP_MS_HEADER: &str = "timestamp_in_ms";
/// Header routing a delayed message to its delay tier.
pub(crate) const DELAY_HEADER: &str = "coolmq_delay";
/// Headers the broker adds when a delay tier dead-letters a message back; transport
/// artefacts, not application headers.
const BROKER_HEADERS: &[&str] = &[
    DELAY_HEADER,
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
];

fn short(field: &'static str, s: &str) -> Result<ShortString> {
    ShortString::try_new(s).map_err(|_| {
        Error::new(
            ErrorKind::Rejected,
            format!("{field} is longer than AMQP 0-9-1's 255 bytes"),
        )
        .with_context("field", field)
        .set_temporary(false)
    })
}

fn to_value(v: &HeaderValue) -> Result<AMQPValue> {
    Ok(match v {
        HeaderValue::Bool(b) => AMQPValue::Boolean(*b),
        HeaderValue::I8(x) => AMQPValue::ShortShortInt(*x),
        HeaderValue::I16(x) => AMQPValue::ShortInt(*x),
        HeaderValue::I32(x) => AMQPValue::LongInt(*x),
        HeaderValue::I64(x) => AMQPValue::LongLongInt(*x),
        HeaderValue::U8(x) => AMQPValue::ShortShortUInt(*x),
        HeaderValue::U16(x) => AMQPValue::ShortUInt(*x),
        HeaderValue::U32(x) => AMQPValue::LongUInt(*x),
        HeaderValue::F32(x) => AMQPValue::Float(*x),
        HeaderValue::F64(x) => AMQPValue::Double(*x),
        HeaderValue::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes().to_vec())),
        HeaderValue::Bytes(b) => AMQPValue::ByteArray(ByteArray::from(b.clone())),
        HeaderValue::List(l) => AMQPValue::FieldArray(FieldArray::from(
            l.iter().map(to_value).collect::<Result<Vec<_>>>()?,
        )),
        HeaderValue::Map(m) => AMQPValue::FieldTable(to_table(m)?),
    })
}

fn to_table(headers: &BTreeMap<String, HeaderValue>) -> Result<FieldTable> {
    let mut t = FieldTable::default();
    for (k, v) in headers {
        t.insert(short("header name", k)?, to_value(v)?);
    }
    Ok(t)
}

fn from_value(v: &AMQPValue) -> Option<HeaderValue> {
    Some(match v {
        AMQPValue::Boolean(b) => HeaderValue::Bool(*b),
        AMQPValue::ShortShortInt(x) => HeaderValue::I8(*x),
        AMQPValue::ShortShortUInt(x) => HeaderValue::U8(*x),
        AMQPValue::ShortInt(x) => HeaderValue::I16(*x),
        AMQPValue::ShortUInt(x) => HeaderValue::U16(*x),
        AMQPValue::LongInt(x) => HeaderValue::I32(*x),
        AMQPValue::LongUInt(x) => HeaderValue::U32(*x),
        AMQPValue::LongLongInt(x) => HeaderValue::I64(*x),
        AMQPValue::Float(x) => HeaderValue::F32(*x),
        AMQPValue::Double(x) => HeaderValue::F64(*x),
        AMQPValue::DecimalValue(d) => {
            HeaderValue::F64(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
        }
        AMQPValue::ShortString(s) => HeaderValue::String(s.as_str().to_string()),
        // Long strings are bytes on the wire; other clients put binary data there too.
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => HeaderValue::String(text.to_string()),
            Err(_) => HeaderValue::Bytes(s.as_bytes().to_vec()),
        },
        AMQPValue::FieldArray(a) => {
            HeaderValue::List(a.as_slice().iter().filter_map(from_value).collect())
        }
        AMQPValue::Timestamp(t) => HeaderValue::I64(i64::try_from(*t).unwrap_or(i64::MAX)),
        AMQPValue::FieldTable(t) => HeaderValue::Map(from_table(t)),
        AMQPValue::ByteArray(b) => HeaderValue::Bytes(b.as_slice().to_vec()),
        AMQPValue::Void => return None,
    })
}

fn from_table(t: &FieldTable) -> BTreeMap<String, HeaderValue> {
    t.inner()
        .iter()
        .filter_map(|(k, v)| from_value(v).map(|v| (k.as_str().to_string(), v)))
        .collect()
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The AMQP properties of `m`, plus `extra` headers (delay routing).
pub(crate) fn to_properties(
    m: &Message,
    extra: Option<(&str, AMQPValue)>,
) -> Result<BasicProperties> {
    let mut headers = to_table(&m.headers)?;
    let mut p = BasicProperties::default()
        .with_message_id(short("message id", &m.id)?)
        .with_delivery_mode(if m.persistent { 2 } else { 1 });
    if let Some(ts) = m.timestamp {
        p = p.with_timestamp(millis(ts) / 1000);
        headers.insert(
            TIMESTAMP_MS_HEADER.into(),
            AMQPValue::LongLongInt(millis(ts) as i64),
        );
    }
    if let Some((k, v)) = extra {
        headers.insert(k.into(), v);
    }
    p = p.with_headers(headers);
    if let Some(ct) = &m.content_type {
        p = p.with_content_type(short("content type", ct)?);
    }
    if let Some(c) = &m.correlation_id {
        p = p.with_correlation_id(short("correlation id", c)?);
    }
    if let Some(r) = &m.reply_to {
        p = p.with_reply_to(short("reply-to", r)?);
    }
    if let Some(k) = &m.kind {
        p = p.with_type(short("message type", k)?);
    }
    if let Some(pr) = m.priority {
        p = p.with_priority(pr);
    }
    if let Some(ttl) = m.ttl {
        p = p.with_expiration(ttl.as_millis().max(1).to_string().into());
    }
    Ok(p)
}

/// Rebuild the coolmq message from a delivery's properties and body. Messages from other
/// clients without a message id get a fresh one.
pub(crate) fn from_properties(p: &BasicProperties, body: Vec<u8>) -> Message {
    let mut headers: Headers = p.headers().as_ref().map(from_table).unwrap_or_default();
    let timestamp_ms = headers
        .remove(TIMESTAMP_MS_HEADER)
        .and_then(|v| v.as_i64())
        .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64));
    for h in BROKER_HEADERS {
        headers.remove(*h);
    }
    let text = |s: &Option<ShortString>| s.as_ref().map(|s| s.as_str().to_string());
    Message {
        // Messages from clients that set no id get a fresh one: ids are the dedup key.
        id: text(p.message_id()).unwrap_or_else(coolmq_core::new_message_id),
        body: body.into(),
        content_type: text(p.content_type()),
        headers,
        correlation_id: text(p.correlation_id()),
        reply_to: text(p.reply_to()),
        kind: text(p.kind()),
        priority: *p.priority(),
        persistent: *p.delivery_mode() == Some(2),
        ttl: p
            .expiration()
            .as_ref()
            .and_then(|s| s.as_str().parse::<u64>().ok())
            .map(Duration::from_millis),
        timestamp: timestamp_ms.or_else(|| {
            p.timestamp()
                .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_round_trip() {
        let m = Message::new(vec![0u8, 255])
            .with_header("i8", -1i8)
            .with_header("bytes", vec![1u8, 2])
            .with_header("nested", vec![HeaderValue::Bool(true)])
            .with_correlation_id("c")
            .with_reply_to("r")
            .with_kind("k")
            .with_priority(3)
            .with_ttl(Duration::from_millis(1500));
        let p = to_properties(&m, None).unwrap();
        let back = from_properties(&p, m.body.to_vec());
        assert_eq!(back, m);
        assert!(
            !from_properties(
                &to_properties(&m.clone().transient(), None).unwrap(),
                vec![]
            )
            .persistent
        );
    }

    #[test]
    fn long_ids_are_a_typed_error() {
        let m = Message::new("x").with_id("i".repeat(300));
        assert_eq!(
            to_properties(&m, None).unwrap_err().kind(),
            ErrorKind::Rejected
        );
    }
}
