//! How the cost grows: coolmq against the raw client on the same broker, over body sizes
//! (16 B – 1 MiB) and concurrent publishers / consumers (1 – 64, on one connection or one
//! connection each), for pipelined publishing and consume-ack, on RabbitMQ and Artemis.
//!
//! Every point runs the raw side and coolmq's in turn (who goes first alternating), `reps`
//! times; its ratio is the median of the per-repetition coolmq/raw ratios, printed with their
//! range.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coolmq::Config;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{Body, Target};
use fe2o3_amqp::types::primitives::{Symbol, Value};
use fe2o3_amqp::{Receiver, Sender, Session};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::activemq::{coolmq_send, raw_send, Purger};
use crate::rabbit::{coolmq_publish, fresh_queue, raw_connection, raw_publish};
use crate::stats::{median, rate};

/// Errors the spawned sides can carry across tasks.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which broker the curves run on.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// RabbitMQ: coolmq-rabbit (lapin) vs raw lapin.
    Rabbit,
    /// ActiveMQ Artemis: coolmq-activemq vs raw fe2o3-amqp.
    Artemis,
}

/// Options of the curves.
#[derive(clap::Args)]
pub struct Args {
    /// The broker.
    #[arg(long, value_enum)]
    broker: BrokerKind,
    /// Its URL (default: `COOLMQ_TEST_RABBIT_URL` / `COOLMQ_TEST_ARTEMIS_URL`, else the
    /// ports `scripts/brokers` uses).
    #[arg(long)]
    url: Option<String>,
    /// Messages per run at 16 B and 1 KiB (split between the publishers / consumers).
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Bytes per run for the large bodies (64 KiB, 1 MiB): the message count is this over
    /// the body size, at least 100.
    #[arg(long, default_value_t = 128 << 20)]
    bytes: usize,
    /// Confirms in flight per publisher.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Prefetch (credit) per consumer.
    #[arg(long, default_value_t = 200)]
    prefetch: u16,
    /// Repetitions of each point.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Scenarios (publish, consume); both by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Curves (sizes, publishers); both by default.
    #[arg(long, value_delimiter = ',')]
    curves: Vec<String>,
    /// Where to write the points as JSON (for `charts`).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// One connection for all publishers, or one each.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    SharedConnection,
    ConnectionEach,
}

/// One measured point, as written to `--json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    pub broker: BrokerKind,
    pub scenario: String,
    pub curve: String,
    pub size: usize,
    pub clients: usize,
    pub mode: Mode,
    pub messages: usize,
    pub raw: Vec<f64>,
    pub coolmq: Vec<f64>,
    pub ratio: f64,
    pub lo: f64,
    pub hi: f64,
    /// Client CPU (the whole process) per message, µs, median of the repetitions.
    #[serde(default)]
    pub raw_cpu_us: f64,
    #[serde(default)]
    pub coolmq_cpu_us: f64,
}

/// Numbers the raw AMQP 1.0 connections' container ids.
static CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

const SIZES: [usize; 4] = [16, 1024, 64 << 10, 1 << 20];
const CLIENTS: [usize; 4] = [1, 4, 16, 64];

impl Args {
    fn url(&self) -> String {
        self.url.clone().unwrap_or_else(|| match self.broker {
            BrokerKind::Rabbit => std::env::var("COOLMQ_TEST_RABBIT_URL")
                .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            BrokerKind::Artemis => std::env::var("COOLMQ_TEST_ARTEMIS_URL")
                .unwrap_or_else(|_| "amqp1://coolmq:coolmq@127.0.0.1:5673".into()),
        })
    }

    fn count(&self, size: usize, clients: usize) -> usize {
        let n = if size <= 1024 {
            self.messages
        } else {
            (self.bytes / size).max(100)
        };
        (n / clients).max(1) * clients
    }

    fn wants(list: &[String], name: &str) -> bool {
        list.is_empty() || list.iter().any(|s| s == name)
    }
}

