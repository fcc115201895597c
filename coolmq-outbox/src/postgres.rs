//! PostgreSQL: a relay claims rows with `FOR UPDATE SKIP LOCKED` inside a transaction it holds
//! while publishing, so concurrent relays take disjoint rows and a row is never published by
//! two relays at once; a relay that dies releases its rows with its connection. `enqueue`
//! notifies the `coolmq_outbox` channel in the caller's transaction — PostgreSQL delivers the
//! notification at commit, and never for a rollback — so relays wake without polling.

use std::time::Duration;

use async_trait::async_trait;
use coolmq_core::Result;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, Pool, Postgres, Row as _};

use crate::database::{
    apply_migrations, read_outbox_row, Claim, OutboxCounts, OutboxDatabase, Wakeups, COLUMNS,
};
use crate::error::db;
use crate::row::{now_ms, OutboxRow, Settle};

const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "outbox and inbox tables",
    include_str!("migrations/postgres_0001_outbox.sql"),
)];

/// The LISTEN/NOTIFY channel relays wait on.
pub const CHANNEL: &str = "coolmq_outbox";

/// Serialises concurrent migrations (several processes starting at once).
const MIGRATION_LOCK: i64 = 0x636f_6f6c_6d71; // "coolmq"

struct Listener(PgListener);

#[async_trait]
impl Wakeups for Listener {
    async fn next(&mut self) -> Result<()> {
        self.0
            .recv()
            .await
            .map(|_| ())
            .map_err(|e| db(e, "LISTEN coolmq_outbox"))
    }
}

#[async_trait]
impl OutboxDatabase for Postgres {
    const NAME: &'static str = "postgres";

    async fn migrate(pool: &Pool<Self>) -> Result<()> {
        let mut tx = pool.begin().await.map_err(|e| db(e, "begin migration"))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(|e| db(e, "lock migrations"))?;
        apply_migrations!(
            tx,
            MIGRATIONS,
            "SELECT 1 FROM coolmq_schema WHERE version = $1",
            "INSERT INTO coolmq_schema (version, description, applied_at) VALUES ($1, $2, $3)"
        );
        tx.commit().await.map_err(|e| db(e, "commit migration"))
    }

    async fn insert(conn: &mut PgConnection, row: &OutboxRow) -> Result<()> {
        let now = now_ms();
        // One round trip: the insert and the notification (delivered at commit).
        sqlx::query(
            "WITH inserted AS (INSERT INTO coolmq_outbox (id, destination_kind, destination, \
             body, headers, content_type, correlation_id, reply_to, kind, priority, persistent, \
             ttl_ms, timestamp_ms, created_at, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14) \
             RETURNING seq) SELECT pg_notify('coolmq_outbox', '') FROM inserted",
        )
        .bind(&row.id)
        .bind(&row.destination_kind)
        .bind(&row.destination)
        .bind(&row.body)
        .bind(&row.headers)
        .bind(&row.content_type)
        .bind(&row.correlation_id)
        .bind(&row.reply_to)
        .bind(&row.kind)
        .bind(row.priority)
        .bind(row.persistent)
        .bind(row.ttl_ms)
        .bind(row.timestamp_ms)
        .bind(now)
        .execute(conn)
        .await
        .map_err(|e| {
            db(e, "insert into coolmq_outbox").with_context("message_id", row.id.clone())
        })?;
        Ok(())
    }

    async fn claim(
        pool: &Pool<Self>,
        _relay: &str,
        limit: i64,
        _lease: Duration,
    ) -> Result<Claim<Self>> {
        let mut tx = pool.begin().await.map_err(|e| db(e, "begin claim"))?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM coolmq_outbox WHERE parked = FALSE AND next_attempt_at <= $1 \
             ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED"
        ))
        .bind(now_ms())
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db(e, "claim outbox rows"))?;
        let rows = rows
            .iter()
            .map(|r| read_outbox_row!(r))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| db(e, "read outbox row"))?;
        if rows.is_empty() {
            let _ = tx.rollback().await;
            return Ok(Claim { rows, tx: None });
        }
        Ok(Claim { rows, tx: Some(tx) })
    }

    async fn settle(
        _pool: &Pool<Self>,
        claim: Claim<Self>,
        _relay: &str,
        outcomes: Vec<(String, Settle)>,
    ) -> Result<()> {
        let Some(mut tx) = claim.tx else {
            return Ok(());
        };
        let mut confirmed = Vec::new();
        for (id, outcome) in outcomes {
            match outcome {
                Settle::Confirmed => confirmed.push(id),
                Settle::Failed {
                    attempts,
                    next_attempt_at,
                    error,
                    park,
                } => {
                    sqlx::query(
                        "UPDATE coolmq_outbox SET attempts = $1, next_attempt_at = $2, \
                         last_error = $3, parked = $4 WHERE id = $5",
                    )
                    .bind(attempts)
                    .bind(next_attempt_at)
                    .bind(error)
                    .bind(park)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db(e, "record failed attempt"))?;
                }
            }
        }
        if !confirmed.is_empty() {
            sqlx::query("DELETE FROM coolmq_outbox WHERE id = ANY($1)")
                .bind(&confirmed)
                .execute(&mut *tx)
                .await
                .map_err(|e| db(e, "delete confirmed rows"))?;
        }
        tx.commit().await.map_err(|e| db(e, "commit settle"))
    }

    async fn next_due(pool: &Pool<Self>) -> Result<Option<i64>> {
        sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM coolmq_outbox WHERE parked = FALSE")
            .fetch_one(pool)
            .await
            .map_err(|e| db(e, "read next due row"))
    }

    async fn counts(pool: &Pool<Self>) -> Result<OutboxCounts> {
        let (pending, parked): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE NOT parked), COUNT(*) FILTER (WHERE parked) \
             FROM coolmq_outbox",
        )
        .fetch_one(pool)
        .await
        .map_err(|e| db(e, "count outbox rows"))?;
        Ok(OutboxCounts {
            pending: pending as u64,
            parked: parked as u64,
        })
    }

    async fn wakeups(pool: &Pool<Self>) -> Result<Option<Box<dyn Wakeups>>> {
        let mut listener = PgListener::connect_with(pool)
            .await
            .map_err(|e| db(e, "LISTEN connection"))?;
        listener
            .listen(CHANNEL)
            .await
            .map_err(|e| db(e, "LISTEN coolmq_outbox"))?;
        Ok(Some(Box::new(Listener(listener))))
    }

    async fn inbox_record(conn: &mut PgConnection, consumer: &str, id: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO coolmq_inbox (consumer, message_id, processed_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(consumer)
        .bind(id)
        .bind(now_ms())
        .execute(conn)
        .await
        .map_err(|e| db(e, "record in coolmq_inbox"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn inbox_expire(pool: &Pool<Self>, before_ms: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM coolmq_inbox WHERE processed_at < $1")
            .bind(before_ms)
            .execute(pool)
            .await
            .map_err(|e| db(e, "expire coolmq_inbox"))?;
        Ok(done.rows_affected())
    }
}
