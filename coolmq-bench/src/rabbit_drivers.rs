//! RabbitMQ's two drivers side by side, four columns in one run: raw lapin, raw amqprs,
//! coolmq on lapin, coolmq on amqprs — the same messages (persistent, message id, timestamp
//! and its millisecond header, a `traceparent`) to the same broker, the sides alternated.
//! Each coolmq driver is compared with its own raw client, and the raw clients with each
//! other.

use std::time::{Duration, Instant};

use amqprs::callbacks::{ChannelCallback, DefaultConnectionCallback};
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel,
    ConfirmSelectArguments,
};
use amqprs::connection::{Connection as AmqprsConnection, OpenConnectionArguments};
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, FieldTable, FieldValue, Nack, Return};
use coolmq::{Config, Publisher};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use tokio::sync::watch;

use crate::cpu::CpuUse;
use crate::rabbit::{
    coolmq_awaited, coolmq_publish, fresh_queue, raw_awaited, raw_connection, raw_publish, BoxError,
};
use crate::stats::{median, rate};

/// Options of the two-driver benchmark.
#[derive(clap::Args)]
pub struct Args {
    /// The broker (without a `driver` option: each side sets its own).
    #[arg(
        long,
        env = "COOLMQ_TEST_RABBIT_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    url: String,
    /// Messages per repetition of the pipelined-publish and consume scenarios.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Messages per repetition of the awaited-publish scenario.
    #[arg(long, default_value_t = 1_000)]
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
    /// Repetitions (each runs the four sides, their order rotated).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Scenarios to run (publish-pipelined, publish-awaited, consume-ack); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// The four columns, in the table's order.
const SIDES: [&str; 4] = ["raw lapin", "raw amqprs", "coolmq lapin", "coolmq amqprs"];

/// Raw amqprs publishing with confirms, as an application writes it: a callback counting
/// acks (RabbitMQ acks one queue's publishes in order, `multiple` covering all up to its
/// tag), a window of unconfirmed publishes.
struct RawAmqprs {
    _connection: AmqprsConnection,
    channel: Channel,
    acked: watch::Receiver<u64>,
    published: u64,
}

struct Counter(watch::Sender<u64>);

#[async_trait::async_trait]
impl ChannelCallback for Counter {
    async fn close(&mut self, _: &Channel, c: CloseChannel) -> Result<(), amqprs::error::Error> {
        eprintln!("raw amqprs channel closed: {c}");
        Ok(())
    }
    async fn cancel(&mut self, _: &Channel, _: Cancel) -> Result<(), amqprs::error::Error> {
        Ok(())
    }
    async fn flow(&mut self, _: &Channel, _: bool) -> Result<bool, amqprs::error::Error> {
        Ok(true)
    }
    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        self.0.send_if_modified(|a| {
            let moved = ack.delivery_tag() > *a;
            *a = (*a).max(ack.delivery_tag());
            moved
        });
    }
    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        panic!("raw amqprs publish nacked: {}", nack.delivery_tag());
    }
    async fn publish_return(&mut self, _: &Channel, r: Return, _: BasicProperties, _: Vec<u8>) {
        panic!("raw amqprs publish returned: {r}");
    }
}

