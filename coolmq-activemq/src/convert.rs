//! coolmq messages ↔ AMQP 1.0 messages, following ActiveMQ's JMS mapping so a Java JMS
//! client on the same broker reads coolmq's messages and vice versa: id and correlation id as
//! strings, `subject` = JMSType, application properties = JMS properties, a Data body marked as
//! a JMS BytesMessage (`x-opt-jms-msg-type` = 3), `header.durable` = persistent (fe2o3's default
//! is false, so it is always set).

use std::time::{Duration, SystemTime};

use coolmq_core::{Error, ErrorKind, HeaderValue, Headers, Message, Result};
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    message::Body, AmqpValue, ApplicationProperties, Data, Header, MessageAnnotations, MessageId,
    Priority, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, OrderedMap, SimpleValue, Symbol, Timestamp, Value};

/// Annotation: delay delivery by this many milliseconds (Artemis; Classic with the scheduler).
pub(crate) const DELIVERY_DELAY: &str = "x-opt-delivery-delay";
/// Annotation: the JMS message type (3 = BytesMessage, 5 = TextMessage).
const JMS_MSG_TYPE: &str = "x-opt-jms-msg-type";
const JMS_BYTES_MESSAGE: i8 = 3;
/// Header set on a received message whose body was not a Data section: `amqp-value` or
/// `amqp-sequence`. The body then holds those sections as AMQP encodes them, so nothing of
/// another client's body is lost (a string or binary value is taken as is instead).
pub const AMQP_BODY_HEADER: &str = "coolmq_amqp_body";

/// The AMQP 1.0 message type coolmq sends and receives.
pub(crate) type AmqpMessage = fe2o3_amqp::types::messaging::Message<Body<Value>>;

fn to_simple(name: &str, v: &HeaderValue) -> Result<SimpleValue> {
    Ok(match v {
        HeaderValue::Bool(b) => SimpleValue::Bool(*b),
        HeaderValue::I8(x) => SimpleValue::Byte(*x),
        HeaderValue::I16(x) => SimpleValue::Short(*x),
        HeaderValue::I32(x) => SimpleValue::Int(*x),
        HeaderValue::I64(x) => SimpleValue::Long(*x),
        HeaderValue::U8(x) => SimpleValue::Ubyte(*x),
        HeaderValue::U16(x) => SimpleValue::Ushort(*x),
        HeaderValue::U32(x) => SimpleValue::Uint(*x),
        HeaderValue::F32(x) => SimpleValue::from(*x),
        HeaderValue::F64(x) => SimpleValue::from(*x),
        HeaderValue::String(s) => SimpleValue::String(s.clone()),
        HeaderValue::Bytes(b) => SimpleValue::Binary(Binary::from(b.clone())),
        HeaderValue::List(_) | HeaderValue::Map(_) => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("header {name:?}: AMQP 1.0 application properties cannot nest values"),
            ))
        }
    })
}

