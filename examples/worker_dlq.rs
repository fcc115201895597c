//! A worker with an ActiveMQ-style redelivery policy: failures are retried with exponential
//! backoff on the broker, then the message moves to `DLQ.<queue>` with its failure history,
//! and a `DeadLetterObserver` tells a human.
//!
//! Run: `cargo run --example worker_dlq` (memory broker; `COOLMQ_URL` picks another).

use std::sync::Arc;
use std::time::Duration;

use coolmq::{
    async_trait, DeadLetterEvent, DeadLetterObserver, Destination, HandlerError, Message,
    RedeliveryPolicy,
};

/// The human fallback: in production, page the on-call person.
struct Alert;

#[async_trait]
impl DeadLetterObserver for Alert {
    async fn on_dead_letter(&self, event: &DeadLetterEvent) {
        println!(
            "ALERT: {} moved to {} after {} attempts: {}",
            event.message.id, event.dead_letter_queue, event.attempts, event.reason
        );
    }
}

#[tokio::main]
async fn main() -> coolmq::Result<()> {
    let broker = coolmq::connect_from_env().await?;
    broker.declare_queue(&broker.queue_spec("payments")).await?;
    let publisher = broker.publisher().await?;
    for id in ["pay-1", "pay-declined", "pay-2"] {
        publisher
            .send(
                &Destination::queue("payments"),
                Message::new(id).with_id(id),
            )
            .await?;
    }

    let policy = RedeliveryPolicy {
        maximum_redeliveries: 3,
        initial_redelivery_delay: Duration::from_millis(50),
        use_exponential_backoff: true,
        backoff_multiplier: 2.0,
        ..Default::default()
    };
    let worker = broker
        .worker("payments")
        .policy(policy)
        .concurrency(4)
        .observer(Arc::new(Alert))
        .start(|incoming| async move {
            if incoming.message.id == "pay-declined" {
                // Transient as far as the worker knows: retried by the policy.
                return Err(HandlerError::msg(format!(
                    "card declined (attempt {})",
                    incoming.attempt
                )));
            }
            println!("paid {}", incoming.message.id);
            Ok(())
        })
        .await?;
    while worker.counts().dead_lettered < 1 || worker.counts().acked < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("{:?}", worker.counts());
    worker.shutdown(Duration::from_secs(5)).await?;
    broker.close().await
}
