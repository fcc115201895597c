//! Send with confirm, and resend what the broker did not confirm.
//!
//! `send` resolves on the broker's confirm. A failure hands the message back
//! (`SendError::into_message`), so a temporary failure (a lost connection, a timeout, a
//! nack) is resent with the same id: at least once, and a consumer's inbox can drop the
//! duplicate. A permanent failure (unroutable, too large) is not retried.
//!
//! Run: `cargo run --example send_confirm_resend` (memory broker), or against a broker with
//! `COOLMQ_URL=amqp://guest:guest@localhost:5672/%2f` and the `rabbit` feature.

use std::time::Duration;

use coolmq::{Destination, Message, Publisher, Receipt, SendError};

/// Send `message`, resending temporary failures up to `attempts` times with a growing pause.
async fn send_reliably(
    publisher: &Publisher,
    destination: &Destination,
    mut message: Message,
    attempts: u32,
) -> Result<Receipt, SendError> {
    let mut pause = Duration::from_millis(100);
    for attempt in 1.. {
        match publisher.send(destination, message).await {
            Ok(receipt) => return Ok(receipt),
            Err(e) if e.error().is_temporary() && attempt < attempts => {
                eprintln!("attempt {attempt} not confirmed ({}); resending", e.kind());
                message = e.into_message(); // the same message, the same id
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns")
}

#[tokio::main]
async fn main() -> coolmq::Result<()> {
    let broker = coolmq::connect_from_env().await?;
    broker.declare_queue(&broker.queue_spec("orders")).await?;
    let publisher = broker.publisher().await?;

    let receipt = send_reliably(
        &publisher,
        &Destination::queue("orders"),
        Message::new("order 1").with_id("order-1"),
        5,
    )
    .await?;
    println!("confirmed {}", receipt.message_id);

    // Unroutable is permanent: the message comes back instead of vanishing.
    let missing = Destination::queue("no-such-queue");
    match send_reliably(&publisher, &missing, Message::new("lost?"), 5).await {
        Err(e) => println!(
            "refused ({}): {} kept for the caller",
            e.kind(),
            e.message().id
        ),
        Ok(_) => println!("this broker makes queues on send"),
    }
    broker.close().await
}
