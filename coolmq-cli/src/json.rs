//! Messages as JSON lines (`recv --json`, `dlq peek --json`): header values as plain JSON
//! values, the body as UTF-8 text when it is text, base64 otherwise.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use coolmq::{HeaderValue, Message};

fn header(v: &HeaderValue) -> Value {
    match v {
        HeaderValue::Bool(b) => json!(b),
        HeaderValue::I8(x) => json!(x),
        HeaderValue::I16(x) => json!(x),
        HeaderValue::I32(x) => json!(x),
        HeaderValue::I64(x) => json!(x),
        HeaderValue::U8(x) => json!(x),
        HeaderValue::U16(x) => json!(x),
        HeaderValue::U32(x) => json!(x),
        HeaderValue::F32(x) => json!(x),
        HeaderValue::F64(x) => json!(x),
        HeaderValue::String(s) => json!(s),
        HeaderValue::Bytes(b) => {
            json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) })
        }
        HeaderValue::List(l) => Value::Array(l.iter().map(header).collect()),
        HeaderValue::Map(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), header(v))).collect())
        }
    }
}

/// One message (and where it stands) as a JSON object.
pub fn message(m: &Message, attempt: u32, redelivered: bool, queue: &str) -> Value {
    let headers: Map<String, Value> = m
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), header(v)))
        .collect();
    let (body, encoding) = match std::str::from_utf8(&m.body) {
        Ok(text) => (json!(text), "utf8"),
        Err(_) => (
            json!(base64::engine::general_purpose::STANDARD.encode(&m.body)),
            "base64",
        ),
    };
    json!({
        "id": m.id,
        "queue": queue,
        "attempt": attempt,
        "redelivered": redelivered,
        "headers": headers,
        "properties": {
            "content_type": m.content_type,
            "correlation_id": m.correlation_id,
            "reply_to": m.reply_to,
            "type": m.kind,
            "priority": m.priority,
            "persistent": m.persistent,
            "ttl_ms": m.ttl.map(|t| t.as_millis() as u64),
            "timestamp": m.timestamp.map(|t| humantime::format_rfc3339_millis(t).to_string()),
        },
        "body": body,
        "body_encoding": encoding,
    })
}