async fn amqprs_connection(url: &str) -> Result<AmqprsConnection, BoxError> {
    let u = url::Url::parse(url)?;
    let decode = |s: &str| percent_decode(s);
    let args = OpenConnectionArguments::new(
        u.host_str().unwrap_or("127.0.0.1"),
        u.port().unwrap_or(5672),
        &decode(u.username()),
        &decode(u.password().unwrap_or("guest")),
    )
    .virtual_host(&decode(u.path().trim_start_matches('/')))
    .finish();
    let c = AmqprsConnection::open(&args).await?;
    c.register_callback(DefaultConnectionCallback).await?;
    Ok(c)
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl RawAmqprs {
    async fn open(url: &str) -> Result<Self, BoxError> {
        let connection = amqprs_connection(url).await?;
        let channel = connection.open_channel(None).await?;
        let (tx, acked) = watch::channel(0);
        channel.register_callback(Counter(tx)).await?;
        channel
            .confirm_select(ConfirmSelectArguments::default())
            .await?;
        Ok(RawAmqprs {
            _connection: connection,
            channel,
            acked,
            published: 0,
        })
    }

    fn props(i: usize) -> BasicProperties {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut headers = FieldTable::new();
        headers.insert(
            "timestamp_in_ms".try_into().expect("short"),
            FieldValue::l(now.as_millis() as i64),
        );
        headers.insert(
            "traceparent".try_into().expect("short"),
            FieldValue::S(
                coolmq::TraceContext::new_root()
                    .to_string()
                    .try_into()
                    .expect("long"),
            ),
        );
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(&format!("raw-{i}"))
            .with_timestamp(now.as_secs())
            .with_headers(headers)
            .finish()
    }

    async fn publish_one(&mut self, queue: &str, i: usize, body: &[u8]) -> Result<(), BoxError> {
        let mut args = BasicPublishArguments::new("", queue);
        args.mandatory = true;
        self.channel
            .basic_publish(Self::props(i), body.to_vec(), args)
            .await?;
        self.published += 1;
        Ok(())
    }

    /// Wait until at most `window` publishes are unconfirmed.
    async fn settle_to(&mut self, window: u64) -> Result<(), BoxError> {
        let published = self.published;
        tokio::time::timeout(
            Duration::from_secs(60),
            self.acked.wait_for(|a| published - *a <= window),
        )
        .await
        .map_err(|_| "raw amqprs: no confirms for 60 s")??;
        Ok(())
    }

    async fn pipelined(
        &mut self,
        queue: &str,
        n: usize,
        size: usize,
        window: usize,
    ) -> Result<Duration, BoxError> {
        let body = vec![b'x'; size];
        let start = Instant::now();
        for i in 0..n {
            self.settle_to(window as u64 - 1).await?;
            self.publish_one(queue, i, &body).await?;
        }
        self.settle_to(0).await?;
        Ok(start.elapsed())
    }

    async fn awaited(&mut self, queue: &str, n: usize, size: usize) -> Result<Duration, BoxError> {
        let body = vec![b'x'; size];
        let start = Instant::now();
        for i in 0..n {
            self.publish_one(queue, i, &body).await?;
            self.settle_to(0).await?;
        }
        Ok(start.elapsed())
    }
}

/// Each side's client CPU per message (the process: client library threads included).
fn print_cpu(cpu: &[CpuUse; 4], n: usize) {
    for (side, c) in cpu.iter().enumerate() {
        println!(
            "#   {} client CPU µs per message: {}",
            SIDES[side],
            c.per_message(n)
        );
    }
}

/// One scenario's samples per side, and its table row.
fn row(scenario: &str, n: usize, samples: &[Vec<f64>; 4]) -> String {
    let m: Vec<f64> = samples.iter().map(|s| median(s)).collect();
    // Per-rep ratios give each ratio's spread: the noise it must be read against.
    let ratios = |a: usize, b: usize| {
        let r: Vec<f64> = samples[a]
            .iter()
            .zip(&samples[b])
            .map(|(x, y)| x / y)
            .collect();
        let lo = r.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = r.iter().cloned().fold(0.0, f64::max);
        format!("{:.3} [{lo:.3}..{hi:.3}]", m[a] / m[b])
    };
    format!(
        "| {scenario} | {n} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} |",
        m[0],
        m[1],
        m[2],
        m[3],
        ratios(2, 0),
        ratios(3, 1),
        ratios(1, 0),
    )
}

/// Run the scenarios and print the four-column table (medians in msg/s; ratios of medians
/// with the per-rep range).
pub async fn run(args: Args) -> Result<(), BoxError> {
    let wants = |s: &str| args.only.is_empty() || args.only.iter().any(|o| o == s);
    let lapin_conn = raw_connection(&args.url).await?;
    let lapin_ch = lapin_conn.create_channel().await?;
    lapin_ch
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut amqprs = RawAmqprs::open(&args.url).await?;
    let mut brokers = Vec::new();
    let mut publishers: Vec<Publisher> = Vec::new();
    for driver in ["lapin", "amqprs"] {
        let sep = if args.url.contains('?') { '&' } else { '?' };
        let mut config = Config::from_url(format!("{}{sep}driver={driver}", args.url))?;
        config.publisher_window = args.window;
        config.prefetch = args.prefetch;
        let broker = coolmq::connect(&config).await?;
        publishers.push(broker.publisher().await?);
        brokers.push(broker);
    }
    let queue = format!("coolmq.bench.drivers.{}", std::process::id());
    println!(
        "# RabbitMQ at {}: classic queues, {} B persistent messages, window {}, prefetch {}, {} reps, the four sides' order rotated each rep",
        brokers[0].endpoint(),
        args.size,
        args.window,
        args.prefetch,
        args.reps
    );
    // Warm-up, untimed.
    fresh_queue(&lapin_conn, &queue, "classic").await?;
    raw_publish(&lapin_ch, &queue, 2_000, args.size, args.window).await?;
    amqprs
        .pipelined(&queue, 2_000, args.size, args.window)
        .await?;
    for p in &publishers {
        coolmq_publish(p, &queue, 2_000, args.size, args.window).await?;
    }
    let mut table = vec![
        "| scenario | n | raw lapin | raw amqprs | coolmq lapin | coolmq amqprs | coolmq/raw (lapin) | coolmq/raw (amqprs) | raw amqprs/raw lapin |".to_string(),
        "|---|---|---|---|---|---|---|---|---|".to_string(),
    ];

    if wants("publish-pipelined") {
        let mut samples: [Vec<f64>; 4] = Default::default();
        let mut cpu: [CpuUse; 4] = Default::default();
        for rep in 0..args.reps {
            for k in 0..4 {
                let side = (k + rep) % 4;
                fresh_queue(&lapin_conn, &queue, "classic").await?;
                let (n, size, w) = (args.messages, args.size, args.window);
                let before = CpuUse::now();
                let t = match side {
                    0 => raw_publish(&lapin_ch, &queue, n, size, w).await?,
                    1 => amqprs.pipelined(&queue, n, size, w).await?,
                    s => coolmq_publish(&publishers[s - 2], &queue, n, size, w).await?,
                };
                cpu[side].add_since(&before);
                samples[side].push(rate(n, t));
            }
        }
        table.push(row("publish-pipelined", args.messages, &samples));
        println!("{}", table.last().expect("row"));
        print_cpu(&cpu, args.messages * args.reps);
    }

    if wants("publish-awaited") {
        // Round-trip bound and at the mercy of fsync latency: the sides take turns in blocks
        // of 50, so all four see the same disk.
        const BLOCK: usize = 50;
        let blocks = args.awaited_messages.div_ceil(BLOCK);
        let mut samples: [Vec<f64>; 4] = Default::default();
        for rep in 0..args.reps {
            fresh_queue(&lapin_conn, &queue, "classic").await?;
            let mut totals = [Duration::ZERO; 4];
            for block in 0..blocks {
                for k in 0..4 {
                    let side = (k + block + rep) % 4;
                    totals[side] += match side {
                        0 => raw_awaited(&lapin_ch, &queue, BLOCK, args.size).await?,
                        1 => amqprs.awaited(&queue, BLOCK, args.size).await?,
                        s => coolmq_awaited(&publishers[s - 2], &queue, BLOCK, args.size).await?,
                    };
                }
            }
            for (side, t) in totals.iter().enumerate() {
                samples[side].push(rate(blocks * BLOCK, *t));
            }
        }
        table.push(row("publish-awaited", blocks * BLOCK, &samples));
        println!("{}", table.last().expect("row"));
    }

    if wants("consume-ack") {
        const BLOCK: usize = 2_000;
        let blocks = args.messages.div_ceil(BLOCK);
        let n = blocks * BLOCK;
        let mut samples: [Vec<f64>; 4] = Default::default();
        let mut cpu: [CpuUse; 4] = Default::default();
        for rep in 0..args.reps {
            let queues: Vec<String> = (0..4).map(|s| format!("{queue}.{rep}.{s}")).collect();
            for q in &queues {
                fresh_queue(&lapin_conn, q, "classic").await?;
                raw_publish(&lapin_ch, q, n, args.size, args.window).await?;
            }
            let lapin_consumer_ch = lapin_conn.create_channel().await?;
            lapin_consumer_ch
                .basic_qos(args.prefetch, BasicQosOptions::default())
                .await?;
            let mut lapin_consumer = lapin_consumer_ch
                .basic_consume(
                    queues[0].clone().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    lapin::types::FieldTable::default(),
                )
                .await?;
            let amqprs_ch = amqprs._connection.open_channel(None).await?;
            amqprs_ch
                .basic_qos(BasicQosArguments::new(0, args.prefetch, false))
                .await?;
            let (_, mut amqprs_rx) = amqprs_ch
                .basic_consume_rx(
                    BasicConsumeArguments::new(&queues[1], "")
                        .manual_ack(true)
                        .finish(),
                )
                .await?;
            let mut cool = Vec::new();
            for (i, b) in brokers.iter().enumerate() {
                cool.push(
                    b.consumer_with_prefetch(&queues[2 + i], args.prefetch)
                        .await?,
                );
            }
            let mut totals = [Duration::ZERO; 4];
            for block in 0..blocks {
                for k in 0..4 {
                    let side = (k + block + rep) % 4;
                    let start = Instant::now();
                    let before = CpuUse::now();
                    for _ in 0..BLOCK {
                        match side {
                            0 => {
                                let d = lapin_consumer.next().await.ok_or("consumer ended")??;
                                d.ack(BasicAckOptions::default()).await?;
                            }
                            1 => {
                                let m = amqprs_rx.recv().await.ok_or("consumer ended")?;
                                let tag = m.deliver.ok_or("no deliver")?.delivery_tag();
                                amqprs_ch
                                    .basic_ack(BasicAckArguments::new(tag, false))
                                    .await?;
                            }
                            s => {
                                let d = cool[s - 2].recv().await?.ok_or("consumer ended")?;
                                d.ack().await?;
                            }
                        }
                    }
                    totals[side] += start.elapsed();
                    cpu[side].add_since(&before);
                }
            }
            lapin_consumer_ch.close(200, "".into()).await?;
            amqprs_ch.close().await?;
            for c in cool {
                c.close().await?;
            }
            for (side, t) in totals.iter().enumerate() {
                samples[side].push(rate(n, *t));
            }
            for q in &queues {
                brokers[0].delete_queue(q).await?;
            }
        }
        table.push(row("consume-ack", n, &samples));
        println!("{}", table.last().expect("row"));
        print_cpu(&cpu, n * args.reps);
    }

    brokers[0].delete_queue(&queue).await?;
    for b in brokers {
        b.close().await?;
    }
    println!("\n{}", SIDES.join(" · "));
    for line in table {
        println!("{line}");
    }
    Ok(())
}
