//! A received message and its settlement. Settling consumes the delivery, so double settlement
//! does not compile; dropping it unsettled requeues it, so a forgotten ack never wedges a queue.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::Instrument;

use crate::dead_letter::{
    record_failure, set_attempt, DeadLetterEvent, ATTEMPTS_HEADER, ATTEMPT_HEADER,
    ORIGIN_QUEUE_HEADER,
};
use crate::raw::Acker;
use crate::{
    Capabilities, Destination, Error, ErrorKind, HeaderValue, Message, Result, SendOptions,
    TraceContext,
};

/// How to refuse a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Nack {
    /// Put it back on its queue now (redelivered flag, attempt + 1).
    Requeue,
    /// Redeliver it after a delay (needs `delayed_delivery`): a copy with attempt + 1 waits on
    /// the broker, blocking no other message, and the original is acknowledged.
    RetryAfter(Duration),
    /// Move it to the queue's dead-letter queue with the failure metadata headers.
    DeadLetter(String),
}

/// What a consumer knows about where its deliveries come from; shared by its deliveries.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryContext {
    /// The queue consumed.
    pub queue: String,
    /// Its dead-letter queue, if it has one.
    pub dead_letter_queue: Option<String>,
    /// The backend's capabilities.
    pub capabilities: Capabilities,
    /// The backend's name.
    pub backend: &'static str,
    pub(crate) metrics: crate::observe::Handles,
}

impl DeliveryContext {
    /// The context of a consumer of `queue` on the backend described by `info`.
    pub fn new(
        info: &crate::raw::BackendInfo,
        queue: &str,
        options: &crate::ConsumerOptions,
    ) -> Self {
        DeliveryContext {
            queue: queue.to_string(),
            dead_letter_queue: options.dead_letter_queue.clone(),
            capabilities: info.capabilities,
            backend: info.name,
            metrics: crate::observe::Handles::for_queue(info.name, queue),
        }
    }
}

/// Finish an [`Acker::forward`] whose replacement was sent with confirm-then-ack semantics:
/// confirmed → acknowledge the original; not confirmed → requeue the original and report the
/// error. A crash between the two duplicates the message; nothing is ever lost.
pub async fn ack_after_forward(
    acker: Box<dyn Acker>,
    published: std::result::Result<crate::Receipt, crate::SendError>,
) -> Result<()> {
    match published {
        Ok(_) => acker.ack().await,
        Err(e) => {
            if let Err(requeue) = acker.requeue().await {
                tracing::warn!(error = %requeue, "requeue after a failed forward failed; the broker redelivers");
            }
            Err(e.into())
        }
    }
}

