//! lapin's AMQP value model (what the shared conversions in `convert.rs` produce) ↔ amqprs's.
//! The shared layer validates every short string, so the amqprs setters, which panic on
//! over-long ones, only ever see valid input.

use amqprs::{BasicProperties as Props, FieldTable as Table, FieldValue as V};
use coolmq_core::{Error, ErrorKind, Result};
use lapin::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};
use lapin::BasicProperties;

fn too_large(what: &str) -> Error {
    Error::new(
        ErrorKind::MessageTooLarge,
        format!("{what} is larger than AMQP 0-9-1's 4 GiB field limit"),
    )
    .set_temporary(false)
}

fn value(v: &AMQPValue) -> Result<V> {
    Ok(match v {
        AMQPValue::Boolean(b) => V::t(*b),
        AMQPValue::ShortShortInt(x) => V::b(*x),
        AMQPValue::ShortShortUInt(x) => V::B(*x),
        AMQPValue::ShortInt(x) => V::s(*x),
        AMQPValue::ShortUInt(x) => V::u(*x),
        AMQPValue::LongInt(x) => V::I(*x),
        AMQPValue::LongUInt(x) => V::i(*x),
        AMQPValue::LongLongInt(x) => V::l(*x),
        AMQPValue::Float(x) => V::f(*x),
        AMQPValue::Double(x) => V::d(*x),
        AMQPValue::DecimalValue(d) => V::D(amqprs::DecimalValue::new(d.scale, d.value as i32)),
        AMQPValue::ShortString(s) => V::S(
            s.as_str()
                .try_into()
                .map_err(|_| too_large("a header string"))?,
        ),
        // amqprs holds long strings as text: other bytes travel as a byte array.
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => V::S(text.try_into().map_err(|_| too_large("a header string"))?),
            Err(_) => V::x(
                s.as_bytes()
                    .to_vec()
                    .try_into()
                    .map_err(|_| too_large("a header"))?,
            ),
        },
        AMQPValue::FieldArray(a) => V::A(
            a.as_slice()
                .iter()
                .map(value)
                .collect::<Result<Vec<_>>>()?
                .try_into()
                .map_err(|_| too_large("a header list"))?,
        ),
        AMQPValue::Timestamp(t) => V::T(*t),
        AMQPValue::FieldTable(t) => V::F(table(t)?),
        AMQPValue::ByteArray(b) => V::x(
            b.as_slice()
                .to_vec()
                .try_into()
                .map_err(|_| too_large("a header"))?,
        ),
        AMQPValue::Void => V::V,
    })
}

/// A lapin field table as amqprs's.
pub(crate) fn table(t: &FieldTable) -> Result<Table> {
    let mut out = Table::new();
    for (k, v) in t.inner() {
        // Names came through lapin's ShortString: at most 255 bytes.
        let name = k
            .as_str()
            .try_into()
            .map_err(|_| Error::config("header", "a header name is longer than 255 bytes"))?;
        out.insert(name, value(v)?);
    }
    Ok(out)
}

/// amqprs keeps a decimal's parts private; its `Display` is `Decimal(scale, value)`.
fn decimal(d: &amqprs::DecimalValue) -> Option<DecimalValue> {
    let text = d.to_string();
    let inner = text.strip_prefix("Decimal(")?.strip_suffix(')')?;
    let (scale, value) = inner.split_once(", ")?;
    Some(DecimalValue {
        scale: scale.parse().ok()?,
        value: value.parse::<i32>().ok()? as u32,
    })
}

fn from_value(v: &V) -> AMQPValue {
    match v {
        V::t(b) => AMQPValue::Boolean(*b),
        V::b(x) => AMQPValue::ShortShortInt(*x),
        V::B(x) => AMQPValue::ShortShortUInt(*x),
        V::s(x) => AMQPValue::ShortInt(*x),
        V::u(x) => AMQPValue::ShortUInt(*x),
        V::I(x) => AMQPValue::LongInt(*x),
        V::i(x) => AMQPValue::LongUInt(*x),
        V::l(x) => AMQPValue::LongLongInt(*x),
        V::f(x) => AMQPValue::Float(*x),
        V::d(x) => AMQPValue::Double(*x),
        V::D(d) => decimal(d).map_or(AMQPValue::Void, AMQPValue::DecimalValue),
        V::S(s) => AMQPValue::LongString(LongString::from(s.as_ref().as_bytes().to_vec())),
        V::A(a) => {
            let items: Vec<V> = a.clone().into();
            AMQPValue::FieldArray(FieldArray::from(
                items.iter().map(from_value).collect::<Vec<_>>(),
            ))
        }
        V::T(t) => AMQPValue::Timestamp(*t),
        V::F(t) => AMQPValue::FieldTable(from_table(t)),
        V::V => AMQPValue::Void,
        V::x(b) => AMQPValue::ByteArray(ByteArray::from(Vec::<u8>::from(b.clone()))),
    }
}

