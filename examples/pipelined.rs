//! Many sends in flight from one task, in order: `send_pipelined` returns once the message is
//! on its way and gives a `PendingConfirm` that resolves like `send`. At most
//! `publisher_window` sends wait for their confirm at once.
//!
//! Run: `cargo run --example pipelined` (memory broker; `COOLMQ_URL` picks another).

use std::collections::VecDeque;

use coolmq::{Destination, Message};

#[tokio::main]
async fn main() -> coolmq::Result<()> {
    let broker = coolmq::connect_from_env().await?;
    broker.declare_queue(&broker.queue_spec("events")).await?;
    let publisher = broker.publisher().await?;
    let destination = Destination::queue("events");

    let mut pending = VecDeque::new();
    let (mut confirmed, mut failed) = (0u32, Vec::new());
    for n in 0..10_000u32 {
        let message = Message::new(format!("event {n}")).with_id(format!("event-{n}"));
        pending.push_back(publisher.send_pipelined(&destination, message).await?);
        // Settle the oldest confirms as we go: memory stays bounded by the window.
        while pending.len() > 512 {
            match pending.pop_front().expect("not empty").await {
                Ok(_) => confirmed += 1,
                Err(e) => failed.push(e.into_message()), // kept for a resend
            }
        }
    }
    for confirm in pending {
        match confirm.await {
            Ok(_) => confirmed += 1,
            Err(e) => failed.push(e.into_message()),
        }
    }
    println!("{confirmed} confirmed, {} to resend", failed.len());
    broker.close().await
}