/// Run the curves and print one line per point.
pub async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let url = args.url();
    let mut bench = match args.broker {
        BrokerKind::Rabbit => Bench::Rabbit(Box::new(Rabbit::open(&url, &args).await?)),
        BrokerKind::Artemis => Bench::Artemis(Box::new(Artemis::open(&url, &args).await?)),
    };
    println!(
        "# curves on {:?} at {}: persistent messages, window {} per publisher, prefetch {} per consumer, {} reps per point, raw and coolmq alternated",
        args.broker,
        coolmq::redact_url(&url),
        args.window,
        args.prefetch,
        args.reps
    );
    let mut plan = Vec::new();
    if Args::wants(&args.curves, "sizes") {
        for size in SIZES {
            plan.push(("sizes", size, 1, Mode::SharedConnection));
        }
    }
    if Args::wants(&args.curves, "publishers") {
        for clients in CLIENTS {
            for mode in [Mode::SharedConnection, Mode::ConnectionEach] {
                if clients == 1 && mode == Mode::ConnectionEach {
                    continue; // one publisher on one connection either way
                }
                plan.push(("publishers", 1024, clients, mode));
            }
        }
    }
    let mut points = Vec::new();
    for scenario in ["publish", "consume"] {
        if !Args::wants(&args.only, scenario) {
            continue;
        }
        for &(curve, size, clients, mode) in &plan {
            let mut n = args.count(size, clients);
            if scenario == "consume" && size <= 1024 {
                // At least four prefetch windows per consumer, so the run is not mostly what
                // was prefetched before the clock started.
                n = n.max(clients * usize::from(args.prefetch) * 4);
            }
            let (mut raw, mut cool, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            let mut cpu = [Vec::new(), Vec::new()];
            for rep in 0..args.reps {
                let mut pair = [0.0; 2];
                for side in [rep % 2, 1 - rep % 2] {
                    // Process CPU over the whole run (set-up included, alike for both sides).
                    let before = crate::cpu::CpuUse::now();
                    let t = bench
                        .run(scenario, side == 1, size, clients, mode, n)
                        .await
                        .map_err(|e| format!("{scenario} {size} B × {clients}: {e}"))?;
                    let mut used = crate::cpu::CpuUse::default();
                    used.add_since(&before);
                    cpu[side].push(used.process_us_per_message(n));
                    pair[side] = rate(n, t);
                }
                raw.push(pair[0]);
                cool.push(pair[1]);
                ratios.push(pair[1] / pair[0]);
            }
            let lo = ratios.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().cloned().fold(0.0, f64::max);
            let ratio = median(&ratios);
            let (raw_cpu_us, coolmq_cpu_us) = (median(&cpu[0]), median(&cpu[1]));
            println!(
                "{:<7} {scenario:<7} {curve:<10} size={size:<7} clients={clients:<2} {:<17} n={n:<6} raw={:>8.0} msg/s coolmq={:>8.0} msg/s ratio={ratio:.3} [{lo:.3}..{hi:.3}] cpu µs/msg raw={raw_cpu_us:.1} coolmq={coolmq_cpu_us:.1}",
                format!("{:?}", args.broker).to_lowercase(),
                format!("{mode:?}").to_lowercase(),
                median(&raw),
                median(&cool),
            );
            points.push(Point {
                broker: args.broker,
                scenario: scenario.into(),
                curve: curve.into(),
                size,
                clients,
                mode,
                messages: n,
                raw,
                coolmq: cool,
                ratio,
                lo,
                hi,
                raw_cpu_us,
                coolmq_cpu_us,
            });
        }
    }
    bench.close().await.map_err(|e| e.to_string())?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&points)?)?;
    }
    Ok(())
}

enum Bench {
    Rabbit(Box<Rabbit>),
    Artemis(Box<Artemis>),
}

