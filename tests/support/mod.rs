//! What the reliability tests measure, shared: resend what failed until the broker confirms it,
//! then count which of the expected ids are in the queue.

use std::collections::HashSet;
use std::time::Duration;

use coolmq::{Broker, Destination, Message, Publisher};

/// Resend each message (same id) until the broker confirms it, up to `tries` times per message,
/// `backoff` apart. Returns how many were resent.
pub async fn resend_until_confirmed(
    publisher: &Publisher,
    destination: &Destination,
    messages: Vec<Message>,
    tries: usize,
    backoff: Duration,
) -> Result<usize, String> {
    let mut resent = 0;
    for mut m in messages {
        let mut attempt = 0;
        loop {
            match publisher.send(destination, m).await {
                Ok(_) => break,
                Err(e) if attempt < tries => {
                    attempt += 1;
                    m = e.into_message();
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => return Err(format!("resend kept failing: {e}")),
            }
        }
        resent += 1;
    }
    Ok(resent)
}

/// What a drained queue held, against the ids that must be there.
pub struct Tally {
    /// Messages received.
    pub received: usize,
    /// Expected ids not received.
    pub lost: usize,
    /// Copies beyond the first of any id.
    pub duplicates: usize,
}

/// Drain `queue` (acking everything until it stays quiet for `quiet`) and count the ids
/// `expected` against what arrived.
pub async fn drain_and_tally(
    broker: &Broker,
    queue: &str,
    expected: impl Iterator<Item = String>,
    quiet: Duration,
) -> Result<Tally, String> {
    let mut consumer = broker
        .consumer_with_prefetch(queue, 500)
        .await
        .map_err(|e| e.to_string())?;
    let mut seen = HashSet::new();
    let mut received = 0usize;
    while let Ok(Ok(Some(d))) = tokio::time::timeout(quiet, consumer.recv()).await {
        received += 1;
        seen.insert(d.message().id.clone());
        d.ack().await.map_err(|e| e.to_string())?;
    }
    consumer.close().await.map_err(|e| e.to_string())?;
    let lost = expected.filter(|id| !seen.contains(id)).count();
    Ok(Tally {
        received,
        lost,
        duplicates: received - seen.len(),
    })
}
