//! The one error type of coolmq: a kind to match on, temporary vs permanent, context and the
//! driver's error as `source()`.

use std::fmt;

/// Boxed error used as the `source` of an [`Error`] and by handlers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used throughout coolmq.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, so callers can decide without parsing text.
///
/// Non-exhaustive: new kinds may be added as backends learn to tell more failures apart.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The backend cannot do this (see [`crate::Capabilities`]).
    Unsupported,
    /// A configuration value or URL is malformed; the context names the field.
    ConfigInvalid,
    /// The URL scheme names no backend coolmq knows.
    UnknownScheme,
    /// The scheme's backend exists but its cargo feature is not compiled in.
    FeatureDisabled,
    /// The broker could not be reached (refused, DNS, connect timeout).
    Unreachable,
    /// The broker refused the credentials.
    AuthenticationFailed,
    /// The TLS handshake failed (an untrusted CA, a certificate for another host name, an
    /// expired certificate, a client certificate demanded or refused); the message says
    /// which. Permanent: retrying cannot fix it.
    Tls,
    /// The broker refused the operation for lack of permission.
    PermissionDenied,
    /// An established connection or channel was lost; the operation's outcome is unknown.
    ConnectionLost,
    /// The broker answered a publish negatively (AMQP 0-9-1 `basic.nack`, resource limits).
    Nacked,
    /// The broker rejected the message (AMQP 1.0 `Rejected`/`Released`/`Modified`).
    Rejected,
    /// The broker stopped accepting publishes for now (RabbitMQ's `connection.blocked` under a
    /// memory or disk alarm); resend once it clears.
    Blocked,
    /// The message could not be routed to any queue (no such queue, topic without subscriber).
    Unroutable,
    /// No answer within the configured time; the message may or may not have been taken.
    Timeout,
    /// The message is larger than the backend accepts.
    MessageTooLarge,
    /// A queue or other named resource does not exist.
    NotFound,
    /// A transaction was rolled back instead of committed.
    TransactionRolledBack,
    /// The delivery belongs to a consumer or channel that has since closed; the broker will
    /// redeliver it, and settling it now is impossible.
    StaleDelivery,
    /// The handle (broker, publisher, consumer) was closed by the application.
    Closed,
    /// The outbox or inbox database failed (connection, constraint, query); see `source()`.
    Database,
    /// A body could not be encoded or decoded by the message's codec (not the expected JSON,
    /// a value the format cannot hold). Permanent: the same bytes fail the same way.
    Codec,
    /// Anything the backend could not classify; see `source()`.
    Unexpected,
}

impl ErrorKind {
    /// Whether errors of this kind are, by default, worth retrying.
    pub fn is_temporary_by_default(self) -> bool {
        matches!(
            self,
            ErrorKind::Unreachable
                | ErrorKind::ConnectionLost
                | ErrorKind::Nacked
                | ErrorKind::Blocked
                | ErrorKind::Timeout
                | ErrorKind::Rejected
        )
    }

    /// A short stable name, used in logs and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::ConfigInvalid => "config-invalid",
            ErrorKind::UnknownScheme => "unknown-scheme",
            ErrorKind::FeatureDisabled => "feature-disabled",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::AuthenticationFailed => "authentication-failed",
            ErrorKind::Tls => "tls",
            ErrorKind::PermissionDenied => "permission-denied",
            ErrorKind::ConnectionLost => "connection-lost",
            ErrorKind::Nacked => "nacked",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Blocked => "blocked",
            ErrorKind::Unroutable => "unroutable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::MessageTooLarge => "message-too-large",
            ErrorKind::NotFound => "not-found",
            ErrorKind::TransactionRolledBack => "transaction-rolled-back",
            ErrorKind::StaleDelivery => "stale-delivery",
            ErrorKind::Closed => "closed",
            ErrorKind::Database => "database",
            ErrorKind::Codec => "codec",
            ErrorKind::Unexpected => "unexpected",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every coolmq operation.
///
/// ```
/// use coolmq_core::{Error, ErrorKind};
/// let e = Error::new(ErrorKind::Unreachable, "connect refused").with_context("url", "amqp://h");
/// assert!(e.is_temporary());
/// assert_eq!(e.kind(), ErrorKind::Unreachable);
/// assert!(e.to_string().contains("url: amqp://h"));
///
/// // The driver's error is the source, printed once by whoever walks the chain.
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
/// let e = Error::new(ErrorKind::Unreachable, "cannot connect").with_source(io);
/// assert!(!e.to_string().contains("refused"));
/// assert!(format!("{e:#}").ends_with("cannot connect: refused"));
/// assert_eq!(std::error::Error::source(&e).unwrap().to_string(), "refused");
/// ```
#[derive(thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    temporary: bool,
    message: String,
    context: Vec<(&'static str, String)>,
    #[source]
    source: Option<BoxError>,
}

impl Error {
    /// A new error; temporary-ness defaults from the kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            temporary: kind.is_temporary_by_default(),
            message: message.into(),
            context: Vec::new(),
            source: None,
        }
    }

    /// Shorthand for [`ErrorKind::Unsupported`] naming the operation and backend.
    #[cold]
    pub fn unsupported(operation: &str, backend: &str) -> Self {
        Error::new(
            ErrorKind::Unsupported,
            format!("{operation} is not supported by the {backend} backend"),
        )
        .with_context("operation", operation)
        .with_context("backend", backend)
    }

    /// Shorthand for [`ErrorKind::ConfigInvalid`] naming the bad field.
    pub fn config(field: &str, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::ConfigInvalid, message).with_context("field", field)
    }

    /// Attach a key/value pair that explains where the error happened.
    pub fn with_context(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.context.push((key, value.into()));
        self
    }

    /// Attach the underlying driver error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Override whether this error is worth retrying.
    pub fn set_temporary(mut self, temporary: bool) -> Self {
        self.temporary = temporary;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying the same operation later may succeed.
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    /// The human message without context.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The value of a context key, if present.
    pub fn context(&self, key: &str) -> Option<&str> {
        self.context
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `{}` prints the kind, whether it is temporary, the message and the context; the driver's
/// error is `source()` and not repeated, so error reporters that walk the chain print each
/// cause once. `{:#}` appends the chain of sources for a one-line log.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.kind,
            if self.temporary {
                "temporary"
            } else {
                "permanent"
            },
            self.message
        )?;
        for (k, v) in &self.context {
            write!(f, ", {k}: {v}")?;
        }
        if f.alternate() {
            let mut next = std::error::Error::source(self);
            while let Some(cause) = next {
                write!(f, ": {cause}")?;
                next = cause.source();
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind)
            .field("temporary", &self.temporary)
            .field("message", &self.message);
        if !self.context.is_empty() {
            d.field("context", &self.context);
        }
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

/// The error of settling a delivery whose consumer, channel, link or connection has closed
/// (`what` names which): the broker redelivers the message, so settling it now is impossible.
/// Shared by every backend so the contract's wording is one.
pub fn stale_delivery(what: &str) -> Error {
    Error::new(
        ErrorKind::StaleDelivery,
        format!("the delivery's {what} has closed; the broker redelivers the message"),
    )
    .set_temporary(false)
}

/// The error of an operation on a connection the application closed.
pub fn closed() -> Error {
    Error::new(ErrorKind::Closed, "the broker connection was closed").set_temporary(false)
}

/// The error of a send whose confirm did not come within `timeout`: its outcome is unknown,
/// so the message is handed back for a resend with the same id.
pub fn confirm_timeout(timeout: std::time::Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("no confirm within {timeout:?}; the broker may have taken the message"),
    )
}
