//! ActiveMQ scenarios: coolmq-activemq vs raw fe2o3-amqp doing the same work on the same broker.

use std::time::{Duration, Instant};

use coolmq::{Config, Destination, Message, Publisher};
use fe2o3_amqp::link::delivery::Sendable;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::messaging::{
    message::Body, ApplicationProperties, Data, Header, MessageAnnotations, Outcome, Properties,
    Target,
};
use fe2o3_amqp::types::primitives::{Binary, Symbol, Timestamp, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use futures::stream::{FuturesUnordered, StreamExt};

use crate::cpu::CpuUse;
use crate::stats::{rate, report_paired};

type BoxError = Box<dyn std::error::Error>;

/// Messages per block; the sides alternate block by block.
const BLOCK: usize = 2_000;
type AmqpMessage = fe2o3_amqp::types::messaging::Message<Body<Value>>;

/// Options of the ActiveMQ benchmark.
#[derive(clap::Args)]
pub struct Args {
    /// The broker (a coolmq `amqp1://` URL).
    #[arg(
        long,
        env = "COOLMQ_TEST_ARTEMIS_URL",
        default_value = "amqp1://coolmq:coolmq@127.0.0.1:5673"
    )]
    url: String,
    /// Messages per repetition.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Transfers in flight awaiting their outcome.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Receiver credit / prefetch.
    #[arg(long, default_value_t = 200)]
    prefetch: u16,
    /// Repetitions of each side.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Send with one side only and skip the receive scenario: for profiling a side alone
    /// (`perf record`); prints no ratio.
    #[arg(long, value_enum)]
    only: Option<Side>,
    /// Run the send scenario only.
    #[arg(long)]
    send_only: bool,
    /// Print each block's time per side (raw, raw-keeping, pipelined, concurrent), to see
    /// whether a ratio comes from typical blocks or from a few slow ones.
    #[arg(long)]
    print_blocks: bool,
}

/// One side of the comparison.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Side {
    /// Raw fe2o3-amqp: one task transfers, a `FuturesUnordered` awaits the outcomes; each
    /// message is dropped once transferred (so it cannot be resent if it is not accepted).
    Raw,
    /// Raw fe2o3-amqp keeping each message until its outcome, as resending a released or
    /// rejected message needs (and as coolmq does, to hand it back).
    RawKeeping,
    /// coolmq the same way: `send_pipelined` in one task, its confirms in a `FuturesUnordered`.
    Coolmq,
    /// coolmq with concurrent `send`s (`buffer_unordered`): no order promised.
    Concurrent,
}

impl Side {
    const ALL: [Side; 4] = [Side::Raw, Side::RawKeeping, Side::Coolmq, Side::Concurrent];
}

/// What raw fe2o3 sends: the same sections on the wire as coolmq's JMS-compatible message
/// (durable header, message id, creation time, the JMS BytesMessage annotation, an
/// application-properties section), so both sides make the broker do the same work.
fn raw_message(i: usize, size: usize) -> AmqpMessage {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    AmqpMessage {
        header: Some(Header {
            durable: true,
            ..Default::default()
        }),
        delivery_annotations: None,
        message_annotations: Some(
            MessageAnnotations::builder()
                .insert("x-opt-jms-msg-type", Value::Byte(3))
                .build(),
        ),
        properties: Some(Properties {
            message_id: Some(format!("raw-{i}").into()),
            creation_time: Some(Timestamp::from_milliseconds(now)),
            ..Default::default()
        }),
        application_properties: Some(
            ApplicationProperties::builder()
                .insert("traceparent", coolmq::TraceContext::new_root().to_string())
                .build(),
        ),
        body: Body::from(Data(Binary::from(vec![b'x'; size]))),
        footer: None,
    }
}

async fn raw_send(
    sender: &mut Sender,
    n: usize,
    size: usize,
    window: usize,
) -> Result<Duration, BoxError> {
    let start = Instant::now();
    let mut inflight = FuturesUnordered::new();
    for i in 0..n {
        while inflight.len() >= window {
            check(inflight.next().await.expect("non-empty"))?;
        }
        inflight.push(sender.send_batchable(raw_message(i, size)).await?);
    }
    while let Some(o) = inflight.next().await {
        check(o)?;
    }
    Ok(start.elapsed())
}

fn check(o: Result<Outcome, fe2o3_amqp::link::SendError>) -> Result<(), BoxError> {
    match o? {
        Outcome::Accepted(_) => Ok(()),
        other => Err(format!("unexpected outcome {other:?}").into()),
    }
}

/// [`raw_send`], keeping each message until its outcome (`send_batchable_ref`).
async fn raw_send_keeping(
    sender: &mut Sender,
    n: usize,
    size: usize,
    window: usize,
) -> Result<Duration, BoxError> {
    let start = Instant::now();
    let mut inflight = FuturesUnordered::new();
    for i in 0..n {
        while inflight.len() >= window {
            check(inflight.next().await.expect("non-empty"))?;
        }
        let kept = Sendable::from(raw_message(i, size));
        let outcome = sender.send_batchable_ref(&kept).await?;
        inflight.push(async move {
            let o = outcome.await;
            // Here a caller would resend `kept` if the broker did not accept it.
            drop(kept);
            o
        });
    }
    while let Some(o) = inflight.next().await {
        check(o)?;
    }
    Ok(start.elapsed())
}