fn from_table(t: &Table) -> FieldTable {
    let mut out = FieldTable::default();
    for (k, v) in t.as_ref() {
        out.insert(ShortString::from(k.as_ref().clone()), from_value(v));
    }
    out
}

fn short(s: &Option<ShortString>) -> Option<String> {
    s.as_ref().map(|s| s.as_str().to_string())
}

/// The properties the shared conversion built, as amqprs sends them.
pub(crate) fn to_amqprs(p: &BasicProperties) -> Result<Props> {
    let headers = match p.headers() {
        Some(h) => Some(table(h)?),
        None => None,
    };
    Ok(Props::new(
        short(p.content_type()),
        short(p.content_encoding()),
        headers,
        *p.delivery_mode(),
        *p.priority(),
        short(p.correlation_id()),
        short(p.reply_to()),
        short(p.expiration()),
        short(p.message_id()),
        *p.timestamp(),
        short(p.kind()),
        short(p.user_id()),
        short(p.app_id()),
        short(p.cluster_id()),
    ))
}

/// A delivery's amqprs properties as the shared conversion reads them.
pub(crate) fn from_amqprs(p: &Props) -> BasicProperties {
    let text = |s: Option<&String>| s.map(|s| ShortString::from(s.clone()));
    let mut out = BasicProperties::default();
    if let Some(v) = text(p.content_type()) {
        out = out.with_content_type(v);
    }
    if let Some(v) = text(p.content_encoding()) {
        out = out.with_content_encoding(v);
    }
    if let Some(h) = p.headers() {
        out = out.with_headers(from_table(h));
    }
    if let Some(v) = p.delivery_mode() {
        out = out.with_delivery_mode(v);
    }
    if let Some(v) = p.priority() {
        out = out.with_priority(v);
    }
    if let Some(v) = text(p.correlation_id()) {
        out = out.with_correlation_id(v);
    }
    if let Some(v) = text(p.reply_to()) {
        out = out.with_reply_to(v);
    }
    if let Some(v) = text(p.expiration()) {
        out = out.with_expiration(v);
    }
    if let Some(v) = text(p.message_id()) {
        out = out.with_message_id(v);
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(v);
    }
    if let Some(v) = text(p.message_type()) {
        out = out.with_type(v);
    }
    if let Some(v) = text(p.user_id()) {
        out = out.with_user_id(v);
    }
    if let Some(v) = text(p.app_id()) {
        out = out.with_app_id(v);
    }
    if let Some(v) = text(p.cluster_id()) {
        out = out.with_cluster_id(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_type_survives_the_round_trip() {
        let mut nested = FieldTable::default();
        nested.insert("n".into(), AMQPValue::LongInt(-7));
        let mut t = FieldTable::default();
        let values = [
            AMQPValue::Boolean(true),
            AMQPValue::ShortShortInt(-1),
            AMQPValue::ShortShortUInt(1),
            AMQPValue::ShortInt(-2),
            AMQPValue::ShortUInt(2),
            AMQPValue::LongInt(-3),
            AMQPValue::LongUInt(3),
            AMQPValue::LongLongInt(-4),
            AMQPValue::Float(1.5),
            AMQPValue::Double(2.5),
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 314,
            }),
            AMQPValue::LongString(LongString::from(b"text".to_vec())),
            AMQPValue::ByteArray(ByteArray::from(vec![0u8, 255])),
            AMQPValue::Timestamp(1_700_000_000),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongInt(1)])),
            AMQPValue::FieldArray(FieldArray::default()),
            AMQPValue::FieldTable(nested),
            AMQPValue::Void,
        ];
        for (i, v) in values.iter().enumerate() {
            t.insert(format!("k{i}").into(), v.clone());
        }
        let props = BasicProperties::default()
            .with_headers(t.clone())
            .with_message_id("id-1".into())
            .with_delivery_mode(2)
            .with_type("kind".into())
            .with_timestamp(5);
        let back = from_amqprs(&to_amqprs(&props).unwrap());
        assert_eq!(back.headers().as_ref().unwrap(), &t);
        assert_eq!(back.message_id().as_ref().unwrap().as_str(), "id-1");
        assert_eq!(*back.delivery_mode(), Some(2));
        assert_eq!(back.kind().as_ref().unwrap().as_str(), "kind");
        assert_eq!(*back.timestamp(), Some(5));
    }

    #[test]
    fn binary_long_strings_travel_as_byte_arrays() {
        let v = value(&AMQPValue::LongString(LongString::from(vec![0xff, 0xfe]))).unwrap();
        assert!(matches!(v, V::x(_)));
    }
}
