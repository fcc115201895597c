//! The seeds' story on the embedded default broker: an order service publishes orders with
//! confirms; a payment consumer succeeds for most, fails transiently for some (recovered by
//! redelivery) and permanently for one poison order (dead-lettered, the alert hook fires).
//!
//! Run: `cargo run --example demo`. Swap the broker by setting `COOLMQ_URL` (or
//! `COOLMQ_CONFIG=coolmq.toml`); the code stays the same.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COOLMQ_LOG")
                .unwrap_or_else(|_| "warn,coolmq_core::worker=off".into()),
        )
        .init();

    // Configuration, not code, picks the broker. The demo's default: the in-process broker
    // and a fast redelivery policy so the story plays in about a second.
    let mut config = Config::from_toml_str(
        r#"
        url = "memory://demo"
        [redelivery.default]
        maximum_redeliveries = 3
        initial_redelivery_delay = "100ms"
        use_exponential_backoff = true
        backoff_multiplier = 2.0
        "#,
    )?;
    if std::env::var_os("COOLMQ_URL").is_some() || std::env::var_os("COOLMQ_CONFIG").is_some() {
        config = Config::from_env()?;
    }
    let broker = coolmq::connect(&config).await?;
    println!("broker: {} ({})", broker.backend_name(), broker.endpoint());
    broker.declare_queue(&broker.queue_spec(QUEUE)).await?;

    // Payment service: a worker applying the redelivery policy and dead-lettering.
    let attempts: Arc<Mutex<HashSet<(u32, u32)>>> = Arc::default();
    let observer = Arc::new(PageOnCall(Mutex::default()));
    let seen = attempts.clone();
    let worker = broker
        .worker(QUEUE)
        .concurrency(4)
        .observer(observer.clone())
        .start(move |incoming| {
            let seen = seen.clone();
            async move {
                let order: Order = incoming
                    .message
                    .body_json()
                    .map_err(HandlerError::permanent)?;
                seen.lock().unwrap().insert((order.id, incoming.attempt));
                if order.id == POISON {
                    return Err(HandlerError::msg(format!(
                        "card of {} declined by the bank (order {})",
                        order.customer, order.id
                    )));
                }
                if order.id.is_multiple_of(4) && incoming.attempt == 1 {
                    return Err(HandlerError::msg("payment gateway timed out"));
                }
                Ok(())
            }
        })
        .await?;

    // Order service: publish with confirms, many in flight.
    let publisher = broker.publisher().await?;
    let destination = Destination::queue(QUEUE);
    let sends = (1..=ORDERS).map(|id| {
        let order = Order {
            id,
            customer: format!("customer-{id}"),
            cents: 1000 + i64::from(id),
        };
        let message = Message::json(&order).map(|m| m.with_id(format!("order-{id}")));
        let (publisher, destination) = (publisher.clone(), destination.clone());
        async move {
            publisher
                .send(&destination, message?)
                .await
                .map_err(coolmq::Error::from)
        }
    });
    let confirmed = futures::future::try_join_all(sends).await?;
    println!(
        "order service: {} orders published and confirmed",
        confirmed.len()
    );

    // Wait until every order is paid or dead-lettered.
    let started = Instant::now();
    while worker.counts().acked + worker.counts().dead_lettered < u64::from(ORDERS) {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("orders still unsettled: {:?}", worker.counts()).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts = worker.counts();
    worker.shutdown(Duration::from_secs(5)).await?;
    let dlq = broker.config().dead_letter_queue(QUEUE);
    let in_dlq = broker.queue_depth(&dlq).await?;
    let paid_after_retry = attempts
        .lock()
        .unwrap()
        .iter()
        .filter(|(id, attempt)| *attempt > 1 && *id != POISON)
        .count();

    println!("payment service:");
    println!("  processed      {}", counts.acked);
    println!(
        "  redelivered    {} (of which {} orders paid on a later attempt)",
        counts.retried, paid_after_retry
    );
    println!(
        "  dead-lettered  {} (now in {dlq}: {in_dlq})",
        counts.dead_lettered
    );
    let alerts = observer.0.lock().unwrap().clone();
    let expected_transient = (1..=ORDERS)
        .filter(|id| id.is_multiple_of(4) && *id != POISON)
        .count();
    let ok = counts.acked == u64::from(ORDERS - 1)
        && counts.dead_lettered == 1
        && in_dlq == 1
        && alerts == [format!("order-{POISON}")]
        && paid_after_retry == expected_transient;
    if !ok {
        return Err("the demo's outcome is not what the contract promises".into());
    }
    println!("every order is accounted for: paid, or dead-lettered with a human alerted");
    Ok(())
}
