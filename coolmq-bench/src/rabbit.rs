//! RabbitMQ scenarios: coolmq-rabbit vs raw lapin doing the same work on the same broker.

use std::time::{Duration, Instant};

use coolmq::{Config, Destination, Message, Publisher};
use futures::stream::{FuturesUnordered, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

use crate::stats::{rate, report};

pub(crate) type BoxError = Box<dyn std::error::Error>;

/// Options of the RabbitMQ benchmark.
#[derive(clap::Args)]
pub struct Args {
    /// The broker.
    #[arg(
        long,
        env = "COOLMQ_TEST_RABBIT_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    url: String,
    /// Messages per repetition of the pipelined-publish and consume scenarios.
    #[arg(long, default_value_t = 50_000)]
    messages: usize,
    /// Messages per repetition of the awaited-publish scenario (round-trip bound).
    #[arg(long, default_value_t = 2_000)]
    awaited_messages: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Confirms in flight for pipelined publishing.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Consumer prefetch.
    #[arg(long, default_value_t = 200)]
    prefetch: u16,
    /// Repetitions of each side (alternated).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Scenarios to run (publish-pipelined, publish-awaited, consume-ack); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The queues' type: `classic`, or `quorum` (RabbitMQ's replicated queues, for a
    /// cluster: give `--url` one of its nodes, which then leads the queues).
    #[arg(long, default_value = "classic", value_parser = ["classic", "quorum"])]
    queue_type: String,
}

impl Args {
    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

/// The properties raw lapin sends: the same on the wire as coolmq's (persistent, message id,
/// timestamp with its millisecond header, a W3C `traceparent` as a traced application
/// sends), so both sides do the same work.
pub(crate) fn raw_props(i: usize) -> BasicProperties {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut headers = FieldTable::default();
    headers.insert(
        "timestamp_in_ms".into(),
        AMQPValue::LongLongInt(now.as_millis() as i64),
    );
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(coolmq::TraceContext::new_root().to_string().into()),
    );
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(format!("raw-{i}").into())
        .with_timestamp(now.as_secs())
        .with_headers(headers)
}

pub(crate) async fn raw_connection(url: &str) -> Result<Connection, BoxError> {
    Ok(Connection::connect(url, ConnectionProperties::default()).await?)
}

pub(crate) async fn fresh_queue(
    conn: &Connection,
    name: &str,
    queue_type: &str,
) -> Result<(), BoxError> {
    let ch = conn.create_channel().await?;
    ch.queue_delete(name.into(), QueueDeleteOptions::default())
        .await?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(queue_type.into()),
    );
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        arguments,
    )
    .await?;
    ch.close(200, "".into()).await?;
    Ok(())
}

/// Raw lapin: confirm mode, `window` confirms in flight, each checked.
pub(crate) async fn raw_publish(
    ch: &Channel,
    queue: &str,
    n: usize,
    size: usize,
    window: usize,
) -> Result<Duration, BoxError> {
    let body = vec![b'x'; size];
    let opts = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let start = Instant::now();
    let mut inflight = FuturesUnordered::new();
    for i in 0..n {
        while inflight.len() >= window {
            check(inflight.next().await.expect("non-empty"))?;
        }
        let confirm = ch
            .basic_publish("".into(), queue.into(), opts, &body, raw_props(i))
            .await?;
        inflight.push(confirm);
    }
    while let Some(c) = inflight.next().await {
        check(c)?;
    }
    Ok(start.elapsed())
}

fn check(c: lapin::Result<Confirmation>) -> Result<(), BoxError> {
    match c? {
        Confirmation::Ack(None) => Ok(()),
        other => Err(format!("unexpected confirmation {other:?}").into()),
    }
}

/// Raw lapin: publish and await each confirm before the next.
pub(crate) async fn raw_awaited(
    ch: &Channel,
    queue: &str,
    n: usize,
    size: usize,
) -> Result<Duration, BoxError> {
    let body = vec![b'x'; size];
    let opts = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let start = Instant::now();
    for i in 0..n {
        let confirm = ch
            .basic_publish("".into(), queue.into(), opts, &body, raw_props(i))
            .await?;
        check(confirm.await)?;
    }
    Ok(start.elapsed())
}

pub(crate) fn message(i: usize, size: usize) -> Message {
    Message::new_with_id(format!("coolmq-{i}"), vec![b'x'; size])
}

pub(crate) async fn coolmq_publish(
    publisher: &Publisher,
    queue: &str,
    n: usize,
    size: usize,
    window: usize,
) -> Result<Duration, BoxError> {
    let dest = Destination::queue(queue);
    let start = Instant::now();
    let failures = futures::stream::iter(0..n)
        .map(|i| {
            let (p, d) = (publisher, &dest);
            async move { p.send(d, message(i, size)).await }
        })
        .buffer_unordered(window)
        .filter(|r| futures::future::ready(r.is_err()))
        .count()
        .await;
    let elapsed = start.elapsed();
    if failures > 0 {
        return Err(format!("{failures} coolmq sends failed").into());
    }
    Ok(elapsed)
}

pub(crate) async fn coolmq_awaited(
    publisher: &Publisher,
    queue: &str,
    n: usize,
    size: usize,
) -> Result<Duration, BoxError> {
    let dest = Destination::queue(queue);
    let start = Instant::now();
    for i in 0..n {
        publisher.send(&dest, message(i, size)).await?;
    }
    Ok(start.elapsed())
}