/// coolmq's pipelined send, shaped like [`raw_send`].
async fn coolmq_send(
    p: &Publisher,
    queue: &str,
    n: usize,
    size: usize,
    window: usize,
) -> Result<Duration, BoxError> {
    let dest = Destination::queue(queue);
    let start = Instant::now();
    let mut inflight = FuturesUnordered::new();
    for i in 0..n {
        while inflight.len() >= window {
            inflight.next().await.expect("non-empty")?;
        }
        let message = Message::new_with_id(format!("c-{i}"), vec![b'x'; size]);
        inflight.push(p.send_pipelined(&dest, message).await?);
    }
    while let Some(o) = inflight.next().await {
        o?;
    }
    Ok(start.elapsed())
}

/// coolmq's concurrent sends: each `send` awaits its own confirm, `window` at a time.
async fn coolmq_send_concurrent(
    p: &Publisher,
    queue: &str,
    n: usize,
    size: usize,
    window: usize,
) -> Result<Duration, BoxError> {
    let dest = Destination::queue(queue);
    let start = Instant::now();
    let failures = futures::stream::iter(0..n)
        .map(|i| {
            let dest = &dest;
            async move {
                p.send(
                    dest,
                    Message::new_with_id(format!("s-{i}"), vec![b'x'; size]),
                )
                .await
            }
        })
        .buffer_unordered(window)
        .filter(|r| futures::future::ready(r.is_err()))
        .count()
        .await;
    if failures > 0 {
        return Err(format!("{failures} coolmq sends failed").into());
    }
    Ok(start.elapsed())
}

/// Run both scenarios and print their ratio lines.
pub async fn run(args: Args) -> Result<(), BoxError> {
    let mut config = Config::from_url(args.url.clone())?;
    config.publisher_window = args.window;
    let broker = coolmq::connect(&config).await?;
    let options = coolmq::activemq::ActiveMqOptions::from_url(&args.url)?;
    let (user, password) = options.credentials.clone().unwrap_or_default();
    let mut connection = Connection::builder()
        .container_id("coolmq-bench-raw")
        .sasl_profile(SaslProfile::Plain {
            username: user,
            password,
        })
        .open(options.amqp_url.as_str())
        .await?;
    let mut session = Session::begin(&mut connection).await?;
    println!(
        "# ActiveMQ at {}: {} B durable messages, window {}, credit {}, {} reps each side, alternated in blocks",
        broker.endpoint(),
        args.size,
        args.window,
        args.prefetch,
        args.reps
    );
    let blocks = args.messages.div_ceil(BLOCK);
    let n = blocks * BLOCK;
    let id = std::process::id();
    let (raw_q, keep_q, cool_q, concurrent_q) = (
        format!("coolmq.bench.{id}.raw"),
        format!("coolmq.bench.{id}.raw-keeping"),
        format!("coolmq.bench.{id}.coolmq"),
        format!("coolmq.bench.{id}.concurrent"),
    );
    let queues = [&raw_q, &keep_q, &cool_q, &concurrent_q];
    for q in queues {
        broker
            .declare_queue(&broker.queue_spec(q.as_str()).dead_letter_queue(None))
            .await?;
    }
    // The same target as coolmq's (an anycast queue by capability).
    let target = |address: &str| {
        Target::builder()
            .address(address.to_string())
            .capabilities(vec![Symbol::from("queue")])
            .build()
    };
    let mut sender = Sender::builder()
        .name("bench-raw-sender")
        .target(target(&raw_q))
        .attach(&mut session)
        .await?;
    let mut keep_sender = Sender::builder()
        .name("bench-raw-keeping-sender")
        .target(target(&keep_q))
        .attach(&mut session)
        .await?;
    let publisher = broker.publisher().await?;
    // Warm-up, untimed.
    raw_send(&mut sender, 500, args.size, args.window).await?;
    raw_send_keeping(&mut keep_sender, 500, args.size, args.window).await?;
    coolmq_send(&publisher, &cool_q, 500, args.size, args.window).await?;
    coolmq_send_concurrent(&publisher, &concurrent_q, 500, args.size, args.window).await?;

    // Per side: throughput per repetition, CPU, and per block the ratio to raw's block.
    const SIDES: usize = Side::ALL.len();
    let mut rates: [Vec<f64>; SIDES] = Default::default();
    let mut pairs: [Vec<f64>; SIDES] = Default::default();
    let mut keeping_pairs = Vec::new();
    let mut cpu = [CpuUse::default(); SIDES];
    let runs = |side: Side| args.only.is_none_or(|only| only == side);
    for _ in 0..args.reps {
        let mut total = [Duration::ZERO; SIDES];
        for block in 0..blocks {
            let mut took = [Duration::ZERO; SIDES];
            // Each block runs every side once, in an order that rotates block by block.
            for k in 0..SIDES {
                let s = (block + k) % SIDES;
                let side = Side::ALL[s];
                if !runs(side) {
                    continue;
                }
                let (size, window) = (args.size, args.window);
                let before = CpuUse::now();
                took[s] = match side {
                    Side::Raw => raw_send(&mut sender, BLOCK, size, window).await?,
                    Side::RawKeeping => {
                        raw_send_keeping(&mut keep_sender, BLOCK, size, window).await?
                    }
                    Side::Coolmq => coolmq_send(&publisher, &cool_q, BLOCK, size, window).await?,
                    Side::Concurrent => {
                        coolmq_send_concurrent(&publisher, &concurrent_q, BLOCK, size, window)
                            .await?
                    }
                };
                cpu[s].add_since(&before);
            }
            for s in 0..SIDES {
                total[s] += took[s];
            }
            if args.print_blocks {
                let ms = took.map(|t| format!("{:.1}", t.as_secs_f64() * 1e3));
                println!("activemq send block ms: {}", ms.join(" "));
            }
            if args.only.is_none() {
                let secs = |s: Side| took[s as usize].as_secs_f64();
                pairs[2].push(secs(Side::Raw) / secs(Side::Coolmq));
                pairs[3].push(secs(Side::Raw) / secs(Side::Concurrent));
                keeping_pairs.push(secs(Side::RawKeeping) / secs(Side::Coolmq));
            }
        }
        for s in 0..SIDES {
            rates[s].push(rate(n, total[s]));
        }
    }
    if args.only.is_none() {
        let [raw, keeping, pipelined, concurrent] = &rates;
        report_paired("activemq", "send-pipelined", n, raw, pipelined, &pairs[2]);
        report_paired("activemq", "send-concurrent", n, raw, concurrent, &pairs[3]);
        report_paired(
            "activemq",
            "send-pipelined vs raw keeping its messages",
            n,
            keeping,
            pipelined,
            &keeping_pairs,
        );
    }
    let sent = n * args.reps;
    println!(
        "activemq send client CPU µs per message: raw={} raw-keeping={} pipelined={} concurrent={}",
        cpu[0].per_message(sent),
        cpu[1].per_message(sent),
        cpu[2].per_message(sent),
        cpu[3].per_message(sent),
    );
    if args.only.is_none() && !args.send_only {
        // Both queues now hold the same number of messages: consume them all.
        receive_accept(
            &args,
            &mut session,
            &broker,
            &raw_q,
            &cool_q,
            args.reps * n + 500,
        )
        .await?;
    }
    sender.close().await?;
    keep_sender.close().await?;
    session.end().await?;
    connection.close().await?;
    for q in queues {
        let _ = broker.delete_queue(q).await;
    }
    broker.close().await?;
    Ok(())
}

