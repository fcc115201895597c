//! Sending with confirms: `send` resolves only when the broker has taken responsibility, and
//! every failure hands the message back.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::PublisherBackend;
use tracing::Instrument;

use crate::{Capabilities, Destination, Error, ErrorKind, Message, Result, Transaction};

/// Proof that the broker took responsibility for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The id of the confirmed message.
    pub message_id: String,
}

/// Per-send options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Deliver no earlier than this from now (needs `delayed_delivery`).
    pub delay: Option<Duration>,
}

impl SendOptions {
    /// Options with a delivery delay.
    pub fn delayed(delay: Duration) -> Self {
        SendOptions { delay: Some(delay) }
    }
}

/// A failed send: the error and the message, handed back so nothing is lost by the API.
///
/// ```
/// # use coolmq_core::{Error, ErrorKind, Message, SendError};
/// let e = SendError::new(Error::new(ErrorKind::Nacked, "queue full"), Message::new("x"));
/// assert_eq!(e.kind(), ErrorKind::Nacked);
/// let (_error, message) = e.into_parts();
/// assert_eq!(&message.body[..], b"x");
/// ```
pub struct SendError {
    error: Error,
    message: Box<Message>,
}

impl SendError {
    /// Pair an error with the message that was not sent.
    pub fn new(error: Error, message: Message) -> Self {
        SendError {
            error,
            message: Box::new(message),
        }
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }

    /// The error.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The message that was not (or not certainly) taken by the broker.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Take the message back, e.g. to resend it.
    pub fn into_message(self) -> Message {
        *self.message
    }

    /// Take both apart.
    pub fn into_parts(self) -> (Error, Message) {
        (self.error, *self.message)
    }
}

impl fmt::Debug for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (message id {})", self.error, self.message.id)
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<SendError> for Error {
    fn from(e: SendError) -> Self {
        let id = e.message.id.clone();
        e.error.with_context("message_id", id)
    }
}

/// Sends messages with confirms. Cheap to clone; `send` takes `&self`, so many sends can be
/// in flight at once (the backend bounds them by the publisher window).
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<dyn PublisherBackend>,
    capabilities: Capabilities,
    backend: &'static str,
    metrics: Arc<crate::observe::Handles>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Publisher {
    /// Wrap a backend publisher.
    pub fn new(
        inner: Arc<dyn PublisherBackend>,
        capabilities: Capabilities,
        backend: &'static str,
    ) -> Self {
        Publisher {
            inner,
            capabilities,
            backend,
            metrics: Arc::new(crate::observe::Handles::new(backend)),
        }
    }

    /// Send and wait for the broker's confirm.
    ///
    /// # Errors
    /// [`ErrorKind::Nacked`], [`ErrorKind::Rejected`], [`ErrorKind::Unroutable`],
    /// [`ErrorKind::Timeout`], [`ErrorKind::ConnectionLost`], [`ErrorKind::MessageTooLarge`]…,
    /// each with the message handed back.
    pub async fn send(
        &self,
        destination: &Destination,
        message: Message,
    ) -> Result<Receipt, SendError> {
        self.send_with(destination, message, &SendOptions::default())
            .await
    }

    /// Send with options (e.g. a delivery delay).
    pub async fn send_with(
        &self,
        destination: &Destination,
        message: Message,
        options: &SendOptions,
    ) -> Result<Receipt, SendError> {
        let mut message = message;
        let trace = crate::TraceContext::inject(&mut message);
        let span = tracing::debug_span!(
            "coolmq.publish",
            backend = self.backend,
            destination = %destination,
            message_id = %message.id,
            trace_id = %trace.trace_id(),
            outcome = tracing::field::Empty,
        );
        let _in_flight = crate::observe::InFlight::start(&self.metrics);
        if let Err(e) = check_send(
            &self.capabilities,
            self.backend,
            destination,
            &message,
            options,
        ) {
            span.record("outcome", e.kind().as_str());
            self.metrics.send_failed.increment(1);
            return Err(SendError::new(e, message));
        }
        let result = self
            .inner
            .send(destination, message, options)
            .instrument(span.clone())
            .await;
        let (outcome, metric) = match &result {
            Ok(_) => ("confirmed", &self.metrics.confirmed),
            Err(e) => match e.kind() {
                ErrorKind::Nacked | ErrorKind::Rejected => {
                    (e.kind().as_str(), &self.metrics.nacked)
                }
                ErrorKind::Unroutable => ("returned", &self.metrics.returned),
                other => (other.as_str(), &self.metrics.send_failed),
            },
        };
        span.record("outcome", outcome);
        metric.increment(1);
        match &result {
            Ok(_) => tracing::debug!(parent: &span, "coolmq.confirm"),
            Err(e) => tracing::debug!(parent: &span, error = %e.error(), "send not confirmed"),
        }
        result
    }

    /// Begin a broker transaction (needs `transactions`).
    pub async fn begin(&self) -> Result<Transaction> {
        if !self.capabilities.transactions {
            return Err(Error::unsupported("transactions", self.backend));
        }
        let inner = self.inner.begin().await?;
        Ok(Transaction::new(inner, self.capabilities, self.backend))
    }
}

/// The checks every backend shares, applied before the backend sees the message.
pub(crate) fn check_send(
    caps: &Capabilities,
    backend: &str,
    destination: &Destination,
    message: &Message,
    options: &SendOptions,
) -> Result<()> {
    if let Some(max) = caps.max_message_size {
        let size = message.approximate_size();
        if size > max {
            return Err(Error::new(
                ErrorKind::MessageTooLarge,
                format!("message of {size} bytes exceeds the {backend} backend's maximum of {max}"),
            )
            .with_context("message_id", message.id.clone()));
        }
    }
    if options.delay.is_some() && !caps.delayed_delivery {
        return Err(Error::unsupported("delayed delivery", backend));
    }
    if matches!(destination, Destination::Topic(_)) && !caps.topics {
        return Err(Error::unsupported("topics", backend));
    }
    if message.ttl.is_some() && !caps.message_ttl {
        return Err(Error::unsupported("message TTL", backend));
    }
    if !caps.nested_headers && message.headers.values().any(|v| v.is_nested()) {
        return Err(Error::unsupported("nested header values", backend));
    }
    Ok(())
}
