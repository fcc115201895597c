//! The relay: a background task that publishes committed outbox rows through any coolmq
//! backend, pipelined in batches, and deletes a row only after the broker's positive confirm.
//! Nack, unroutable, timeout or connection loss leave the row, count the attempt and retry it
//! with backoff; past the maximum the row is parked and the dead-letter observer fires.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coolmq_core::{
    DeadLetterEvent, DeadLetterObserver, ErrorKind, LogObserver, Publisher, RedeliveryPolicy,
    Result,
};
use sqlx::Pool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::database::OutboxDatabase;
use crate::row::{now_ms, OutboxRow, Settle};

/// Where parked rows are reported to be (they stay in the outbox table, `parked = true`).
pub const PARKED: &str = "coolmq_outbox (parked)";

/// The relay's default retry schedule: 1 s doubling to at most 1 min, 100 attempts (about
/// 1.6 h of broker outage) before a row is parked.
pub fn default_retry_policy() -> RedeliveryPolicy {
    RedeliveryPolicy {
        maximum_redeliveries: 100,
        initial_redelivery_delay: Duration::from_secs(1),
        redelivery_delay: Duration::from_secs(1),
        use_exponential_backoff: true,
        backoff_multiplier: 2.0,
        maximum_redelivery_delay: Some(Duration::from_secs(60)),
        use_collision_avoidance: true,
        collision_avoidance_factor: 0.15,
    }
}

/// What a relay has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStats {
    /// Rows published and confirmed (then deleted).
    pub published: u64,
    /// Publish attempts that failed (the row stayed for a retry).
    pub failed_attempts: u64,
    /// Rows parked after the maximum attempts.
    pub parked: u64,
    /// Batches claimed.
    pub batches: u64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    failed_attempts: AtomicU64,
    parked: AtomicU64,
    batches: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> RelayStats {
        RelayStats {
            published: self.published.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
            parked: self.parked.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
        }
    }
}

/// Configures a relay (from [`crate::Outbox::relay`]).
pub struct RelayBuilder<DB: OutboxDatabase> {
    pool: Pool<DB>,
    committed: Arc<Notify>,
    publisher: Publisher,
    batch_size: usize,
    poll_interval: Duration,
    lease: Duration,
    retry: RedeliveryPolicy,
    observer: Arc<dyn DeadLetterObserver>,
    name: String,
}

impl<DB: OutboxDatabase> std::fmt::Debug for RelayBuilder<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayBuilder")
            .field("name", &self.name)
            .field("batch_size", &self.batch_size)
            .field("poll_interval", &self.poll_interval)
            .field("lease", &self.lease)
            .field("retry", &self.retry)
            .field("publisher", &self.publisher)
            .finish_non_exhaustive()
    }
}

