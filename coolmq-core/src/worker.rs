//! The worker: runs an async handler for every delivery with a concurrency limit, acks on
//! success, and on failure or panic applies the redelivery policy — delayed retry on the
//! broker, then the dead-letter queue and the observer (the human fallback).

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::dead_letter::{DeadLetterObserver, LogObserver};
use crate::{
    BoxError, Broker, Consumer, Decision, Delivery, Message, Nack, RedeliveryPolicy, Result,
};

/// Why a handler failed: transient (redeliver by the policy) or [`HandlerError::permanent`],
/// which skips the remaining redeliveries and dead-letters at once (Spring's
/// `AmqpRejectAndDontRequeueException`).
///
/// Handlers may return any error type that converts into a [`BoxError`]; anything that is not
/// a `HandlerError` counts as transient. `HandlerError` is itself a transparent
/// `std::error::Error` (its `Display` and `source()` are the wrapped error's), so a
/// handler can return `Result<(), BoxError>` and use `?` on every error it meets.
pub struct HandlerError {
    source: BoxError,
    permanent: bool,
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn transient(source: impl Into<BoxError>) -> Self {
        HandlerError {
            source: source.into(),
            permanent: false,
        }
    }

    /// A failure no retry can fix (malformed message, business rule): dead-letter now.
    pub fn permanent(source: impl Into<BoxError>) -> Self {
        HandlerError {
            source: source.into(),
            permanent: true,
        }
    }

    /// A transient failure from a text.
    pub fn msg(text: impl Into<String>) -> Self {
        Self::transient(text.into())
    }

    /// Whether the failure skips redelivery.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The wrapped error.
    pub fn into_inner(self) -> BoxError {
        self.source
    }

    /// What a handler's error means to the worker: a `HandlerError` as it is (also when
    /// boxed), anything else transient.
    pub fn from_boxed(error: impl Into<BoxError>) -> Self {
        match error.into().downcast::<HandlerError>() {
            Ok(handler_error) => *handler_error,
            Err(other) => HandlerError::transient(other),
        }
    }
}

/// coolmq's own errors (a failed send inside a handler) are transient, whatever their kind:
/// the handler's work is retried as a whole. Return [`HandlerError::permanent`] to stop.
impl From<crate::Error> for HandlerError {
    fn from(e: crate::Error) -> Self {
        HandlerError::transient(e)
    }
}

/// A send inside a handler that failed: transient, like [`crate::Error`].
impl From<crate::SendError> for HandlerError {
    fn from(e: crate::SendError) -> Self {
        HandlerError::transient(e)
    }
}

impl From<String> for HandlerError {
    fn from(text: String) -> Self {
        HandlerError::transient(text)
    }
}

impl From<&str> for HandlerError {
    fn from(text: &str) -> Self {
        HandlerError::transient(text)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("permanent", &self.permanent)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

/// What a handler is given: the message and where it stands in its redelivery history.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Incoming {
    /// The message.
    pub message: Message,
    /// 1 for the first delivery.
    pub attempt: u32,
    /// Whether it was delivered before.
    pub redelivered: bool,
    /// The queue it came from.
    pub queue: String,
}

/// Counters of what a worker did, readable while it runs.
#[derive(Debug, Default)]
pub struct WorkerStats {
    received: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    settle_errors: AtomicU64,
    in_flight: AtomicU64,
}

/// A snapshot of [`WorkerStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerCounts {
    /// Deliveries taken from the queue.
    pub received: u64,
    /// Deliveries whose handler succeeded and that were acknowledged.
    pub acked: u64,
    /// Handler failures and panics.
    pub failed: u64,
    /// Failures sent back for a (delayed) redelivery.
    pub retried: u64,
    /// Messages moved to the dead-letter queue.
    pub dead_lettered: u64,
    /// Settlements the broker did not take (the message will be redelivered).
    pub settle_errors: u64,
    /// Handlers running now.
    pub in_flight: u64,
}

