//! Typed messages: a codec (serde JSON by default) turns your types into bodies and back.
//! A typed worker's handler gets the decoded value; a body that does not decode is a
//! permanent failure, dead-lettered at once with the decoding error as its reason.
//!
//! Run: `cargo run --example typed` (memory broker; `COOLMQ_URL` picks another).

use std::time::Duration;

use coolmq::{Destination, HandlerError, Message};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order: u64,
    customer: String,
    cents: i64,
}

#[tokio::main]
async fn main() -> coolmq::Result<()> {
    let broker = coolmq::connect_from_env().await?;
    broker
        .declare_queue(&broker.queue_spec("orders.placed"))
        .await?;
    let queue = Destination::queue("orders.placed");

    let orders = broker.publisher().await?.typed::<OrderPlaced>();
    for (order, customer) in [(1, "ada"), (2, "grace")] {
        let placed = OrderPlaced {
            order,
            customer: customer.into(),
            cents: 1250,
        };
        orders.send(&queue, &placed)?.await?;
    }
    // Someone else's producer, with a body that is no OrderPlaced.
    orders
        .publisher()
        .send(&queue, Message::new("{\"order\": \"three\"}"))
        .await?;

    let worker = broker
        .worker("orders.placed")
        .start_json(|placed: OrderPlaced, incoming| async move {
            println!(
                "order {} for {} ({} cents), attempt {}",
                placed.order, placed.customer, placed.cents, incoming.attempt
            );
            Ok::<(), HandlerError>(())
        })
        .await?;
    while worker.counts().acked < 2 || worker.counts().dead_lettered < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("{:?}", worker.counts());
    worker.shutdown(Duration::from_secs(5)).await?;
    broker.close().await
}