impl Bench {
    async fn run(
        &mut self,
        scenario: &str,
        coolmq: bool,
        size: usize,
        clients: usize,
        mode: Mode,
        n: usize,
    ) -> Result<Duration, BoxError> {
        match (self, scenario) {
            (Bench::Rabbit(r), "publish") => r.publish(coolmq, size, clients, mode, n).await,
            (Bench::Rabbit(r), _) => r.consume(coolmq, size, clients, mode, n).await,
            (Bench::Artemis(a), "publish") => a.publish(coolmq, size, clients, mode, n).await,
            (Bench::Artemis(a), _) => a.consume(coolmq, size, clients, mode, n).await,
        }
    }

    async fn close(self) -> Result<(), BoxError> {
        match self {
            Bench::Rabbit(r) => r.close().await,
            Bench::Artemis(a) => a.close().await,
        }
    }
}

/// Waits until `n` messages are settled across the consumers, then tells them to stop.
#[derive(Clone)]
struct Finish {
    settled: Arc<AtomicUsize>,
    all: Arc<Notify>,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
    n: usize,
}

impl Finish {
    fn new(n: usize) -> Self {
        Finish {
            settled: Arc::new(AtomicUsize::new(0)),
            all: Arc::new(Notify::new()),
            stop: Arc::new(tokio::sync::watch::channel(false).0),
            n,
        }
    }

    fn one(&self) {
        if self.settled.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.all.notify_one();
        }
    }

    /// A consumer's stop signal: unlike a `Notify`, it is seen even by a consumer that was
    /// busy acking when the last message was settled.
    fn stopped(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stop.subscribe()
    }

    async fn wait(&self) {
        self.all.notified().await;
        self.stop.send_replace(true);
    }
}

/// A coolmq consumer acking until `finish` says every message is settled.
fn spawn_coolmq_consumer(
    mut c: coolmq::Consumer,
    finish: &Finish,
) -> tokio::task::JoinHandle<Result<(), BoxError>> {
    let (f, mut stop) = (finish.clone(), finish.stopped());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                d = c.recv() => {
                    let d = d?.ok_or("consumer ended")?;
                    d.ack().await?;
                    f.one();
                }
                _ = stop.changed() => break,
            }
        }
        c.close().await?;
        Ok(())
    })
}

/// Converts a spawned side's result.
fn joined<T>(r: Result<Result<T, BoxError>, tokio::task::JoinError>) -> Result<T, BoxError> {
    r.map_err(|e| -> BoxError { e.to_string().into() })?
}

fn local(e: Box<dyn std::error::Error>) -> BoxError {
    e.to_string().into()
}

struct Rabbit {
    url: String,
    config: Config,
    prefetch: u16,
    window: usize,
    conn: lapin::Connection,
    broker: coolmq::Broker,
    queue: String,
}

impl Rabbit {
    async fn open(url: &str, args: &Args) -> Result<Self, Box<dyn std::error::Error>> {
        let mut config = Config::from_url(url.to_string())?;
        config.publisher_window = args.window;
        config.prefetch = args.prefetch;
        let broker = coolmq::connect(&config).await?;
        Ok(Rabbit {
            url: url.to_string(),
            config,
            prefetch: args.prefetch,
            window: args.window,
            conn: raw_connection(url).await?,
            broker,
            queue: format!("coolmq.curves.{}", std::process::id()),
        })
    }

    /// One raw channel per client: all on the shared connection, or each on a connection of
    /// its own (opened untimed and returned for closing).
    async fn raw_channels(
        &self,
        clients: usize,
        mode: Mode,
    ) -> Result<(Vec<lapin::Channel>, Vec<lapin::Connection>), BoxError> {
        let (mut channels, mut conns) = (Vec::new(), Vec::new());
        for _ in 0..clients {
            match mode {
                Mode::SharedConnection => channels.push(self.conn.create_channel().await?),
                Mode::ConnectionEach => {
                    let c = raw_connection(&self.url).await.map_err(local)?;
                    channels.push(c.create_channel().await?);
                    conns.push(c);
                }
            }
        }
        Ok((channels, conns))
    }

