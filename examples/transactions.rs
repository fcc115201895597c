//! Broker transactions: sends grouped so that all or none are delivered. A transaction that
//! is dropped without `commit` is rolled back.
//!
//! Run: `cargo run --example transactions` (memory broker; `COOLMQ_URL` picks another).

use coolmq::{Destination, Message};

#[tokio::main]
async fn main() -> coolmq::Result<()> {
    let broker = coolmq::connect_from_env().await?;
    if !broker.capabilities().transactions {
        println!("{} has no transactions", broker.backend_name());
        return Ok(());
    }
    for q in ["ledger", "notifications"] {
        broker.declare_queue(&broker.queue_spec(q)).await?;
    }
    let publisher = broker.publisher().await?;

    // Both messages or neither.
    let mut tx = publisher.begin().await?;
    tx.send(&Destination::queue("ledger"), Message::new("debit 10"))
        .await?;
    tx.send(
        &Destination::queue("notifications"),
        Message::new("you paid 10"),
    )
    .await?;
    tx.commit().await?;

    // Changed our mind: nothing of this reaches a queue.
    let mut tx = publisher.begin().await?;
    tx.send(&Destination::queue("ledger"), Message::new("debit 99"))
        .await?;
    tx.rollback().await?;

    println!(
        "ledger holds {}, notifications {}",
        broker.queue_depth("ledger").await?,
        broker.queue_depth("notifications").await?
    );
    broker.close().await
}
