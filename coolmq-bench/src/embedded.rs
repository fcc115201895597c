//! The embedded default (the memory broker): its round trips against a bare tokio channel
//! with a oneshot per ack, and its footprint per stored message.

use std::time::{Duration, Instant};

use coolmq::{Config, Destination, Message};
use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::rabbit::BoxError;
use crate::rss::{mib, rss_bytes};
use crate::stats::{median, rate};

/// Options of the embedded benchmark.
#[derive(clap::Args)]
pub struct Args {
    /// Round trips per repetition.
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Sends in flight (confirms for coolmq, acks for the channel).
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Prefetch of coolmq's consumer; the bare channel's capacity.
    #[arg(long, default_value_t = 200)]
    prefetch: u16,
    /// Repetitions of each side (alternated).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Messages stored to measure the broker's footprint per message.
    #[arg(long, default_value_t = 200_000)]
    stored: usize,
    /// Where to write the results as JSON (for `charts`).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// What one run found, as written to `--json`.
#[derive(Serialize)]
struct Results {
    size: usize,
    window: usize,
    messages: usize,
    channel: Vec<f64>,
    coolmq: Vec<f64>,
    ratio: f64,
    stored: usize,
    bytes_per_message: f64,
    coolmq_allocations_per_round_trip: f64,
    channel_allocations_per_round_trip: f64,
}

/// The bare baseline: a producer task sends `(message, ack)` into a bounded channel, a
/// consumer task takes each and fires its oneshot; the producer keeps `window` acks
/// outstanding. The message is the same coolmq `Message` the other side sends, so both
/// build the same value and the ratio is about moving it.
async fn channel_round_trips(
    n: usize,
    size: usize,
    window: usize,
    capacity: usize,
) -> Result<Duration, BoxError> {
    let (tx, mut rx) = mpsc::channel::<(Message, oneshot::Sender<()>)>(capacity);
    let consumer = tokio::spawn(async move {
        let mut got = 0usize;
        while let Some((message, ack)) = rx.recv().await {
            got += message.body.len().min(1);
            let _ = ack.send(());
        }
        got
    });
    let start = Instant::now();
    let mut acks = FuturesUnordered::new();
    for i in 0..n {
        while acks.len() >= window {
            acks.next().await.expect("non-empty")?;
        }
        let (ack, acked) = oneshot::channel();
        // The same value coolmq's side sends, built the same way.
        let m = Message::new_with_id(format!("m-{i}"), vec![b'x'; size]);
        tx.send((m, ack)).await.map_err(|_| "consumer gone")?;
        acks.push(acked);
    }
    while let Some(a) = acks.next().await {
        a?;
    }
    let elapsed = start.elapsed();
    drop(tx);
    consumer.await?;
    Ok(elapsed)
}

/// coolmq on the memory broker: a publisher keeps `window` confirms outstanding while a
/// consumer task receives and acks; timed until every message is both confirmed and acked.
async fn coolmq_round_trips(
    broker: &coolmq::Broker,
    queue: &str,
    n: usize,
    size: usize,
    window: usize,
    prefetch: u16,
) -> Result<Duration, BoxError> {
    let publisher = broker.publisher().await?;
    let mut consumer = broker.consumer_with_prefetch(queue, prefetch).await?;
    let start = Instant::now();
    let consuming = tokio::spawn(async move {
        for _ in 0..n {
            let d = consumer.recv().await?.ok_or("consumer ended")?;
            d.ack().await?;
        }
        consumer.close().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });
    let dest = Destination::queue(queue);
    let mut confirms = FuturesUnordered::new();
    for i in 0..n {
        while confirms.len() >= window {
            confirms.next().await.expect("non-empty")?;
        }
        let m = Message::new_with_id(format!("m-{i}"), vec![b'x'; size]);
        confirms.push(publisher.send_pipelined(&dest, m).await?);
    }
    while let Some(c) = confirms.next().await {
        c?;
    }
    consuming.await?.map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    drop(publisher);
    Ok(elapsed)
}

/// Bytes of resident memory per stored message: `stored` messages sent to a queue with no
/// consumer, RSS measured before and after (the allocator keeps what it got, so the figure is
/// what the process holds for them).
async fn footprint(
    broker: &coolmq::Broker,
    queue: &str,
    stored: usize,
    size: usize,
) -> Result<f64, BoxError> {
    let publisher = broker.publisher().await?;
    let dest = Destination::queue(queue);
    let before = rss_bytes();
    let mut confirms = FuturesUnordered::new();
    for i in 0..stored {
        while confirms.len() >= 256 {
            confirms.next().await.expect("non-empty")?;
        }
        let m = Message::new_with_id(format!("stored-{i}"), vec![b'x'; size]);
        confirms.push(publisher.send_pipelined(&dest, m).await?);
    }
    while let Some(c) = confirms.next().await {
        c?;
    }
    let after = rss_bytes();
    drop(publisher);
    Ok(after.saturating_sub(before) as f64 / stored as f64)
}

/// Run both sides alternately, then the footprint, and print the lines.
pub async fn run(args: Args) -> Result<(), BoxError> {
    let config = Config::from_url("memory://bench")?;
    let broker = coolmq::connect(&config).await?;
    let queue = "bench.embedded";
    broker.declare_queue(&broker.queue_spec(queue)).await?;
    println!(
        "# memory broker vs tokio mpsc + oneshot per ack: {} B bodies, window {}, prefetch/capacity {}, {} round trips, {} reps each side, alternated",
        args.size, args.window, args.prefetch, args.messages, args.reps
    );
    // Warm up both (allocator, runtime), untimed.
    channel_round_trips(10_000, args.size, args.window, args.prefetch.into()).await?;
    coolmq_round_trips(
        &broker,
        queue,
        10_000,
        args.size,
        args.window,
        args.prefetch,
    )
    .await?;
    let (mut channel, mut cool) = (Vec::new(), Vec::new());
    for rep in 0..args.reps {
        for side in [rep % 2, 1 - rep % 2] {
            if side == 0 {
                let t = channel_round_trips(
                    args.messages,
                    args.size,
                    args.window,
                    args.prefetch.into(),
                )
                .await?;
                channel.push(rate(args.messages, t));
            } else {
                let t = coolmq_round_trips(
                    &broker,
                    queue,
                    args.messages,
                    args.size,
                    args.window,
                    args.prefetch,
                )
                .await?;
                cool.push(rate(args.messages, t));
            }
        }
    }
    let ratio = crate::stats::report("memory", "round-trip", args.messages, &channel, &cool);
    println!(
        "memory round-trip: coolmq {:.0} msg/s vs channel {:.0} msg/s, target ≥ 0.5: {}",
        median(&cool),
        median(&channel),
        if ratio >= 0.5 { "met" } else { "NOT met" }
    );

    // Untimed: heap allocations per round trip on each side.
    let k = 10_000;
    let (r, channel_allocs) = crate::allocs::counting(channel_round_trips(
        k,
        args.size,
        args.window,
        args.prefetch.into(),
    ))
    .await;
    r?;
    let (r, coolmq_allocs) = crate::allocs::counting(coolmq_round_trips(
        &broker,
        queue,
        k,
        args.size,
        args.window,
        args.prefetch,
    ))
    .await;
    r?;
    println!(
        "memory allocations per round trip: coolmq {:.1}, channel {:.1}",
        coolmq_allocs as f64 / k as f64,
        channel_allocs as f64 / k as f64
    );

    let stored_queue = "bench.embedded.stored";
    broker
        .declare_queue(&broker.queue_spec(stored_queue))
        .await?;
    let per_message = footprint(&broker, stored_queue, args.stored, args.size).await?;
    println!(
        "memory footprint: {} stored {} B messages took {:.1} MiB resident: {:.0} B per message ({:.0} B beyond the body)",
        args.stored,
        args.size,
        mib((per_message * args.stored as f64) as u64),
        per_message,
        per_message - args.size as f64
    );
    broker.close().await?;
    if let Some(path) = args.json {
        let results = Results {
            size: args.size,
            window: args.window,
            messages: args.messages,
            channel,
            coolmq: cool,
            ratio,
            stored: args.stored,
            bytes_per_message: per_message,
            coolmq_allocations_per_round_trip: coolmq_allocs as f64 / k as f64,
            channel_allocations_per_round_trip: channel_allocs as f64 / k as f64,
        };
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}