    async fn brokers(&self, clients: usize, mode: Mode) -> Result<Vec<coolmq::Broker>, BoxError> {
        let mut brokers = Vec::new();
        for _ in 0..clients {
            brokers.push(match mode {
                Mode::SharedConnection => self.broker.clone(),
                Mode::ConnectionEach => coolmq::connect(&self.config).await?,
            });
        }
        Ok(brokers)
    }

    /// A connection per client when each has its own; none when they share `self.conn`.
    async fn raw_conns_each(
        &self,
        clients: usize,
        mode: Mode,
    ) -> Result<Vec<lapin::Connection>, BoxError> {
        let mut conns = Vec::new();
        if mode == Mode::ConnectionEach {
            for _ in 0..clients {
                conns.push(raw_connection(&self.url).await.map_err(local)?);
            }
        }
        Ok(conns)
    }

    async fn publish(
        &mut self,
        coolmq: bool,
        size: usize,
        clients: usize,
        mode: Mode,
        n: usize,
    ) -> Result<Duration, BoxError> {
        fresh_queue(&self.conn, &self.queue, "classic")
            .await
            .map_err(local)?;
        let per = n / clients;
        let window = self.window;
        let mut tasks = Vec::new();
        let start;
        if coolmq {
            let brokers = self.brokers(clients, mode).await?;
            let mut publishers = Vec::new();
            for b in &brokers {
                publishers.push(b.publisher().await?);
            }
            // One untimed send each: coolmq attaches a publisher's link (on ActiveMQ after a
            // routing check) at its first send, where raw attaches before the clock starts.
            for p in &publishers {
                p.send(
                    &coolmq::Destination::queue(&self.queue),
                    coolmq::Message::new("warm-up"),
                )
                .await?;
            }
            start = Instant::now();
            for p in publishers {
                let q = self.queue.clone();
                tasks.push(tokio::spawn(async move {
                    coolmq_publish(&p, &q, per, size, window)
                        .await
                        .map_err(|e| -> BoxError { e.to_string().into() })
                }));
            }
            let elapsed = wait_all(tasks, start).await?;
            close_extra(brokers, mode).await?;
            Ok(elapsed)
        } else {
            let (channels, conns) = self.raw_channels(clients, mode).await?;
            for ch in &channels {
                ch.confirm_select(ConfirmSelectOptions::default()).await?;
            }
            start = Instant::now();
            for ch in &channels {
                let (ch, q) = (ch.clone(), self.queue.clone());
                tasks.push(tokio::spawn(async move {
                    raw_publish(&ch, &q, per, size, window)
                        .await
                        .map_err(|e| -> BoxError { e.to_string().into() })
                }));
            }
            let elapsed = wait_all(tasks, start).await?;
            for ch in channels {
                ch.close(200, "".into()).await?;
            }
            for c in conns {
                c.close(200, "".into()).await?;
            }
            Ok(elapsed)
        }
    }

