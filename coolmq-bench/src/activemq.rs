//! ActiveMQ scenarios: coolmq-activemq vs raw fe2o3-amqp doing the same work on the same broker.

use std::time::{Duration, Instant};

use coolmq::{Config, Destination, Message, Publisher};
use fe2o3_amqp::link::delivery::Sendable;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::definitions::SenderSettleMode;
use fe2o3_amqp::types::messaging::{
    message::Body, AmqpValue, ApplicationProperties, Data, Header, MessageAnnotations, Outcome,
    Properties, Target,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Symbol, Timestamp, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use futures::stream::{FuturesUnordered, StreamExt};

use crate::cpu::CpuUse;
use crate::stats::{rate, report_paired};

type BoxError = Box<dyn std::error::Error>;

/// Messages per block; the sides alternate block by block.
const BLOCK: usize = 2_000;
pub(crate) type AmqpMessage = fe2o3_amqp::types::messaging::Message<Body<Value>>;

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
    /// Messages per side the receive scenario times in each repetition (the rest of what
    /// the repetition sent is drained untimed, pre-settled).
    #[arg(long, default_value_t = 4_000)]
    receive: usize,
    /// Receiver credit / prefetch.
    #[arg(long, default_value_t = 200)]
    prefetch: u16,
    /// Repetitions: each sends `messages` per side in blocks, then receives them.
    #[arg(long, default_value_t = 40)]
    reps: usize,
    /// Send with one side only and skip the receive scenario: for profiling a side alone
    /// (`perf record`); prints no ratio.
    #[arg(long, value_enum)]
    only: Option<Side>,
    /// Run the send scenario only (the queues then keep what was sent until the end).
    #[arg(long)]
    send_only: bool,
    /// Also send with raw fe2o3 keeping its messages and with concurrent coolmq sends
    /// (informative comparisons; their messages stay in their queues until the end).
    #[arg(long)]
    all_sides: bool,
    /// Print each block's time per side (raw, raw-keeping, pipelined, concurrent; 0 for a side
    /// not run) and each repetition's receive time, to see whether a ratio comes from typical
    /// blocks or from a few slow ones.
    #[arg(long)]
    print_blocks: bool,
}

/// One side of the comparison.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
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

    /// Its name in the CPU line.
    fn name(self) -> &'static str {
        match self {
            Side::Raw => "raw",
            Side::RawKeeping => "raw-keeping",
            Side::Coolmq => "pipelined",
            Side::Concurrent => "concurrent",
        }
    }
}