impl<DB: OutboxDatabase> RelayBuilder<DB> {
    pub(crate) fn new(pool: Pool<DB>, committed: Arc<Notify>, publisher: Publisher) -> Self {
        RelayBuilder {
            pool,
            committed,
            publisher,
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(300),
            retry: default_retry_policy(),
            observer: Arc::new(LogObserver),
            name: format!("relay-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// Rows claimed and published per pass (default 500): larger batches, fewer round trips.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// How often to look for rows when nothing wakes the relay (default 1 s): the fallback
    /// for SQLite writers in other processes and for missed notifications.
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    /// SQLite only: how long a claim keeps other relays off the rows (default 5 min; must
    /// exceed the publisher's confirm timeout).
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = d;
        self
    }

    /// The retry schedule and maximum attempts ([`default_retry_policy`] by default).
    pub fn retry_policy(mut self, policy: RedeliveryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Told once for every parked row (the human fallback; logs by default).
    pub fn observer(mut self, observer: Arc<dyn DeadLetterObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// The relay's name in logs and SQLite leases (unique by default).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Start the relay on the current tokio runtime.
    pub fn spawn(self) -> RelayHandle {
        let cancel = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(run(self, cancel.clone(), counters.clone()));
        RelayHandle {
            cancel,
            task,
            counters,
        }
    }
}

/// A running relay. Dropping it leaves the relay running; call [`RelayHandle::shutdown`].
pub struct RelayHandle {
    cancel: CancellationToken,
    task: JoinHandle<()>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for RelayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayHandle")
            .field("stats", &self.stats())
            .field("finished", &self.task.is_finished())
            .finish_non_exhaustive()
    }
}

impl RelayHandle {
    /// What the relay has done so far.
    pub fn stats(&self) -> RelayStats {
        self.counters.snapshot()
    }

    /// Stop after the batch in flight is settled (graceful: no confirmed row is left behind,
    /// no row is half-settled).
    ///
    /// # Errors
    /// `Unexpected` if the relay task panicked.
    pub async fn shutdown(self) -> Result<RelayStats> {
        self.cancel.cancel();
        self.task.await.map_err(|e| {
            coolmq_core::Error::new(ErrorKind::Unexpected, format!("the relay task failed: {e}"))
        })?;
        Ok(self.counters.snapshot())
    }
}

/// Errors that no retry can fix: park at once.
fn is_permanent(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::MessageTooLarge | ErrorKind::Unsupported | ErrorKind::ConfigInvalid
    )
}

async fn run<DB: OutboxDatabase>(
    cfg: RelayBuilder<DB>,
    cancel: CancellationToken,
    counters: Arc<Counters>,
) {
    let mut wakeups = match DB::wakeups(&cfg.pool).await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(relay = %cfg.name, error = %e, "no database notifications; polling");
            None
        }
    };
    while !cancel.is_cancelled() {
        // Registered before the claim, so a commit during the claim is not missed.
        let committed = cfg.committed.notified();
        tokio::pin!(committed);
        committed.as_mut().enable();

        let claim = match DB::claim(&cfg.pool, &cfg.name, cfg.batch_size as i64, cfg.lease).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(relay = %cfg.name, error = %e, "claiming outbox rows failed");
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = tokio::time::sleep(cfg.poll_interval) => {}
                }
                continue;
            }
        };
        if claim.rows.is_empty() {
            let wait = match DB::next_due(&cfg.pool).await {
                // Rows held by other relays or waiting for a retry: look again when due, but
                // not in a tight loop.
                Ok(Some(due)) => Duration::from_millis((due - now_ms()).max(20) as u64),
                _ => cfg.poll_interval,
            }
            .min(cfg.poll_interval);
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = &mut committed => {}
                _ = tokio::time::sleep(wait) => {}
                r = async {
                    match wakeups.as_mut() {
                        Some(w) => w.next().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Err(e) = r {
                        tracing::warn!(relay = %cfg.name, error = %e, "database notifications lost; polling");
                        wakeups = None;
                    }
                }
            }
            continue;
        }
        counters.batches.fetch_add(1, Ordering::Relaxed);
        let results =
            futures::future::join_all(claim.rows.iter().map(|row| publish(&cfg, row))).await;
        let mut outcomes = Vec::with_capacity(results.len());
        let mut parked = Vec::new();
        for (row, result) in claim.rows.iter().zip(results) {
            match result {
                Ok(()) => outcomes.push((row.id.clone(), Settle::Confirmed)),
                Err(e) => {
                    let attempts = row.attempts + 1;
                    let park =
                        is_permanent(e.kind()) || cfg.retry.should_dead_letter(attempts as u32);
                    let delay = cfg.retry.jittered_delay_for(attempts as u32);
                    tracing::debug!(relay = %cfg.name, message_id = %row.id, attempts, park, error = %e, "outbox publish failed");
                    if park {
                        parked.push((row.clone(), attempts, e.to_string()));
                    }
                    outcomes.push((
                        row.id.clone(),
                        Settle::Failed {
                            attempts,
                            next_attempt_at: now_ms() + delay.as_millis() as i64,
                            error: e.to_string(),
                            park,
                        },
                    ));
                }
            }
        }
        let confirmed = outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Settle::Confirmed))
            .count() as u64;
        let failed = outcomes.len() as u64 - confirmed;
        if let Err(e) = DB::settle(&cfg.pool, claim, &cfg.name, outcomes).await {
            // The rows stay (PostgreSQL rolls the claim back; SQLite's lease runs out): they
            // are published again — duplicates with the same id, which the inbox absorbs.
            tracing::error!(relay = %cfg.name, error = %e, "settling outbox rows failed; they will be resent");
            continue;
        }
        counters.published.fetch_add(confirmed, Ordering::Relaxed);
        counters
            .failed_attempts
            .fetch_add(failed, Ordering::Relaxed);
        for (row, attempts, reason) in parked {
            counters.parked.fetch_add(1, Ordering::Relaxed);
            if let Ok(message) = row.message() {
                let event = DeadLetterEvent::new(
                    row.destination.clone(),
                    PARKED,
                    message,
                    attempts as u32,
                    reason,
                );
                cfg.observer.on_dead_letter(&event).await;
            }
        }
    }
}

async fn publish<DB: OutboxDatabase>(cfg: &RelayBuilder<DB>, row: &OutboxRow) -> Result<()> {
    let message = row.message()?;
    cfg.publisher
        .send(&row.destination(), message)
        .await
        .map(|_| ())
        .map_err(|e| e.into_parts().0)
}
