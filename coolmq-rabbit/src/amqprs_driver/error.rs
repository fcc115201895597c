//! amqprs errors → coolmq error kinds. amqprs reports a broker's refusal as a dropped reply;
//! the reply code itself reaches coolmq through the channel's or connection's close callback
//! ([`super::events`]), so mapping takes both.

use coolmq_core::{Error, ErrorKind};

use crate::error::by_reply_code;

/// What amqprs's operations return.
pub(crate) type ClientResult<T> = std::result::Result<T, amqprs::error::Error>;

/// A broker's `channel.close` / `connection.close`: reply code and text.
pub(crate) type Closed = (u16, String);

/// Map an amqprs error of `operation`; `closed` is the close the broker sent, if it sent one.
pub(crate) fn map(
    e: amqprs::error::Error,
    operation: &'static str,
    closed: Option<Closed>,
) -> Error {
    let (kind, temporary, text) = match closed {
        Some((code, text)) => {
            let (kind, temporary) = by_reply_code(code);
            (kind, temporary, format!("{code} {text}"))
        }
        None => (ErrorKind::ConnectionLost, true, e.to_string()),
    };
    Error::new(kind, format!("RabbitMQ {operation} failed: {text}"))
        .set_temporary(temporary)
        .with_context("operation", operation)
        .with_source(e)
}

/// The error of a name amqprs cannot carry: AMQP 0-9-1 short strings hold 255 bytes, and
/// amqprs panics on longer ones, so they are refused before reaching it.
pub(crate) fn check_short(field: &'static str, value: &str) -> coolmq_core::Result<()> {
    if value.len() > 255 {
        return Err(Error::new(
            ErrorKind::Rejected,
            format!("{field} is longer than AMQP 0-9-1's 255 bytes"),
        )
        .with_context("field", field)
        .set_temporary(false));
    }
    Ok(())
}

/// Map an error of the initial connect. amqprs reports a refused login (RabbitMQ's
/// `connection.close` 403 during the handshake) and a refused vhost (530) as open errors
/// carrying the broker's close in their text.
pub(crate) fn map_connect(e: amqprs::error::Error, endpoint: &str) -> Error {
    let text = e.to_string();
    let (kind, temporary) = match &e {
        amqprs::error::Error::ConnectionOpenError(_) | amqprs::error::Error::NetworkError(_)
            if text.contains("ACCESS_REFUSED") || text.contains("403") =>
        {
            (ErrorKind::AuthenticationFailed, false)
        }
        amqprs::error::Error::ConnectionOpenError(_) if text.contains("NOT_ALLOWED") => {
            (ErrorKind::PermissionDenied, false)
        }
        amqprs::error::Error::UriError(_) => (ErrorKind::ConfigInvalid, false),
        _ => (ErrorKind::Unreachable, true),
    };
    Error::new(
        kind,
        format!("cannot connect to RabbitMQ at {endpoint}: {text}"),
    )
    .set_temporary(temporary)
    .with_context("endpoint", endpoint)
    .with_source(e)
}
