//! Receiving with manual acknowledgement and bounded prefetch.

use std::fmt;

use crate::backend::ConsumerBackend;
use crate::{Delivery, Result};

/// Default prefetch: RabbitMQ's docs find 100–300 optimal; fe2o3's default credit is 200.
pub const DEFAULT_PREFETCH: u16 = 200;

/// How a consumer receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerOptions {
    /// At most this many deliveries are handed out and unsettled at once (> 0).
    pub prefetch: u16,
    /// The queue's dead-letter queue, for `Nack::DeadLetter`; `None` if it has none.
    pub dead_letter_queue: Option<String>,
}

/// A consumer of one queue. Deliveries come one by one from [`Consumer::recv`]; at most
/// `prefetch` are unsettled at any time.
pub struct Consumer {
    inner: Box<dyn ConsumerBackend>,
    queue: String,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("queue", &self.queue)
            .finish()
    }
}

impl Consumer {
    /// Wrap a backend consumer.
    pub fn new(inner: Box<dyn ConsumerBackend>, queue: impl Into<String>) -> Self {
        Consumer {
            inner,
            queue: queue.into(),
        }
    }

    /// The queue consumed.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The next delivery; waits while the queue is empty or prefetch is exhausted.
    /// `Ok(None)` once the consumer is closed.
    pub async fn recv(&mut self) -> Result<Option<Delivery>> {
        let delivery = self.inner.recv().await?;
        if let Some(d) = &delivery {
            let span = tracing::debug_span!(
                "coolmq.consume",
                queue = %self.queue,
                message_id = %d.message().id,
                attempt = d.attempt(),
                redelivered = d.redelivered(),
            );
            span.in_scope(|| tracing::debug!("delivered"));
        }
        Ok(delivery)
    }

    /// Stop consuming. Deliveries still held can no longer be settled; the broker redelivers
    /// them.
    pub async fn close(mut self) -> Result<()> {
        self.inner.close().await
    }
}