    async fn consume(
        &mut self,
        coolmq: bool,
        size: usize,
        clients: usize,
        mode: Mode,
        n: usize,
    ) -> Result<Duration, BoxError> {
        // Filled untimed by raw lapin, the same for both sides.
        fresh_queue(&self.conn, &self.queue, "classic")
            .await
            .map_err(local)?;
        let fill = self.conn.create_channel().await?;
        fill.confirm_select(ConfirmSelectOptions::default()).await?;
        raw_publish(&fill, &self.queue, n, size, self.window)
            .await
            .map_err(local)?;
        fill.close(200, "".into()).await?;
        let finish = Finish::new(n);
        let mut tasks = Vec::new();
        if coolmq {
            let brokers = self.brokers(clients, mode).await?;
            // Subscribing is untimed on both sides (coolmq's ActiveMQ consumer also makes a
            // management call first): the clock measures consuming. With c consumers up to
            // c × prefetch messages are already on their way when it starts, alike for both.
            let mut consumers = Vec::new();
            for b in &brokers {
                consumers.push(b.consumer_with_prefetch(&self.queue, self.prefetch).await?);
            }
            let start = Instant::now();
            tasks.extend(
                consumers
                    .into_iter()
                    .map(|c| spawn_coolmq_consumer(c, &finish)),
            );
            finish.wait().await;
            let elapsed = start.elapsed();
            for t in tasks {
                joined(t.await)?;
            }
            close_extra(brokers, mode).await?;
            Ok(elapsed)
        } else {
            let conns = self.raw_conns_each(clients, mode).await?;
            let mut consumers = Vec::new();
            for i in 0..clients {
                let ch = conns.get(i).unwrap_or(&self.conn).create_channel().await?;
                ch.basic_qos(self.prefetch, BasicQosOptions::default())
                    .await?;
                let consumer = ch
                    .basic_consume(
                        self.queue.clone().into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                consumers.push((ch, consumer));
            }
            let start = Instant::now();
            for (ch, mut consumer) in consumers {
                let f = finish.clone();
                let mut stop = finish.stopped();
                tasks.push(tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            d = consumer.next() => {
                                let d = d.ok_or("consumer ended")??;
                                d.ack(BasicAckOptions::default()).await?;
                                f.one();
                            }
                            _ = stop.changed() => break,
                        }
                    }
                    ch.close(200, "".into()).await?;
                    Ok::<_, BoxError>(())
                }));
            }
            finish.wait().await;
            let elapsed = start.elapsed();
            for t in tasks {
                joined(t.await)?;
            }
            for c in conns {
                c.close(200, "".into()).await?;
            }
            Ok(elapsed)
        }
    }

    async fn close(self) -> Result<(), BoxError> {
        let ch = self.conn.create_channel().await?;
        ch.queue_delete(self.queue.clone().into(), Default::default())
            .await?;
        self.broker.close().await?;
        Ok(())
    }
}

/// Waits for every spawned publisher; the elapsed time since `start` when the last ends.
async fn wait_all(
    tasks: Vec<tokio::task::JoinHandle<Result<Duration, BoxError>>>,
    start: Instant,
) -> Result<Duration, BoxError> {
    for t in tasks {
        joined(t.await)?;
    }
    Ok(start.elapsed())
}

/// Closes the brokers opened for one run (the shared one stays open).
async fn close_extra(brokers: Vec<coolmq::Broker>, mode: Mode) -> Result<(), BoxError> {
    if mode == Mode::ConnectionEach {
        for b in brokers {
            b.close().await?;
        }
    }
    Ok(())
}

struct Artemis {
    amqp_url: String,
    user: String,
    password: String,
    config: Config,
    prefetch: u16,
    window: usize,
    connection: fe2o3_amqp::connection::ConnectionHandle<()>,
    session: SessionHandle<()>,
    purger: Purger,
    broker: coolmq::Broker,
    queue: String,
    links: usize,
}

/// A raw connection with its session.
struct RawSession {
    connection: Option<fe2o3_amqp::connection::ConnectionHandle<()>>,
    session: SessionHandle<()>,
}

impl Artemis {
    async fn open(url: &str, args: &Args) -> Result<Self, Box<dyn std::error::Error>> {
        let mut config = Config::from_url(url.to_string())?;
        config.publisher_window = args.window;
        config.prefetch = args.prefetch;
        let broker = coolmq::connect(&config).await?;
        let options = coolmq::activemq::ActiveMqOptions::from_url(url)?;
        let (user, password) = options.credentials.clone().unwrap_or_default();
        let amqp_url = options.amqp_url.to_string();
        let mut connection = raw_amqp_connection(&amqp_url, &user, &password).await?;
        let mut session = Session::begin(&mut connection).await?;
        let queue = format!("coolmq.curves.{}", std::process::id());
        let replies = format!("{queue}.replies");
        for q in [&queue, &replies] {
            broker
                .declare_queue(&broker.queue_spec(q.as_str()).dead_letter_queue(None))
                .await?;
        }
        let purger = Purger::attach(&mut session, &replies).await?;
        Ok(Artemis {
            amqp_url,
            user,
            password,
            config,
            prefetch: args.prefetch,
            window: args.window,
            connection,
            session,
            purger,
            broker,
            queue,
            links: 0,
        })
    }