/// Run every scenario and print its ratio line.
pub async fn run(args: Args) -> Result<(), BoxError> {
    let conn = raw_connection(&args.url).await?;
    let mut config = Config::from_url(args.url.clone())?;
    config.publisher_window = args.window;
    config.prefetch = args.prefetch;
    let broker = coolmq::connect(&config).await?;
    let queue = format!("coolmq.bench.{}", std::process::id());
    println!(
        "# RabbitMQ at {}: {} queues, {} B persistent messages, window {}, prefetch {}, {} reps each side, alternated",
        broker.endpoint(),
        args.queue_type,
        args.size,
        args.window,
        args.prefetch,
        args.reps
    );

    // One confirm channel / publisher per side for the whole run, warmed up untimed.
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let publisher = broker.publisher().await?;
    fresh_queue(&conn, &queue, &args.queue_type).await?;
    raw_publish(&ch, &queue, 2_000, args.size, args.window).await?;
    coolmq_publish(&publisher, &queue, 2_000, args.size, args.window).await?;

    if args.wants("publish-pipelined") {
        let (mut raw, mut cool) = (Vec::new(), Vec::new());
        for _ in 0..args.reps {
            fresh_queue(&conn, &queue, &args.queue_type).await?;
            raw.push(rate(
                args.messages,
                raw_publish(&ch, &queue, args.messages, args.size, args.window).await?,
            ));
            fresh_queue(&conn, &queue, &args.queue_type).await?;
            cool.push(rate(
                args.messages,
                coolmq_publish(&publisher, &queue, args.messages, args.size, args.window).await?,
            ));
        }
        report("rabbit", "publish-pipelined", args.messages, &raw, &cool);
    }

    if args.wants("publish-awaited") {
        // Round-trip bound and at the mercy of fsync latency, which drifts: alternate in
        // blocks of 100 so both sides see the same disk, and sum each side's blocks per rep.
        const BLOCK: usize = 100;
        let blocks = args.awaited_messages.div_ceil(BLOCK);
        let (mut raw, mut cool) = (Vec::new(), Vec::new());
        for _ in 0..args.reps {
            fresh_queue(&conn, &queue, &args.queue_type).await?;
            let (mut raw_t, mut cool_t) = (Duration::ZERO, Duration::ZERO);
            for block in 0..blocks {
                if block % 2 == 0 {
                    raw_t += raw_awaited(&ch, &queue, BLOCK, args.size).await?;
                    cool_t += coolmq_awaited(&publisher, &queue, BLOCK, args.size).await?;
                } else {
                    cool_t += coolmq_awaited(&publisher, &queue, BLOCK, args.size).await?;
                    raw_t += raw_awaited(&ch, &queue, BLOCK, args.size).await?;
                }
            }
            raw.push(rate(blocks * BLOCK, raw_t));
            cool.push(rate(blocks * BLOCK, cool_t));
        }
        report("rabbit", "publish-awaited", blocks * BLOCK, &raw, &cool);
    }

    if args.wants("consume-ack") {
        // Two queues filled alike; one consumer per side stays open, and the sides alternate
        // in blocks so both consume under the same broker conditions.
        const BLOCK: usize = 5_000;
        let blocks = args.messages.div_ceil(BLOCK);
        let n = blocks * BLOCK;
        let (mut raw, mut cool) = (Vec::new(), Vec::new());
        for rep in 0..args.reps {
            // Fresh names each repetition: a quorum queue redeclared right after its
            // deletion can be refused while its old Raft group shuts down.
            let (raw_q, cool_q) = (
                format!("{queue}.raw.{rep}"),
                format!("{queue}.coolmq.{rep}"),
            );
            let order = if rep % 2 == 0 {
                [&raw_q, &cool_q]
            } else {
                [&cool_q, &raw_q]
            };
            for q in order {
                fresh_queue(&conn, q, &args.queue_type).await?;
                raw_publish(&ch, q, n, args.size, args.window).await?;
            }
            let raw_ch = conn.create_channel().await?;
            raw_ch
                .basic_qos(args.prefetch, BasicQosOptions::default())
                .await?;
            let mut raw_consumer = raw_ch
                .basic_consume(
                    raw_q.clone().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let mut cool_consumer = broker
                .consumer_with_prefetch(&cool_q, args.prefetch)
                .await?;
            let (mut raw_t, mut cool_t) = (Duration::ZERO, Duration::ZERO);
            for block in 0..blocks {
                // Who goes first alternates, so neither side gains from its position.
                for side in [block % 2, 1 - block % 2] {
                    let start = Instant::now();
                    if side == 0 {
                        for _ in 0..BLOCK {
                            let d = raw_consumer.next().await.ok_or("consumer ended")??;
                            d.ack(BasicAckOptions::default()).await?;
                        }
                        raw_t += start.elapsed();
                    } else {
                        for _ in 0..BLOCK {
                            let d = cool_consumer.recv().await?.ok_or("consumer ended")?;
                            d.ack().await?;
                        }
                        cool_t += start.elapsed();
                    }
                }
            }
            raw_ch.close(200, "".into()).await?;
            cool_consumer.close().await?;
            raw.push(rate(n, raw_t));
            cool.push(rate(n, cool_t));
            for q in [&raw_q, &cool_q] {
                let c = conn.create_channel().await?;
                c.queue_delete(q.clone().into(), QueueDeleteOptions::default())
                    .await?;
            }
        }
        report("rabbit", "consume-ack", n, &raw, &cool);
    }

    let ch = conn.create_channel().await?;
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    broker.close().await?;
    Ok(())
}
