//! The seeds' story on the embedded default (memory broker, SQLite): the order service writes
//! each order row and its message in one SQLite transaction (the outbox), so an order that
//! rolls back is never announced; the relay publishes committed messages with confirms (one
//! confirm is lost on purpose: the relay resends, the broker now holds a duplicate); the payment
//! consumer records each payment and the message id in one transaction (the inbox), so the
//! duplicate is paid once. Most payments succeed, some fail transiently (recovered by
//! redelivery) and one poison order is dead-lettered with the alert hook fired.
//!
//! Run: `coolmq demo`, or `cargo run --example demo --features outbox-sqlite` in the
//! repository (the example includes this file). Swap the broker by setting `COOLMQ_URL` (or
//! `COOLMQ_CONFIG=coolmq.toml`); the code stays the same.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use coolmq::outbox::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};
use coolmq::outbox::sqlx::{self, Row as _};
use coolmq::outbox::{Inbox, Outbox, Received};
use coolmq::{Config, DeadLetterEvent, DeadLetterObserver, Destination, HandlerError, Message};
use serde::{Deserialize, Serialize};

const ORDERS: u32 = 20;
const POISON: u32 = 13;
const QUEUE: &str = "payments.orders";

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u32,
    customer: String,
    cents: i64,
}

/// The human fallback: in production, e-mail or SMS the on-call person.
struct PageOnCall(Mutex<Vec<String>>);

#[async_trait]
impl DeadLetterObserver for PageOnCall {
    async fn on_dead_letter(&self, event: &DeadLetterEvent) {
        println!(
            "ALERT (would e-mail/SMS on-call): message {} moved to {} after {} attempts: {}",
            event.message.id, event.dead_letter_queue, event.attempts, event.reason
        );
        self.0.lock().unwrap().push(event.message.id.clone());
    }
}

/// The demo's default configuration: the in-process broker and a fast redelivery policy so
/// the story plays in about a second; `COOLMQ_URL` / `COOLMQ_CONFIG` override it.
pub fn demo_config() -> coolmq::Result<Config> {
    if std::env::var_os("COOLMQ_URL").is_some() || std::env::var_os("COOLMQ_CONFIG").is_some() {
        return Config::from_env();
    }
    Config::from_toml_str(
        r#"
        url = "memory://demo"
        confirm_timeout = "300ms"
        [redelivery.default]
        maximum_redeliveries = 3
        initial_redelivery_delay = "100ms"
        use_exponential_backoff = true
        backoff_multiplier = 2.0
        "#,
    )
}