/// Receive and accept every message of both queues, alternating blocks.
async fn receive_accept(
    args: &Args,
    session: &mut fe2o3_amqp::session::SessionHandle<()>,
    broker: &coolmq::Broker,
    raw_q: &str,
    cool_q: &str,
    total: usize,
) -> Result<(), BoxError> {
    let mut receiver = Receiver::builder()
        .name("bench-raw-receiver")
        .source(raw_q.to_string())
        .credit_mode(CreditMode::Auto(u32::from(args.prefetch)))
        .attach(session)
        .await?;
    let mut consumer = broker.consumer_with_prefetch(cool_q, args.prefetch).await?;
    let per_rep = total / args.reps;
    let (mut raw, mut cool) = (Vec::new(), Vec::new());
    let mut pairs = Vec::new();
    for rep in 0..args.reps {
        let (mut raw_t, mut cool_t) = (Duration::ZERO, Duration::ZERO);
        let mut left = per_rep;
        let mut block = rep;
        while left > 0 {
            let k = left.min(BLOCK);
            let (mut raw_b, mut cool_b) = (Duration::ZERO, Duration::ZERO);
            for side in [block % 2, 1 - block % 2] {
                let start = Instant::now();
                if side == 0 {
                    for _ in 0..k {
                        let d = receiver.recv::<Body<Value>>().await?;
                        receiver.accept(&d).await?;
                    }
                    raw_b = start.elapsed();
                } else {
                    for _ in 0..k {
                        let d = consumer.recv().await?.ok_or("consumer ended")?;
                        d.ack().await?;
                    }
                    cool_b = start.elapsed();
                }
            }
            raw_t += raw_b;
            cool_t += cool_b;
            pairs.push(raw_b.as_secs_f64() / cool_b.as_secs_f64());
            left -= k;
            block += 1;
        }
        raw.push(rate(per_rep, raw_t));
        cool.push(rate(per_rep, cool_t));
    }
    report_paired("activemq", "receive-accept", per_rep, &raw, &cool, &pairs);
    consumer.close().await?;
    receiver.close().await?;
    Ok(())
}
