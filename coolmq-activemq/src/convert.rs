//! coolmq messages ↔ AMQP 1.0 messages, following ActiveMQ's JMS mapping so a Java JMS
//! client on the same broker reads coolmq's messages and vice versa: id and correlation id as
//! strings, `subject` = JMSType, application properties = JMS properties, a Data body marked as
//! a JMS BytesMessage (`x-opt-jms-msg-type` = 3), `header.durable` = persistent (fe2o3's default
//! is false, so it is always set).

use std::time::{Duration, SystemTime};

use coolmq_core::{Error, ErrorKind, HeaderValue, Headers, Message, Result};
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
        SimpleValue::Ulong(x) => HeaderValue::I64(i64::try_from(*x).unwrap_or(i64::MAX)),
        SimpleValue::Float(x) => HeaderValue::F32(x.into_inner()),
        SimpleValue::Double(x) => HeaderValue::F64(x.into_inner()),
        SimpleValue::String(s) => HeaderValue::String(s.clone()),
        SimpleValue::Symbol(s) => HeaderValue::String(s.0.clone()),
        SimpleValue::Binary(b) => HeaderValue::Bytes(b.to_vec()),
        SimpleValue::Char(c) => HeaderValue::String(c.to_string()),
        SimpleValue::Timestamp(t) => HeaderValue::I64(t.milliseconds()),
        _ => return None,
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
    for (k, v) in &m.headers {
        props.insert(k.clone(), to_simple(k, v)?);
    }
    Ok(sections(
        m,
        Parts {
            id: m.id.clone(),
            correlation_id: m.correlation_id.clone(),
            reply_to: m.reply_to.clone(),
            content_type: m.content_type.clone(),
            kind: m.kind.clone(),
            properties: props,
            body: m.body.to_vec(),
        },
        delay,
    ))
}

/// Like [`to_amqp`], but moves `m`'s body, id, headers and other strings into the AMQP message
/// instead of copying them (the body is copied only if its buffer is shared): a send copies
/// and allocates nothing per message that it can move. [`restore`] gives them back. On error
/// `m` is untouched.
pub(crate) fn to_amqp_taking(m: &mut Message, delay: Option<Duration>) -> Result<AmqpMessage> {
    // Check first, so a refused message stays whole.
    for (k, v) in &m.headers {
        if matches!(v, HeaderValue::List(_) | HeaderValue::Map(_)) {
            to_simple(k, v)?;
        }
    }
    let mut props = OrderedMap::new();
    for (k, v) in std::mem::take(&mut m.headers) {
        props.insert(k, into_simple(v));
    }
    let parts = Parts {
        id: std::mem::take(&mut m.id),
        correlation_id: m.correlation_id.take(),
        reply_to: m.reply_to.take(),
        content_type: m.content_type.take(),
        kind: m.kind.take(),
        properties: props,
        body: Vec::from(std::mem::take(&mut m.body)),
    };
    Ok(sections(m, parts, delay))
}

/// Put back into `m` what [`to_amqp_taking`] moved into `a` (no copies).
pub(crate) fn restore(m: &mut Message, a: AmqpMessage) {
    if let Some(p) = a.properties {
        if let Some(MessageId::String(id)) = p.message_id {
            m.id = id;
        }
        m.correlation_id = p.correlation_id.and_then(|c| match c {
            MessageId::String(c) => Some(c),
            _ => None,
        });
        m.reply_to = p.reply_to;
        m.content_type = p.content_type.map(|s| s.0);
        m.kind = p.subject;
    }
    if let Some(ApplicationProperties(props)) = a.application_properties {
        m.headers = props
            .into_iter()
            .map(|(k, v)| (k, from_simple_taken(v)))
            .collect();
    }
    if let Body::Data(batch) = a.body {
        let mut sections = batch.into_inner();
        m.body = if sections.len() == 1 {
            sections
                .pop()
                .map(|d| d.0.into_vec())
                .unwrap_or_default()
                .into()
        } else {
            sections
                .into_iter()
                .flat_map(|d| d.0.into_vec())
                .collect::<Vec<u8>>()
                .into()
        };
    }
}

/// The message id [`to_amqp_taking`] moved into a sent message (taken out in place when the
/// send holds the only reference: moving the whole message out copied ~600 bytes).
pub(crate) fn sent_id(mut sent: crate::sender_link::Outgoing) -> String {
    let id = match std::sync::Arc::get_mut(&mut sent) {
        Some(s) => s
            .message
            .properties
            .as_mut()
            .and_then(|p| p.message_id.take()),
        None => sent
            .message
            .properties
            .as_ref()
            .and_then(|p| p.message_id.clone()),
    };
    id.map(|id| match id {
        MessageId::String(id) => id,
        other => id_text(&other),
    })
    .unwrap_or_default()
}

/// A header value as an application property, moved. Nested values were refused before.
fn into_simple(v: HeaderValue) -> SimpleValue {
    match v {
        HeaderValue::String(s) => SimpleValue::String(s),
        HeaderValue::Bytes(b) => SimpleValue::Binary(Binary::from(b)),
        other => to_simple("", &other).unwrap_or(SimpleValue::Null),
    }
}

/// The exact inverse of [`into_simple`] (the variants it makes), moved.
fn from_simple_taken(v: SimpleValue) -> HeaderValue {
    match v {
        SimpleValue::String(s) => HeaderValue::String(s),
        SimpleValue::Binary(b) => HeaderValue::Bytes(b.into_vec()),
        other => from_simple(&other).unwrap_or(HeaderValue::String(String::new())),
    }
}

