//! Receiving with manual acknowledgement and bounded prefetch.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures::future::BoxFuture;
use futures::stream::{FusedStream, Stream};

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

/// A consumer of one queue. Deliveries come one by one from [`Consumer::recv`], or as a
/// [`futures::Stream`] of `Result<Delivery>` (ending when the consumer is closed); at most
/// `prefetch` are unsettled at any time.
///
/// `recv` is cancel-safe: a `recv` dropped while waiting (in a `select!` or a timeout)
/// leaves its receive in progress, and the next `recv` or poll of the stream finishes it, so
/// no delivery is lost between them.
///
/// ```no_run
/// # async fn example(broker: coolmq_core::Broker) -> coolmq_core::Result<()> {
/// use futures::{StreamExt, TryStreamExt};
/// let consumer = broker.consumer("orders").await?;
/// consumer
///     .take(10)
///     .try_for_each(|delivery| async move { delivery.ack().await })
///     .await?;
/// # Ok(()) }
/// ```
pub struct Consumer {
    queue: String,
    /// The receiving state, moved into `pending` while a receive is in progress.
    state: Option<Box<State>>,
    pending: Option<Pending>,
    /// The state's close signal, reachable while the state is inside `pending`.
    closing: Arc<tokio::sync::Notify>,
}

type Pending = BoxFuture<'static, (Box<State>, Result<Option<Delivery>>)>;

struct State {
    inner: Box<dyn ConsumerBackend>,
    context: Arc<DeliveryContext>,
    /// The message whose checkpoint failed last: handed out as it is when it comes back.
    failed_checkpoint: Option<String>,
    /// `Ok(None)` was seen: the stream has ended.
    ended: bool,
    /// Ends a receive in progress when the consumer is closed.
    closing: Arc<tokio::sync::Notify>,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("queue", &self.queue)
            .field("receiving", &self.pending.is_some())
            .finish()
    }
}

impl Consumer {
    /// Wrap a backend consumer.
    pub(crate) fn new(inner: Box<dyn ConsumerBackend>, context: DeliveryContext) -> Self {
        let closing = Arc::new(tokio::sync::Notify::new());
        Consumer {
            closing: closing.clone(),
            queue: context.queue.clone(),
            state: Some(Box::new(State {
                inner,
                context: Arc::new(context),
                failed_checkpoint: None,
                ended: false,
                closing,
            })),
            pending: None,
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
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Poll for the next delivery (what `recv` and the `Stream` implementation share).
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Delivery>>> {
        let pending = match &mut self.pending {
            Some(pending) => pending,
            None => {
                let Some(state) = self.state.take() else {
                    return Poll::Ready(Err(crate::error::closed()));
                };
                self.pending.insert(Box::pin(state.next()))
            }
        };
        let (state, result) = ready!(pending.as_mut().poll(cx));
        self.pending = None;
        self.state = Some(state);
        Poll::Ready(result)
    }

    /// Stop consuming. Deliveries still held can no longer be settled; the broker redelivers
    /// them.
    pub async fn close(mut self) -> Result<()> {
        if let Some(pending) = self.pending.take() {
            // A receive in progress is ended (a delivery it was taking goes back to the queue
            // with the close) and gives the state back.
            self.closing.notify_one();
            let (state, _) = pending.await;
            self.state = Some(state);
        }
        match self.state.take() {
            Some(mut state) => state.inner.close().await,
            None => Ok(()),
        }
    }
}

impl State {
    async fn next(mut self: Box<Self>) -> (Box<Self>, Result<Option<Delivery>>) {
        let closing = self.closing.clone();
        let result = tokio::select! {
            r = self.receive() => r,
            () = closing.notified() => Ok(None),
        };
        if matches!(result, Ok(None)) {
            self.ended = true;
        }
        (self, result)
    }

    async fn receive(&mut self) -> Result<Option<Delivery>> {
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
                        tracing::warn!(queue = %self.context.queue, message_id = %id, error = %e, "checkpointing a redelivered message failed; delivering it uncounted");
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
            d.observe_received();
        }
        Ok(delivery)
    }
}

/// Deliveries as a stream: each item is what [`Consumer::recv`] returns, errors included (a
/// lost connection is reported and receiving goes on once the backend reconnects); the
/// stream ends when the consumer is closed.
impl Stream for Consumer {
    type Item = Result<Delivery>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.state.as_ref().is_some_and(|s| s.ended) {
            return Poll::Ready(None);
        }
        Poll::Ready(ready!(this.poll_recv(cx)).transpose())
    }
}

impl FusedStream for Consumer {
    fn is_terminated(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.ended)
    }
}
