//! The `opentelemetry` feature: the W3C trace context travels through the `opentelemetry`
//! crate's global propagator, so coolmq's spans (through `tracing-opentelemetry`) join the
//! application's traces: a send span's context goes into the message's headers, and the
//! receiving worker's process span continues it.

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{HeaderValue, Headers, Message};

struct HeadersInjector<'a>(&'a mut Headers);

impl Injector for HeadersInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), HeaderValue::String(value));
    }
}

struct HeadersExtractor<'a>(&'a Headers);

impl Extractor for HeadersExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(HeaderValue::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Write the send span's context into `message` (unless it already carries a trace, as a
/// resend does), through the application's global propagator.
pub(crate) fn inject(span: &tracing::Span, message: &mut Message) {
    if span.is_disabled() || message.headers.contains_key(crate::TRACEPARENT_HEADER) {
        return;
    }
    let cx = span.context();
    use opentelemetry::trace::TraceContextExt as _;
    if !cx.span().span_context().is_valid() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut HeadersInjector(&mut message.headers))
    });
}

/// Make the sender's context (read from `message` by the global propagator) the parent of
/// `span`, a process span not yet entered.
pub(crate) fn continue_trace(span: &tracing::Span, message: &Message) {
    if span.is_disabled() {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeadersExtractor(&message.headers))
    });
    use opentelemetry::trace::TraceContextExt as _;
    if parent.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer records the span: nothing to continue then.
        let _ = span.set_parent(parent);
    }
}