/// A message received from a queue, to be settled exactly once.
#[must_use = "a delivery must be acked or nacked; dropping it requeues it"]
pub struct Delivery {
    message: Message,
    redelivered: bool,
    attempt: u32,
    /// Deliveries of this copy the broker reported before this one.
    broker_redeliveries: u32,
    /// Whether `broker_redeliveries` is the broker's exact count, or only a lower bound from
    /// a redelivered flag (see [`Delivery::count_is_lower_bound`]).
    exact_count: bool,
    context: Arc<DeliveryContext>,
    acker: Option<Box<dyn Acker>>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("queue", &self.context.queue)
            .field("message_id", &self.message.id)
            .field("redelivered", &self.redelivered)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl Delivery {
    /// A backend's received message as the application sees it: the attempt adds coolmq's
    /// attempt header to how often the broker delivered this copy before.
    pub(crate) fn from_raw(received: crate::raw::Received, context: Arc<DeliveryContext>) -> Self {
        let crate::raw::Received {
            message,
            redelivered,
            broker_redeliveries,
            exact_count,
            acker,
        } = received;
        let attempt = crate::dead_letter::attempt_of(&message.headers, broker_redeliveries);
        Delivery {
            message,
            redelivered: redelivered || attempt > 1,
            attempt,
            broker_redeliveries,
            exact_count,
            context,
            acker: Some(acker),
        }
    }

    /// Whether this copy must be checkpointed before the application sees it: its broker
    /// only flags redeliveries and flagged this one.
    pub(crate) fn needs_checkpoint(&self) -> bool {
        !self.exact_count && self.broker_redeliveries > 0
    }

    /// Republish the message to its queue carrying this delivery's attempt number and
    /// acknowledge the original (confirm first, then ack: a crash in between duplicates,
    /// never loses). The copy's next delivery is then counted exactly from its header.
    pub(crate) async fn checkpoint(mut self) -> Result<()> {
        let mut copy = self.message.clone();
        set_attempt(&mut copy.headers, self.attempt);
        let destination = Destination::queue(self.context.queue.clone());
        self.take_acker()
            .forward(&destination, copy, &SendOptions::default())
            .await
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Whether this message was delivered before (to this or another consumer).
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// Which delivery this is: 1 for the first, counting requeues and delayed retries.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The queue it came from.
    pub fn queue(&self) -> &str {
        &self.context.queue
    }

    /// The queue's dead-letter queue, if any.
    pub fn dead_letter_queue(&self) -> Option<&str> {
        self.context.dead_letter_queue.as_deref()
    }

    fn take_acker(&mut self) -> Box<dyn Acker> {
        self.acker
            .take()
            .expect("an unsettled delivery always holds its acker")
    }

    /// Acknowledge: the broker forgets the message.
    ///
    /// # Errors
    /// [`ErrorKind::StaleDelivery`] when the consumer's connection has gone; the broker will
    /// redeliver the message.
    pub async fn ack(mut self) -> Result<()> {
        let span = self.settle_span("ack");
        let r = self.take_acker().ack().instrument(span).await;
        if r.is_ok() {
            self.context.metrics.acked.increment(1);
        }
        r
    }

    /// The span of a settlement: which message, from where, how.
    fn settle_span(&self, how: &'static str) -> tracing::Span {
        crate::semconv::settle_span(
            self.context.backend,
            &self.context.queue,
            &self.message.id,
            how,
        )
    }

    /// Record this delivery as handed to the application: its receive span and its age.
    pub(crate) fn observe_received(&self) {
        crate::semconv::received(self.context.backend, self);
        if let Some(sent) = self.message.timestamp {
            if let Ok(age) = std::time::SystemTime::now().duration_since(sent) {
                self.context.metrics.message_age.record(age.as_secs_f64());
            }
        }
    }

    /// The backend's name and the metric handles of this delivery's queue (for the worker).
    pub(crate) fn observed_as(&self) -> (&'static str, &crate::observe::Handles) {
        (self.context.backend, &self.context.metrics)
    }

    /// The trace this message belongs to (its `traceparent` header), to continue it: a
    /// worker's handler runs inside it, so what the handler sends carries it on.
    pub fn trace_context(&self) -> Option<TraceContext> {
        TraceContext::of(&self.message)
    }

    /// Refuse the delivery: requeue it, retry it later, or dead-letter it.
    ///
    /// If the backend cannot do the chosen refusal, the message is requeued and the error says
    /// so: nothing is lost.
    pub async fn nack(self, how: Nack) -> Result<()> {
        let span = match &how {
            Nack::Requeue => self.settle_span("requeue"),
            Nack::RetryAfter(_) => self.settle_span("retry-after"),
            Nack::DeadLetter(_) => self.settle_span("dead-letter"),
        };
        let metric = if matches!(how, Nack::DeadLetter(_)) {
            self.context.metrics.dead_lettered.clone()
        } else {
            self.context.metrics.redelivered.clone()
        };
        let r = self.nack_inner(how).instrument(span).await;
        if r.is_ok() {
            metric.increment(1);
        }
        r
    }

    async fn nack_inner(mut self, how: Nack) -> Result<()> {
        match how {
            Nack::Requeue => self.take_acker().requeue().await,
            Nack::RetryAfter(delay) => {
                if !self.context.capabilities.delayed_delivery {
                    self.take_acker().requeue().await?;
                    return Err(Error::unsupported(
                        "delayed redelivery",
                        self.context.backend,
                    ));
                }
                let mut copy = self.message.clone();
                set_attempt(&mut copy.headers, self.attempt.saturating_add(1));
                let destination = Destination::queue(self.context.queue.clone());
                self.take_acker()
                    .forward(&destination, copy, &SendOptions::delayed(delay))
                    .await
            }
            Nack::DeadLetter(reason) => self.dead_letter_inner(&reason).await.map(drop),
        }
    }

    /// Move the message to the queue's dead-letter queue with the failure metadata headers
    /// (confirmed before the original is acknowledged) and describe what was done.
    pub async fn dead_letter(self, reason: &str) -> Result<DeadLetterEvent> {
        let span = self.settle_span("dead-letter");
        let metric = self.context.metrics.dead_lettered.clone();
        let r = self
            .dead_letter_inner(reason)
            .instrument(span.clone())
            .await;
        if let Ok(event) = &r {
            metric.increment(1);
            tracing::info!(parent: &span, dead_letter_queue = %event.dead_letter_queue, attempts = event.attempts, reason, "dead-lettered");
        }
        r
    }

    async fn dead_letter_inner(mut self, reason: &str) -> Result<DeadLetterEvent> {
        let Some(dlq) = self.context.dead_letter_queue.clone() else {
            self.take_acker().requeue().await?;
            return Err(Error::new(
                ErrorKind::NotFound,
                "the queue has no dead-letter queue; the message was requeued",
            )
            .with_context("queue", self.context.queue.clone()));
        };
        let copy = self.dead_letter_copy(reason);
        self.take_acker()
            .forward(
                &Destination::queue(dlq.clone()),
                copy.clone(),
                &SendOptions::default(),
            )
            .await?;
        Ok(DeadLetterEvent {
            queue: self.context.queue.clone(),
            dead_letter_queue: dlq,
            message: copy,
            attempts: self.attempt,
            reason: reason.to_string(),
        })
    }

    /// The capabilities of the backend the delivery came from.
    pub fn capabilities(&self) -> Capabilities {
        self.context.capabilities
    }

    /// The message as it would be stored in the dead-letter queue: the failure headers added.
    pub fn dead_letter_copy(&self, reason: &str) -> Message {
        let mut copy = self.message.clone();
        record_failure(&mut copy, reason, SystemTime::now());
        copy.headers.insert(
            ORIGIN_QUEUE_HEADER.to_string(),
            HeaderValue::String(self.context.queue.clone()),
        );
        copy.headers.insert(
            ATTEMPTS_HEADER.to_string(),
            HeaderValue::I32(self.attempt.min(i32::MAX as u32) as i32),
        );
        copy.headers.remove(ATTEMPT_HEADER);
        copy
    }

    /// Record a failure on the message before a retry (first/last failure, last error), so the
    /// metadata survives until dead-lettering.
    pub fn record_failure(&mut self, error: &str) {
        record_failure(&mut self.message, error, SystemTime::now());
    }

    /// For a transactional ack: the acker, leaving the delivery settled.
    pub(crate) fn into_acker(mut self) -> Box<dyn Acker> {
        self.take_acker()
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(acker) = self.acker.take() {
            tracing::warn!(
                queue = %self.context.queue,
                message_id = %self.message.id,
                "delivery dropped without ack or nack: requeueing it"
            );
            acker.release();
        }
    }
}