    fn link_name(&mut self, what: &str) -> String {
        self.links += 1;
        format!("curves-{what}-{}", self.links)
    }

    /// The connections and sessions opened for one run: none when the links share the
    /// long-lived session, else one each.
    async fn raw_sessions(
        &mut self,
        clients: usize,
        mode: Mode,
    ) -> Result<Vec<RawSession>, BoxError> {
        let mut sessions = Vec::new();
        if mode == Mode::ConnectionEach {
            for _ in 0..clients {
                let mut c = raw_amqp_connection(&self.amqp_url, &self.user, &self.password)
                    .await
                    .map_err(local)?;
                let session = Session::begin(&mut c).await?;
                sessions.push(RawSession {
                    connection: Some(c),
                    session,
                });
            }
        }
        Ok(sessions)
    }

    /// One sender per client: on the shared session, or on each of `sessions`.
    async fn senders(
        &mut self,
        clients: usize,
        sessions: &mut [RawSession],
    ) -> Result<Vec<Sender>, BoxError> {
        let mut senders = Vec::new();
        if sessions.is_empty() {
            for _ in 0..clients {
                let name = self.link_name("sender");
                senders.push(attach_sender(&mut self.session, name, &self.queue).await?);
            }
        } else {
            for s in sessions {
                let name = self.link_name("sender");
                senders.push(attach_sender(&mut s.session, name, &self.queue).await?);
            }
        }
        Ok(senders)
    }

    async fn brokers(&self, clients: usize, mode: Mode) -> Result<Vec<coolmq::Broker>, BoxError> {
        let mut brokers = Vec::new();
        for _ in 0..clients {
            brokers.push(match mode {
                Mode::SharedConnection => self.broker.clone(),
                Mode::ConnectionEach => coolmq::connect(&self.config).await?,
            });
        }
        Ok(brokers)
    }

    async fn publish(
        &mut self,
        coolmq: bool,
        size: usize,
        clients: usize,
        mode: Mode,
        n: usize,
    ) -> Result<Duration, BoxError> {
        let per = n / clients;
        let window = self.window;
        let mut tasks = Vec::new();
        let elapsed = if coolmq {
            let brokers = self.brokers(clients, mode).await?;
            let mut publishers = Vec::new();
            for b in &brokers {
                publishers.push(b.publisher().await?);
            }
            // One untimed send each: coolmq attaches a publisher's link (on ActiveMQ after a
            // routing check) at its first send, where raw attaches before the clock starts.
            for p in &publishers {
                p.send(
                    &coolmq::Destination::queue(&self.queue),
                    coolmq::Message::new("warm-up"),
                )
                .await?;
            }
            let start = Instant::now();
            for p in publishers {
                let q = self.queue.clone();
                tasks.push(tokio::spawn(async move {
                    coolmq_send(&p, &q, per, size, window)
                        .await
                        .map_err(|e| -> BoxError { e.to_string().into() })
                }));
            }
            let elapsed = wait_all(tasks, start).await?;
            close_extra(brokers, mode).await?;
            elapsed
        } else {
            let mut sessions = self.raw_sessions(clients, mode).await?;
            let senders = self.senders(clients, &mut sessions).await?;
            let start = Instant::now();
            let mut sending = Vec::new();
            for mut sender in senders {
                sending.push(tokio::spawn(async move {
                    let r = raw_send(&mut sender, per, size, window)
                        .await
                        .map_err(|e| -> BoxError { e.to_string().into() });
                    (sender, r)
                }));
            }
            let mut senders = Vec::new();
            for t in sending {
                let (sender, r) = t.await?;
                r?;
                senders.push(sender);
            }
            let elapsed = start.elapsed();
            for s in senders {
                s.close().await?;
            }
            close_sessions(sessions).await?;
            elapsed
        };
        self.purger.purge(&self.queue).await.map_err(local)?;
        Ok(elapsed)
    }

