//! The SQL each database needs, behind one sealed trait: the outbox and inbox are generic
//! over it, so the same `Outbox<DB>` API serves SQLite and PostgreSQL (as sqlx serves both).

use std::time::Duration;

use async_trait::async_trait;
use coolmq_core::Result;
use sqlx::Pool;

use crate::row::{OutboxRow, Settle};

/// Rows claimed by one relay pass. On PostgreSQL the claim is a transaction holding the rows'
/// locks (`FOR UPDATE SKIP LOCKED`) until they are settled; on SQLite it is a lease written to
/// the rows.
#[doc(hidden)]
#[allow(missing_debug_implementations)] // an sqlx transaction has no Debug
pub struct Claim<DB: sqlx::Database> {
    /// The claimed rows, in publish order.
    pub rows: Vec<OutboxRow>,
    /// The transaction holding the rows, where the database locks rows.
    pub tx: Option<sqlx::Transaction<'static, DB>>,
}

/// Wake-ups from the database when rows are committed (PostgreSQL LISTEN/NOTIFY).
#[doc(hidden)]
#[async_trait]
pub trait Wakeups: Send {
    /// Resolves at the next notification.
    async fn next(&mut self) -> Result<()>;
}

/// Outbox and inbox counts, for operators and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxCounts {
    /// Rows waiting to be published (including those waiting for a retry).
    pub pending: u64,
    /// Rows given up on after the maximum attempts: they need a human.
    pub parked: u64,
}

mod sealed {
    pub trait Sealed {}
    #[cfg(feature = "sqlite")]
    impl Sealed for sqlx::Sqlite {}
    #[cfg(feature = "postgres")]
    impl Sealed for sqlx::Postgres {}
}

/// A database the outbox and inbox run on: `sqlx::Sqlite` (feature `sqlite`) or
/// `sqlx::Postgres` (feature `postgres`). Sealed: its methods are the outbox's SQL.
#[async_trait]
pub trait OutboxDatabase: sqlx::Database + sealed::Sealed {
    #[doc(hidden)]
    const NAME: &'static str;
    #[doc(hidden)]
    async fn migrate(pool: &Pool<Self>) -> Result<()>;
    #[doc(hidden)]
    async fn insert(conn: &mut Self::Connection, row: &OutboxRow) -> Result<()>;
    #[doc(hidden)]
    async fn claim(
        pool: &Pool<Self>,
        relay: &str,
        limit: i64,
        lease: Duration,
    ) -> Result<Claim<Self>>;
    #[doc(hidden)]
    async fn settle(
        pool: &Pool<Self>,
        claim: Claim<Self>,
        relay: &str,
        outcomes: Vec<(String, Settle)>,
    ) -> Result<()>;
    #[doc(hidden)]
    async fn next_due(pool: &Pool<Self>) -> Result<Option<i64>>;
    #[doc(hidden)]
    async fn counts(pool: &Pool<Self>) -> Result<OutboxCounts>;
    #[doc(hidden)]
    async fn wakeups(pool: &Pool<Self>) -> Result<Option<Box<dyn Wakeups>>>;
    #[doc(hidden)]
    async fn inbox_record(conn: &mut Self::Connection, consumer: &str, id: &str) -> Result<bool>;
    #[doc(hidden)]
    async fn inbox_expire(pool: &Pool<Self>, before_ms: i64) -> Result<u64>;
}

/// Run the embedded migrations not yet applied, recorded in `coolmq_schema` (not sqlx's
/// `_sqlx_migrations`, which belongs to the application's own migrations: sharing it would
/// make the application's migrator report coolmq's versions as unknown).
pub(crate) const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS coolmq_schema (version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)";

/// The statements of a migration file: `--` comments removed, split at `;`.
pub(crate) fn statements(sql: &str) -> Vec<String> {
    let without_comments: String = sql
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Apply the `(version, description, sql)` migrations not yet recorded in `coolmq_schema`,
/// inside the transaction `$tx`; the two statements differ per database only in their
/// placeholders.
macro_rules! apply_migrations {
    ($tx:expr, $migrations:expr, $select:literal, $insert:literal) => {{
        sqlx::query($crate::database::MIGRATIONS_TABLE)
            .execute(&mut *$tx)
            .await
            .map_err(|e| db(e, "create coolmq_schema"))?;
        for (version, description, sql) in $migrations {
            let applied = sqlx::query($select)
                .bind(version)
                .fetch_optional(&mut *$tx)
                .await
                .map_err(|e| db(e, "read coolmq_schema"))?;
            if applied.is_some() {
                continue;
            }
            for statement in $crate::database::statements(sql) {
                sqlx::query(&statement)
                    .execute(&mut *$tx)
                    .await
                    .map_err(|e| db(e, &format!("migration {version}")))?;
            }
            sqlx::query($insert)
                .bind(version)
                .bind(description)
                .bind(now_ms())
                .execute(&mut *$tx)
                .await
                .map_err(|e| db(e, "record migration"))?;
        }
    }};
}
pub(crate) use apply_migrations;

/// An [`OutboxRow`] from a result row of `COLUMNS` (any sqlx row type).
macro_rules! read_outbox_row {
    ($r:expr) => {
        (|| -> std::result::Result<OutboxRow, sqlx::Error> {
            Ok(OutboxRow {
                id: $r.try_get("id")?,
                destination_kind: $r.try_get("destination_kind")?,
                destination: $r.try_get("destination")?,
                body: $r.try_get("body")?,
                headers: $r.try_get("headers")?,
                content_type: $r.try_get("content_type")?,
                correlation_id: $r.try_get("correlation_id")?,
                reply_to: $r.try_get("reply_to")?,
                kind: $r.try_get("kind")?,
                priority: $r.try_get("priority")?,
                persistent: $r.try_get("persistent")?,
                ttl_ms: $r.try_get("ttl_ms")?,
                timestamp_ms: $r.try_get("timestamp_ms")?,
                attempts: $r.try_get("attempts")?,
            })
        })()
    };
}
pub(crate) use read_outbox_row;

/// The columns `claim` reads, in `read_outbox_row!`'s terms.
pub(crate) const COLUMNS: &str = "id, destination_kind, destination, body, headers, \
    content_type, correlation_id, reply_to, kind, priority, persistent, ttl_ms, timestamp_ms, \
    attempts";