impl WorkerStats {
    /// Read every counter.
    pub fn snapshot(&self) -> WorkerCounts {
        let r = |c: &AtomicU64| c.load(Ordering::SeqCst);
        WorkerCounts {
            received: r(&self.received),
            acked: r(&self.acked),
            failed: r(&self.failed),
            retried: r(&self.retried),
            dead_lettered: r(&self.dead_lettered),
            settle_errors: r(&self.settle_errors),
            in_flight: r(&self.in_flight),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::SeqCst);
}

/// Builds a [`Worker`]; get one from [`Broker::worker`].
pub struct WorkerBuilder {
    broker: Broker,
    queue: String,
    concurrency: usize,
    prefetch: Option<u16>,
    policy: Option<RedeliveryPolicy>,
    observer: Arc<dyn DeadLetterObserver>,
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("queue", &self.queue)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

impl WorkerBuilder {
    pub(crate) fn new(broker: Broker, queue: String) -> Self {
        WorkerBuilder {
            broker,
            queue,
            concurrency: 1,
            prefetch: None,
            policy: None,
            observer: Arc::new(LogObserver),
        }
    }

    /// Handlers running at once (default 1, which keeps queue order).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Prefetch of the worker's consumer (default: the config's, at least `concurrency`).
    pub fn prefetch(mut self, n: u16) -> Self {
        self.prefetch = Some(n.max(1));
        self
    }

    /// Use this policy instead of the configured one for this queue.
    pub fn policy(mut self, policy: RedeliveryPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Take this queue's policy from a policy map (default entry plus per-queue overrides)
    /// instead of the broker configuration's.
    pub fn policies(mut self, map: &crate::RedeliveryPolicyMap) -> Self {
        self.policy = Some(map.policy_for(&self.queue));
        self
    }

    /// Who hears about dead-lettered messages (default: [`LogObserver`]).
    pub fn observer(mut self, observer: Arc<dyn DeadLetterObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// Start consuming with `handler`, which gets each message with its redelivery state.
    /// An `Err` is a failure handled by the policy ([`HandlerError`] says whether it is
    /// permanent); a panic counts as a transient failure.
    pub async fn start<F, Fut, E>(self, handler: F) -> Result<Worker>
    where
        F: Fn(Incoming) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.start_boxed(Box::new(move |i| {
            let fut = handler(i);
            Box::pin(async move { fut.await.map_err(HandlerError::from_boxed) })
        }))
        .await
    }

    /// Start consuming values of `T` decoded by `codec`: `handler` gets the value and the
    /// delivery's [`Incoming`]. A body the codec cannot decode is a permanent failure: the
    /// message goes to the dead-letter queue at once, with the codec's error as the reason,
    /// and the handler never sees it.
    pub async fn start_typed<T, C, F, Fut, E>(self, codec: C, handler: F) -> Result<Worker>
    where
        T: Send + 'static,
        C: crate::Codec<T>,
        F: Fn(T, Incoming) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.start_boxed(Box::new(move |incoming| {
            match incoming.message.decode(&codec) {
                Ok(value) => {
                    let fut = handler(value, incoming);
                    Box::pin(async move { fut.await.map_err(HandlerError::from_boxed) })
                }
                Err(e) => Box::pin(std::future::ready(Err(HandlerError::permanent(e)))),
            }
        }))
        .await
    }

    /// [`WorkerBuilder::start_typed`] with the JSON codec.
    pub async fn start_json<T, F, Fut, E>(self, handler: F) -> Result<Worker>
    where
        T: serde::de::DeserializeOwned + serde::Serialize + Send + 'static,
        F: Fn(T, Incoming) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.start_typed(crate::Json, handler).await
    }

