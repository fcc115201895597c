//! Sending with confirms: `send` resolves only when the broker has taken responsibility, and
//! every failure hands the message back.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::confirm::Observed;
use crate::raw::PublisherBackend;
use crate::send::{PipelinedSendFuture, SendFuture, Window};

use crate::{Capabilities, Destination, Error, ErrorKind, Message, Result, Transaction};

/// Proof that the broker took responsibility for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// The id of the confirmed message.
    pub message_id: String,
}

impl Receipt {
    /// The receipt of the confirmed message `message_id` (for backends).
    pub fn new(message_id: impl Into<String>) -> Self {
        Receipt {
            message_id: message_id.into(),
        }
    }
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
/// in flight at once (bounded by the publisher window, `Config::publisher_window`).
#[derive(Clone)]
pub struct Publisher {
    pub(crate) inner: Arc<dyn PublisherBackend>,
    /// Shared by the clones: the window bounds the publisher's sends, not each clone's.
    pub(crate) window: Arc<Window>,
    capabilities: Capabilities,
    backend: &'static str,
    metrics: Arc<crate::observe::PublisherHandles>,
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
    pub(crate) fn new(
        inner: Arc<dyn PublisherBackend>,
        capabilities: Capabilities,
        backend: &'static str,
        window: usize,
        confirm_timeout: Duration,
    ) -> Self {
        Publisher {
            inner,
            window: Arc::new(Window::new(window, confirm_timeout)),
            capabilities,
            backend,
            metrics: Arc::new(crate::observe::PublisherHandles::new(backend)),
        }
    }

    /// Send and wait for the broker's confirm; options (a delivery delay) through the
    /// returned future's builder methods.
    ///
    /// # Errors
    /// [`ErrorKind::Nacked`], [`ErrorKind::Rejected`], [`ErrorKind::Unroutable`],
    /// [`ErrorKind::Timeout`], [`ErrorKind::ConnectionLost`], [`ErrorKind::MessageTooLarge`]…,
    /// each with the message handed back.
    pub fn send<'a>(&'a self, destination: &'a Destination, message: Message) -> SendFuture<'a> {
        SendFuture::new(self, destination, message)
    }

    /// Put the message on its way and return its confirm without waiting for it: one task
    /// keeps many sends in flight (as many confirms as it holds), and the broker gets them in
    /// the order of the `send_pipelined` calls (concurrent [`Publisher::send`]s promise no
    /// order). Resolves once the message was handed to the connection; the
    /// [`PendingConfirm`](crate::PendingConfirm) then resolves like `send`. Options as with `send`.
    ///
    /// ```no_run
    /// # async fn demo(publisher: coolmq_core::Publisher) -> Result<(), coolmq_core::SendError> {
    /// use coolmq_core::{Destination, Message};
    /// use futures::stream::{FuturesUnordered, StreamExt};
    ///
    /// let orders = Destination::queue("orders");
    /// let mut confirms = FuturesUnordered::new();
    /// for i in 0..10_000 {
    ///     if confirms.len() == 256 {
    ///         // At most 256 unconfirmed: wait for one before sending more.
    ///         confirms.next().await.expect("not empty")?;
    ///     }
    ///     let message = Message::new(format!("order {i}"));
    ///     confirms.push(publisher.send_pipelined(&orders, message).await?);
    /// }
    /// while let Some(confirmed) = confirms.next().await {
    ///     confirmed?; // a refused message comes back in the error: resend or store it
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// The errors of [`Publisher::send`] that are known before the message leaves (checks,
    /// connection lost, no link credit, no room in the window), each with the message
    /// handed back.
    pub fn send_pipelined<'a>(
        &'a self,
        destination: &'a Destination,
        message: Message,
    ) -> PipelinedSendFuture<'a> {
        PipelinedSendFuture::new(self, destination, message)
    }

    /// What every send does before the backend sees the message: add the trace context,
    /// open the span, count the send and apply the shared checks. Works on the message in
    /// place: it is moved once, into the backend (each move of a message through a layer
    /// is a copy into memory gone cold).
    pub(crate) fn prepare(
        &self,
        destination: &Destination,
        message: &mut Message,
        options: &SendOptions,
    ) -> Result<Observed> {
        let span = crate::semconv::send_span(self.backend, destination, message);
        // With the `opentelemetry` feature the send span's context is the one that travels,
        // so the receiving side joins the application's trace.
        #[cfg(feature = "opentelemetry")]
        crate::otel::inject(&span, message);
        crate::TraceContext::inject(message);
        let mut observed = Observed::start(span, &self.metrics.get(destination.name()));
        match check_send(
            &self.capabilities,
            self.backend,
            destination,
            message,
            options,
        ) {
            Ok(()) => Ok(observed),
            Err(e) => {
                observed.failed(&e);
                Err(e)
            }
        }
    }

    /// This publisher for values of `T`, encoded as JSON ([`crate::Json`]).
    pub fn typed<T>(&self) -> crate::TypedPublisher<T>
    where
        crate::Json: crate::Codec<T>,
    {
        crate::TypedPublisher::new(self.clone(), crate::Json)
    }

    /// This publisher for values of `T`, encoded by `codec`.
    pub fn typed_with<T, C: crate::Codec<T>>(&self, codec: C) -> crate::TypedPublisher<T, C> {
        crate::TypedPublisher::new(self.clone(), codec)
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
            return Err(too_large(backend, message, size, max));
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

/// Out of line and cold, like every refusal: it keeps the send path's code small.
#[cold]
#[inline(never)]
fn too_large(backend: &str, message: &Message, size: usize, max: usize) -> Error {
    Error::new(
        ErrorKind::MessageTooLarge,
        format!("message of {size} bytes exceeds the {backend} backend's maximum of {max}"),
    )
    .with_context("message_id", message.id.clone())
}
