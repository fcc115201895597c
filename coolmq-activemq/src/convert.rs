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
    let props = application_properties(m)?;
    Ok(build(m, delay, props, m.id.clone(), m.body.to_vec()))
}

/// [`to_amqp`], lending the message's id and body to the AMQP message instead of copying
/// them (the body is not copied when `m` holds the only reference to it); [`take_back`] or
/// [`copy_back`] returns them once the message is on the wire. The rest is copied.
pub(crate) fn lend(m: &mut Message, delay: Option<Duration>) -> Result<AmqpMessage> {
    let props = application_properties(m)?;
    let id = std::mem::take(&mut m.id);
    let body = Vec::from(std::mem::take(&mut m.body));
    Ok(build(m, delay, props, id, body))
}

/// Return what [`lend`] lent to `a` to `m`.
pub(crate) fn take_back(m: &mut Message, a: AmqpMessage) {
    if let Some(MessageId::String(id)) = a.properties.and_then(|p| p.message_id) {
        m.id = id;
    }
    if let Body::Data(batch) = a.body {
        if let Some(Data(body)) = batch.into_inner().pop() {
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

/// The headers as application properties (nested values have no AMQP 1.0 form).
fn application_properties(m: &Message) -> Result<OrderedMap<String, SimpleValue>> {
    let mut props = OrderedMap::new();
    for (k, v) in &m.headers {
        props.insert(k.clone(), to_simple(k, v)?);
    }
    Ok(props)
}

/// The AMQP message: `m`'s fields but its id and body, which are given.
fn build(
    m: &Message,
    delay: Option<Duration>,
    props: OrderedMap<String, SimpleValue>,
    id: String,
    body: Vec<u8>,
) -> AmqpMessage {
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
        message_id: Some(MessageId::String(id)),
        correlation_id: m.correlation_id.clone().map(MessageId::String),
        reply_to: m.reply_to.clone(),
        content_type: m.content_type.clone().map(Symbol::from),
        subject: m.kind.clone(),
        creation_time: m.timestamp.map(|t| Timestamp::from_milliseconds(millis(t))),
        ..Default::default()
    };
    AmqpMessage {
        header: Some(header),
        delivery_annotations: None,
        message_annotations: Some(annotations.build()),
        properties: Some(properties),
        application_properties: Some(ApplicationProperties(props)),
        body: Body::from(Data(Binary::from(body))),
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
    fn a_lent_message_is_whole_again_after_take_back_or_copy_back() {
        let delay = Some(Duration::from_secs(1));
        let mut m = Message::new(vec![7u8; 4096])
            .with_header("text", "v")
            .with_correlation_id("c");
        let body_at = m.body.as_ptr();
        let amqp = lend(&mut m, delay).expect("converts");
        let sent = amqp.clone();
        take_back(&mut m, amqp);
        assert_eq!(m.body.as_ptr(), body_at, "the body was lent, not copied");
        assert_eq!(
            to_amqp(&m, delay).expect("converts"),
            sent,
            "the lent message is the copied one"
        );
        let mut copied = m.clone();
        copied.id.clear();
        copied.body = Default::default();
        copy_back(&mut copied, &sent);
        assert_eq!(copied, m);

        let mut nested =
            Message::new("x").with_header("nested", HeaderValue::List(vec![HeaderValue::I32(1)]));
        let before = nested.clone();
        lend(&mut nested, None).expect_err("nested values cannot be sent");
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
