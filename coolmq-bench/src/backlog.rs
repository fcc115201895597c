//! Memory under a backlog: a publisher process sending 1,000,000 persistent messages
//! (window 256) and a consumer process draining them (prefetch 200) keep a flat resident
//! set. Each role runs in a child process of its own, so its RSS is its own; each runs twice,
//! over a 10,000-message baseline and over the full backlog, and the full run's peak is
//! compared with the baseline's.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coolmq::{Config, Destination, Message};
use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};

use crate::curves::BrokerKind;
use crate::rabbit::BoxError;
use crate::rss::{mib, Sample, Sampler};

/// Flat means the full run's peak is at most this times the baseline run's peak.
pub const FLAT: f64 = 1.2;

/// Options of the backlog benchmark.
#[derive(clap::Args)]
pub struct Args {
    /// The broker.
    #[arg(long, value_enum)]
    broker: BrokerKind,
    /// Its URL (default: `COOLMQ_TEST_RABBIT_URL` / `COOLMQ_TEST_ARTEMIS_URL`).
    #[arg(long)]
    url: Option<String>,
    /// The backlog.
    #[arg(long, default_value_t = 1_000_000)]
    messages: usize,
    /// The baseline backlog.
    #[arg(long, default_value_t = 10_000)]
    baseline: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Publisher window.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Consumer prefetch.
    #[arg(long, default_value_t = 200)]
    prefetch: u16,
    /// Where to write the samples as JSON (for `charts`).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// One role in its own process (run by `backlog`; hidden from `--help`).
#[derive(clap::Args)]
pub struct RoleArgs {
    #[arg(long)]
    role: String,
    #[arg(long)]
    url: String,
    #[arg(long)]
    queue: String,
    #[arg(long)]
    messages: usize,
    #[arg(long)]
    size: usize,
    #[arg(long)]
    window: usize,
    #[arg(long)]
    prefetch: u16,
}

/// What a role's process reports on stdout.
#[derive(Serialize, Deserialize, Clone)]
pub struct RoleRun {
    pub role: String,
    pub messages: usize,
    pub secs: f64,
    pub samples: Vec<Sample>,
}

impl RoleRun {
    fn peak(&self) -> u64 {
        self.samples.iter().map(|s| s.rss).max().unwrap_or(0)
    }
}

/// The file `--json` writes.
#[derive(Serialize, Deserialize)]
pub struct Results {
    pub broker: BrokerKind,
    pub size: usize,
    pub runs: Vec<RoleRun>,
}

/// Run in the child: do the role, sample RSS, print the run as JSON.
pub async fn role(args: RoleArgs) -> Result<(), BoxError> {
    let mut config = Config::from_url(args.url.clone())?;
    config.publisher_window = args.window;
    config.prefetch = args.prefetch;
    let broker = coolmq::connect(&config).await?;
    let done = Arc::new(AtomicU64::new(0));
    let sampler = Sampler::start(Duration::from_millis(500), done.clone());
    let start = Instant::now();
    match args.role.as_str() {
        "publish" => {
            let publisher = broker.publisher().await?;
            let dest = Destination::queue(&args.queue);
            let mut confirms = FuturesUnordered::new();
            for i in 0..args.messages {
                while confirms.len() >= args.window {
                    confirms.next().await.expect("non-empty")?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                let m = Message::new_with_id(format!("b-{i}"), vec![b'x'; args.size]);
                confirms.push(publisher.send_pipelined(&dest, m).await?);
            }
            while let Some(c) = confirms.next().await {
                c?;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }
        "consume" => {
            let mut consumer = broker
                .consumer_with_prefetch(&args.queue, args.prefetch)
                .await?;
            for _ in 0..args.messages {
                let d = consumer.recv().await?.ok_or("consumer ended")?;
                d.ack().await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            consumer.close().await?;
        }
        other => return Err(format!("unknown role {other}").into()),
    }
    let secs = start.elapsed().as_secs_f64();
    let samples = sampler.finish();
    broker.close().await?;
    let run = RoleRun {
        role: args.role,
        messages: args.messages,
        secs,
        samples,
    };
    println!("{}", serde_json::to_string(&run)?);
    Ok(())
}

/// Run one role in a child process and read its report.
async fn child(
    args: &Args,
    url: &str,
    role: &str,
    queue: &str,
    n: usize,
) -> Result<RoleRun, BoxError> {
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .args([
            "backlog-role",
            "--role",
            role,
            "--url",
            url,
            "--queue",
            queue,
        ])
        .args([
            "--messages",
            &n.to_string(),
            "--size",
            &args.size.to_string(),
        ])
        .args(["--window", &args.window.to_string()])
        .args(["--prefetch", &args.prefetch.to_string()])
        .stderr(Stdio::inherit());
    // Minutes of waiting: off the runtime's workers, which keep the parent's connection alive.
    let out = tokio::task::spawn_blocking(move || command.output()).await??;
    if !out.status.success() {
        return Err(format!("the {role} process failed ({})", out.status).into());
    }
    let line = String::from_utf8(out.stdout)?;
    Ok(serde_json::from_str(line.trim())?)
}

/// Fill and drain both backlogs in child processes; print each run and the verdicts.
pub async fn run(args: Args) -> Result<(), BoxError> {
    let url = args.url.clone().unwrap_or_else(|| match args.broker {
        BrokerKind::Rabbit => std::env::var("COOLMQ_TEST_RABBIT_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
        BrokerKind::Artemis => std::env::var("COOLMQ_TEST_ARTEMIS_URL")
            .unwrap_or_else(|_| "amqp1://coolmq:coolmq@127.0.0.1:5673".into()),
    });
    let broker = coolmq::connect(&Config::from_url(url.clone())?).await?;
    let id = std::process::id();
    let (small, big) = (
        format!("coolmq.backlog.{id}.baseline"),
        format!("coolmq.backlog.{id}.full"),
    );
    for q in [&small, &big] {
        broker
            .declare_queue(&broker.queue_spec(q.as_str()).dead_letter_queue(None))
            .await?;
    }
    println!(
        "# backlog on {:?} at {}: {} B persistent messages, publisher window {}, consumer prefetch {}; RSS sampled every 0.5 s in each role's own process",
        args.broker,
        coolmq::redact_url(&url),
        args.size,
        args.window,
        args.prefetch
    );
    let mut runs = Vec::new();
    for role in ["publish", "consume"] {
        let base = child(&args, &url, role, &small, args.baseline).await?;
        let full = child(&args, &url, role, &big, args.messages).await?;
        let ratio = full.peak() as f64 / base.peak() as f64;
        for r in [&base, &full] {
            let s = &r.samples;
            println!(
                "{role:<8} backlog={:<8} {:>6.0} msg/s  RSS MiB: first {:.1}, peak {:.1}, last {:.1} ({} samples)",
                r.messages,
                r.messages as f64 / r.secs,
                mib(s.first().map(|s| s.rss).unwrap_or(0)),
                mib(r.peak()),
                mib(s.last().map(|s| s.rss).unwrap_or(0)),
                s.len()
            );
        }
        println!(
            "{role:<8} peak at {} / peak at {} = {ratio:.3} (flat: ≤ {FLAT}): {}",
            args.messages,
            args.baseline,
            if ratio <= FLAT { "flat" } else { "NOT flat" }
        );
        print_over_time(&full);
        runs.push(base);
        runs.push(full);
    }
    for q in [&small, &big] {
        broker.delete_queue(q).await?;
    }
    broker.close().await?;
    if let Some(path) = &args.json {
        let results = Results {
            broker: args.broker,
            size: args.size,
            runs,
        };
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}

/// Ten samples spread over the run: elapsed seconds, messages done, RSS.
fn print_over_time(run: &RoleRun) {
    let s = &run.samples;
    let picks: Vec<&Sample> = (0..=10)
        .map(|k| &s[(s.len().saturating_sub(1)) * k / 10])
        .collect();
    let line: Vec<String> = picks
        .iter()
        .map(|p| format!("{:.0}s/{}k/{:.1}", p.secs, p.done / 1000, mib(p.rss)))
        .collect();
    println!("  over time (s/done/MiB): {}", line.join("  "));
}
