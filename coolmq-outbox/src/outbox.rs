//! The outbox handle: `enqueue` writes a message into the caller's own database transaction,
//! so the caller's commit makes delivery certain and its rollback means it is never sent.

use std::marker::PhantomData;
use std::sync::Arc;

use coolmq_core::{Destination, Message, Publisher, Result};
use sqlx::{Pool, Transaction};
use tokio::sync::Notify;

use crate::database::{OutboxCounts, OutboxDatabase};
use crate::error::db;
use crate::relay::RelayBuilder;
use crate::row::OutboxRow;

/// The transactional outbox on one database pool. Cheap to clone.
///
/// ```no_run
/// # #[cfg(feature = "sqlite")]
/// # async fn f(broker: coolmq_core::Broker) -> coolmq_core::Result<()> {
/// use coolmq_core::{Destination, Message};
/// use coolmq_outbox::Outbox;
///
/// let pool = sqlx::SqlitePool::connect("sqlite://orders.db?mode=rwc").await.unwrap();
/// let outbox = Outbox::new(pool.clone()).await?; // creates the tables
/// let relay = outbox.relay(broker.publisher().await?).spawn();
///
/// let mut tx = pool.begin().await.unwrap();
/// sqlx::query("INSERT INTO orders (id) VALUES ('o-1')").execute(&mut *tx).await.unwrap();
/// outbox.enqueue(&mut tx, &Destination::queue("orders"), &Message::new("o-1")).await?;
/// outbox.commit(tx).await?; // the order and its message, or neither
///
/// relay.shutdown().await?;
/// # Ok(()) }
/// ```
pub struct Outbox<DB: OutboxDatabase> {
    pool: Pool<DB>,
    committed: Arc<Notify>,
    _db: PhantomData<fn() -> DB>,
}

impl<DB: OutboxDatabase> Clone for Outbox<DB> {
    fn clone(&self) -> Self {
        Outbox {
            pool: self.pool.clone(),
            committed: self.committed.clone(),
            _db: PhantomData,
        }
    }
}

impl<DB: OutboxDatabase> std::fmt::Debug for Outbox<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("database", &<DB as OutboxDatabase>::NAME)
            .finish()
    }
}

impl<DB: OutboxDatabase> Outbox<DB> {
    /// The outbox on `pool`, creating or upgrading its tables (embedded migrations, recorded
    /// in `coolmq_schema`).
    ///
    /// # Errors
    /// `Database` when the schema cannot be created.
    pub async fn new(pool: Pool<DB>) -> Result<Self> {
        DB::migrate(&pool).await?;
        Ok(Outbox {
            pool,
            committed: Arc::new(Notify::new()),
            _db: PhantomData,
        })
    }

    /// The pool the outbox uses.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Write `message` for `destination` into the caller's transaction `tx`. Nothing is sent
    /// now: the relay publishes it after `tx` commits, with the message id unchanged on every
    /// resend (a message without an id gets one). Returns the message id.
    ///
    /// # Errors
    /// `Database` (e.g. a message id already in the outbox); the caller's transaction should
    /// then be rolled back.
    pub async fn enqueue(
        &self,
        tx: &mut Transaction<'_, DB>,
        destination: &Destination,
        message: &Message,
    ) -> Result<String> {
        let row = OutboxRow::new(destination, message)?;
        DB::insert(&mut **tx, &row).await?;
        Ok(row.id)
    }

    /// Commit `tx` and wake this process's relays at once (PostgreSQL relays elsewhere are
    /// woken by NOTIFY; SQLite relays in other processes by polling).
    ///
    /// # Errors
    /// `Database` when the commit fails: nothing was enqueued.
    pub async fn commit(&self, tx: Transaction<'_, DB>) -> Result<()> {
        tx.commit().await.map_err(|e| db(e, "commit"))?;
        self.notify();
        Ok(())
    }

    /// Wake this process's relays: call after committing a transaction that enqueued.
    pub fn notify(&self) {
        self.committed.notify_waiters();
        self.committed.notify_one();
    }

    /// Rows pending and parked.
    pub async fn counts(&self) -> Result<OutboxCounts> {
        DB::counts(&self.pool).await
    }

    /// A relay publishing this outbox's rows through `publisher`; configure, then `spawn`.
    pub fn relay(&self, publisher: Publisher) -> RelayBuilder<DB> {
        RelayBuilder::new(self.pool.clone(), self.committed.clone(), publisher)
    }
}