/// What a message's sections are built from: owned, so they are either copied or moved in.
struct Parts {
    id: String,
    correlation_id: Option<String>,
    reply_to: Option<String>,
    content_type: Option<String>,
    kind: Option<String>,
    properties: OrderedMap<String, SimpleValue>,
    body: Vec<u8>,
}

fn sections(m: &Message, parts: Parts, delay: Option<Duration>) -> AmqpMessage {
    let mut annotations =
        MessageAnnotations::builder().insert(JMS_MSG_TYPE, Value::Byte(JMS_BYTES_MESSAGE));
    if let Some(d) = delay.filter(|d| !d.is_zero()) {
        annotations = annotations.insert(DELIVERY_DELAY, Value::Long(d.as_millis() as i64));
    }
    let header = Header {
        durable: m.persistent,
        priority: Priority(m.priority.unwrap_or(4)),
        ttl: m
            .ttl
            .map(|t| t.as_millis().clamp(1, u128::from(u32::MAX)) as u32),
        first_acquirer: false,
        delivery_count: 0,
    };
    let properties = Properties {
        message_id: Some(MessageId::String(parts.id)),
        correlation_id: parts.correlation_id.map(MessageId::String),
        reply_to: parts.reply_to,
        content_type: parts.content_type.map(Symbol::from),
        subject: parts.kind,
        creation_time: m.timestamp.map(|t| Timestamp::from_milliseconds(millis(t))),
        ..Default::default()
    };
    AmqpMessage {
        header: Some(header),
        delivery_annotations: None,
        message_annotations: Some(annotations.build()),
        properties: Some(properties),
        application_properties: Some(ApplicationProperties(parts.properties)),
        body: Body::from(Data(Binary::from(parts.body))),
        footer: None,
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
    let body: Vec<u8> = match a.body {
        Body::Data(batch) => batch
            .into_inner()
            .into_iter()
            .flat_map(|d| d.0.into_vec())
            .collect(),
        Body::Value(AmqpValue(Value::String(s))) => s.into_bytes(),
        Body::Value(AmqpValue(Value::Binary(b))) => b.into_vec(),
        Body::Value(AmqpValue(other)) => format!("{other:?}").into_bytes(),
        Body::Sequence(_) | Body::Empty => Vec::new(),
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
        timestamp: p.creation_time.map(|t| {
            SystemTime::UNIX_EPOCH + Duration::from_millis(t.milliseconds().max(0) as u64)
        }),
    };
    (message, header.delivery_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_message_moves_and_comes_back_whole_without_copies() {
        let mut m = Message::new(vec![7u8; 4096])
            .with_header("text", "v")
            .with_header("bytes", HeaderValue::Bytes(vec![1, 2]))
            .with_header("i8", HeaderValue::I8(-1))
            .with_header("u64ish", HeaderValue::U32(7))
            .with_header("f32", HeaderValue::F32(1.5))
            .with_header("bool", true)
            .with_correlation_id("c")
            .with_reply_to("r")
            .with_content_type("application/octet-stream")
            .with_kind("k");
        // Field by field (cloning `m` would share its body's buffer, which then must be copied).
        let (id, headers) = (m.id.clone(), m.headers.clone());
        let (correlation, reply, content, kind) = (
            m.correlation_id.clone(),
            m.reply_to.clone(),
            m.content_type.clone(),
            m.kind.clone(),
        );
        let (body_at, id_at) = (m.body.as_ptr(), m.id.as_ptr());
        let amqp = to_amqp_taking(&mut m, None).expect("converts");
        assert!(m.body.is_empty(), "the body moved into the AMQP message");
        assert!(
            m.id.is_empty() && m.headers.is_empty(),
            "id and headers moved"
        );
        match &amqp.body {
            Body::Data(batch) => assert_eq!(batch[0].0.as_ptr(), body_at, "moved, not copied"),
            other => panic!("unexpected body {other:?}"),
        }
        assert_eq!(amqp, to_amqp(&restored(&amqp, &m), None).expect("converts"));
        restore(&mut m, amqp);
        assert_eq!(m.body.as_ptr(), body_at, "given back, not copied");
        assert_eq!(m.id.as_ptr(), id_at, "id given back, not copied");
        assert_eq!(&m.body[..], &[7u8; 4096][..]);
        assert_eq!((m.id, m.headers), (id, headers));
        assert_eq!(
            (m.correlation_id, m.reply_to, m.content_type, m.kind),
            (correlation, reply, content, kind)
        );
    }

    /// A copy of what `taken` holds, restored into a copy of the rest of `m`.
    fn restored(taken: &AmqpMessage, m: &Message) -> Message {
        let mut copy = m.clone();
        restore(&mut copy, taken.clone());
        copy
    }

    #[test]
    fn a_nested_header_is_refused_and_the_message_stays_whole() {
        let mut m = Message::new("x")
            .with_header("a", "v")
            .with_header("nested", HeaderValue::List(vec![HeaderValue::I32(1)]));
        let before = m.clone();
        let e = to_amqp_taking(&mut m, None).expect_err("nested values cannot be sent");
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert_eq!(m, before);
    }

    #[test]
    fn a_shared_body_is_copied_and_stays_intact() {
        let mut m = Message::new(vec![1u8, 2, 3]);
        let other_owner = m.body.clone();
        let amqp = to_amqp_taking(&mut m, None).expect("converts");
        restore(&mut m, amqp);
        assert_eq!(&m.body[..], &[1, 2, 3]);
        assert_eq!(other_owner, m.body);
    }
}
