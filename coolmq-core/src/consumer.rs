//! Receiving with manual acknowledgement and bounded prefetch.

use std::fmt;
use std::sync::Arc;

use crate::delivery::DeliveryContext;
use crate::raw::ConsumerBackend;
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
    context: Arc<DeliveryContext>,
    /// The message whose checkpoint failed last: handed out as it is when it comes back.
    failed_checkpoint: Option<String>,
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
    pub(crate) fn new(inner: Box<dyn ConsumerBackend>, context: DeliveryContext) -> Self {
        Consumer {
            inner,
            queue: context.queue.clone(),
            context: Arc::new(context),
            failed_checkpoint: None,
        }
    }

    /// The queue consumed.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The next delivery; waits while the queue is empty or prefetch is exhausted.
    /// `Ok(None)` once the consumer is closed.
    ///
    /// Where the broker only flags redeliveries, a flagged copy is first checkpointed
    /// (republished with its attempt number, the original acknowledged) and the next
    /// delivery is returned, so [`Delivery::attempt`] counts every delivery even of a
    /// message whose consumer died before settling it. Should the checkpoint fail, the
    /// message goes back to its queue and its next delivery is returned as it is (its
    /// attempt then a lower bound) rather than checkpointed again in a loop.
    pub async fn recv(&mut self) -> Result<Option<Delivery>> {
        let delivery = loop {
            let received = self.inner.recv().await?;
            match received.map(|r| Delivery::from_raw(r, self.context.clone())) {
                Some(d)
                    if d.needs_checkpoint()
                        && self.failed_checkpoint.as_deref() != Some(&d.message().id) =>
                {
                    let id = d.message().id.clone();
                    if let Err(e) = d.checkpoint().await {
                        // The original went back to the queue: its next delivery is handed
                        // out as it is, so a broker that refuses the copy cannot loop us.
                        tracing::warn!(queue = %self.queue, message_id = %id, error = %e, "checkpointing a redelivered message failed; delivering it uncounted");
                        self.failed_checkpoint = Some(id);
                    }
                }
                other => {
                    self.failed_checkpoint = None;
                    break other;
                }
            }
        };
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
