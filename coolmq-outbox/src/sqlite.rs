//! SQLite: the embedded default. One writer at a time, so a relay claims rows with a lease
//! (`claimed_by`, `claimed_until`) in a short write transaction, publishes, then deletes the
//! confirmed rows it still holds; several relays never hold the same row while a lease runs.

use std::time::Duration;

use async_trait::async_trait;
use coolmq_core::Result;
use sqlx::{Pool, Row as _, Sqlite, SqliteConnection};

use crate::database::{
    apply_migrations, read_outbox_row, Claim, OutboxCounts, OutboxDatabase, Wakeups, COLUMNS,
};
use crate::error::db;
use crate::row::{now_ms, OutboxRow, Settle};

const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "outbox and inbox tables",
    include_str!("migrations/sqlite_0001_outbox.sql"),
)];

#[async_trait]
impl OutboxDatabase for Sqlite {
    const NAME: &'static str = "sqlite";

    async fn migrate(pool: &Pool<Self>) -> Result<()> {
        let mut tx = pool.begin().await.map_err(|e| db(e, "begin migration"))?;
        apply_migrations!(
            tx,
            MIGRATIONS,
            "SELECT 1 FROM coolmq_schema WHERE version = ?",
            "INSERT INTO coolmq_schema (version, description, applied_at) VALUES (?, ?, ?)"
        );
        tx.commit().await.map_err(|e| db(e, "commit migration"))
    }

    async fn insert(conn: &mut SqliteConnection, row: &OutboxRow) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO coolmq_outbox (id, destination_kind, destination, body, headers, \
             content_type, correlation_id, reply_to, kind, priority, persistent, ttl_ms, \
             timestamp_ms, created_at, next_attempt_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        relay: &str,
        limit: i64,
        lease: Duration,
    ) -> Result<Claim<Self>> {
        let now = now_ms();
        let rows = sqlx::query(&format!(
            "UPDATE coolmq_outbox SET claimed_by = ?, claimed_until = ? \
             WHERE seq IN (SELECT seq FROM coolmq_outbox WHERE parked = 0 \
               AND next_attempt_at <= ? AND (claimed_until IS NULL OR claimed_until <= ?) \
               ORDER BY seq LIMIT ?) \
             RETURNING seq, {COLUMNS}"
        ))
        .bind(relay)
        .bind(now + lease.as_millis() as i64)
        .bind(now)
        .bind(now)
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(|e| db(e, "claim outbox rows"))?;
        let mut claimed = Vec::with_capacity(rows.len());
        for r in &rows {
            let seq: i64 = r.try_get("seq").map_err(|e| db(e, "read outbox row"))?;
            claimed.push((
                seq,
                read_outbox_row!(r).map_err(|e| db(e, "read outbox row"))?,
            ));
        }
        claimed.sort_by_key(|(seq, _)| *seq);
        Ok(Claim {
            rows: claimed.into_iter().map(|(_, r)| r).collect(),
            tx: None,
        })
    }

    async fn settle(
        pool: &Pool<Self>,
        _claim: Claim<Self>,
        relay: &str,
        outcomes: Vec<(String, Settle)>,
    ) -> Result<()> {
        let mut tx = pool.begin().await.map_err(|e| db(e, "begin settle"))?;
        for (id, outcome) in outcomes {
            match outcome {
                Settle::Confirmed => {
                    sqlx::query("DELETE FROM coolmq_outbox WHERE id = ? AND claimed_by = ?")
                        .bind(&id)
                        .bind(relay)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| db(e, "delete confirmed row"))?;
                }
                Settle::Failed {
                    attempts,
                    next_attempt_at,
                    error,
                    park,
                } => {
                    sqlx::query(
                        "UPDATE coolmq_outbox SET attempts = ?, next_attempt_at = ?, \
                         last_error = ?, parked = ?, claimed_by = NULL, claimed_until = NULL \
                         WHERE id = ? AND claimed_by = ?",
                    )
                    .bind(attempts)
                    .bind(next_attempt_at)
                    .bind(error)
                    .bind(park)
                    .bind(&id)
                    .bind(relay)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db(e, "record failed attempt"))?;
                }
            }
        }
        tx.commit().await.map_err(|e| db(e, "commit settle"))
    }

    async fn next_due(pool: &Pool<Self>) -> Result<Option<i64>> {
        sqlx::query_scalar(
            "SELECT MIN(MAX(next_attempt_at, COALESCE(claimed_until, 0))) FROM coolmq_outbox \
             WHERE parked = 0",
        )
        .fetch_one(pool)
        .await
        .map_err(|e| db(e, "read next due row"))
    }

    async fn counts(pool: &Pool<Self>) -> Result<OutboxCounts> {
        let (pending, parked): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(parked = 0), 0), COALESCE(SUM(parked = 1), 0) FROM coolmq_outbox",
        )
        .fetch_one(pool)
        .await
        .map_err(|e| db(e, "count outbox rows"))?;
        Ok(OutboxCounts {
            pending: pending as u64,
            parked: parked as u64,
        })
    }

    async fn wakeups(_pool: &Pool<Self>) -> Result<Option<Box<dyn Wakeups>>> {
        Ok(None)
    }

    async fn inbox_record(conn: &mut SqliteConnection, consumer: &str, id: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO coolmq_inbox (consumer, message_id, processed_at) VALUES (?, ?, ?) \
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
        let done = sqlx::query("DELETE FROM coolmq_inbox WHERE processed_at < ?")
            .bind(before_ms)
            .execute(pool)
            .await
            .map_err(|e| db(e, "expire coolmq_inbox"))?;
        Ok(done.rows_affected())
    }
}
