//! lapin errors → coolmq error kinds (AMQP 0-9-1 reply codes included), with the lapin error
//! kept as `source()`.

use coolmq_core::{Error, ErrorKind};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};

/// Map a lapin error from `operation`.
pub(crate) fn map(e: lapin::Error, operation: &'static str) -> Error {
    let (kind, temporary) = classify(&e);
    Error::new(kind, format!("RabbitMQ {operation} failed: {e}"))
        .set_temporary(temporary)
        .with_context("operation", operation)
        .with_source(e)
}

/// Map an error of the initial connect: refusals and I/O failures mean "unreachable".
pub(crate) fn map_connect(e: lapin::Error, endpoint: &str) -> Error {
    let (kind, temporary) = match classify(&e) {
        (ErrorKind::ConnectionLost, t) => (ErrorKind::Unreachable, t),
        // RabbitMQ answers a refused login with ACCESS_REFUSED ("Login was refused…").
        (ErrorKind::PermissionDenied, t) if e.to_string().contains("Login was refused") => {
            (ErrorKind::AuthenticationFailed, t)
        }
        other => other,
    };
    Error::new(
        kind,
        format!("cannot connect to RabbitMQ at {endpoint}: {e}"),
    )
    .set_temporary(temporary)
    .with_context("endpoint", endpoint)
    .with_source(e)
}

fn classify(e: &lapin::Error) -> (ErrorKind, bool) {
    use lapin::ErrorKind as L;
    match e.kind() {
        L::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(soft) => match soft {
                AMQPSoftError::NOTFOUND => (ErrorKind::NotFound, false),
                AMQPSoftError::ACCESSREFUSED => (ErrorKind::PermissionDenied, false),
                AMQPSoftError::PRECONDITIONFAILED => (ErrorKind::ConfigInvalid, false),
                AMQPSoftError::NOROUTE => (ErrorKind::Unroutable, false),
                AMQPSoftError::CONTENTTOOLARGE => (ErrorKind::MessageTooLarge, false),
                AMQPSoftError::RESOURCELOCKED | AMQPSoftError::NOCONSUMERS => {
                    (ErrorKind::Rejected, true)
                }
            },
            AMQPErrorKind::Hard(hard) => match hard {
                AMQPHardError::NOTALLOWED => (ErrorKind::PermissionDenied, false),
                AMQPHardError::CONNECTIONFORCED | AMQPHardError::RESOURCEERROR => {
                    (ErrorKind::ConnectionLost, true)
                }
                _ => (ErrorKind::ConnectionLost, true),
            },
        },
        L::AuthProviderError(_) => (ErrorKind::AuthenticationFailed, false),
        L::IOError(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
            (ErrorKind::AuthenticationFailed, false)
        }
        L::IOError(_)
        | L::InvalidChannelState(..)
        | L::InvalidConnectionState(_)
        | L::InvalidChannel(_)
        | L::MissingHeartbeatError
        | L::ChannelsLimitReached => (ErrorKind::ConnectionLost, true),
        _ => (ErrorKind::Unexpected, false),
    }
}

/// The coolmq kind (and whether it is temporary) of an AMQP 0-9-1 reply code, as RabbitMQ
/// sends it in `channel.close` / `connection.close` (amqprs hands over the bare code; lapin's
/// errors are classified above).
#[cfg(feature = "amqprs")]
pub(crate) fn by_reply_code(code: u16) -> (ErrorKind, bool) {
    match code {
        404 => (ErrorKind::NotFound, false),
        403 => (ErrorKind::PermissionDenied, false),
        406 => (ErrorKind::ConfigInvalid, false),
        312 => (ErrorKind::Unroutable, false),
        311 => (ErrorKind::MessageTooLarge, false),
        405 | 313 => (ErrorKind::Rejected, true),
        530 => (ErrorKind::PermissionDenied, false),
        _ => (ErrorKind::ConnectionLost, true),
    }
}
