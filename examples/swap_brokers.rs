//! Swapping brokers by configuration only: this program never names a broker. It reads
//! `COOLMQ_URL` (or a `COOLMQ_CONFIG` TOML file, or `COOLMQ_*` variables) and runs the same
//! code on the embedded memory broker, RabbitMQ or ActiveMQ:
//!
//! ```sh
//! cargo run --example swap_brokers                                   # memory://
//! COOLMQ_URL=amqp://guest:guest@localhost:5672/%2f cargo run --example swap_brokers --features rabbit
//! COOLMQ_URL=amqp1://artemis:artemis@localhost:5673 cargo run --example swap_brokers --features activemq
//! ```
//! A URL whose backend is not compiled in fails with `FeatureDisabled`, naming the feature.

use std::time::Duration;

use coolmq::{Destination, Message};

#[tokio::main]
async fn main() -> coolmq::Result<()> {
    let broker = coolmq::connect_from_env().await?;
    let caps = broker.capabilities();
    println!(
        "connected to {} at {} (delays: {}, transactions: {}, topics: {})",
        broker.backend_name(),
        broker.endpoint(),
        caps.delayed_delivery,
        caps.transactions,
        caps.topics
    );
    broker
        .declare_queue(&broker.queue_spec("greetings"))
        .await?;
    broker
        .publisher()
        .await?
        .send(&Destination::queue("greetings"), Message::new("hello"))
        .await?;
    let mut consumer = broker.consumer("greetings").await?;
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
        .await
        .map_err(|_| coolmq::Error::new(coolmq::ErrorKind::Timeout, "no greeting"))??
        .expect("the consumer is open");
    println!(
        "received {:?}",
        String::from_utf8_lossy(&delivery.message().body)
    );
    delivery.ack().await?;
    consumer.close().await?;
    broker.close().await
}
