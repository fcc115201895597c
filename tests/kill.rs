//! Production faults on the real brokers (RabbitMQ, Artemis, Classic), every count asserted:
//! - the broker SIGKILLed and restarted twice during 20,000 persistent confirmed sends while a
//!   consumer acks: lost 0, hangs 0, a send error per kill, duplicates ≤ errors + publisher
//!   window + prefetch;
//! - the consumer *process* SIGKILLed three times during 10,000 messages at prefetch 200: lost
//!   0, duplicates ≤ 3 × 200, each duplicate flagged redelivered;
//! - 100,000 pipelined sends through a proxy that cuts the connection five times: lost 0,
//!   hangs 0, errors > 0;
//! - (RabbitMQ) a memory alarm during sends: every send resolves within the confirm timeout,
//!   refused sends fail `Blocked` with the message handed back, sends succeed after the alarm;
//! - (RabbitMQ cluster, quorum queue) the queue leader's node, and the clients' node,
//!   SIGKILLed during 100,000 confirmed sends: lost 0, hangs 0, errors > 0, duplicates
//!   bounded, the time to resume printed;
//! - (ActiveMQ HA pairs on a shared store) the serving member SIGKILLed during 50,000
//!   confirmed sends, clients on the pair's `failover:` list: lost 0, hangs 0, errors > 0,
//!   duplicates bounded, the time to resume on the standby printed.
//!
//! Brokers are killed and started with `scripts/brokers kill|start-one`; trials run one at a
//! time. Without a broker's URL its trials are ignored, or fail when `CI` is set.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coolmq::{Broker, Config, Destination, ErrorKind, Message, Publisher};
use coolmq_conformance::FaultProxy;
use futures::stream::{self, FuturesUnordered, StreamExt};
use libtest_mimic::{Arguments, Failed, Trial};

#[path = "common/broker_var.rs"]
mod broker_var;
#[path = "common/rabbit_drivers.rs"]
mod rabbit_drivers;
mod support;

type TestResult = Result<(), Failed>;

/// The publisher window and consumer prefetch the bounds below are stated in.
const WINDOW: usize = 256;
const PREFETCH: u16 = 200;
/// A send (one attempt) that has not resolved after this long is a hang.
const HANG: Duration = Duration::from_secs(60);

fn unique(name: &str) -> String {
    format!("coolmq.test.kill.{name}.{}", coolmq::new_message_id())
}

