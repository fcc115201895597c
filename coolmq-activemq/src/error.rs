//! fe2o3 errors and AMQP 1.0 outcomes → coolmq error kinds.

use coolmq_core::{Error, ErrorKind};

/// An error from fe2o3 during `operation`; the link/session/connection is gone or refused.
pub(crate) fn map(
    e: impl std::error::Error + Send + Sync + 'static,
    operation: &'static str,
) -> Error {
    let text = e.to_string();
    let (kind, temporary) = if text.contains("not-found") {
        (ErrorKind::NotFound, false)
    } else if text.contains("unauthorized") {
        (ErrorKind::PermissionDenied, false)
    } else if text.contains("message-size-exceeded") {
        (ErrorKind::MessageTooLarge, false)
    } else {
        (ErrorKind::ConnectionLost, true)
    };
    Error::new(kind, format!("ActiveMQ {operation} failed: {text}"))
        .set_temporary(temporary)
        .with_context("operation", operation)
        .with_source(e)
}

/// An error of the initial connect.
pub(crate) fn map_connect(
    e: impl std::error::Error + Send + Sync + 'static,
    endpoint: &str,
) -> Error {
    let text = e.to_string();
    let (kind, temporary) = if text.to_lowercase().contains("sasl") || text.contains("auth") {
        (ErrorKind::AuthenticationFailed, false)
    } else {
        (ErrorKind::Unreachable, true)
    };
    Error::new(
        kind,
        format!("cannot connect to ActiveMQ at {endpoint}: {text}"),
    )
    .set_temporary(temporary)
    .with_context("endpoint", endpoint)
    .with_source(e)
}
