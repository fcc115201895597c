//! Typed message headers (AMQP 0-9-1 field tables, AMQP 1.0 application properties, JMS
//! properties), so values keep their type across every broker instead of becoming strings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One header value. Every variant round-trips on every backend, except `List` and `Map`,
/// which need [`crate::Capabilities::nested_headers`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum HeaderValue {
    /// A boolean.
    Bool(bool),
    /// A signed 8-bit integer.
    I8(i8),
    /// A signed 16-bit integer.
    I16(i16),
    /// A signed 32-bit integer.
    I32(i32),
    /// A signed 64-bit integer.
    I64(i64),
    /// An unsigned 8-bit integer.
    U8(u8),
    /// An unsigned 16-bit integer.
    U16(u16),
    /// An unsigned 32-bit integer.
    U32(u32),
    /// A 32-bit float.
    F32(f32),
    /// A 64-bit float.
    F64(f64),
    /// A UTF-8 string.
    String(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A list of values (nested; needs `nested_headers`).
    List(Vec<HeaderValue>),
    /// A map of values (nested; needs `nested_headers`).
    Map(BTreeMap<String, HeaderValue>),
}

impl HeaderValue {
    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            HeaderValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an `i64`, if it is any integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            HeaderValue::I8(v) => Some(v.into()),
            HeaderValue::I16(v) => Some(v.into()),
            HeaderValue::I32(v) => Some(v.into()),
            HeaderValue::I64(v) => Some(v),
            HeaderValue::U8(v) => Some(v.into()),
            HeaderValue::U16(v) => Some(v.into()),
            HeaderValue::U32(v) => Some(v.into()),
            _ => None,
        }
    }

    /// Whether this value nests other values.
    pub fn is_nested(&self) -> bool {
        matches!(self, HeaderValue::List(_) | HeaderValue::Map(_))
    }
}

macro_rules! header_from {
    ($($t:ty => $v:ident),* $(,)?) => {
        $(impl From<$t> for HeaderValue {
            fn from(v: $t) -> Self {
                HeaderValue::$v(v.into())
            }
        })*
    };
}

header_from!(
    bool => Bool, i8 => I8, i16 => I16, i32 => I32, i64 => I64, u8 => U8, u16 => U16,
    u32 => U32, f32 => F32, f64 => F64, String => String, &str => String, Vec<u8> => Bytes,
    Vec<HeaderValue> => List, BTreeMap<String, HeaderValue> => Map,
);

/// The headers of a message, ordered by name so output is stable.
pub type Headers = BTreeMap<String, HeaderValue>;