    async fn start_boxed(self, handler: BoxHandler) -> Result<Worker> {
        let policy = self
            .policy
            .unwrap_or_else(|| self.broker.config().redelivery.policy_for(&self.queue));
        policy.validate("policy")?;
        let prefetch = self.prefetch.unwrap_or_else(|| {
            self.broker
                .config()
                .prefetch
                .max(self.concurrency.min(u16::MAX as usize) as u16)
        });
        let consumer = self
            .broker
            .consumer_with_prefetch(&self.queue, prefetch)
            .await?;
        let (stop_tx, stop_rx) = watch::channel(None);
        let stats = Arc::new(WorkerStats::default());
        let shared = Arc::new(Shared {
            handler,
            policy,
            observer: self.observer,
            stats: stats.clone(),
        });
        let task = tokio::spawn(run(consumer, shared, self.concurrency, stop_rx));
        Ok(Worker {
            queue: self.queue,
            stop: stop_tx,
            task: Some(task),
            stats,
        })
    }
}

type BoxHandler = Box<
    dyn Fn(Incoming) -> futures::future::BoxFuture<'static, std::result::Result<(), HandlerError>>
        + Send
        + Sync,
>;

struct Shared {
    handler: BoxHandler,
    policy: RedeliveryPolicy,
    observer: Arc<dyn DeadLetterObserver>,
    stats: Arc<WorkerStats>,
}

/// What graceful shutdown achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Handlers that finished (and settled) during shutdown.
    pub drained: usize,
    /// Handlers still running at the deadline; their deliveries return to the queue.
    pub abandoned: usize,
}

/// A running worker. Call [`Worker::shutdown`] to stop it gracefully; dropping it stops it
/// abruptly (unsettled deliveries return to the queue).
pub struct Worker {
    queue: String,
    stop: watch::Sender<Option<Duration>>,
    task: Option<tokio::task::JoinHandle<Result<ShutdownReport>>>,
    stats: Arc<WorkerStats>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("queue", &self.queue)
            .field("stats", &self.stats.snapshot())
            .finish()
    }
}

impl Worker {
    /// What the worker has done so far.
    pub fn counts(&self) -> WorkerCounts {
        self.stats.snapshot()
    }