fn from_simple(v: &SimpleValue) -> Option<HeaderValue> {
    Some(match v {
        SimpleValue::Bool(b) => HeaderValue::Bool(*b),
        SimpleValue::Byte(x) => HeaderValue::I8(*x),
        SimpleValue::Short(x) => HeaderValue::I16(*x),
        SimpleValue::Int(x) => HeaderValue::I32(*x),
        SimpleValue::Long(x) => HeaderValue::I64(*x),
        SimpleValue::Ubyte(x) => HeaderValue::U8(*x),
        SimpleValue::Ushort(x) => HeaderValue::U16(*x),
        SimpleValue::Uint(x) => HeaderValue::U32(*x),
        // Past i64 the exact value is kept as text rather than clamped.
        SimpleValue::Ulong(x) => match i64::try_from(*x) {
            Ok(v) => HeaderValue::I64(v),
            Err(_) => HeaderValue::String(x.to_string()),
        },
        SimpleValue::Float(x) => HeaderValue::F32(x.into_inner()),
        SimpleValue::Double(x) => HeaderValue::F64(x.into_inner()),
        SimpleValue::String(s) => HeaderValue::String(s.clone()),
        SimpleValue::Symbol(s) => HeaderValue::String(s.0.clone()),
        SimpleValue::Binary(b) => HeaderValue::Bytes(b.to_vec()),
        SimpleValue::Char(c) => HeaderValue::String(c.to_string()),
        SimpleValue::Timestamp(t) => HeaderValue::I64(t.milliseconds()),
        SimpleValue::Null => return None,
        // Decimals and UUIDs have no header type: their text keeps the value.
        other => HeaderValue::String(format!("{other:?}")),
    })
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

fn id_text(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => format!("{u:?}"),
        MessageId::Binary(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
    }
}

/// The AMQP 1.0 message for `m`, delayed by `delay` if given (everything is copied).
pub(crate) fn to_amqp(m: &Message, delay: Option<Duration>) -> Result<AmqpMessage> {
    let mut props = OrderedMap::new();
    fill_properties(&mut props, m)?;
    let mut annotations =
        MessageAnnotations::builder().insert(JMS_MSG_TYPE, Value::Byte(JMS_BYTES_MESSAGE));
    if let Some(d) = delay.filter(|d| !d.is_zero()) {
        annotations = annotations.insert(DELIVERY_DELAY, Value::Long(d.as_millis() as i64));
    }
    let properties = Properties {
        message_id: Some(MessageId::String(m.id.clone())),
        correlation_id: m.correlation_id.clone().map(MessageId::String),
        reply_to: m.reply_to.clone(),
        content_type: m.content_type.clone().map(Symbol::from),
        subject: m.kind.clone(),
        creation_time: m.timestamp.map(|t| Timestamp::from_milliseconds(millis(t))),
        ..Default::default()
    };
    Ok(AmqpMessage {
        header: Some(header(m)),
        delivery_annotations: None,
        message_annotations: Some(annotations.build()),
        properties: Some(properties),
        application_properties: Some(ApplicationProperties(props)),
        body: Body::from(Data(Binary::from(m.body.to_vec()))),
        footer: None,
    })
}

/// An AMQP message with no sections: what [`refill`] starts from (fe2o3's message has no
/// `Default`, its body type has none).
pub(crate) fn blank() -> AmqpMessage {
    AmqpMessage {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: None,
        application_properties: None,
        body: Body::Empty,
        footer: None,
    }
}

/// Make `a` (the AMQP message of an earlier send, or a new one) the AMQP message for `m`,
/// reusing its maps and vectors: a link sends one message at a time, so it refills one AMQP
/// message instead of building and dropping one per send. The message's id and body are lent,
/// not copied (the body is copied only when someone else still shares it); [`take_back`]
/// returns them once the message is on the wire. Headers that have the previous message's
/// names are updated in place. On an error `m` is whole (`a` is left for the next refill).
pub(crate) fn refill(a: &mut AmqpMessage, m: &mut Message, delay: Option<Duration>) -> Result<()> {
    let props = &mut a
        .application_properties
        .get_or_insert_with(|| ApplicationProperties(OrderedMap::new()))
        .0;
    fill_properties(props, m)?;
    let annotations = a
        .message_annotations
        .get_or_insert_with(|| MessageAnnotations::builder().build())
        .0
        .as_inner_mut();
    if annotations.is_empty() {
        annotations.insert(
            OwnedKey::Symbol(Symbol::from(JMS_MSG_TYPE)),
            Value::Byte(JMS_BYTES_MESSAGE),
        );
    }
    // Only the JMS type is there, and the delay after it when the last send had one.
    annotations.truncate(1);
    if let Some(d) = delay.filter(|d| !d.is_zero()) {
        annotations.insert(
            OwnedKey::Symbol(Symbol::from(DELIVERY_DELAY)),
            Value::Long(d.as_millis() as i64),
        );
    }
    a.header = Some(header(m));
    let p = a.properties.get_or_insert_with(Properties::default);
    p.message_id = Some(MessageId::String(std::mem::take(&mut m.id)));
    p.correlation_id = m.correlation_id.clone().map(MessageId::String);
    p.reply_to.clone_from(&m.reply_to);
    p.content_type = m.content_type.clone().map(Symbol::from);
    p.subject.clone_from(&m.kind);
    p.creation_time = m.timestamp.map(|t| Timestamp::from_milliseconds(millis(t)));
    let body = Data(Binary::from(Vec::from(std::mem::take(&mut m.body))));
    match &mut a.body {
        Body::Data(batch) => {
            batch.clear();
            batch.push(body);
        }
        other => *other = Body::from(body),
    }
    Ok(())
}

/// The headers into `props` (nested values have no AMQP 1.0 form): values replaced in place
/// when the names are the previous message's (every message of a sender carries
/// `traceparent`), else the map is rebuilt.
fn fill_properties(props: &mut OrderedMap<String, SimpleValue>, m: &Message) -> Result<()> {
    let props = props.as_inner_mut();
    let same_names =
        props.len() == m.headers.len() && props.keys().zip(m.headers.keys()).all(|(a, b)| a == b);
    if same_names {
        for ((name, slot), value) in props.iter_mut().zip(m.headers.values()) {
            match (slot, value) {
                (SimpleValue::String(s), HeaderValue::String(v)) => s.clone_from(v),
                (slot, value) => *slot = to_simple(name, value)?,
            }
        }
    } else {
        props.clear();
        for (k, v) in &m.headers {
            props.insert(k.clone(), to_simple(k, v)?);
        }
    }
    Ok(())
}

/// Return what [`refill`] lent to `a` to `m`.
pub(crate) fn take_back(m: &mut Message, a: &mut AmqpMessage) {
    if let Some(MessageId::String(id)) = a.properties.as_mut().and_then(|p| p.message_id.take()) {
        m.id = id;
    }
    if let Body::Data(batch) = &mut a.body {
        if let Some(Data(body)) = batch.pop() {
            m.body = body.into_vec().into();
        }
    }
}

/// [`take_back`] for an AMQP message still shared elsewhere: copies.
pub(crate) fn copy_back(m: &mut Message, a: &AmqpMessage) {
    if let Some(MessageId::String(id)) = a.properties.as_ref().and_then(|p| p.message_id.as_ref()) {
        m.id = id.clone();
    }
    if let Body::Data(batch) = &a.body {
        if let Some(Data(body)) = batch.last() {
            m.body = body.to_vec().into();
        }
    }
}

/// The AMQP header: durable = persistent (fe2o3's default is not durable).
fn header(m: &Message) -> Header {
    Header {
        durable: m.persistent,
        priority: Priority(m.priority.unwrap_or(4)),
        ttl: m
            .ttl
            .map(|t| t.as_millis().clamp(1, u128::from(u32::MAX)) as u32),
        first_acquirer: false,
        delivery_count: 0,
    }
}

/// Rebuild the coolmq message and the broker's redelivery count from an AMQP 1.0 message.
pub(crate) fn from_amqp(a: AmqpMessage) -> (Message, u32) {
    let header = a.header.unwrap_or_default();
    let p = a.properties.unwrap_or_default();
    let headers: Headers = a
        .application_properties
        .map(|ap| {
            ap.0.iter()
                .filter_map(|(k, v)| from_simple(v).map(|v| (k.clone(), v)))
                .collect()
        })
        .unwrap_or_default();
    let mut headers = headers;
    // AMQP 1.0 properties without a `Message` field become headers: the names coolmq uses
    // for AMQP 0-9-1 properties, and JMS's for message groups.
    let mut keep = |name: &str, value: Option<HeaderValue>| {
        if let Some(v) = value {
            headers.entry(name.to_string()).or_insert(v);
        }
    };
    keep(
        "coolmq_content_encoding",
        p.content_encoding
            .as_ref()
            .map(|s| HeaderValue::String(s.0.clone())),
    );
    keep(
        "coolmq_user_id",
        p.user_id.as_ref().map(|b| match std::str::from_utf8(b) {
            Ok(text) => HeaderValue::String(text.to_string()),
            Err(_) => HeaderValue::Bytes(b.to_vec()),
        }),
    );
    keep("JMSXGroupID", p.group_id.clone().map(HeaderValue::String));
    keep(
        "JMSXGroupSeq",
        p.group_sequence.map(|n| match i32::try_from(n) {
            Ok(v) => HeaderValue::I32(v),
            Err(_) => HeaderValue::U32(n),
        }),
    );
    let mut encoded = |kind: &str, bytes: std::result::Result<Vec<u8>, serde_amqp::Error>| {
        headers.insert(
            AMQP_BODY_HEADER.to_string(),
            HeaderValue::String(kind.into()),
        );
        bytes.unwrap_or_default()
    };
    let body: Vec<u8> = match a.body {
        Body::Data(batch) => {
            // One data section (what every JMS and coolmq sender writes) is taken as it is;
            // several are joined with memcpy, never byte by byte (bodies reach megabytes).
            let mut sections = batch.into_inner();
            if sections.len() == 1 {
                sections.pop().map(|d| d.0.into_vec()).unwrap_or_default()
            } else {
                let mut joined = Vec::with_capacity(sections.iter().map(|d| d.0.len()).sum());
                for d in &sections {
                    joined.extend_from_slice(&d.0);
                }
                joined
            }
        }
        Body::Value(AmqpValue(Value::String(s))) => s.into_bytes(),
        Body::Value(AmqpValue(Value::Binary(b))) => b.into_vec(),
        Body::Value(value) => encoded("amqp-value", serde_amqp::to_vec(&value)),
        Body::Sequence(batch) => {
            let mut all = Vec::new();
            let mut result = Ok(());
            for section in batch.into_inner() {
                match serde_amqp::to_vec(&section) {
                    Ok(bytes) => all.extend(bytes),
                    Err(e) => result = Err(e),
                }
            }
            encoded("amqp-sequence", result.map(|()| all))
        }
        Body::Empty => Vec::new(),
    };
    let message = Message {
        id: p
            .message_id
            .as_ref()
            .map(id_text)
            .unwrap_or_else(coolmq_core::new_message_id),
        body: body.into(),
        content_type: p.content_type.map(|s| s.0),
        headers,
        correlation_id: p.correlation_id.as_ref().map(id_text),
        reply_to: p.reply_to,
        kind: p.subject,
        // 4 is the AMQP and JMS default: the same as no priority.
        priority: Some(header.priority.0).filter(|p| *p != 4),
        persistent: header.durable,
        ttl: header.ttl.map(|ms| Duration::from_millis(u64::from(ms))),
        // Any 64-bit value is legal on the wire; only what a SystemTime holds becomes one.
        timestamp: p.creation_time.and_then(|t| {
            SystemTime::UNIX_EPOCH
                .checked_add(Duration::from_millis(t.milliseconds().max(0) as u64))
        }),
    };
    (message, header.delivery_count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::messaging::{AmqpSequence, Batch};
    use proptest::prelude::*;

    fn simple() -> impl Strategy<Value = SimpleValue> {
        prop_oneof![
            Just(SimpleValue::Null),
            any::<bool>().prop_map(SimpleValue::Bool),
            any::<u8>().prop_map(SimpleValue::Ubyte),
            any::<u16>().prop_map(SimpleValue::Ushort),
            any::<u32>().prop_map(SimpleValue::Uint),
            any::<u64>().prop_map(SimpleValue::Ulong),
            any::<i8>().prop_map(SimpleValue::Byte),
            any::<i16>().prop_map(SimpleValue::Short),
            any::<i32>().prop_map(SimpleValue::Int),
            any::<i64>().prop_map(SimpleValue::Long),
            any::<f32>().prop_map(SimpleValue::from),
            any::<f64>().prop_map(SimpleValue::from),
            any::<i64>().prop_map(|t| SimpleValue::Timestamp(Timestamp::from_milliseconds(t))),
            ".{0,40}".prop_map(SimpleValue::String),
            ".{0,40}".prop_map(|s| SimpleValue::Symbol(Symbol::from(s))),
            proptest::collection::vec(any::<u8>(), 0..40)
                .prop_map(|b| SimpleValue::Binary(Binary::from(b))),
            any::<char>().prop_map(SimpleValue::Char),
            any::<[u8; 16]>().prop_map(|u| SimpleValue::Uuid(u.into())),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Long),
            any::<u64>().prop_map(Value::Ulong),
            ".{0,20}".prop_map(Value::String),
            proptest::collection::vec(any::<u8>(), 0..20)
                .prop_map(|b| Value::Binary(Binary::from(b))),
            any::<f64>().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::List),
                proptest::collection::vec((".{0,8}", inner), 0..5).prop_map(|kv| {
                    Value::Map(kv.into_iter().map(|(k, v)| (Value::String(k), v)).collect())
                }),
            ]
        })
    }

    fn body() -> impl Strategy<Value = Body<Value>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64)
                .prop_map(|b| Body::from(Data(Binary::from(b)))),
            value().prop_map(|v| Body::Value(AmqpValue(v))),
            proptest::collection::vec(proptest::collection::vec(value(), 0..4), 1..3).prop_map(
                |seqs| Body::Sequence(Batch::new(
                    seqs.into_iter().map(AmqpSequence).collect::<Vec<_>>()
                ))
            ),
            Just(Body::Empty),
        ]
    }

    fn message_id() -> impl Strategy<Value = Option<MessageId>> {
        proptest::option::of(prop_oneof![
            ".{0,40}".prop_map(MessageId::String),
            any::<u64>().prop_map(MessageId::Ulong),
            any::<[u8; 16]>().prop_map(|u| MessageId::Uuid(u.into())),
            proptest::collection::vec(any::<u8>(), 0..20)
                .prop_map(|b| MessageId::Binary(Binary::from(b))),
        ])
    }

    fn amqp_message() -> impl Strategy<Value = AmqpMessage> {
        (
            (
                any::<bool>(),
                any::<u8>(),
                proptest::option::of(any::<u32>()),
                any::<u32>(),
            ),
            (
                message_id(),
                message_id(),
                proptest::option::of(any::<i64>()),
            ),
            proptest::collection::vec((".{0,20}", simple()), 0..8),
            body(),
        )
            .prop_map(
                |(
                    (durable, priority, ttl, delivery_count),
                    (id, correlation, created),
                    props,
                    body,
                )| {
                    AmqpMessage {
                        header: Some(Header {
                            durable,
                            priority: Priority(priority),
                            ttl,
                            first_acquirer: false,
                            delivery_count,
                        }),
                        delivery_annotations: None,
                        message_annotations: None,
                        properties: Some(Properties {
                            message_id: id,
                            correlation_id: correlation,
                            creation_time: created.map(Timestamp::from_milliseconds),
                            ..Default::default()
                        }),
                        application_properties: Some(ApplicationProperties(
                            props.into_iter().collect(),
                        )),
                        body,
                        footer: None,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Whatever another AMQP 1.0 client sent, receiving it never panics, keeps the
        /// delivery count, marks a body that was not Data, and can be sent on again.
        #[test]
        fn any_received_message_converts_without_panic(a in amqp_message()) {
            let count = a.header.as_ref().map(|h| h.delivery_count).unwrap_or_default();
            let data_body = matches!(a.body, Body::Data(_) | Body::Empty)
                || matches!(a.body, Body::Value(AmqpValue(Value::String(_) | Value::Binary(_))));
            let (m, redeliveries) = from_amqp(a);
            prop_assert_eq!(redeliveries, count);
            prop_assert_eq!(m.headers.contains_key(AMQP_BODY_HEADER), !data_body);
            let _ = to_amqp(&m, None);
        }
    }

    #[test]
    fn several_data_sections_are_joined_in_order() {
        let mut amqp = to_amqp(&Message::new(b"ignored".to_vec()), None).expect("converts");
        amqp.body = Body::Data(Batch::new(vec![
            Data(Binary::from(b"one ".to_vec())),
            Data(Binary::from(Vec::new())),
            Data(Binary::from(b"two".to_vec())),
        ]));
        let (back, _) = from_amqp(amqp);
        assert_eq!(&back.body[..], b"one two");
    }

    #[test]
    fn a_message_goes_to_amqp_and_back_whole() {
        let m = Message::new(vec![7u8; 4096])
            .with_header("text", "v")
            .with_header("bytes", HeaderValue::Bytes(vec![1, 2]))
            .with_header("i8", HeaderValue::I8(-1))
            .with_header("u32", HeaderValue::U32(7))
            .with_header("f32", HeaderValue::F32(1.5))
            .with_header("bool", true)
            .with_correlation_id("c")
            .with_reply_to("r")
            .with_content_type("application/octet-stream")
            .with_kind("k");
        let amqp = to_amqp(&m, None).expect("converts");
        assert_eq!(amqp.header.as_ref().map(|h| h.durable), Some(true));
        let (back, redelivered) = from_amqp(amqp);
        assert_eq!(redelivered, 0);
        assert_eq!(back, m);
    }

    #[test]
    fn a_refilled_message_is_the_copied_one_and_lends_id_and_body() {
        let mut slot = blank();
        let secs = |s| Some(Duration::from_secs(s));
        let cases = [
            (
                Message::new(vec![7u8; 4096])
                    .with_header("text", "v")
                    .with_correlation_id("c"),
                secs(1),
            ),
            // The same header names: values replaced in place.
            (
                Message::new(b"second".to_vec()).with_header("text", "w"),
                None,
            ),
            (
                Message::new(b"third".to_vec())
                    .with_header("a", HeaderValue::I32(1))
                    .with_header("b", "x")
                    .with_kind("k")
                    .with_reply_to("r")
                    .with_content_type("t"),
                secs(2),
            ),
            (Message::new(b"fourth".to_vec()), None),
        ];
        for (mut m, delay) in cases {
            let expected = to_amqp(&m, delay).expect("converts");
            // A deep copy, so `m` keeps the only reference to its body.
            let whole = Message {
                body: m.body.to_vec().into(),
                ..m.clone()
            };
            let body_at = m.body.as_ptr();
            refill(&mut slot, &mut m, delay).expect("converts");
            assert_eq!(slot, expected, "the refilled message is the copied one");
            assert!(m.id.is_empty() && m.body.is_empty(), "id and body are lent");
            take_back(&mut m, &mut slot);
            assert_eq!(m, whole, "id and body are back");
            assert_eq!(m.body.as_ptr(), body_at, "the body was lent, not copied");
        }
        let mut sent = Message::new(b"shared".to_vec()).with_header("h", "v");
        let whole = sent.clone();
        refill(&mut slot, &mut sent, None).expect("converts");
        let mut copied = sent.clone();
        copy_back(&mut copied, &slot);
        assert_eq!(copied, whole, "copy_back gives back a copy");

        let mut nested =
            Message::new("x").with_header("nested", HeaderValue::List(vec![HeaderValue::I32(1)]));
        let before = nested.clone();
        refill(&mut slot, &mut nested, None).expect_err("nested values cannot be sent");
        assert_eq!(nested, before, "a refused message keeps its id and body");
    }

    #[test]
    fn a_nested_header_is_refused() {
        let m = Message::new("x")
            .with_header("a", "v")
            .with_header("nested", HeaderValue::List(vec![HeaderValue::I32(1)]));
        let e = to_amqp(&m, None).expect_err("nested values cannot be sent");
        assert_eq!(e.kind(), ErrorKind::Unsupported);
    }
}
