//! What the reliability tests measure, shared: resend what failed until the broker confirms it,
//! then count which of the expected ids are in the queue.

#![allow(dead_code)] // each test binary uses some of these helpers

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coolmq::{Broker, Destination, Message, Publisher};
use futures::stream::{self, StreamExt};

/// What a run of paced sends did while a fault was injected.
pub struct SendRun {
    /// Sends that did not resolve within 30 s.
    pub hangs: usize,
    /// Messages whose send failed, handed back for resending.
    pub failed: Vec<Message>,
    /// Failures by error kind.
    pub kinds: HashMap<String, usize>,
    /// When each failure resolved, to tell which fault it followed.
    pub error_times: Vec<Instant>,
    /// When the last send resolved.
    pub finished: Instant,
}

/// Send `n` messages of `size` bytes with ids `<prefix>-<i>`, one every `interval` (256 in
/// flight), counting completed sends in `done` so a fault can be timed against progress.
pub async fn paced_sends(
    publisher: &Publisher,
    destination: &Destination,
    n: usize,
    interval: Duration,
    size: usize,
    prefix: &str,
    done: Arc<AtomicUsize>,
) -> SendRun {
    let start = Instant::now();
    let results: Vec<_> = stream::iter(0..n)
        .map(|i| {
            let done = done.clone();
            let m = Message::new_with_id(format!("{prefix}-{i}"), vec![b'x'; size]);
            async move {
                tokio::time::sleep_until((start + interval * i as u32).into()).await;
                let r =
                    tokio::time::timeout(Duration::from_secs(30), publisher.send(destination, m))
                        .await;
                done.fetch_add(1, Ordering::SeqCst);
                (r, Instant::now())
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let mut run = SendRun {
        hangs: 0,
        failed: Vec::new(),
        kinds: HashMap::new(),
        error_times: Vec::new(),
        finished: Instant::now(),
    };
    for (r, at) in results {
        match r {
            Err(_) => run.hangs += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                run.error_times.push(at);
                *run.kinds.entry(e.kind().to_string()).or_default() += 1;
                run.failed.push(e.into_message());
            }
        }
    }
    run
}

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

/// Run a `Worker` that accepts everything on `queue` until `n` messages are acked (at most
/// 30 s, then a pause for anything more): what it counted and the messages it was handed.
pub async fn handle_all(
    broker: &Broker,
    queue: &str,
    n: u64,
) -> Result<(coolmq::WorkerCounts, Vec<Message>), coolmq::Error> {
    let seen = Arc::new(std::sync::Mutex::new(Vec::<Message>::new()));
    let s2 = seen.clone();
    let worker = broker
        .worker(queue)
        .start(move |incoming| {
            s2.lock().expect("lock").push(incoming.message);
            async { Ok::<(), coolmq::HandlerError>(()) }
        })
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while worker.counts().acked < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = worker.counts();
    worker.shutdown(Duration::from_secs(5)).await?;
    let seen = seen.lock().expect("lock").clone();
    Ok((counts, seen))
}