/// The whole story; fails unless every order is accounted for.
pub async fn story(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let broker = coolmq::connect(config).await?;
    println!("broker: {} ({})", broker.backend_name(), broker.endpoint());
    broker.declare_queue(&broker.queue_spec(QUEUE)).await?;

    // One SQLite database for both services (in production each has its own).
    let path = std::env::temp_dir().join(format!("coolmq-demo-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let db = SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal),
    )
    .await?;
    sqlx::query("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, cents INTEGER)")
        .execute(&db)
        .await?;
    sqlx::query("CREATE TABLE payments (order_id INTEGER PRIMARY KEY, cents INTEGER)")
        .execute(&db)
        .await?;
    let outbox = Outbox::new(db.clone()).await?;
    let inbox = Inbox::new(db.clone(), "payment-service").await?;

    // Payment service: a worker applying the redelivery policy and dead-lettering; the inbox
    // makes it idempotent (payment row + message id commit together).
    let attempts: Arc<Mutex<HashSet<(u32, u32)>>> = Arc::default();
    let duplicates = Arc::new(Mutex::new(0u32));
    let observer = Arc::new(PageOnCall(Mutex::default()));
    let (seen, dup) = (attempts.clone(), duplicates.clone());
    let worker = broker
        .worker(QUEUE)
        .concurrency(4)
        .observer(observer.clone())
        .start(move |incoming| {
            let (seen, dup, inbox) = (seen.clone(), dup.clone(), inbox.clone());
            async move {
                let order: Order = incoming
                    .message
                    .body_json()
                    .map_err(HandlerError::permanent)?;
                seen.lock().unwrap().insert((order.id, incoming.attempt));
                let mut tx = match inbox.begin(&incoming.message.id).await {
                    Ok(Received::New(tx)) => tx,
                    Ok(Received::Duplicate) => {
                        *dup.lock().unwrap() += 1;
                        return Ok(()); // already paid: ack without paying twice
                    }
                    Err(e) => return Err(HandlerError::msg(e.to_string())),
                };
                if order.id == POISON {
                    return Err(HandlerError::msg(format!(
                        "card of {} declined by the bank (order {})",
                        order.customer, order.id
                    )));
                }
                if order.id.is_multiple_of(4) && incoming.attempt == 1 {
                    return Err(HandlerError::msg("payment gateway timed out")); // tx rolls back
                }
                sqlx::query("INSERT INTO payments (order_id, cents) VALUES (?, ?)")
                    .bind(order.id)
                    .bind(order.cents)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| HandlerError::msg(e.to_string()))?;
                tx.commit()
                    .await
                    .map_err(|e| HandlerError::msg(e.to_string()))
            }
        })
        .await?;

    // Order service: each order row and its message in one transaction. Order 0 fails
    // validation after the insert and rolls back: its message must never be sent.
    let destination = Destination::queue(QUEUE);
    for id in 0..=ORDERS {
        let order = Order {
            id,
            customer: format!("customer-{id}"),
            cents: 1000 + i64::from(id),
        };
        let mut tx = db.begin().await?;
        sqlx::query("INSERT INTO orders (id, customer, cents) VALUES (?, ?, ?)")
            .bind(order.id)
            .bind(&order.customer)
            .bind(order.cents)
            .execute(&mut *tx)
            .await?;
        let message = Message::json(&order)?.with_id(format!("order-{id}"));
        outbox.enqueue(&mut tx, &destination, &message).await?;
        if id == 0 {
            tx.rollback().await?; // validation failed: no order, no message
        } else {
            outbox.commit(tx).await?;
        }
    }
    let orders: i64 = sqlx::query("SELECT COUNT(*) FROM orders")
        .fetch_one(&db)
        .await?
        .get(0);
    println!("order service: {orders} orders committed with their messages (1 rolled back)");

    // The relay publishes committed rows with confirms. Lose one confirm (where the backend
    // can inject faults): the relay resends the same message id, the broker holds two copies.
    let faults = coolmq::memory::Faults::of(config).ok();
    let lossy = faults.is_some();
    if let Some(faults) = faults {
        faults.lose_next_confirm();
    }
    let relay = outbox.relay(broker.publisher().await?).spawn();

    // Wait until every order is paid or dead-lettered.
    let started = Instant::now();
    let expected = u64::from(ORDERS) + u64::from(lossy); // the lost confirm's duplicate
    while worker.counts().acked + worker.counts().dead_lettered < expected {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("orders still unsettled: {:?}", worker.counts()).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts = worker.counts();
    worker.shutdown(Duration::from_secs(5)).await?;
    let relayed = relay.shutdown().await?;
    let pending = outbox.counts().await?;
    let paid: i64 = sqlx::query("SELECT COUNT(*) FROM payments")
        .fetch_one(&db)
        .await?
        .get(0);
    let duplicates = *duplicates.lock().unwrap();
    db.close().await;
    let _ = std::fs::remove_file(&path);
    let dlq = broker.config().dead_letter_queue(QUEUE);
    let in_dlq = broker.queue_depth(&dlq).await?;
    let paid_after_retry = attempts
        .lock()
        .unwrap()
        .iter()
        .filter(|(id, attempt)| *attempt > 1 && *id != POISON)
        .count();

    println!(
        "relay: {} published and confirmed, {} resent after a failed attempt, outbox now {} pending",
        relayed.published, relayed.failed_attempts, pending.pending
    );
    println!("payment service:");
    println!(
        "  acked          {} (19 paid, duplicates acked unpaid)",
        counts.acked
    );
    println!(
        "  redelivered    {} (of which {} orders paid on a later attempt)",
        counts.retried, paid_after_retry
    );
    println!(
        "  dead-lettered  {} (now in {dlq}: {in_dlq})",
        counts.dead_lettered
    );
    println!("  paid           {paid} (duplicates absorbed by the inbox: {duplicates})");
    let alerts = observer.0.lock().unwrap().clone();
    let expected_transient = (1..=ORDERS)
        .filter(|id| id.is_multiple_of(4) && *id != POISON)
        .count();
    let ok = counts.acked == u64::from(ORDERS - 1) + u64::from(duplicates)
        && paid == i64::from(ORDERS - 1)
        && pending.pending == 0
        && relayed.published == u64::from(ORDERS)
        && (!lossy || (duplicates == 1 && relayed.failed_attempts == 1))
        && counts.dead_lettered == 1
        && in_dlq == 1
        && alerts == [format!("order-{POISON}")]
        && paid_after_retry == expected_transient;
    if !ok {
        return Err("the demo's outcome is not what the contract promises".into());
    }
    println!("every order is accounted for: paid once, or dead-lettered with a human alerted");
    Ok(())
}