/// What raw fe2o3 sends: the same sections on the wire as coolmq's JMS-compatible message
/// (durable header, message id, creation time, the JMS BytesMessage annotation, an
/// application-properties section), so both sides make the broker do the same work.
pub(crate) fn raw_message(i: usize, size: usize) -> AmqpMessage {
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

pub(crate) async fn raw_send(
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

pub(crate) fn check(o: Result<Outcome, fe2o3_amqp::link::SendError>) -> Result<(), BoxError> {
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
pub(crate) async fn coolmq_send(
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
///
/// Each repetition sends its blocks (the sides alternating block by block), then receives
/// and accepts what it sent from the raw and coolmq queues (again alternating), so every
/// repetition starts on empty queues: the broker's memory and journal stay the same size
/// however many repetitions run, and both scenarios get the same number of block pairs.
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
        "# ActiveMQ at {}: {} B durable messages, window {}, credit {}, {} reps each side, alternated in blocks of {BLOCK}",
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
    let sides: Vec<Side> = match args.only {
        Some(side) => vec![side],
        None if args.all_sides => Side::ALL.to_vec(),
        None => vec![Side::Raw, Side::Coolmq],
    };
    let receives = args.only.is_none() && !args.send_only;
    let replies = format!("coolmq.bench.{id}.replies");
    let mut purger = match (receives, options.flavor) {
        (true, coolmq::activemq::Flavor::Artemis) => {
            broker
                .declare_queue(&broker.queue_spec(replies.as_str()).dead_letter_queue(None))
                .await?;
            Some(Purger::attach(&mut session, &replies).await?)
        }
        _ => None,
    };
    // Warm-up, untimed: every side sends, and what the compared sides sent is received.
    const WARM_UP: usize = 500;
    for &side in &sides {
        let (size, window) = (args.size, args.window);
        match side {
            Side::Raw => raw_send(&mut sender, WARM_UP, size, window).await?,
            Side::RawKeeping => raw_send_keeping(&mut keep_sender, WARM_UP, size, window).await?,
            Side::Coolmq => coolmq_send(&publisher, &cool_q, WARM_UP, size, window).await?,
            Side::Concurrent => {
                coolmq_send_concurrent(&publisher, &concurrent_q, WARM_UP, size, window).await?
            }
        };
    }
    if receives {
        receive_rep(&args, &mut session, &broker, &raw_q, &cool_q, WARM_UP, 0).await?;
    }

    // Per side: throughput per repetition, CPU, and per block the ratio to raw's block.
    const SIDES: usize = Side::ALL.len();
    let mut rates: [Vec<f64>; SIDES] = Default::default();
    let mut pairs: [Vec<f64>; SIDES] = Default::default();
    let mut keeping_pairs = Vec::new();
    let mut cpu = [CpuUse::default(); SIDES];
    let mut received = Received::default();
    for rep in 0..args.reps {
        let mut total = [Duration::ZERO; SIDES];
        for block in 0..blocks {
            let mut took = [Duration::ZERO; SIDES];
            // Each block runs every side once, in an order that rotates block by block.
            for k in 0..sides.len() {
                let side = sides[(block + k) % sides.len()];
                let s = side as usize;
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
                pairs[Side::Coolmq as usize].push(secs(Side::Raw) / secs(Side::Coolmq));
                if args.all_sides {
                    pairs[Side::Concurrent as usize].push(secs(Side::Raw) / secs(Side::Concurrent));
                    keeping_pairs.push(secs(Side::RawKeeping) / secs(Side::Coolmq));
                }
            }
        }
        for &side in &sides {
            rates[side as usize].push(rate(n, total[side as usize]));
        }
        if receives {
            let receiving = Instant::now();
            let timed = args.receive.min(n);
            let rep_received =
                receive_rep(&args, &mut session, &broker, &raw_q, &cool_q, timed, rep).await?;
            if args.print_blocks {
                println!(
                    "activemq rep {rep}: receive {:.2} s",
                    receiving.elapsed().as_secs_f64()
                );
            }
            received.add(rep_received);
            for q in [&raw_q, &cool_q] {
                match &mut purger {
                    Some(purger) => purger.purge(q).await?,
                    None => drain(&mut session, q, n - timed).await?,
                }
            }
            if args.print_blocks {
                println!(
                    "activemq rep {rep}: receive and empty the queues {:.2} s",
                    receiving.elapsed().as_secs_f64()
                );
            }
        }
    }
    if args.only.is_none() {
        let [raw, keeping, pipelined, concurrent] = &rates;
        report_paired("activemq", "send-pipelined", n, raw, pipelined, &pairs[2]);
        if args.all_sides {
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
    }
    let sent = n * args.reps;
    let per_side = sides
        .iter()
        .map(|&side| format!("{}={}", side.name(), cpu[side as usize].per_message(sent)))
        .collect::<Vec<_>>();
    println!(
        "activemq send client CPU µs per message: {}",
        per_side.join(" ")
    );
    if receives {
        report_paired(
            "activemq",
            "receive-accept",
            args.receive.min(n),
            &received.raw,
            &received.coolmq,
            &received.pairs,
        );
    }
    sender.close().await?;
    keep_sender.close().await?;
    if let Some(purger) = purger {
        purger.close().await?;
        let _ = broker.delete_queue(&replies).await;
    }
    session.end().await?;
    connection.close().await?;
    for q in queues {
        let _ = broker.delete_queue(q).await;
    }
    broker.close().await?;
    Ok(())
}

/// The receive scenario's measurements over the repetitions.
#[derive(Default)]
struct Received {
    raw: Vec<f64>,
    coolmq: Vec<f64>,
    pairs: Vec<f64>,
}

impl Received {
    fn add(&mut self, other: Received) {
        self.raw.extend(other.raw);
        self.coolmq.extend(other.coolmq);
        self.pairs.extend(other.pairs);
    }
}

/// Receive and accept `n` messages from each of the two queues (of what the repetition sent),
/// alternating blocks, the first side alternating with `rep`. The receiver and the consumer
/// are attached for this and closed after, so neither takes messages while the sides send.
async fn receive_rep(
    args: &Args,
    session: &mut fe2o3_amqp::session::SessionHandle<()>,
    broker: &coolmq::Broker,
    raw_q: &str,
    cool_q: &str,
    n: usize,
    rep: usize,
) -> Result<Received, BoxError> {
    let mut receiver = Receiver::builder()
        .name("bench-raw-receiver")
        .source(raw_q.to_string())
        .credit_mode(CreditMode::Auto(u32::from(args.prefetch)))
        .attach(session)
        .await?;
    let mut consumer = broker.consumer_with_prefetch(cool_q, args.prefetch).await?;
    let (mut raw_t, mut cool_t) = (Duration::ZERO, Duration::ZERO);
    let mut pairs = Vec::new();
    let mut left = n;
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
    consumer.close().await?;
    receiver.close().await?;
    Ok(Received {
        raw: vec![rate(n, raw_t)],
        coolmq: vec![rate(n, cool_t)],
        pairs,
    })
}

/// Take `n` messages off `queue` pre-settled (the broker forgets each once it is sent): the
/// quickest way to leave the queue empty for the next repetition. Untimed.
async fn drain(
    session: &mut fe2o3_amqp::session::SessionHandle<()>,
    queue: &str,
    n: usize,
) -> Result<(), BoxError> {
    if n == 0 {
        return Ok(());
    }
    let mut receiver = Receiver::builder()
        .name(format!("bench-drain-{queue}"))
        .source(queue.to_string())
        .sender_settle_mode(SenderSettleMode::Settled)
        .credit_mode(CreditMode::Manual)
        .attach(session)
        .await?;
    // fe2o3's automatic credit is renewed by dispositions, and pre-settled deliveries have
    // none: credit is granted here, a batch at a time.
    let mut left = n;
    while left > 0 {
        let k = left.min(1_000);
        receiver.set_credit(k as u32).await?;
        for _ in 0..k {
            receiver.recv::<Body<Value>>().await?;
        }
        left -= k;
    }
    receiver.close().await?;
    Ok(())
}

/// Empties a queue through Artemis's management (`removeAllMessages`), waiting for the reply:
/// far quicker than receiving what is left, and done before the next repetition starts.
pub(crate) struct Purger {
    sender: Sender,
    replies: Receiver,
    reply_to: String,
}

impl Purger {
    pub(crate) async fn attach(
        session: &mut fe2o3_amqp::session::SessionHandle<()>,
        reply_to: &str,
    ) -> Result<Self, BoxError> {
        let sender = Sender::attach(session, "bench-management", "activemq.management").await?;
        let replies = Receiver::builder()
            .name("bench-management-replies")
            .source(reply_to.to_string())
            .credit_mode(CreditMode::Manual)
            .attach(session)
            .await?;
        Ok(Purger {
            sender,
            replies,
            reply_to: reply_to.to_string(),
        })
    }

    pub(crate) async fn purge(&mut self, queue: &str) -> Result<(), BoxError> {
        let request = AmqpMessage {
            header: None,
            delivery_annotations: None,
            message_annotations: None,
            properties: Some(Properties {
                reply_to: Some(self.reply_to.clone()),
                ..Default::default()
            }),
            application_properties: Some(
                ApplicationProperties::builder()
                    .insert("_AMQ_ResourceName", format!("queue.{queue}"))
                    .insert("_AMQ_OperationName", "removeAllMessages")
                    .build(),
            ),
            body: Body::Value(AmqpValue(Value::String("[]".into()))),
            footer: None,
        };
        check(self.sender.send(request).await)?;
        self.replies.set_credit(1).await?;
        let reply = self.replies.recv::<Body<Value>>().await?;
        self.replies.accept(&reply).await?;
        let succeeded = reply
            .message()
            .application_properties
            .as_ref()
            .and_then(|p| p.get("_AMQ_OperationSucceeded"))
            .is_some_and(|v| matches!(v, SimpleValue::Bool(true)));
        if !succeeded {
            return Err(format!("purging {queue} failed: {:?}", reply.body()).into());
        }
        Ok(())
    }

    pub(crate) async fn close(self) -> Result<(), BoxError> {
        self.sender.close().await?;
        self.replies.close().await?;
        Ok(())
    }
}
