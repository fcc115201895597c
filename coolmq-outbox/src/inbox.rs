//! The inbox (idempotent consumer): the handler's database work and the record "message id
//! processed" commit in one transaction, so a redelivered duplicate — from a lost ack or a
//! relay's resend after a lost confirm — is acknowledged without running the handler again.

use std::marker::PhantomData;
use std::time::Duration;

use coolmq_core::Result;
use sqlx::{Pool, Transaction};

use crate::database::OutboxDatabase;
use crate::error::db;
use crate::row::now_ms;

/// What [`Inbox::begin`] found.
pub enum Received<DB: OutboxDatabase> {
    /// First time: do the handler's database work in this transaction and commit it, then
    /// ack. Rolling back (or dropping it) forgets the id, so a redelivery runs the handler.
    New(Transaction<'static, DB>),
    /// Already processed and committed: ack without running the handler.
    Duplicate,
}

impl<DB: OutboxDatabase> std::fmt::Debug for Received<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Received::New(_) => f.write_str("New"),
            Received::Duplicate => f.write_str("Duplicate"),
        }
    }
}

/// The dedup table of one consumer (name it after the handler; two handlers of the same
/// message keep separate records). Cheap to clone.
///
/// ```no_run
/// # #[cfg(feature = "sqlite")]
/// # async fn f(pool: sqlx::SqlitePool, delivery: coolmq_core::Delivery) -> coolmq_core::Result<()> {
/// use coolmq_outbox::{Inbox, Received};
///
/// let inbox = Inbox::new(pool, "payments").await?;
/// match inbox.begin(&delivery.message().id).await? {
///     Received::New(mut tx) => {
///         sqlx::query("UPDATE accounts SET paid = paid + 1").execute(&mut *tx).await.unwrap();
///         tx.commit().await.unwrap(); // effect and record together
///     }
///     Received::Duplicate => {} // effect already applied
/// }
/// delivery.ack().await?;
/// # Ok(()) }
/// ```
pub struct Inbox<DB: OutboxDatabase> {
    pool: Pool<DB>,
    consumer: String,
    _db: PhantomData<fn() -> DB>,
}

impl<DB: OutboxDatabase> std::fmt::Debug for Inbox<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("consumer", &self.consumer)
            .field("database", &std::any::type_name::<DB>())
            .finish_non_exhaustive()
    }
}

impl<DB: OutboxDatabase> Clone for Inbox<DB> {
    fn clone(&self) -> Self {
        Inbox {
            pool: self.pool.clone(),
            consumer: self.consumer.clone(),
            _db: PhantomData,
        }
    }
}

impl<DB: OutboxDatabase> Inbox<DB> {
    /// The inbox of `consumer` on `pool`, creating the tables if needed.
    ///
    /// # Errors
    /// `Database` when the schema cannot be created.
    pub async fn new(pool: Pool<DB>, consumer: impl Into<String>) -> Result<Self> {
        DB::migrate(&pool).await?;
        Ok(Inbox {
            pool,
            consumer: consumer.into(),
            _db: PhantomData,
        })
    }

    /// Open a transaction that records `message_id` as processed. Concurrent duplicates
    /// wait for each other on the record's key: exactly one gets [`Received::New`].
    ///
    /// # Errors
    /// `Database`; the delivery should then be left for redelivery (nack-requeue).
    pub async fn begin(&self, message_id: &str) -> Result<Received<DB>> {
        let mut tx = self.pool.begin().await.map_err(|e| db(e, "begin"))?;
        if DB::inbox_record(&mut *tx, &self.consumer, message_id).await? {
            Ok(Received::New(tx))
        } else {
            let _ = tx.rollback().await;
            Ok(Received::Duplicate)
        }
    }

    /// Expire old ids every `interval` in a background task, keeping `retention` (see
    /// [`Inbox::expire`]); abort the returned handle to stop it.
    pub fn spawn_expiry(
        &self,
        retention: Duration,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let inbox = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                match inbox.expire(retention).await {
                    Ok(n) if n > 0 => tracing::debug!(removed = n, "inbox ids expired"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "inbox expiry failed"),
                }
            }
        })
    }

    /// Forget ids processed longer than `retention` ago (all consumers); returns how many. A
    /// duplicate arriving after that is processed again, so keep the retention longer than
    /// any redelivery or outbox retry can take.
    pub async fn expire(&self, retention: Duration) -> Result<u64> {
        DB::inbox_expire(&self.pool, now_ms() - retention.as_millis() as i64).await
    }
}
