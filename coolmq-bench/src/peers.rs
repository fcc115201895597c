//! The libraries a user might pick instead, on the same RabbitMQ in one run: raw lapin (the
//! reference), coolmq, omniqueue (its RabbitMQ backend) and RustStream (ruststream-lapin).
//! Each side publishes `messages` 1 KiB messages with up to `window` sends outstanding, then
//! consumes and acks them at prefetch 200; what each guarantees in this run is printed next
//! to its numbers.

use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use coolmq::Config;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use omniqueue::backends::rabbitmq as omni;
use ruststream::Broker as _;
use ruststream::Subscriber as _;
use ruststream_lapin::prelude::*;
use ruststream_lapin::ConnectedLapinBroker;
use serde::Serialize;

use crate::rabbit::{coolmq_publish, fresh_queue, raw_connection, raw_publish, BoxError};
use crate::stats::{median, rate};

/// Options of the peer comparison.
#[derive(clap::Args)]
pub struct Args {
    /// The broker.
    #[arg(
        long,
        env = "COOLMQ_TEST_RABBIT_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    url: String,
    /// Messages per side and repetition.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Sends outstanding at once.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Consumer prefetch.
    #[arg(long, default_value_t = 200)]
    prefetch: u16,
    /// Repetitions (the sides' order rotates each one).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Where to write the results as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

const SIDES: [&str; 4] = ["raw lapin", "coolmq", "omniqueue", "ruststream"];

/// What each side guarantees in this run, printed next to its numbers.
const GUARANTEES: [(&str, &str); 4] = [
    (
        "raw lapin",
        "publish: confirm mode, every confirm awaited and checked (window 256), persistent, mandatory; consume: manual ack each",
    ),
    (
        "coolmq",
        "publish: every send awaits its confirm (window 256), persistent, mandatory (unroutable = error), message id + timestamp + traceparent; consume: manual ack each",
    ),
    (
        "omniqueue",
        "publish: NO confirms (its channel is not in confirm mode: a send returns once written), persistent (delivery mode 2 set here); consume: manual ack each",
    ),
    (
        "ruststream",
        "publish: ConfirmsPublish, every publish awaits its confirm (256 outstanding), persistent, not mandatory (an unroutable message is confirmed and dropped); consume: manual ack each",
    ),
];

/// A RustStream payload: the body as a JSON string (RustStream publishes typed values).
#[derive(Serialize, Outgoing)]
struct Payload {
    data: String,
}

#[derive(Serialize)]
struct Results {
    size: usize,
    messages: usize,
    sides: Vec<SideResult>,
}

#[derive(Serialize)]
struct SideResult {
    side: String,
    guarantees: String,
    publish: Vec<f64>,
    consume: Vec<f64>,
}

/// Run the comparison and print a table.
pub async fn run(args: Args) -> Result<(), BoxError> {
    let conn = raw_connection(&args.url).await?;
    let raw_ch = conn.create_channel().await?;
    raw_ch
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut config = Config::from_url(args.url.clone())?;
    config.publisher_window = args.window;
    config.prefetch = args.prefetch;
    let broker = coolmq::connect(&config).await?;
    let publisher = broker.publisher().await?;
    let rs = LapinBroker::new(args.url.clone())
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let rs_publisher = rs.publisher(LapinPublish::default().confirms());
    let queue = format!("coolmq.peers.{}", std::process::id());
    let omni_config = |q: &str| omni::RabbitMqConfig {
        uri: args.url.clone(),
        connection_properties: omni::ConnectionProperties::default(),
        publish_exchange: String::new(),
        publish_routing_key: q.to_string(),
        publish_options: omni::BasicPublishOptions::default(),
        publish_properties: omni::BasicProperties::default().with_delivery_mode(2),
        consume_queue: q.to_string(),
        consumer_tag: String::new(),
        consume_options: omni::BasicConsumeOptions::default(),
        consume_arguments: omni::FieldTable::default(),
        consume_prefetch_count: Some(args.prefetch),
        requeue_on_nack: true,
    };
    let omni_producer = omni::RabbitMqBackend::builder(omni_config(&queue))
        .build_producer()
        .await?;
    println!(
        "# peers on RabbitMQ at {}: {} B bodies, {} messages per side, {} sends outstanding, prefetch {}, {} reps (order rotated)",
        coolmq::redact_url(&args.url),
        args.size,
        args.messages,
        args.window,
        args.prefetch,
        args.reps
    );
    let body = vec![b'x'; args.size];
    let payload = Payload {
        // JSON quotes a string of `x`s as is: the body on the wire is size + 11 bytes.
        data: String::from_utf8(body.clone())?,
    };
    let mut publish = vec![Vec::new(); 4];
    let mut consume = vec![Vec::new(); 4];
    let n = args.messages;
    for rep in 0..args.reps {
        for k in 0..4 {
            let side = (rep + k) % 4;
            let q = format!("{queue}.{side}");
            fresh_queue(&conn, &q, "classic").await?;
            let start = Instant::now();
            match side {
                0 => {
                    raw_publish(&raw_ch, &q, n, args.size, args.window).await?;
                }
                1 => {
                    coolmq_publish(&publisher, &q, n, args.size, args.window).await?;
                }
                2 => {
                    let p = omni::RabbitMqBackend::builder(omni_config(&q))
                        .build_producer()
                        .await?;
                    let start = Instant::now();
                    let failed = futures::stream::iter(0..n)
                        .map(|_| p.send_raw(&body))
                        .buffer_unordered(args.window)
                        .filter(|r| futures::future::ready(r.is_err()))
                        .count()
                        .await;
                    if failed > 0 {
                        return Err(format!("{failed} omniqueue sends failed").into());
                    }
                    publish[side].push(rate(n, start.elapsed()));
                }
                _ => {
                    let failed = futures::stream::iter(0..n)
                        .map(|_| rs_publisher.message(&payload).to(&q).publish())
                        .buffer_unordered(args.window)
                        .filter(|r| futures::future::ready(r.is_err()))
                        .count()
                        .await;
                    if failed > 0 {
                        return Err(format!("{failed} ruststream publishes failed").into());
                    }
                }
            }
            if side != 2 {
                publish[side].push(rate(n, start.elapsed()));
            }
            let t = consume_side(side, &args, &conn, &broker, &rs, &omni_config(&q), &q, n).await?;
            consume[side].push(rate(n, t));
            let ch = conn.create_channel().await?;
            ch.queue_delete(q.clone().into(), Default::default())
                .await?;
        }
    }
    drop(omni_producer);
    println!("| library | publish msg/s (range) | vs raw lapin | consume-ack msg/s (range) | vs raw lapin | what it guarantees here |");
    println!("|---|---|---|---|---|---|");
    let range = |v: &[f64]| {
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = v.iter().cloned().fold(0.0, f64::max);
        format!("{lo:.0}–{hi:.0}")
    };
    let mut sides = Vec::new();
    for (i, name) in SIDES.iter().enumerate() {
        println!(
            "| {name} | {:.0} ({}) | {:.2} | {:.0} ({}) | {:.2} | {} |",
            median(&publish[i]),
            range(&publish[i]),
            median(&publish[i]) / median(&publish[0]),
            median(&consume[i]),
            range(&consume[i]),
            median(&consume[i]) / median(&consume[0]),
            GUARANTEES[i].1
        );
        sides.push(SideResult {
            side: name.to_string(),
            guarantees: GUARANTEES[i].1.to_string(),
            publish: publish[i].clone(),
            consume: consume[i].clone(),
        });
    }
    broker.close().await?;
    if let Some(path) = &args.json {
        let results = Results {
            size: args.size,
            messages: n,
            sides,
        };
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}

/// Consume and ack `n` messages from `q` with side `side`'s library; the time it took.
#[allow(clippy::too_many_arguments)]
async fn consume_side(
    side: usize,
    args: &Args,
    conn: &lapin::Connection,
    broker: &coolmq::Broker,
    rs: &ConnectedLapinBroker,
    omni_config: &omni::RabbitMqConfig,
    q: &str,
    n: usize,
) -> Result<Duration, BoxError> {
    match side {
        0 => {
            let ch = conn.create_channel().await?;
            ch.basic_qos(args.prefetch, BasicQosOptions::default())
                .await?;
            let mut consumer = ch
                .basic_consume(
                    q.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let start = Instant::now();
            for _ in 0..n {
                let d = consumer.next().await.ok_or("consumer ended")??;
                d.ack(BasicAckOptions::default()).await?;
            }
            let t = start.elapsed();
            ch.close(200, "".into()).await?;
            Ok(t)
        }
        1 => {
            let mut consumer = broker.consumer_with_prefetch(q, args.prefetch).await?;
            let start = Instant::now();
            for _ in 0..n {
                let d = consumer.recv().await?.ok_or("consumer ended")?;
                d.ack().await?;
            }
            let t = start.elapsed();
            consumer.close().await?;
            Ok(t)
        }
        2 => {
            let mut consumer = omni::RabbitMqBackend::builder(omni_config.clone())
                .build_consumer()
                .await?;
            let start = Instant::now();
            for _ in 0..n {
                let d = consumer.receive().await?;
                d.ack().await.map_err(|(e, _)| e)?;
            }
            Ok(start.elapsed())
        }
        _ => {
            let prefetch = NonZeroU16::new(args.prefetch).ok_or("prefetch 0")?;
            let mut sub = rs
                .subscribe(RabbitQueue::new(q.to_string()).prefetch(prefetch))
                .await
                .map_err(|e| e.to_string())?;
            let start = Instant::now();
            {
                let mut stream = std::pin::pin!(sub.stream());
                for _ in 0..n {
                    let m = stream
                        .next()
                        .await
                        .ok_or("subscription ended")?
                        .map_err(|e| e.to_string())?;
                    m.ack().await.map_err(|e| e.to_string())?;
                }
            }
            Ok(start.elapsed())
        }
    }
}
