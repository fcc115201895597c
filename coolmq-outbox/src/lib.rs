//! # coolmq-outbox
//!
//! Send bound to your database transaction, without JTA: the **transactional outbox** writes
//! the message into the caller's own sqlx transaction (commit → it will be delivered;
//! rollback → it never is), and a **relay** publishes committed rows through any coolmq
//! backend, deleting each only after the broker's confirm. The **inbox** makes the consumer
//! idempotent, so the duplicates that at-least-once delivery produces apply once.
//!
//! Databases: SQLite (feature `sqlite`, the embedded default) and PostgreSQL (feature
//! `postgres`: `FOR UPDATE SKIP LOCKED` for concurrent relays, LISTEN/NOTIFY wake-ups).
//!
//! ## Schema
//! Created by [`Outbox::new`] / [`Inbox::new`] from embedded migrations, recorded in
//! `coolmq_schema`:
//! - `coolmq_outbox`: `seq` (publish order), `id` (message id, unique, the same on every
//!   resend), `destination_kind` + `destination`, the message's body, headers (JSON) and
//!   properties, `created_at`, `attempts`, `next_attempt_at`, `last_error`, `parked` (gave up
//!   after the maximum attempts: needs a human), `claimed_by` / `claimed_until` (SQLite
//!   relay leases). Times are milliseconds since the epoch.
//! - `coolmq_inbox`: (`consumer`, `message_id`) primary key, `processed_at`.
//!
//! ## Cargo features
#![doc = document_features::document_features!()]
#![cfg_attr(docsrs, feature(doc_cfg))]
// Without a database feature only the `OutboxDatabase` trait is left (for one's own database),
// and the helpers the SQLite and PostgreSQL implementations share have no user.
#![cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(unused))]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod database;
mod error;
mod inbox;
mod outbox;
#[cfg(feature = "postgres")]
mod postgres;
mod relay;
mod row;
#[cfg(feature = "sqlite")]
mod sqlite;

#[doc(hidden)]
pub use database::{Claim, Wakeups};
pub use database::{OutboxCounts, OutboxDatabase};
pub use inbox::{Inbox, Received};
pub use outbox::Outbox;
#[cfg(feature = "postgres")]
pub use postgres::CHANNEL as POSTGRES_CHANNEL;
pub use relay::{default_retry_policy, RelayBuilder, RelayHandle, RelayStats, PARKED};
#[doc(hidden)]
pub use row::{OutboxRow, Settle};
pub use sqlx;