fn scripts_brokers(args: &[&str]) -> Result<(), String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/brokers");
    let out = Command::new(script)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run scripts/brokers {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/brokers {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

async fn connect(url: &str, tune: impl FnOnce(&mut Config)) -> Result<Broker, Failed> {
    let mut config = Config::from_url(url)?;
    tune(&mut config);
    coolmq::connect(&config).await.map_err(|e| {
        format!("cannot connect ({e}); start the brokers with `scripts/brokers start`").into()
    })
}

/// What a consumer that acks everything saw: copies per id, and how many copies after the
/// first arrived without the redelivered flag.
#[derive(Default)]
struct Seen {
    copies: HashMap<String, usize>,
    received: usize,
    unflagged_duplicates: usize,
}

impl Seen {
    fn record(&mut self, id: &str, redelivered: bool) {
        self.received += 1;
        let n = self.copies.entry(id.to_string()).or_default();
        *n += 1;
        if *n > 1 && !redelivered {
            self.unflagged_duplicates += 1;
        }
    }

    fn duplicates(&self) -> usize {
        self.received - self.copies.len()
    }

    fn lost(&self, prefix: &str, n: usize) -> usize {
        (0..n)
            .filter(|i| !self.copies.contains_key(&format!("{prefix}-{i}")))
            .count()
    }
}

/// Consume `queue` on its own connection, acking everything, until `stop`; an error (the
/// broker is down) is retried every 200 ms, as a worker does.
async fn acking_consumer(
    url: String,
    queue: String,
    seen: Arc<Mutex<Seen>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<usize, Failed> {
    let broker = connect(&url, |c| c.heartbeat = Duration::from_secs(5)).await?;
    let mut consumer = None;
    let mut errors = 0usize;
    while !*stop.borrow() {
        if consumer.is_none() {
            match broker.consumer_with_prefetch(&queue, PREFETCH).await {
                Ok(c) => consumer = Some(c),
                Err(_) => {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let c = consumer.as_mut().expect("set");
        match tokio::time::timeout(Duration::from_millis(500), c.recv()).await {
            Err(_) => {}
            Ok(Ok(Some(d))) => {
                seen.lock()
                    .expect("lock")
                    .record(&d.message().id, d.redelivered());
                // A stale ack (the connection died) is redelivered: counted as a duplicate.
                if d.ack().await.is_err() {
                    errors += 1;
                }
            }
            Ok(Ok(None)) => return Err("the consumer ended: the queue was deleted?".into()),
            Ok(Err(_)) => {
                errors += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    if let Some(c) = consumer {
        let _ = c.close().await;
    }
    let _ = broker.close().await;
    Ok(errors)
}

/// How a run of reliable sends went: each message sent until confirmed (same id), as an
/// outbox relay does.
#[derive(Default)]
struct Sends {
    errors: usize,
    kinds: HashMap<String, usize>,
    error_times: Vec<Instant>,
    hangs: usize,
}

/// Send `n` messages `<prefix>-<i>` with up to `WINDOW` in flight, one started every
/// `interval`, each resent until the broker confirms it; `confirmed` counts progress.
async fn send_until_confirmed(
    publisher: &Publisher,
    destination: &Destination,
    n: usize,
    prefix: &str,
    interval: Duration,
    confirmed: Arc<AtomicUsize>,
) -> Sends {
    let start = Instant::now();
    let sends = Arc::new(Mutex::new(Sends::default()));
    stream::iter(0..n)
        .for_each_concurrent(WINDOW, |i| {
            let (sends, confirmed) = (sends.clone(), confirmed.clone());
            let mut m = Message::new_with_id(format!("{prefix}-{i}"), vec![b'k'; 512]);
            async move {
                tokio::time::sleep_until((start + interval * i as u32).into()).await;
                loop {
                    let r =
                        tokio::time::timeout(HANG, publisher.send(destination, m.clone())).await;
                    match r {
                        Err(_) => {
                            sends.lock().expect("lock").hangs += 1;
                        }
                        Ok(Ok(_)) => break,
                        Ok(Err(e)) => {
                            {
                                let mut s = sends.lock().expect("lock");
                                s.errors += 1;
                                s.error_times.push(Instant::now());
                                *s.kinds.entry(e.kind().to_string()).or_default() += 1;
                            }
                            m = e.into_message();
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
                confirmed.fetch_add(1, Ordering::SeqCst);
            }
        })
        .await;
    Arc::try_unwrap(sends)
        .ok()
        .expect("every send finished")
        .into_inner()
        .expect("lock")
}

/// An [`acking_consumer`] in a task of its own.
struct AckingConsumer {
    seen: Arc<Mutex<Seen>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<usize, Failed>>,
}

impl AckingConsumer {
    fn start(url: String, queue: String) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(acking_consumer(url, queue, seen.clone(), stopped));
        AckingConsumer { seen, stop, task }
    }

    /// Wait until it saw `n` distinct ids (at most `limit`), then 3 s more for stray
    /// duplicates; stop it. What it saw, and its error count.
    async fn finish(self, n: usize, limit: Duration) -> Result<(Seen, usize), Failed> {
        let deadline = Instant::now() + limit;
        while self.seen.lock().expect("lock").copies.len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let _ = self.stop.send(true);
        let errors = self.task.await.map_err(|e| format!("consumer: {e}"))??;
        let seen = std::mem::take(&mut *self.seen.lock().expect("lock"));
        Ok((seen, errors))
    }
}

/// Broker SIGKILL + restart twice during 20,000 persistent confirmed sends, a consumer acking
/// on its own connection all along.
async fn broker_killed_twice(url: String, which: &'static str) -> TestResult {
    const N: usize = 20_000;
    let admin = connect(&url, |_| {}).await?;
    let queue = unique("broker");
    admin
        .declare_queue(&admin.queue_spec(&queue).dead_letter_queue(None))
        .await?;
    admin.close().await?;

    let consumer = AckingConsumer::start(url.clone(), queue.clone());

    let sender = connect(&url, |c| {
        c.confirm_timeout = Duration::from_secs(10);
        c.heartbeat = Duration::from_secs(5);
    })
    .await?;
    let publisher = sender.publisher().await?;
    let confirmed = Arc::new(AtomicUsize::new(0));
    // The killer: SIGKILL at a quarter and at half of the confirmed sends, restarting the
    // broker each time (the sends go on failing and resending meanwhile).
    let killer = {
        let confirmed = confirmed.clone();
        tokio::spawn(async move {
            let mut kills = Vec::new();
            for mark in [N / 4, N / 2] {
                while confirmed.load(Ordering::SeqCst) < mark {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let at = Instant::now();
                let at_confirmed = confirmed.load(Ordering::SeqCst);
                let r = tokio::task::spawn_blocking(move || {
                    scripts_brokers(&["kill", which])?;
                    scripts_brokers(&["start-one", which])
                })
                .await
                .expect("join");
                kills.push((at, at_confirmed, r));
            }
            kills
        })
    };
    let dest = Destination::queue(&queue);
    let sends = send_until_confirmed(
        &publisher,
        &dest,
        N,
        "k",
        // 40 s of sends at most: each restart (a few seconds; the backlog then rushes out)
        // must end well before the next kill's mark, or that kill lands after the sends.
        Duration::from_millis(2),
        confirmed,
    )
    .await;
    let finished = Instant::now();
    let kills = killer.await.map_err(|e| format!("killer: {e}"))?;
    let (seen, consumer_errors) = consumer.finish(N, Duration::from_secs(120)).await?;
    let _ = sender.close().await;

    let (lost, duplicates) = (seen.lost("k", N), seen.duplicates());
    let per_kill: Vec<usize> = kills
        .iter()
        .enumerate()
        .map(|(k, (at, _, _))| {
            let until = kills.get(k + 1).map_or(finished, |next| next.0);
            sends
                .error_times
                .iter()
                .filter(|t| **t >= *at && **t <= until)
                .count()
        })
        .collect();
    let bound = sends.errors + WINDOW + usize::from(PREFETCH);
    // Tighter: only a send whose outcome was unknown (not `Unreachable`: never sent) can have
    // stored a copy, and each kill can return at most a prefetch of unacked deliveries.
    let unknown = sends.errors - sends.kinds.get("unreachable").copied().unwrap_or(0);
    let tight = unknown + kills.len() * usize::from(PREFETCH);
    println!(
        "{which} broker SIGKILL ×2: sent={N} send_errors={} {:?} errors_per_kill={per_kill:?} \
         received={} lost={lost} duplicates={duplicates} (bounds {bound}, {tight}) hangs={} \
         consumer_errors={consumer_errors} kills_at_confirmed={:?}",
        sends.errors,
        sends.kinds,
        seen.received,
        sends.hangs,
        kills.iter().map(|k| k.1).collect::<Vec<_>>(),
    );
    for (_, _, r) in &kills {
        r.as_ref()
            .map_err(|e| format!("killing or restarting {which}: {e}"))?;
    }
    let cleanup = connect(&url, |_| {}).await?;
    let _ = cleanup.delete_queue(&queue).await;
    let _ = cleanup.close().await;
    if lost != 0 {
        return Err(format!("{lost} confirmed messages were never received").into());
    }
    if sends.hangs != 0 {
        return Err(format!("{} sends hung for {HANG:?}", sends.hangs).into());
    }
    if kills.iter().any(|(at, _, _)| *at > finished) {
        return Err("a kill landed after the last send: the fault was not exercised".into());
    }
    if let Some(k) = per_kill.iter().position(|n| *n == 0) {
        return Err(format!("kill {} made no send fail: the kill was not felt", k + 1).into());
    }
    if duplicates > bound {
        return Err(format!(
            "{duplicates} duplicates, more than send errors + window + prefetch = {bound}"
        )
        .into());
    }
    if duplicates > tight {
        return Err(format!(
            "{duplicates} duplicates, more than sends of unknown outcome + kills × prefetch = {tight}"
        )
        .into());
    }
    Ok(())
}

/// Which node of the cluster a test kills.
#[derive(Clone, Copy, Debug)]
enum Victim {
    /// The node leading the quorum queue's Raft group (the clients are elsewhere).
    Leader,
    /// The node the clients are connected to (the leader is elsewhere).
    Connected,
}

/// Which cluster node (1–3) leads `queue`.
fn queue_leader(queue: &str) -> Result<usize, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/brokers");
    let out = Command::new(script)
        .args(["cluster-leader", queue])
        .output()
        .map_err(|e| format!("cannot run scripts/brokers cluster-leader: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().map_err(|_| {
        format!(
            "scripts/brokers cluster-leader {queue} printed {text:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// SIGKILL `which` once `confirmed` reaches `mark`, then wait (up to 120 s) for a window of
/// sends started after the kill to be confirmed: the kill's outcome, its time, the confirms
/// at it, and how long the sends took to resume.
async fn kill_at(
    which: &str,
    confirmed: &AtomicUsize,
    mark: usize,
) -> (Result<(), String>, Instant, usize, Option<Duration>) {
    while confirmed.load(Ordering::SeqCst) < mark {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed = {
        let which = which.to_string();
        tokio::task::spawn_blocking(move || scripts_brokers(&["kill", &which]))
            .await
            .expect("join")
    };
    let at = Instant::now();
    let base = confirmed.load(Ordering::SeqCst);
    let mut resumed = None;
    while resumed.is_none() && at.elapsed() < Duration::from_secs(120) {
        if confirmed.load(Ordering::SeqCst) > base + WINDOW {
            resumed = Some(at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (killed, at, base, resumed)
}

/// A RabbitMQ cluster node SIGKILLed during 100,000 persistent confirmed sends to a quorum
/// queue, a consumer acking all along, both through a `failover:` list that starts at a
/// node other than the leader; the node is restarted once the sends have resumed. Asserted:
/// lost 0, hangs 0, duplicates ≤ sends of unknown outcome + prefetch, sends resumed, and
/// the kill felt: for the clients' node at least one send error; for the leader's node a
/// new leader (RabbitMQ moves the leader under the clients' channels without failing a
/// send, so errors may be 0 there). The time from the kill to a window of confirms after it
/// is printed.
async fn cluster_node_killed(url: String, victim: Victim) -> TestResult {
    const N: usize = 100_000;
    let tune = |c: &mut Config| {
        c.queue_kind = coolmq::QueueKind::Quorum;
        c.heartbeat = Duration::from_secs(5);
        c.confirm_timeout = Duration::from_secs(10);
        c.connect_timeout = Duration::from_secs(5);
    };
    let admin = connect(&url, tune).await?;
    let queue = unique("cluster");
    admin
        .declare_queue(&admin.queue_spec(&queue).dead_letter_queue(None))
        .await?;
    admin.close().await?;
    let leader = tokio::task::spawn_blocking({
        let queue = queue.clone();
        move || queue_leader(&queue)
    })
    .await
    .expect("join")?;
    // Node i's URL is the list's i-th; the clients try the node after the leader first.
    let nodes: Vec<String> = Config::from_url(url.as_str())?
        .addresses()?
        .urls()
        .iter()
        .map(|u| u.to_string())
        .collect();
    if nodes.len() != 3 || leader == 0 || leader > 3 {
        return Err(
            format!("expected 3 nodes and a leader among them: {nodes:?}, {leader}").into(),
        );
    }
    let first = leader % 3 + 1;
    let order: Vec<&str> = (0..3)
        .map(|k| nodes[(first - 1 + k) % 3].as_str())
        .collect();
    let clients = format!("failover:({})?randomize=false", order.join(","));
    let node = match victim {
        Victim::Leader => leader,
        Victim::Connected => first,
    };
    let which = format!("rabbit-c{node}");

    let consumer = AckingConsumer::start(clients.clone(), queue.clone());
    let sender = connect(&clients, tune).await?;
    let publisher = sender.publisher().await?;
    let confirmed = Arc::new(AtomicUsize::new(0));
    // The killer: SIGKILL at a quarter of the confirmed sends; once a window of sends started
    // after the kill has been confirmed, the time is taken and the node restarted.
    let killer = {
        let (confirmed, which, queue_name) = (confirmed.clone(), which.clone(), queue.clone());
        tokio::spawn(async move {
            let (killed, at, base, resumed) = kill_at(&which, &confirmed, N / 4).await;
            // The new leader, once the survivors elected one.
            let mut new_leader = None;
            if matches!(victim, Victim::Leader) {
                while new_leader.is_none() && at.elapsed() < Duration::from_secs(60) {
                    let q = queue_name.clone();
                    match tokio::task::spawn_blocking(move || queue_leader(&q))
                        .await
                        .expect("join")
                    {
                        Ok(n) if n != node => new_leader = Some(n),
                        _ => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            }
            let restarted =
                tokio::task::spawn_blocking(move || scripts_brokers(&["start-one", &which]))
                    .await
                    .expect("join");
            (at, base, resumed, new_leader, killed.and(restarted))
        })
    };
    let dest = Destination::queue(&queue);
    let sends = send_until_confirmed(&publisher, &dest, N, "c", Duration::ZERO, confirmed).await;
    let finished = Instant::now();
    let (killed_at, at_confirmed, resumed, new_leader, fault) =
        killer.await.map_err(|e| format!("killer: {e}"))?;
    let (seen, consumer_errors) = consumer.finish(N, Duration::from_secs(180)).await?;
    let _ = sender.close().await;

    let (lost, duplicates) = (seen.lost("c", N), seen.duplicates());
    let unknown = sends.errors - sends.kinds.get("unreachable").copied().unwrap_or(0);
    let bound = unknown + usize::from(PREFETCH);
    println!(
        "rabbit-cluster {victim:?} node (c{node}) SIGKILL: sent={N} send_errors={} {:?} \
         received={} lost={lost} duplicates={duplicates} (bound {bound}) hangs={} \
         consumer_errors={consumer_errors} killed_at_confirmed={at_confirmed} \
         resumed_after={resumed:?} leader=c{leader} new_leader={new_leader:?} \
         clients_first=c{first}",
        sends.errors, sends.kinds, seen.received, sends.hangs,
    );
    fault.map_err(|e| format!("killing or restarting {which}: {e}"))?;
    let cleanup = connect(&clients, tune).await?;
    let _ = cleanup.delete_queue(&queue).await;
    let _ = cleanup.close().await;
    if lost != 0 {
        return Err(format!("{lost} confirmed messages were never received").into());
    }
    if sends.hangs != 0 {
        return Err(format!("{} sends hung for {HANG:?}", sends.hangs).into());
    }
    if killed_at > finished {
        return Err("the kill landed after the last send: the fault was not exercised".into());
    }
    if resumed.is_none() {
        return Err("no send started after the kill was confirmed within 120 s".into());
    }
    match victim {
        Victim::Connected if sends.errors == 0 => {
            return Err("no send failed: the kill of the clients' node was not felt".into())
        }
        Victim::Leader if new_leader.is_none() => {
            return Err("no new leader within 60 s of killing the leader's node".into())
        }
        _ => {}
    }
    if duplicates > bound {
        return Err(format!(
            "{duplicates} duplicates, more than sends of unknown outcome + prefetch = {bound}"
        )
        .into());
    }
    Ok(())
}

/// An ActiveMQ high-availability pair on a shared store (`scripts/brokers pairs`).
#[derive(Clone, Copy, Debug)]
enum Pair {
    /// Artemis live/backup: the backup serves while the live is down; the returning live
    /// takes the store back (failback), a second switch for the clients.
    Artemis,
    /// Classic master/slave: whichever member holds the store's lock serves; the returning
    /// member waits as the new slave.
    Classic,
}

impl Pair {
    fn name(self) -> &'static str {
        match self {
            Pair::Artemis => "artemis",
            Pair::Classic => "classic",
        }
    }

    /// The `scripts/brokers` name of a member (`live`, `backup`, `a`, `b`).
    fn member(self, member: &str) -> String {
        format!("{}-{member}", self.name())
    }

    /// How many times the clients' serving broker changes in a trial: the kill, and for
    /// Artemis the failback when the live returns.
    fn switches(self) -> usize {
        match self {
            Pair::Artemis => 2,
            Pair::Classic => 1,
        }
    }
}

/// The pair member serving clients now.
fn pair_active(pair: Pair) -> Result<String, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/brokers");
    let out = Command::new(script)
        .args(["pair-active", pair.name()])
        .output()
        .map_err(|e| format!("cannot run scripts/brokers pair-active: {e}"))?;
    let member = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || member.is_empty() {
        return Err(format!(
            "no member of the {} pair serves: start it with `scripts/brokers pairs`",
            pair.name()
        ));
    }
    Ok(member)
}

/// The serving member of an ActiveMQ pair SIGKILLed during 50,000 persistent confirmed
/// sends, a consumer acking all along, both through the pair's `failover:` list; the member
/// is restarted once the sends have resumed on the other one. Asserted: lost 0, hangs 0,
/// errors > 0 (the clients' broker died under them), the sends resumed, and duplicates ≤
/// sends of unknown outcome + switches × prefetch. The time from the kill to a window of
/// confirms on the standby is printed.
async fn pair_member_killed(url: String, pair: Pair) -> TestResult {
    const N: usize = 50_000;
    let tune = |c: &mut Config| {
        c.heartbeat = Duration::from_secs(5);
        c.confirm_timeout = Duration::from_secs(10);
        c.connect_timeout = Duration::from_secs(5);
    };
    // The whole pair up, its standby waiting (idempotent), then the member serving now.
    let first = pair.member(match pair {
        Pair::Artemis => "live",
        Pair::Classic => "a",
    });
    tokio::task::spawn_blocking(move || scripts_brokers(&["start-one", &first]))
        .await
        .expect("join")?;
    let victim = tokio::task::spawn_blocking(move || pair_active(pair))
        .await
        .expect("join")?;
    let which = pair.member(&victim);

    let admin = connect(&url, tune).await?;
    let queue = unique("pair");
    admin
        .declare_queue(&admin.queue_spec(&queue).dead_letter_queue(None))
        .await?;
    admin.close().await?;

    let consumer = AckingConsumer::start(url.clone(), queue.clone());
    let sender = connect(&url, tune).await?;
    let publisher = sender.publisher().await?;
    let confirmed = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (confirmed, which) = (confirmed.clone(), which.clone());
        tokio::spawn(async move {
            let (killed, at, base, resumed) = kill_at(&which, &confirmed, N / 4).await;
            let restarted =
                tokio::task::spawn_blocking(move || scripts_brokers(&["start-one", &which]))
                    .await
                    .expect("join");
            let restarted_at = confirmed.load(Ordering::SeqCst);
            (at, base, resumed, restarted_at, killed.and(restarted))
        })
    };
    let dest = Destination::queue(&queue);
    let sends = send_until_confirmed(&publisher, &dest, N, "p", Duration::ZERO, confirmed).await;
    let finished = Instant::now();
    let (killed_at, at_confirmed, resumed, restarted_at, fault) =
        killer.await.map_err(|e| format!("killer: {e}"))?;
    let (seen, consumer_errors) = consumer.finish(N, Duration::from_secs(180)).await?;
    let _ = sender.close().await;

    let (lost, duplicates) = (seen.lost("p", N), seen.duplicates());
    let unknown = sends.errors - sends.kinds.get("unreachable").copied().unwrap_or(0);
    let bound = unknown + pair.switches() * usize::from(PREFETCH);
    println!(
        "{}-pair {which} SIGKILL: sent={N} send_errors={} {:?} received={} lost={lost} \
         duplicates={duplicates} (bound {bound}) hangs={} consumer_errors={consumer_errors} \
         killed_at_confirmed={at_confirmed} resumed_after={resumed:?} \
         restarted_at_confirmed={restarted_at}",
        pair.name(),
        sends.errors,
        sends.kinds,
        seen.received,
        sends.hangs,
    );
    fault.map_err(|e| format!("killing or restarting {which}: {e}"))?;
    let cleanup = connect(&url, tune).await?;
    let _ = cleanup.delete_queue(&queue).await;
    let _ = cleanup.close().await;
    if lost != 0 {
        return Err(format!("{lost} confirmed messages were never received").into());
    }
    if sends.hangs != 0 {
        return Err(format!("{} sends hung for {HANG:?}", sends.hangs).into());
    }
    if killed_at > finished {
        return Err("the kill landed after the last send: the fault was not exercised".into());
    }
    if resumed.is_none() {
        return Err("no send started after the kill was confirmed within 120 s".into());
    }
    if sends.errors == 0 {
        return Err("no send failed: the kill of the serving broker was not felt".into());
    }
    if duplicates > bound {
        return Err(format!(
            "{duplicates} duplicates, more than sends of unknown outcome + {} × prefetch = {bound}",
            pair.switches()
        )
        .into());
    }
    Ok(())
}

const CHILD_ENV: &str = "COOLMQ_KILL_CHILD";

/// Child mode: consume at prefetch 200, printing `<id> <redelivered>` for each delivery
/// before acking it, until killed.
fn child(url: String, queue: String) -> ExitCode {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let broker = coolmq::connect_url(&url).await.expect("child connects");
        let mut consumer = broker
            .consumer_with_prefetch(&queue, PREFETCH)
            .await
            .expect("child consumes");
        let mut out = std::io::stdout().lock();
        while let Ok(Some(d)) = consumer.recv().await {
            writeln!(out, "{} {}", d.message().id, d.redelivered()).expect("stdout");
            out.flush().expect("stdout");
            let _ = d.ack().await;
        }
    });
    ExitCode::SUCCESS
}

/// Consumer process SIGKILLed three times during 10,000 messages, restarted each time.
async fn consumer_process_killed_three_times(url: String, which: &'static str) -> TestResult {
    const N: usize = 10_000;
    const KILLS: usize = 3;
    let broker = connect(&url, |_| {}).await?;
    let queue = unique("consumer");
    broker
        .declare_queue(&broker.queue_spec(&queue).dead_letter_queue(None))
        .await?;
    let publisher = broker.publisher().await?;
    let dest = Destination::queue(&queue);
    let pending: FuturesUnordered<_> = FuturesUnordered::new();
    for i in 0..N {
        let m = Message::new_with_id(format!("c-{i}"), vec![b'c'; 256]);
        pending.push(publisher.send_pipelined(&dest, m).await?);
    }
    let confirmed: Vec<_> = pending.collect().await;
    if let Some(Err(e)) = confirmed.into_iter().find(|r| r.is_err()) {
        return Err(format!("preloading failed: {e}").into());
    }

    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut kills = Vec::new();
    let mut generation = 0;
    loop {
        let mut child = Command::new(std::env::current_exe()?)
            .env(CHILD_ENV, "1")
            .env("COOLMQ_KILL_URL", &url)
            .env("COOLMQ_KILL_QUEUE", &queue)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        // Kill at 2,500, 5,000 and 7,500 lines read; the last generation drains the rest.
        let kill_at = (generation < KILLS).then(|| (generation + 1) * N / (KILLS + 1));
        // The reader records every line to the pipe's end: what a killed child printed (and
        // acked) before it died is still in the pipe and counts.
        let (reached_tx, reached) = tokio::sync::oneshot::channel::<usize>();
        let reader = {
            let seen = seen.clone();
            tokio::task::spawn_blocking(move || {
                let mut reached_tx = Some(reached_tx);
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let (id, flag) = line.split_once(' ').unwrap_or((&line, "false"));
                    let mut s = seen.lock().expect("lock");
                    s.record(id, flag == "true");
                    let done = kill_at.is_some_and(|k| s.received >= k)
                        || (kill_at.is_none() && s.copies.len() >= N);
                    if done {
                        if let Some(tx) = reached_tx.take() {
                            let _ = tx.send(s.received);
                        }
                    }
                }
            })
        };
        let waited = tokio::time::timeout(Duration::from_secs(120), reached).await;
        if kill_at.is_none() {
            // Every id arrived: a moment for stray copies, then stop the last one too.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        child.kill()?; // SIGKILL
        let _ = child.wait();
        let drained = tokio::time::timeout(Duration::from_secs(10), reader).await;
        let killed_at = match waited {
            Ok(Ok(received)) => received,
            _ => {
                let depth = broker.queue_depth(&queue).await.ok();
                let s = seen.lock().expect("lock");
                return Err(format!(
                    "generation {generation} stalled: {} received, {} distinct, queue depth {depth:?}",
                    s.received,
                    s.copies.len()
                )
                .into());
            }
        };
        if drained.is_err() {
            return Err(
                format!("generation {generation}'s output did not end after its kill").into(),
            );
        }
        if kill_at.is_none() {
            break;
        }
        kills.push(killed_at);
        generation += 1;
    }
    let seen = std::mem::take(&mut *seen.lock().expect("lock"));
    let (lost, duplicates) = (seen.lost("c", N), seen.duplicates());
    let bound = KILLS * usize::from(PREFETCH);
    println!(
        "{which} consumer process SIGKILL ×{KILLS}: messages={N} killed_at_received={kills:?} \
         received={} lost={lost} duplicates={duplicates} (bound {bound}) unflagged_duplicates={}",
        seen.received, seen.unflagged_duplicates,
    );
    let _ = broker.delete_queue(&queue).await;
    let _ = broker.close().await;
    if lost != 0 {
        return Err(format!("{lost} messages never reached a consumer").into());
    }
    if duplicates > bound {
        return Err(format!("{duplicates} duplicates, more than {KILLS} × prefetch").into());
    }
    // Artemis's AMQP layer closes a dead connection's consumers as if gracefully and takes
    // the delivery count of their unsettled messages back (docs/DESIGN.md, "Counting
    // deliveries"): there a duplicate may come unflagged, within the same bound.
    let unflagged_allowed = if which == "artemis" { bound } else { 0 };
    if seen.unflagged_duplicates > unflagged_allowed {
        return Err(format!(
            "{} duplicates arrived without the redelivered flag (allowed on {which}: {unflagged_allowed})",
            seen.unflagged_duplicates
        )
        .into());
    }
    Ok(())
}

/// The URL with its host and port replaced by `addr`, and the broker's address.
fn via(url: &str, addr: std::net::SocketAddr) -> Result<String, Failed> {
    let mut u = url::Url::parse(url).map_err(|e| e.to_string())?;
    u.set_host(Some(&addr.ip().to_string()))
        .map_err(|e| e.to_string())?;
    u.set_port(Some(addr.port())).map_err(|()| "no port")?;
    Ok(u.to_string())
}

fn upstream(url: &str) -> Result<std::net::SocketAddr, Failed> {
    use std::net::ToSocketAddrs;
    let u = url::Url::parse(url).map_err(|e| e.to_string())?;
    let host = u.host_str().ok_or("no host")?;
    let port = u.port().unwrap_or(5672);
    Ok((host, port)
        .to_socket_addrs()?
        .next()
        .ok_or("the host did not resolve")?)
}

/// 100,000 pipelined sends through a proxy that cuts every connection five times.
async fn pipelined_sends_with_five_cuts(url: String, which: &'static str) -> TestResult {
    const N: usize = 100_000;
    const CUTS: usize = 5;
    let direct = connect(&url, |_| {}).await?;
    let queue = unique("cuts");
    direct
        .declare_queue(&direct.queue_spec(&queue).dead_letter_queue(None))
        .await?;
    let proxy = Arc::new(FaultProxy::start(upstream(&url)?).await?);
    let broker = connect(&via(&url, proxy.addr())?, |c| {
        c.confirm_timeout = Duration::from_secs(10)
    })
    .await?;
    let publisher = broker.publisher().await?;
    let dest = Destination::queue(&queue);
    let done = Arc::new(AtomicUsize::new(0));
    let cutter = {
        let (done, proxy) = (done.clone(), proxy.clone());
        tokio::spawn(async move {
            for k in 1..=CUTS {
                while done.load(Ordering::SeqCst) < k * N / (CUTS + 1) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                proxy.cut();
            }
        })
    };
    // Handed to the connection in order, up to the publisher's window in flight; each
    // outcome awaited in a task of its own.
    let mut failed = Vec::new();
    let (mut errors, mut hangs) = (0usize, 0usize);
    let mut kinds: HashMap<String, usize> = HashMap::new();
    let mut outcomes = FuturesUnordered::new();
    let mut note =
        |r: Result<Result<coolmq::Receipt, coolmq::SendError>, tokio::time::error::Elapsed>,
         failed: &mut Vec<Message>| {
            match r {
                Err(_) => hangs += 1,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    errors += 1;
                    *kinds.entry(e.kind().to_string()).or_default() += 1;
                    failed.push(e.into_message());
                }
            }
        };
    for i in 0..N {
        let m = Message::new_with_id(format!("p-{i}"), vec![b'p'; 256]);
        match publisher.send_pipelined(&dest, m).await {
            Ok(pending) => outcomes.push(tokio::time::timeout(HANG, pending)),
            Err(e) => note(Ok(Err(e)), &mut failed),
        }
        done.fetch_add(1, Ordering::SeqCst);
        while outcomes.len() > 4 * WINDOW {
            let r = outcomes.next().await.expect("non-empty");
            note(r, &mut failed);
        }
    }
    while let Some(r) = outcomes.next().await {
        note(r, &mut failed);
    }
    cutter.await.map_err(|e| format!("cutter: {e}"))?;
    let resent =
        support::resend_until_confirmed(&publisher, &dest, failed, 50, Duration::from_millis(100))
            .await?;
    let tally = support::drain_and_tally(
        &direct,
        &queue,
        (0..N).map(|i| format!("p-{i}")),
        Duration::from_secs(3),
    )
    .await?;
    println!(
        "{which} {N} pipelined sends, {CUTS} cuts: errors={errors} {kinds:?} resent={resent} \
         received={} lost={} duplicates={} hangs={hangs} connections_cut={}",
        tally.received,
        tally.lost,
        tally.duplicates,
        proxy.connections_cut(),
    );
    let _ = broker.close().await;
    let _ = direct.delete_queue(&queue).await;
    let _ = direct.close().await;
    if tally.lost != 0 {
        return Err(format!("{} messages lost", tally.lost).into());
    }
    if hangs != 0 {
        return Err(format!("{hangs} sends hung for {HANG:?}").into());
    }
    if errors == 0 {
        return Err("no send failed: the cuts were not felt".into());
    }
    if tally.duplicates > errors {
        return Err(format!(
            "{} duplicates, more than the {errors} failed sends that were resent",
            tally.duplicates
        )
        .into());
    }
    Ok(())
}

fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run rabbitmqctl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Lifts the memory alarm however the test ends.
struct Watermark;

impl Drop for Watermark {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["set_vm_memory_high_watermark", "0.4"]);
    }
}

/// A RabbitMQ memory alarm during sends: every send resolves within the confirm timeout,
/// those refused fail `refused` (`Blocked` where the driver hears `connection.blocked`,
/// else `Timeout`), the message handed back, and sends work again after it clears.
async fn memory_alarm_blocks_publishing(url: String, refused: ErrorKind) -> TestResult {
    const CONFIRM_TIMEOUT: Duration = Duration::from_secs(3);
    const N: usize = 300;
    let broker = connect(&url, |c| c.confirm_timeout = CONFIRM_TIMEOUT).await?;
    let queue = unique("alarm");
    broker
        .declare_queue(&broker.queue_spec(&queue).dead_letter_queue(None))
        .await?;
    let publisher = broker.publisher().await?;
    let dest = Destination::queue(&queue);
    let started = Arc::new(AtomicUsize::new(0));
    let alarm = {
        let started = started.clone();
        tokio::spawn(async move {
            while started.load(Ordering::SeqCst) < N / 4 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::task::spawn_blocking(|| {
                rabbitmqctl(&["set_vm_memory_high_watermark", "0"]).map(|()| Watermark)
            })
            .await
            .expect("join")
        })
    };
    // One send every 20 ms, each timed.
    let t0 = Instant::now();
    let results: Vec<(Duration, Result<coolmq::Receipt, coolmq::SendError>)> = stream::iter(0..N)
        .map(|i| {
            let (publisher, dest, started) = (&publisher, &dest, started.clone());
            async move {
                tokio::time::sleep_until((t0 + Duration::from_millis(20) * i as u32).into()).await;
                started.fetch_add(1, Ordering::SeqCst);
                let m = Message::new_with_id(format!("a-{i}"), vec![b'a'; 256]);
                let t = Instant::now();
                let r = match tokio::time::timeout(HANG, publisher.send(dest, m)).await {
                    Ok(r) => r,
                    Err(_) => Err(coolmq::SendError::new(
                        coolmq::Error::new(ErrorKind::Unexpected, "hung"),
                        Message::new("hung"),
                    )),
                };
                (t.elapsed(), r)
            }
        })
        .buffer_unordered(N)
        .collect()
        .await;
    let guard = alarm.await.map_err(|e| format!("alarm: {e}"))??;
    let slowest = results.iter().map(|(t, _)| *t).max().unwrap_or_default();
    let mut kinds: HashMap<String, usize> = HashMap::new();
    let mut handed_back = Vec::new();
    for (_, r) in results {
        if let Err(e) = r {
            *kinds.entry(e.kind().to_string()).or_default() += 1;
            handed_back.push(e.into_message());
        }
    }
    let blocked = kinds.get(&refused.to_string()).copied().unwrap_or(0);
    let other = handed_back.len() - blocked;
    drop(guard); // the alarm clears
                 // After the alarm: the handed-back messages resend, and new sends confirm.
    let resent = support::resend_until_confirmed(
        &publisher,
        &dest,
        handed_back,
        100,
        Duration::from_millis(200),
    )
    .await?;
    publisher
        .send(&dest, Message::new_with_id("after", "after the alarm"))
        .await?;
    let tally = support::drain_and_tally(
        &broker,
        &queue,
        (0..N)
            .map(|i| format!("a-{i}"))
            .chain(std::iter::once("after".to_string())),
        Duration::from_secs(2),
    )
    .await?;
    println!(
        "rabbit memory alarm: sends={N} refused={blocked} ({refused}) other_errors={other} {kinds:?} \
         slowest_send={slowest:?} (confirm timeout {CONFIRM_TIMEOUT:?}) resent={resent} \
         received={} lost={} duplicates={}",
        tally.received, tally.lost, tally.duplicates
    );
    let _ = broker.delete_queue(&queue).await;
    let _ = broker.close().await;
    if blocked == 0 {
        return Err(format!("no send failed {refused}: the alarm was not reported").into());
    }
    if other != 0 {
        return Err(format!("{other} sends failed with another error: {kinds:?}").into());
    }
    if slowest > CONFIRM_TIMEOUT + Duration::from_secs(1) {
        return Err(format!("a send took {slowest:?}, more than the confirm timeout + 1 s").into());
    }
    if tally.lost != 0 {
        return Err(format!("{} messages lost", tally.lost).into());
    }
    if tally.duplicates > blocked {
        return Err(format!(
            "{} duplicates, more than the {blocked} blocked sends resent",
            tally.duplicates
        )
        .into());
    }
    Ok(())
}

/// Run a trial, failing it if it has not ended within `TRIAL_LIMIT`: a wedged trial is a hang
/// to report, not a run that never ends.
fn watched(
    rt: &tokio::runtime::Runtime,
    trial: impl std::future::Future<Output = TestResult>,
) -> TestResult {
    rt.block_on(async {
        tokio::time::timeout(TRIAL_LIMIT, trial)
            .await
            .map_err(|_| format!("hung: the trial had not ended after {TRIAL_LIMIT:?}"))?
    })
}

/// Every trial here ends well within this (the longest takes about two minutes).
const TRIAL_LIMIT: Duration = Duration::from_secs(600);

type Case = fn(String, &'static str) -> futures::future::BoxFuture<'static, TestResult>;

fn main() -> ExitCode {
    if std::env::var_os(CHILD_ENV).is_some() {
        let var = |name: &str| std::env::var(name).expect("child environment");
        return child(var("COOLMQ_KILL_URL"), var("COOLMQ_KILL_QUEUE"));
    }
    // `COOLMQ_LOG=coolmq_rabbit=debug` (any tracing filter) shows what a trial's clients did.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("COOLMQ_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    }
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    let rt = Arc::new(tokio::runtime::Runtime::new().expect("runtime"));
    // RabbitMQ once per driver; the target name says which.
    let mut brokers: Vec<(String, &str, &str)> = rabbit_targets("")
        .into_iter()
        .map(|t| (t, "rabbit", "COOLMQ_TEST_RABBIT_URL"))
        .collect();
    brokers.push(("artemis".into(), "artemis", "COOLMQ_TEST_ARTEMIS_URL"));
    brokers.push(("activemq".into(), "classic", "COOLMQ_TEST_ACTIVEMQ_URL"));
    let cases: [(&str, Case); 3] = [
        ("broker_sigkill_twice_during_sends_and_acks", |u, w| {
            Box::pin(broker_killed_twice(u, w))
        }),
        ("consumer_process_sigkill_three_times", |u, w| {
            Box::pin(consumer_process_killed_three_times(u, w))
        }),
        ("hundred_thousand_pipelined_sends_five_cuts", |u, w| {
            Box::pin(pipelined_sends_with_five_cuts(u, w))
        }),
    ];
    let mut trials = Vec::new();
    for (target, which, var) in brokers {
        let url = std::env::var(var)
            .ok()
            .filter(|u| !u.is_empty())
            .map(|u| rabbit_drivers::on_driver(&target, u));
        for (name, case) in cases {
            let test = format!("{target}::kill::{name}");
            match url.clone() {
                None => trials.push(broker_var::missing(test, var)),
                Some(url) => {
                    let rt = rt.clone();
                    trials.push(Trial::test(test, move || watched(&rt, case(url, which))));
                }
            }
        }
    }
    for (target, name, victim) in rabbit_targets("-cluster").into_iter().flat_map(|t| {
        [
            (
                t.clone(),
                "leader_node_sigkill_during_100k_sends",
                Victim::Leader,
            ),
            (
                t,
                "connected_node_sigkill_during_100k_sends",
                Victim::Connected,
            ),
        ]
    }) {
        let test = format!("{target}::kill::{name}");
        let var = "COOLMQ_TEST_RABBIT_CLUSTER_URL";
        match std::env::var(var)
            .ok()
            .filter(|u| !u.is_empty())
            .map(|u| rabbit_drivers::on_driver(&target, u))
        {
            None => trials.push(broker_var::missing(test, var)),
            Some(url) => {
                let rt = rt.clone();
                trials.push(Trial::test(test, move || {
                    watched(&rt, cluster_node_killed(url, victim))
                }));
            }
        }
    }
    for (target, pair, var) in [
        (
            "artemis-pair",
            Pair::Artemis,
            "COOLMQ_TEST_ARTEMIS_PAIR_URL",
        ),
        (
            "activemq-pair",
            Pair::Classic,
            "COOLMQ_TEST_ACTIVEMQ_PAIR_URL",
        ),
    ] {
        let test = format!("{target}::kill::serving_member_sigkill_during_50k_sends");
        match std::env::var(var).ok().filter(|u| !u.is_empty()) {
            None => trials.push(broker_var::missing(test, var)),
            Some(url) => {
                let rt = rt.clone();
                trials.push(Trial::test(test, move || {
                    watched(&rt, pair_member_killed(url, pair))
                }));
            }
        }
    }
    for target in rabbit_targets("") {
        let test = format!("{target}::alarm::memory_alarm_fails_sends_typed");
        match std::env::var("COOLMQ_TEST_RABBIT_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            None => trials.push(broker_var::missing(test, "COOLMQ_TEST_RABBIT_URL")),
            Some(url) => {
                let rt = rt.clone();
                // lapin announces `connection.blocked` and hears the alarm; amqprs does not
                // announce it, so its sends run out their confirm timeout instead.
                let refused = if target.contains("amqprs") {
                    ErrorKind::Timeout
                } else {
                    ErrorKind::Blocked
                };
                let url = rabbit_drivers::on_driver(&target, url);
                trials.push(Trial::test(test, move || {
                    watched(&rt, memory_alarm_blocks_publishing(url, refused))
                }));
            }
        }
    }
    libtest_mimic::run(&args, trials).exit_code()
}

/// RabbitMQ's target names, one per driver this build carries: `rabbit-<driver><suffix>`.
fn rabbit_targets(suffix: &str) -> Vec<String> {
    rabbit_drivers::rabbit_drivers()
        .into_iter()
        .map(|d| format!("rabbit-{d}{suffix}"))
        .collect()
}
