//! coolmq messages ↔ AMQP 0-9-1 properties and field tables, losslessly for every header type.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use coolmq_core::{Error, ErrorKind, HeaderValue, Headers, Message, Result};
use lapin::types::{AMQPValue, ByteArray, FieldArray, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

/// Header carrying the timestamp in milliseconds (the property has seconds only); the name
/// RabbitMQ's message-timestamp plugin uses.
pub(crate) const TIMESTAMP_MS_HEADER: &str = "timestamp_in_ms";
/// Headers carrying the AMQP 0-9-1 basic properties that coolmq's [`Message`] has no field
/// for, so they survive a round trip through any backend (and the outbox).
pub(crate) const CONTENT_ENCODING_HEADER: &str = "coolmq_content_encoding";
/// See [`CONTENT_ENCODING_HEADER`]: the `app-id` property.
pub(crate) const APP_ID_HEADER: &str = "coolmq_app_id";
/// See [`CONTENT_ENCODING_HEADER`]: the `user-id` property. Received only: RabbitMQ refuses
/// (closing the channel) a `user-id` other than the connection's own, so a copy coolmq
/// forwards keeps it as a header and never sets the property.
pub(crate) const USER_ID_HEADER: &str = "coolmq_user_id";
/// See [`CONTENT_ENCODING_HEADER`]: the deprecated `cluster-id` property.
pub(crate) const CLUSTER_ID_HEADER: &str = "coolmq_cluster_id";
/// A `timestamp` property that no [`SystemTime`] can hold (legal on the wire: any 64-bit
/// value), kept as its decimal text instead of being lost.
pub(crate) const RAW_TIMESTAMP_HEADER: &str = "coolmq_amqp_timestamp";
/// An `expiration` property that is not a number of milliseconds, kept as its text.
pub(crate) const RAW_EXPIRATION_HEADER: &str = "coolmq_amqp_expiration";

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
    const PROMOTED: [&str; 3] = [CONTENT_ENCODING_HEADER, APP_ID_HEADER, CLUSTER_ID_HEADER];
    let property = |name: &str| m.headers.get(name).and_then(HeaderValue::as_str);
    let mut headers = FieldTable::default();
    for (k, v) in &m.headers {
        // Text values of the property headers travel as the properties themselves.
        if !(PROMOTED.contains(&k.as_str()) && v.as_str().is_some()) {
            headers.insert(short("header name", k)?, to_value(v)?);
        }
    }
    let content_encoding = property(CONTENT_ENCODING_HEADER);
    let app_id = property(APP_ID_HEADER);
    let cluster_id = property(CLUSTER_ID_HEADER);
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
    if let Some(e) = content_encoding {
        p = p.with_content_encoding(short("content encoding", e)?);
    }
    if let Some(a) = app_id {
        p = p.with_app_id(short("app id", a)?);
    }
    if let Some(c) = cluster_id {
        p = p.with_cluster_id(short("cluster id", c)?);
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
    // Any 64-bit value is legal on the wire; only what a SystemTime holds becomes one.
    let timestamp_ms = headers
        .remove(TIMESTAMP_MS_HEADER)
        .and_then(|v| v.as_i64())
        .and_then(|ms| SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms.max(0) as u64)));
    for h in BROKER_HEADERS {
        headers.remove(*h);
    }
    let text = |s: &Option<ShortString>| s.as_ref().map(|s| s.as_str().to_string());
    for (name, value) in [
        (CONTENT_ENCODING_HEADER, p.content_encoding()),
        (APP_ID_HEADER, p.app_id()),
        (USER_ID_HEADER, p.user_id()),
        (CLUSTER_ID_HEADER, p.cluster_id()),
    ] {
        if let Some(v) = text(value) {
            headers.insert(name.to_string(), HeaderValue::String(v));
        }
    }
    let timestamp = timestamp_ms.or_else(|| {
        let secs = (*p.timestamp())?;
        let t = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs));
        if t.is_none() {
            headers.insert(
                RAW_TIMESTAMP_HEADER.to_string(),
                HeaderValue::String(secs.to_string()),
            );
        }
        t
    });
    let ttl = p.expiration().as_ref().and_then(|s| {
        let ms = s.as_str().parse::<u64>().ok();
        if ms.is_none() {
            headers.insert(
                RAW_EXPIRATION_HEADER.to_string(),
                HeaderValue::String(s.as_str().to_string()),
            );
        }
        ms.map(Duration::from_millis)
    });
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
        ttl,
        timestamp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::DecimalValue;
    use proptest::prelude::*;

    fn short_text() -> impl Strategy<Value = String> {
        // Any text up to 255 bytes (AMQP's short string limit).
        ".{0,60}".prop_filter("short string", |s| s.len() <= 255)
    }

    fn field_value() -> impl Strategy<Value = AMQPValue> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(AMQPValue::Boolean),
            any::<i8>().prop_map(AMQPValue::ShortShortInt),
            any::<u8>().prop_map(AMQPValue::ShortShortUInt),
            any::<i16>().prop_map(AMQPValue::ShortInt),
            any::<u16>().prop_map(AMQPValue::ShortUInt),
            any::<i32>().prop_map(AMQPValue::LongInt),
            any::<u32>().prop_map(AMQPValue::LongUInt),
            any::<i64>().prop_map(AMQPValue::LongLongInt),
            any::<f32>().prop_map(AMQPValue::Float),
            any::<f64>().prop_map(AMQPValue::Double),
            (any::<u8>(), any::<u32>())
                .prop_map(|(scale, value)| AMQPValue::DecimalValue(DecimalValue { scale, value })),
            short_text().prop_map(|s| AMQPValue::ShortString(s.into())),
            // Long strings are bytes: anything, not only UTF-8.
            proptest::collection::vec(any::<u8>(), 0..40)
                .prop_map(|b| AMQPValue::LongString(LongString::from(b))),
            any::<u64>().prop_map(AMQPValue::Timestamp),
            proptest::collection::vec(any::<u8>(), 0..40)
                .prop_map(|b| AMQPValue::ByteArray(ByteArray::from(b))),
            Just(AMQPValue::Void),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6)
                    .prop_map(|v| AMQPValue::FieldArray(FieldArray::from(v))),
                proptest::collection::vec((short_text(), inner), 0..6).prop_map(|kv| {
                    let mut t = FieldTable::default();
                    for (k, v) in kv {
                        t.insert(k.into(), v);
                    }
                    AMQPValue::FieldTable(t)
                }),
            ]
        })
    }

    fn properties() -> impl Strategy<Value = BasicProperties> {
        let text = || proptest::option::of(short_text());
        (
            (text(), text(), text(), text(), text(), text()),
            (text(), text(), text(), text()),
            (
                proptest::option::of(any::<u64>()),
                proptest::option::of(any::<u8>()),
                proptest::option::of(any::<u8>()),
            ),
            proptest::collection::vec((short_text(), field_value()), 0..8),
        )
            .prop_map(|(a, b, c, headers)| {
                let (content_type, content_encoding, correlation_id, reply_to, expiration, id) = a;
                let (kind, user_id, app_id, cluster_id) = b;
                let (timestamp, priority, delivery_mode) = c;
                let mut p = BasicProperties::default();
                let s = |v: String| ShortString::from(v);
                if let Some(v) = content_type {
                    p = p.with_content_type(s(v));
                }
                if let Some(v) = content_encoding {
                    p = p.with_content_encoding(s(v));
                }
                if let Some(v) = correlation_id {
                    p = p.with_correlation_id(s(v));
                }
                if let Some(v) = reply_to {
                    p = p.with_reply_to(s(v));
                }
                if let Some(v) = expiration {
                    p = p.with_expiration(s(v));
                }
                if let Some(v) = id {
                    p = p.with_message_id(s(v));
                }
                if let Some(v) = kind {
                    p = p.with_type(s(v));
                }
                if let Some(v) = user_id {
                    p = p.with_user_id(s(v));
                }
                if let Some(v) = app_id {
                    p = p.with_app_id(s(v));
                }
                if let Some(v) = cluster_id {
                    p = p.with_cluster_id(s(v));
                }
                if let Some(v) = timestamp {
                    p = p.with_timestamp(v);
                }
                if let Some(v) = priority {
                    p = p.with_priority(v);
                }
                if let Some(v) = delivery_mode {
                    p = p.with_delivery_mode(v);
                }
                let mut t = FieldTable::default();
                for (k, v) in headers {
                    t.insert(k.into(), v);
                }
                p.with_headers(t)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Whatever another client sent, receiving it never panics, keeps every property
        /// coolmq maps, and what coolmq makes of it can be sent again.
        #[test]
        fn any_received_properties_convert_without_panic(p in properties()) {
            let m = from_properties(&p, vec![1, 2, 3]);
            prop_assert_eq!(m.body.as_ref(), &[1u8, 2, 3][..]);
            prop_assert_eq!(m.content_type.as_deref(), p.content_type().as_ref().map(|s| s.as_str()));
            if let Some(e) = p.content_encoding() {
                prop_assert_eq!(m.headers.get(CONTENT_ENCODING_HEADER).and_then(HeaderValue::as_str), Some(e.as_str()));
            }
            if let Some(u) = p.user_id() {
                prop_assert_eq!(m.headers.get(USER_ID_HEADER).and_then(HeaderValue::as_str), Some(u.as_str()));
            }
            if let Some(secs) = p.timestamp() {
                prop_assert!(m.timestamp.is_some() || m.headers.contains_key(RAW_TIMESTAMP_HEADER), "timestamp {} lost", secs);
            }
            if let Some(id) = p.message_id() {
                prop_assert_eq!(&m.id, id.as_str());
            }
            // Back onto the wire: never a panic; an error only for what AMQP cannot carry.
            let _ = to_properties(&m, None);
        }
    }

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