    /// Stop taking deliveries, wait up to `timeout` for running handlers, leave the rest for
    /// redelivery, and close the consumer.
    pub async fn shutdown(mut self, timeout: Duration) -> Result<ShutdownReport> {
        let _ = self.stop.send(Some(timeout));
        let task = self.task.take().expect("running");
        match task.await {
            Ok(r) => r,
            Err(e) => Err(
                crate::Error::new(crate::ErrorKind::Unexpected, "worker task failed")
                    .with_source(e),
            ),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn run(
    mut consumer: Consumer,
    shared: Arc<Shared>,
    concurrency: usize,
    mut stop: watch::Receiver<Option<Duration>>,
) -> Result<ShutdownReport> {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    let mut backoff = Duration::from_millis(50);
    let timeout = loop {
        if let Some(t) = *stop.borrow() {
            break t;
        }
        let permit = tokio::select! {
            _ = stop.changed() => continue,
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let next = tokio::select! {
            _ = stop.changed() => continue,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            next = consumer.recv() => next,
        };
        match next {
            Ok(Some(delivery)) => {
                backoff = Duration::from_millis(50);
                bump(&shared.stats.received);
                let shared = shared.clone();
                tasks.spawn(async move {
                    process(&shared, delivery).await;
                    drop(permit);
                });
            }
            Ok(None) => break Duration::ZERO,
            Err(e) if e.is_temporary() => {
                tracing::warn!(queue = consumer.queue(), error = %e, "consumer error; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(queue = consumer.queue(), error = %e, "consumer failed; worker stops");
                tasks.shutdown().await;
                return Err(e);
            }
        }
        // Reap finished handlers so the set does not grow.
        while tasks.try_join_next().is_some() {}
    };
    let running = tasks.len();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut drained = 0;
    loop {
        tokio::select! {
            next = tasks.join_next() => match next {
                Some(_) => drained += 1,
                None => break,
            },
            _ = &mut deadline => break,
        }
    }
    let abandoned = running - drained;
    // Aborting drops the unsettled deliveries, which requeues them.
    tasks.shutdown().await;
    if let Err(e) = consumer.close().await {
        tracing::warn!(error = %e, "closing the worker's consumer failed");
    }
    Ok(ShutdownReport { drained, abandoned })
}

async fn process(shared: &Shared, delivery: Delivery) {
    let stats = &shared.stats;
    if !shared.policy.allows_delivery(delivery.attempt()) {
        // Delivered more often than the policy allows without a failure the worker saw:
        // each earlier delivery ended with its consumer (process, connection) gone. Running
        // the handler again would most likely end the same way.
        let reason = unsettled_reason(&delivery);
        dead_letter(shared, delivery, reason).await;
        return;
    }
    stats.in_flight.fetch_add(1, Ordering::SeqCst);
    let incoming = Incoming {
        message: delivery.message().clone(),
        attempt: delivery.attempt(),
        redelivered: delivery.redelivered(),
        queue: delivery.queue().to_string(),
    };
    // The handler runs in the message's trace: what it sends continues it.
    let trace = delivery
        .trace_context()
        .map(|t| t.child())
        .unwrap_or_else(crate::TraceContext::new_root);
    let (backend, metrics) = delivery.observed_as();
    let span = crate::semconv::process_span(
        backend,
        &incoming.queue,
        &incoming.message,
        incoming.attempt,
    );
    let started = std::time::Instant::now();
    let outcome = trace
        .scope(AssertUnwindSafe((shared.handler)(incoming).instrument(span.clone())).catch_unwind())
        .await;
    metrics
        .process_duration
        .record(started.elapsed().as_secs_f64());
    if !matches!(outcome, Ok(Ok(()))) {
        span.record(
            "error.type",
            if outcome.is_err() { "panic" } else { "handler" },
        );
        span.record("otel.status_code", "ERROR");
    }
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some((e.to_string(), e.permanent)),
        Err(panic) => Some((format!("handler panicked: {}", panic_text(&*panic)), false)),
    };
    match failure {
        None => match delivery.ack().await {
            Ok(()) => bump(&stats.acked),
            Err(e) => {
                bump(&stats.settle_errors);
                tracing::warn!(error = %e, "ack failed; the broker will redeliver");
            }
        },
        Some((reason, permanent)) => {
            bump(&stats.failed);
            fail(shared, delivery, reason, permanent).await;
        }
    }
    stats.in_flight.fetch_sub(1, Ordering::SeqCst);
}

/// Why a delivery over the limit is dead-lettered before its handler runs.
fn unsettled_reason(delivery: &Delivery) -> String {
    let mut reason = format!(
        "delivered {} times; the previous deliveries were never settled (the consumer died or lost its connection)",
        delivery.attempt()
    );
    if let Some(last) = delivery
        .message()
        .headers
        .get(crate::dead_letter::LAST_ERROR_HEADER)
        .and_then(crate::HeaderValue::as_str)
    {
        reason.push_str("; the last handler error: ");
        reason.push_str(last);
    }
    reason
}

async fn dead_letter(shared: &Shared, delivery: Delivery, reason: String) {
    let stats = &shared.stats;
    match delivery.dead_letter(&reason).await {
        Ok(event) => {
            bump(&stats.dead_lettered);
            shared.observer.on_dead_letter(&event).await;
        }
        Err(e) => {
            bump(&stats.settle_errors);
            tracing::warn!(error = %e, "dead-lettering failed; the message will be redelivered");
        }
    }
}

async fn fail(shared: &Shared, mut delivery: Delivery, reason: String, permanent: bool) {
    let stats = &shared.stats;
    let attempt = delivery.attempt();
    let how = match shared.policy.decide(
        attempt,
        permanent,
        delivery.capabilities().delayed_delivery,
        fastrand::f64(),
    ) {
        Decision::DeadLetter => {
            dead_letter(shared, delivery, reason).await;
            return;
        }
        Decision::RetryAfter(delay) => Nack::RetryAfter(delay),
        Decision::Requeue => Nack::Requeue,
    };
    tracing::debug!(
        queue = %delivery.queue(),
        message_id = %delivery.message().id,
        attempt,
        ?how,
        %reason,
        "handler failed; redelivering later"
    );
    delivery.record_failure(&reason);
    match delivery.nack(how).await {
        Ok(()) => bump(&stats.retried),
        Err(e) => {
            bump(&stats.settle_errors);
            tracing::warn!(error = %e, "nack failed; the broker will redeliver");
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
