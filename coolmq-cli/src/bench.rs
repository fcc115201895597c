//! `coolmq bench`: publish-with-confirm and consume throughput on your broker, with confirm
//! latency percentiles.

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{CliError, Target};
use coolmq::{Destination, Message};

#[derive(Debug, Args)]
pub struct Opts {
    #[command(flatten)]
    target: Target,
    /// Messages to publish and then consume.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    messages: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Sends awaiting their confirm at once.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Consumer prefetch (unacknowledged deliveries at once).
    #[arg(long, default_value_t = 200)]
    prefetch: u16,
    /// The queue to use, which must exist (a unique one is declared by default, and deleted
    /// afterwards).
    #[arg(long, short)]
    queue: Option<String>,
}

/// A progress bar on stderr (hidden when stderr is not a terminal): a bar when the total is
/// known, a counter otherwise.
pub(super) fn progress(total: Option<u64>, what: &str) -> ProgressBar {
    match total {
        Some(n) => bar(n, what),
        None => {
            let pb = ProgressBar::new_spinner();
            pb.set_style(
                ProgressStyle::with_template("{prefix:>8} {spinner} {pos} {per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.set_prefix(what.to_string());
            pb
        }
    }
}

fn bar(n: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(n);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// With `--json`: one object with the rates, counts and confirm latency percentiles.
pub async fn run(o: Opts, json: bool, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    if o.window == 0 || o.prefetch == 0 || o.messages == 0 {
        return Err(CliError::usage(
            "--messages, --window and --prefetch must be at least 1",
        ));
    }
    let mut config = o.target.config()?;
    config.publisher_window = o.window;
    let broker = coolmq::connect(&config).await?;
    let own_queue = o.queue.is_none();
    let queue = o
        .queue
        .clone()
        .unwrap_or_else(|| format!("coolmq.bench.{}", uuid::Uuid::new_v4().simple()));
    if own_queue {
        broker.declare_queue(&broker.queue_spec(&queue)).await?;
    } else {
        crate::require_queue(&broker, &queue).await?;
    }
    let publisher = broker.publisher().await?;
    let dest = Destination::queue(&queue);
    let body = bytes::Bytes::from(vec![b'x'; o.size]);

    let pb = bar(o.messages, "publish");
    let start = Instant::now();
    let results: Vec<Result<Duration, coolmq::SendError>> = futures::stream::iter(0..o.messages)
        .map(|_| {
            let (publisher, dest, body, pb) = (&publisher, &dest, body.clone(), pb.clone());
            async move {
                let t = Instant::now();
                let r = publisher
                    .send(dest, Message::new(body))
                    .await
                    .map(|_| t.elapsed());
                pb.inc(1);
                r
            }
        })
        .buffer_unordered(o.window)
        .collect()
        .await;
    let publish_time = start.elapsed();
    pb.finish_and_clear();
    let mut latencies = Vec::with_capacity(results.len());
    let mut failed = 0u64;
    for r in results {
        match r {
            Ok(l) => latencies.push(l),
            Err(_) => failed += 1,
        }
    }
    latencies.sort();

    let pb = bar(o.messages - failed, "consume");
    let mut consumer = broker.consumer_with_prefetch(&queue, o.prefetch).await?;
    let start = Instant::now();
    let mut consumed = 0u64;
    while consumed < o.messages - failed {
        let Ok(next) = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await else {
            break;
        };
        let Some(d) = next? else { break };
        d.ack().await?;
        consumed += 1;
        pb.inc(1);
    }
    let consume_time = start.elapsed();
    pb.finish_and_clear();
    consumer.close().await?;
    if own_queue {
        broker.delete_queue(&queue).await?;
        let _ = broker
            .delete_queue(&broker.config().dead_letter_queue(&queue))
            .await;
    }
    broker.close().await?;

    let publish_rate = latencies.len() as f64 / publish_time.as_secs_f64();
    let consume_rate = consumed as f64 / consume_time.as_secs_f64();
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    let max = latencies.last().copied().unwrap_or_default();
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "backend": broker.backend_name(),
                "endpoint": broker.endpoint(),
                "messages": o.messages,
                "size": o.size,
                "window": o.window,
                "prefetch": o.prefetch,
                "publish_per_second": publish_rate,
                "confirmed": latencies.len(),
                "failed": failed,
                "confirm_p50_seconds": p50.as_secs_f64(),
                "confirm_p99_seconds": p99.as_secs_f64(),
                "confirm_max_seconds": max.as_secs_f64(),
                "consume_per_second": consume_rate,
                "acked": consumed,
            })
        )
        .map_err(CliError::io)?;
    } else {
        let w = CliError::io;
        writeln!(
            out,
            "broker    {} ({})\nmessages  {} x {} B, window {}, prefetch {}",
            broker.backend_name(),
            broker.endpoint(),
            o.messages,
            o.size,
            o.window,
            o.prefetch
        )
        .map_err(w)?;
        writeln!(
            out,
            "publish   {publish_rate:>10.0} msg/s  ({} confirmed, {failed} failed, {publish_time:.2?})",
            latencies.len(),
        )
        .map_err(w)?;
        writeln!(out, "confirm   p50 {p50:.2?}  p99 {p99:.2?}  max {max:.2?}").map_err(w)?;
        writeln!(
            out,
            "consume   {consume_rate:>10.0} msg/s  ({consumed} acked, {consume_time:.2?})"
        )
        .map_err(w)?;
    }
    if failed > 0 || consumed < o.messages - failed {
        return Err(CliError::msg(format!(
            "{failed} sends failed; {consumed} of {} consumed",
            o.messages - failed
        )));
    }
    Ok(())
}
