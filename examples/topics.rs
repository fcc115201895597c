//! Publish/subscribe: each subscriber has its own queue bound to topic patterns (`*` one
//! word, `#` any number), and every matching queue gets a copy.
//!
//! Run: `cargo run --example topics` (memory broker; `COOLMQ_URL` picks another; ActiveMQ
//! Classic cannot declare topic bindings from a client).

use std::time::Duration;

use coolmq::{Destination, Message};

#[tokio::main]
async fn main() -> coolmq::Result<()> {
    let broker = coolmq::connect_from_env().await?;
    let billing = broker.queue_spec("billing").bind("orders.*.created");
    let audit = broker.queue_spec("audit").bind("#");
    broker.declare_queue(&billing).await?;
    broker.declare_queue(&audit).await?;

    let publisher = broker.publisher().await?;
    for topic in ["orders.eu.created", "orders.us.created", "payments.done"] {
        publisher
            .send(&Destination::topic(topic), Message::new(topic))
            .await?;
    }

    for queue in ["billing", "audit"] {
        let mut consumer = broker.consumer(queue).await?;
        let mut got = Vec::new();
        while let Ok(next) = tokio::time::timeout(Duration::from_millis(300), consumer.recv()).await
        {
            let Some(delivery) = next? else { break };
            got.push(String::from_utf8_lossy(&delivery.message().body).into_owned());
            delivery.ack().await?;
        }
        consumer.close().await?;
        println!("{queue}: {got:?}");
    }
    broker.close().await
}