    async fn consume(
        &mut self,
        coolmq: bool,
        size: usize,
        clients: usize,
        mode: Mode,
        n: usize,
    ) -> Result<Duration, BoxError> {
        // Filled untimed by raw fe2o3, the same for both sides.
        let name = self.link_name("fill");
        let mut fill = attach_sender(&mut self.session, name, &self.queue).await?;
        raw_send(&mut fill, n, size, self.window)
            .await
            .map_err(local)?;
        fill.close().await?;
        let finish = Finish::new(n);
        let mut tasks = Vec::new();
        if coolmq {
            let brokers = self.brokers(clients, mode).await?;
            // Subscribing is untimed on both sides (coolmq's ActiveMQ consumer also makes a
            // management call first): the clock measures consuming. With c consumers up to
            // c × prefetch messages are already on their way when it starts, alike for both.
            let mut consumers = Vec::new();
            for b in &brokers {
                consumers.push(b.consumer_with_prefetch(&self.queue, self.prefetch).await?);
            }
            let start = Instant::now();
            tasks.extend(
                consumers
                    .into_iter()
                    .map(|c| spawn_coolmq_consumer(c, &finish)),
            );
            finish.wait().await;
            let elapsed = start.elapsed();
            for t in tasks {
                joined(t.await)?;
            }
            close_extra(brokers, mode).await?;
            Ok(elapsed)
        } else {
            let mut sessions = self.raw_sessions(clients, mode).await?;
            let mut receivers = Vec::new();
            for i in 0..clients {
                let name = self.link_name("receiver");
                let session = match sessions.get_mut(i) {
                    Some(s) => &mut s.session,
                    None => &mut self.session,
                };
                receivers.push(
                    Receiver::builder()
                        .name(name)
                        .source(self.queue.clone())
                        .credit_mode(CreditMode::Auto(u32::from(self.prefetch)))
                        .attach(session)
                        .await?,
                );
            }
            let start = Instant::now();
            for mut r in receivers {
                let f = finish.clone();
                let mut stop = finish.stopped();
                tasks.push(tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            d = r.recv::<Body<Value>>() => {
                                let d = d?;
                                r.accept(&d).await?;
                                f.one();
                            }
                            _ = stop.changed() => break,
                        }
                    }
                    r.close().await?;
                    Ok::<_, BoxError>(())
                }));
            }
            finish.wait().await;
            let elapsed = start.elapsed();
            for t in tasks {
                joined(t.await)?;
            }
            close_sessions(sessions).await?;
            Ok(elapsed)
        }
    }

    async fn close(mut self) -> Result<(), BoxError> {
        self.purger.close().await.map_err(local)?;
        self.session.end().await?;
        self.connection.close().await?;
        self.broker.close().await?;
        Ok(())
    }
}

/// Ends the sessions and connections opened for one run (the shared one stays open).
async fn close_sessions(sessions: Vec<RawSession>) -> Result<(), BoxError> {
    for mut s in sessions {
        if let Some(mut c) = s.connection.take() {
            s.session.end().await?;
            c.close().await?;
        }
    }
    Ok(())
}

async fn attach_sender(
    session: &mut SessionHandle<()>,
    name: String,
    queue: &str,
) -> Result<Sender, BoxError> {
    Ok(Sender::builder()
        .name(name)
        .target(
            Target::builder()
                .address(queue.to_string())
                .capabilities(vec![Symbol::from("queue")])
                .build(),
        )
        .attach(session)
        .await?)
}

async fn raw_amqp_connection(
    url: &str,
    user: &str,
    password: &str,
) -> Result<fe2o3_amqp::connection::ConnectionHandle<()>, Box<dyn std::error::Error>> {
    Ok(fe2o3_amqp::Connection::builder()
        .container_id(format!(
            "coolmq-curves-{}-{}",
            std::process::id(),
            CONNECTIONS.fetch_add(1, Ordering::Relaxed)
        ))
        .sasl_profile(SaslProfile::Plain {
            username: user.to_string(),
            password: password.to_string(),
        })
        .open(url)
        .await?)
}
