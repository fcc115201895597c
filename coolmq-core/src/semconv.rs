//! Spans named and attributed by the OpenTelemetry messaging semantic conventions, so a
//! tracing back end (through `tracing-opentelemetry`) groups coolmq's spans with every other
//! messaging client's: `send orders` (producer), `receive orders` and `process orders`
//! (consumer), `settle orders` (client).
//!
//! Publish and process spans are at `INFO`, so an application's default `info` filter keeps
//! them; receive and settle spans, one per delivery on top of the process span, are at
//! `DEBUG`. When the level is off no span is made at all.

use tracing::field::Empty;
use tracing::Span;

use crate::{Delivery, Destination, Message};

/// `messaging.system`: which messaging system.
pub const MESSAGING_SYSTEM: &str = "messaging.system";
/// `messaging.operation.type`: `send`, `receive`, `process` or `settle`.
pub const MESSAGING_OPERATION_TYPE: &str = "messaging.operation.type";
/// `messaging.operation.name`: the system's name for the operation (`send`, `ack`…).
pub const MESSAGING_OPERATION_NAME: &str = "messaging.operation.name";
/// `messaging.destination.name`: the queue or topic.
pub const MESSAGING_DESTINATION_NAME: &str = "messaging.destination.name";
/// `messaging.message.id`: the message id (the same on every resend and redelivery).
pub const MESSAGING_MESSAGE_ID: &str = "messaging.message.id";
/// `messaging.message.body.size`: the body's size in bytes.
pub const MESSAGING_MESSAGE_BODY_SIZE: &str = "messaging.message.body.size";
/// `messaging.message.conversation_id`: the correlation id.
pub const MESSAGING_MESSAGE_CONVERSATION_ID: &str = "messaging.message.conversation_id";
/// `error.type`: the coolmq error kind of a failed operation.
pub const ERROR_TYPE: &str = "error.type";

/// The `messaging.system` value of a backend: the conventions' well-known names where
/// there is one.
pub fn messaging_system(backend: &str) -> &str {
    match backend {
        "rabbit" => "rabbitmq",
        other => other,
    }
}

/// The span of one send, or a disabled span when `INFO` is off for coolmq.
pub(crate) fn send_span(backend: &str, destination: &Destination, message: &Message) -> Span {
    // A span no subscriber wants still runs tracing's `log` fallback when made and on every
    // enter, exit and record: when the level is off the span is not made at all.
    if !tracing::level_enabled!(tracing::Level::INFO) {
        return Span::none();
    }
    let span = tracing::info_span!(
        "send",
        otel.name = %format_args!("send {}", destination.name()),
        otel.kind = "producer",
        messaging.system = messaging_system(backend),
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = destination.name(),
        messaging.destination.kind = if matches!(destination, Destination::Topic(_)) { "topic" } else { "queue" },
        messaging.message.id = %message.id,
        messaging.message.body.size = message.body.len(),
        messaging.message.conversation_id = message.correlation_id.as_deref(),
        error.type = Empty,
        coolmq.outcome = Empty,
    );
    if span.is_disabled() {
        Span::none()
    } else {
        span
    }
}

/// The span of a delivery handed to the application (`DEBUG`).
pub(crate) fn receive_span(backend: &str, delivery: &Delivery) -> Span {
    tracing::debug_span!(
        "receive",
        otel.name = %format_args!("receive {}", delivery.queue()),
        otel.kind = "consumer",
        messaging.system = messaging_system(backend),
        messaging.operation.type = "receive",
        messaging.operation.name = "receive",
        messaging.destination.name = delivery.queue(),
        messaging.message.id = %delivery.message().id,
        messaging.message.body.size = delivery.message().body.len(),
        coolmq.attempt = delivery.attempt(),
        coolmq.redelivered = delivery.redelivered(),
    )
}

/// The span a worker's handler runs in (`INFO`); its parent is the sender's span when the
/// message carries a trace context the `opentelemetry` feature can read.
pub(crate) fn process_span(backend: &str, queue: &str, message: &Message, attempt: u32) -> Span {
    if !tracing::level_enabled!(tracing::Level::INFO) {
        return Span::none();
    }
    let span = tracing::info_span!(
        "process",
        otel.name = %format_args!("process {queue}"),
        otel.kind = "consumer",
        messaging.system = messaging_system(backend),
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = queue,
        messaging.message.id = %message.id,
        messaging.message.body.size = message.body.len(),
        messaging.message.conversation_id = message.correlation_id.as_deref(),
        coolmq.attempt = attempt,
        error.type = Empty,
        otel.status_code = Empty,
    );
    #[cfg(feature = "opentelemetry")]
    crate::otel::continue_trace(&span, message);
    span
}

/// The span of a settlement (`DEBUG`): `how` is the operation's name (`ack`, `requeue`,
/// `retry-after`, `dead-letter`).
pub(crate) fn settle_span(backend: &str, queue: &str, message_id: &str, how: &str) -> Span {
    tracing::debug_span!(
        "settle",
        otel.name = %format_args!("{how} {queue}"),
        otel.kind = "client",
        messaging.system = messaging_system(backend),
        messaging.operation.type = "settle",
        messaging.operation.name = how,
        messaging.destination.name = queue,
        messaging.message.id = message_id,
    )
}

/// Record a delivery handed to the application: its receive span and its age.
pub(crate) fn received(backend: &str, delivery: &Delivery) {
    let span = receive_span(backend, delivery);
    span.in_scope(|| tracing::debug!("delivered"));
}
