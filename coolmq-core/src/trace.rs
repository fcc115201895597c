//! W3C trace context carried in the `traceparent` message header, so one trace crosses the
//! broker: a send without the header gets one — continuing the trace the sending code runs in
//! (a worker's handler runs in the trace of the message it handles) or starting a new one —
//! and consumers read it back.

use std::fmt;
use std::future::Future;

use crate::{HeaderValue, Message};

/// The header name, as W3C Trace Context names it.
pub const TRACEPARENT_HEADER: &str = "traceparent";

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// A W3C `traceparent`: which trace, which span is the parent, sampled or not.
///
/// ```
/// use coolmq_core::TraceContext;
/// let t = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
/// assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(t.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// let child = t.child();
/// assert_eq!(child.trace_id, t.trace_id);
/// assert_ne!(child.parent_id, t.parent_id);
/// assert!(TraceContext::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace, shared by every span of it.
    pub trace_id: [u8; 16],
    /// The span that sent (the parent of whatever receives it).
    pub parent_id: [u8; 8],
    /// The `sampled` flag.
    pub sampled: bool,
}

/// Random, not all zero (W3C: an all-zero id is invalid). Filled 8 bytes per draw from the
/// thread's generator, not one per byte.
fn nonzero<const N: usize>() -> [u8; N] {
    loop {
        let mut b = [0u8; N];
        for chunk in b.chunks_mut(8) {
            chunk.copy_from_slice(&fastrand::u64(..).to_le_bytes()[..chunk.len()]);
        }
        if b.iter().any(|x| *x != 0) {
            return b;
        }
    }
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2
        || !s
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

impl TraceContext {
    /// A new trace (random ids, sampled).
    pub fn new_root() -> Self {
        TraceContext {
            trace_id: nonzero(),
            parent_id: nonzero(),
            sampled: true,
        }
    }

    /// The same trace with a new parent span: what a hop (a send) carries on.
    pub fn child(&self) -> Self {
        TraceContext {
            parent_id: nonzero(),
            ..*self
        }
    }

    /// Parse a `traceparent` value (version 00; all-zero ids are invalid).
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() {
            return None;
        }
        let trace_id: [u8; 16] = unhex(trace)?;
        let parent_id: [u8; 8] = unhex(parent)?;
        let flags: [u8; 1] = unhex(flags)?;
        if trace_id.iter().all(|b| *b == 0) || parent_id.iter().all(|b| *b == 0) {
            return None;
        }
        Some(TraceContext {
            trace_id,
            parent_id,
            sampled: flags[0] & 1 == 1,
        })
    }

    /// The trace id as 32 hex digits (what tracing back ends search by).
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The trace id, formatted only when displayed: for log and span fields, which cost
    /// nothing this way when nobody records them.
    pub fn trace_id(&self) -> TraceId {
        TraceId(self.trace_id)
    }

    /// The trace context `message` carries, if any.
    pub fn of(message: &Message) -> Option<Self> {
        message
            .headers
            .get(TRACEPARENT_HEADER)
            .and_then(HeaderValue::as_str)
            .and_then(Self::parse)
    }

    /// The trace the current task runs in (inside [`TraceContext::scope`]; a worker's handler
    /// runs in the trace of its message).
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|c| *c).ok()
    }

    /// Run `f` in this trace: sends it makes without a `traceparent` continue it.
    pub async fn scope<F: Future>(self, f: F) -> F::Output {
        CURRENT.scope(self, f).await
    }

    /// Give `message` a `traceparent` unless it has one: a child of the current trace, or a
    /// new trace. Returns the context it carries.
    pub fn inject(message: &mut Message) -> Self {
        if let Some(existing) = Self::of(message) {
            return existing;
        }
        let ctx = Self::current()
            .map(|c| c.child())
            .unwrap_or_else(Self::new_root);
        message.headers.insert(
            TRACEPARENT_HEADER.to_string(),
            HeaderValue::String(ctx.header_value()),
        );
        ctx
    }

    /// The `traceparent` header value: `to_string`'s text, encoded straight into one
    /// exactly sized string (this runs for every message sent; `to_string` goes through the
    /// formatting machinery and grows its string).
    pub fn header_value(&self) -> String {
        let buf = self.encode();
        // Hex digits and dashes: always UTF-8 (`from_utf8_lossy` cost ten times as much).
        String::from(std::str::from_utf8(&buf).unwrap_or_default())
    }

    /// "00-" + 32 hex + "-" + 16 hex + "-" + 2 hex.
    fn encode(&self) -> [u8; 55] {
        let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-00";
        // The slices have exactly twice the input's length: encoding cannot fail.
        let _ = hex::encode_to_slice(self.trace_id, &mut buf[3..35]);
        let _ = hex::encode_to_slice(self.parent_id, &mut buf[36..52]);
        let _ = hex::encode_to_slice([u8::from(self.sampled)], &mut buf[53..55]);
        buf
    }
}

/// A trace id that formats itself as hex only when displayed.
#[derive(Debug, Clone, Copy)]
pub struct TraceId([u8; 16]);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 32];
        hex::encode_to_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Display for TraceContext {
    /// Formatted in one stack buffer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let buf = self.encode();
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_random_in_every_byte() {
        let ids: Vec<_> = (0..64).map(|_| TraceContext::new_root()).collect();
        for byte in 0..16 {
            let values: std::collections::HashSet<_> =
                ids.iter().map(|t| t.trace_id[byte]).collect();
            assert!(values.len() > 8, "trace id byte {byte} barely varies");
        }
        for byte in 0..8 {
            let values: std::collections::HashSet<_> =
                ids.iter().map(|t| t.parent_id[byte]).collect();
            assert!(values.len() > 8, "parent id byte {byte} barely varies");
        }
    }

    #[test]
    fn the_header_value_is_the_formatted_context() {
        let known = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
            .expect("valid");
        let value = known.header_value();
        assert_eq!(
            value,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
        assert_eq!(value.capacity(), value.len(), "sized exactly");
        for _ in 0..100 {
            let t = TraceContext::new_root().child();
            assert_eq!(t.header_value(), t.to_string());
            assert_eq!(TraceContext::parse(&t.header_value()), Some(t));
        }
    }

    #[test]
    fn roundtrip_and_rejects_malformed() {
        let t = TraceContext::new_root();
        assert_eq!(TraceContext::parse(&t.to_string()), Some(t));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn inject_continues_the_current_trace() {
        let root = TraceContext::new_root();
        let mut m = Message::new("x");
        let carried = root.scope(async { TraceContext::inject(&mut m) }).await;
        assert_eq!(carried.trace_id, root.trace_id);
        assert_ne!(carried.parent_id, root.parent_id);
        assert_eq!(TraceContext::of(&m), Some(carried));
        let mut outside = Message::new("y");
        let fresh = TraceContext::inject(&mut outside);
        assert_ne!(fresh.trace_id, root.trace_id);
        let mut kept = m.clone();
        assert_eq!(
            TraceContext::inject(&mut kept),
            carried,
            "an existing header is kept"
        );
    }
}
