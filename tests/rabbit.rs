//! RabbitMQ-only tests against the real broker named by `COOLMQ_TEST_RABBIT_URL`:
//! - a fault test: 10,000 persistent confirmed sends while every connection is force-closed
//!   twice; every send resolves within 30 s, resending the failures loses nothing;
//! - interop with clients nobody here wrote: pika (Python) and amqp-tools (C) publish, coolmq
//!   consumes with every property and header mapped, and pika reads coolmq's message intact.
//!
//! Every trial runs once per driver (lapin, and amqprs with the `rabbit-amqprs` feature), named
//! `rabbit::<driver>::…`. Trials run one at a time (the fault test closes every connection on
//! the broker). Without the URL they are listed as ignored with the reason, never silently
//! absent.

use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coolmq::{Config, Destination, HeaderValue, Message};
use libtest_mimic::{Arguments, Failed, Trial};

#[path = "common/broker_var.rs"]
mod broker_var;
#[path = "common/rabbit_drivers.rs"]
mod rabbit_drivers;
mod support;

type TestResult = Result<(), Failed>;

/// The driver the running trial uses (trials run one at a time).
static DRIVER: std::sync::Mutex<&'static str> = std::sync::Mutex::new("lapin");

/// The broker URL with the running trial's driver.
fn url() -> Option<String> {
    let driver = *DRIVER.lock().unwrap_or_else(|p| p.into_inner());
    Some(rabbit_drivers::on_driver(
        &format!("rabbit-{driver}"),
        configured_url()?,
    ))
}

fn configured_url() -> Option<String> {
    std::env::var("COOLMQ_TEST_RABBIT_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

fn unique(name: &str) -> String {
    format!("coolmq.test.{name}.{}", coolmq::new_message_id())
}

async fn broker(tune: impl FnOnce(&mut Config)) -> Result<coolmq::Broker, Failed> {
    let url = url().expect("checked");
    let mut config = Config::from_url(url)?;
    tune(&mut config);
    coolmq::connect(&config).await.map_err(|e| {
        format!("cannot reach RabbitMQ ({e}); start it with `scripts/brokers start`").into()
    })
}

fn run_cmd(cmd: &mut Command) -> Result<String, Failed> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// 10,000 persistent messages with confirms, `rabbitmqctl close_all_connections` twice
/// during the run; then resend the failures and count what arrived.
async fn fault_close_all_connections() -> TestResult {
    const N: usize = 10_000;
    let broker = broker(|c| c.confirm_timeout = Duration::from_secs(10)).await?;
    let queue = unique("fault");
    broker
        .declare_queue(&broker.queue_spec(&queue).dead_letter_queue(None))
        .await?;
    let publisher = broker.publisher().await?;
    let done = Arc::new(AtomicUsize::new(0));

    // The killer closes every connection at a quarter and at half of the run. Each
    // `rabbitmqctl` call takes 1-2 s to start (an Erlang VM), so a kill lands that much after
    // its mark: at one and two thirds of a 5 s run the second kill once landed after the last
    // send. Marks this early, and a 10 s run, leave about 3 s to spare.
    let killer = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut kills = Vec::new();
            for mark in [N / 4, N / 2] {
                while done.load(Ordering::SeqCst) < mark {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let started = Instant::now();
                let out = tokio::task::spawn_blocking(|| {
                    run_cmd(
                        Command::new("rabbitmqctl")
                            .args(["close_all_connections", "coolmq fault test"]),
                    )
                })
                .await
                .expect("join");
                kills.push((
                    started,
                    Instant::now(),
                    done.load(Ordering::SeqCst),
                    out.map(|text| closed_count(&text)),
                ));
            }
            kills
        })
    };

    // Paced at ~1,000 sends/s so both faults land while sends are in flight.
    let start = Instant::now();
    let dest = Destination::queue(&queue);
    let run = support::paced_sends(
        &publisher,
        &dest,
        N,
        Duration::from_millis(1),
        1024,
        "fault",
        done.clone(),
    )
    .await;
    let finished = run.finished;
    let kills = killer.await.map_err(|e| format!("killer: {e}"))?;
    let mut closed = Vec::new();
    for (_, _, _, r) in &kills {
        closed.push(*r.as_ref().map_err(|e| format!("rabbitmqctl: {e:?}"))?);
    }
    let (hangs, kinds) = (run.hangs, run.kinds);
    // Sends that failed after each kill and before the next (or the end): a kill that closed
    // nothing would leave none.
    let per_kill: Vec<usize> = kills
        .iter()
        .enumerate()
        .map(|(k, (started, _, _, _))| {
            let until = kills.get(k + 1).map_or(finished, |next| next.0);
            run.error_times
                .iter()
                .filter(|t| **t >= *started && **t < until)
                .count()
        })
        .collect();
    let errors = run.failed;
    let error_count = errors.len();

    // Resend what failed, with the same ids, until the broker confirms each; then count.
    let resent =
        support::resend_until_confirmed(&publisher, &dest, errors, 50, Duration::from_millis(100))
            .await?;
    let ids = (0..N).map(|i| format!("fault-{i}"));
    let tally = support::drain_and_tally(&broker, &queue, ids, Duration::from_secs(3)).await?;
    broker.delete_queue(&queue).await?;
    let (lost, duplicates) = (tally.lost, tally.duplicates);
    println!(
        "rabbit fault test: sent={N} errors={error_count} {kinds:?} errors_per_kill={per_kill:?} \
         resent={resent} received={} lost={lost} duplicates={duplicates} hangs={hangs} \
         kills_at_sends={:?} connections_closed={closed:?} run={:?}",
        tally.received,
        kills.iter().map(|k| k.2).collect::<Vec<_>>(),
        finished - start
    );
    if kills.iter().any(|(_, ended, _, _)| *ended > finished) {
        return Err("a connection kill landed after the run: the fault was not exercised".into());
    }
    if hangs > 0 {
        return Err(format!("{hangs} sends did not resolve within 30 s").into());
    }
    if lost > 0 {
        return Err(format!("{lost} confirmed-or-resent messages were lost").into());
    }
    // Each kill must close the publisher's connection (at least); whether a send was in
    // flight at that instant is chance, so the failures are checked as a whole: every one
    // came after a kill, and each was resent.
    if let Some(k) = closed.iter().position(|n| *n == Some(0) || n.is_none()) {
        return Err(format!("kill {} closed no connection: {closed:?}", k + 1).into());
    }
    if per_kill.iter().sum::<usize>() != error_count {
        return Err(format!(
            "{error_count} sends failed, {} of them after a kill: a send failed without a fault",
            per_kill.iter().sum::<usize>()
        )
        .into());
    }
    // Every failure was resent once confirmed; only those can have left a second copy.
    if resent != error_count {
        return Err(format!("{resent} resent for {error_count} failures").into());
    }
    if duplicates > error_count {
        return Err(
            format!("{duplicates} duplicates, more than the {error_count} failures").into(),
        );
    }
    if tally.received != N + duplicates {
        return Err(format!(
            "received {} for {N} ids and {duplicates} duplicates",
            tally.received
        )
        .into());
    }
    Ok(())
}

/// How many connections `rabbitmqctl close_all_connections` says it closed ("Closed N
/// connections").
fn closed_count(output: &str) -> Option<usize> {
    output
        .lines()
        .find_map(|l| l.strip_prefix("Closed ")?.split(' ').next()?.parse().ok())
}

fn pika(args: &[&str]) -> Result<String, Failed> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/pika_client.py");
    run_cmd(Command::new("python3").arg(script).args(args))
}

async fn recv_one(broker: &coolmq::Broker, queue: &str) -> Result<Message, Failed> {
    let mut c = broker.consumer(queue).await?;
    let d = tokio::time::timeout(Duration::from_secs(20), c.recv())
        .await
        .map_err(|_| "no message within 20 s")??
        .ok_or("consumer closed")?;
    let m = d.message().clone();
    d.ack().await?;
    c.close().await?;
    Ok(m)
}

fn expect<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> TestResult {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}").into())
    }
}

/// Wait for the next delivery of `queue` up to `within`, acking it.
async fn next_within(
    broker: &coolmq::Broker,
    queue: &str,
    within: Duration,
) -> Result<(Message, Duration), Failed> {
    let start = Instant::now();
    let mut c = broker.consumer(queue).await?;
    let d = tokio::time::timeout(within, c.recv())
        .await
        .map_err(|_| format!("nothing on {queue} within {within:?}"))??
        .ok_or("consumer closed")?;
    let m = d.message().clone();
    d.ack().await?;
    c.close().await?;
    Ok((m, start.elapsed()))
}

/// A delayed message whose work queue is full (reject-publish) when its delay ends stays in
/// its delay tier and arrives once the queue has room: the hop back is at-least-once.
async fn delay_full_work_queue_keeps_the_delayed_copy() -> TestResult {
    let broker = broker(|_| {}).await?;
    let queue = unique("delay-full");
    broker
        .declare_queue(
            &broker
                .queue_spec(&queue)
                .dead_letter_queue(None)
                .max_length(1),
        )
        .await?;
    let p = broker.publisher().await?;
    let dest = Destination::queue(&queue);
    p.send(&dest, Message::new("filler").with_id("filler"))
        .await?;
    let delay = Duration::from_millis(700);
    p.send(&dest, Message::new("delayed").with_id("delayed"))
        .delay(delay)
        .await?;
    // The delay ends while the queue is full: RabbitMQ refuses the hop back.
    tokio::time::sleep(delay + Duration::from_millis(1500)).await;
    expect("depth while full", broker.queue_depth(&queue).await?, 1)?;
    let (first, _) = next_within(&broker, &queue, Duration::from_secs(5)).await?;
    expect("first message", first.id.as_str(), "filler")?;
    // The tier retries every 2 s (the test broker's dead_letter_worker_publisher_confirm_timeout):
    // the copy must arrive within 2 retries and a second of slack.
    let (second, waited) = next_within(&broker, &queue, Duration::from_secs(5)).await?;
    println!("delayed copy arrived {waited:?} after the queue had room");
    expect(
        "arrived within 2 retries + 1 s",
        waited <= Duration::from_secs(5),
        true,
    )?;
    expect("delayed message", second.id.as_str(), "delayed")?;
    expect("left", broker.queue_depth(&queue).await?, 0)?;
    broker.delete_queue(&queue).await?;
    Ok(())
}

/// A delayed message whose work queue is deleted during the delay arrives once the queue is
/// declared again.
async fn delay_deleted_work_queue_keeps_the_delayed_copy() -> TestResult {
    let broker = broker(|_| {}).await?;
    let queue = unique("delay-deleted");
    let spec = broker.queue_spec(&queue).dead_letter_queue(None);
    broker.declare_queue(&spec).await?;
    let p = broker.publisher().await?;
    let delay = Duration::from_millis(700);
    p.send(
        &Destination::queue(&queue),
        Message::new("delayed").with_id("delayed"),
    )
    .delay(delay)
    .await?;
    broker.delete_queue(&queue).await?;
    tokio::time::sleep(delay + Duration::from_millis(1500)).await;
    broker.declare_queue(&spec).await?;
    // Within 2 retries (2 s each on the test broker) and a second of slack.
    let (m, waited) = next_within(&broker, &queue, Duration::from_secs(5)).await?;
    println!("delayed copy arrived {waited:?} after the queue was declared again");
    expect(
        "arrived within 2 retries + 1 s",
        waited <= Duration::from_secs(5),
        true,
    )?;
    expect("delayed message", m.id.as_str(), "delayed")?;
    expect("left", broker.queue_depth(&queue).await?, 0)?;
    broker.delete_queue(&queue).await?;
    Ok(())
}

/// pika publishes legal but extreme values (the largest timestamp, 60 levels of nested
/// tables, non-UTF-8 bytes, 64-bit extremes, no message id) ahead of 20 ordinary messages: a
/// `Worker` takes every one of them, nothing panics, nothing is dead-lettered or left behind.
async fn interop_pika_extreme_values_never_stop_a_worker() -> TestResult {
    let broker = broker(|_| {}).await?;
    let queue = unique("pika-extreme");
    broker.declare_queue(&broker.queue_spec(&queue)).await?;
    pika(&["extreme", &configured_url().expect("set"), &queue])?;
    let (counts, seen) = support::handle_all(&broker, &queue, 23).await?;
    println!("pika extreme values: {counts:?}");
    expect("acked", counts.acked, 23)?;
    expect("received", counts.received, 23)?;
    expect("failed", counts.failed, 0)?;
    expect("dead-lettered", counts.dead_lettered, 0)?;
    expect("settle errors", counts.settle_errors, 0)?;
    let by_id = |id: &str| seen.iter().find(|m| m.id == id).cloned();
    let ts = by_id("x-timestamp").ok_or("x-timestamp not handled")?;
    expect("out-of-range timestamp", ts.timestamp, None)?;
    expect(
        "raw timestamp header",
        ts.headers
            .get("coolmq_amqp_timestamp")
            .and_then(HeaderValue::as_str),
        Some("18446744073709551615"),
    )?;
    let h = by_id("x-headers").ok_or("x-headers not handled")?.headers;
    expect(
        "bytes",
        h.get("bytes"),
        Some(&HeaderValue::Bytes(vec![0xff, 0xfe, 0])),
    )?;
    expect(
        "max",
        h.get("max").and_then(HeaderValue::as_i64),
        Some(i64::MAX),
    )?;
    expect(
        "min",
        h.get("min").and_then(HeaderValue::as_i64),
        Some(i64::MIN),
    )?;
    expect(
        "user id",
        h.get("coolmq_user_id").and_then(HeaderValue::as_str),
        Some("guest"),
    )?;
    expect(
        "cluster id",
        h.get("coolmq_cluster_id").and_then(HeaderValue::as_str),
        Some("c-1"),
    )?;
    let mut depth = 0;
    let mut v = h.get("deep");
    while let Some(HeaderValue::Map(m)) = v {
        depth += 1;
        v = m.get("d");
    }
    expect("nesting depth", depth, 60)?;
    let ordinary = (0..20)
        .filter(|i| by_id(&format!("ok-{i}")).is_some())
        .count();
    expect("ordinary messages handled", ordinary, 20)?;
    expect("left in the queue", broker.queue_depth(&queue).await?, 0)?;
    broker.delete_queue(&queue).await?;
    broker.delete_queue(&format!("DLQ.{queue}")).await?;
    Ok(())
}

/// pika publishes with every property and typed headers; coolmq maps them all.
async fn interop_pika_publishes_coolmq_consumes() -> TestResult {
    let broker = broker(|_| {}).await?;
    let queue = unique("pika-in");
    broker
        .declare_queue(&broker.queue_spec(&queue).dead_letter_queue(None))
        .await?;
    pika(&["publish", &configured_url().expect("set"), &queue])?;
    let m = recv_one(&broker, &queue).await?;
    broker.delete_queue(&queue).await?;
    expect("body", &m.body[..], br#"{"from":"pika"}"#)?;
    expect("id", m.id.as_str(), "pika-1")?;
    expect(
        "correlation id",
        m.correlation_id.as_deref(),
        Some("corr-pika"),
    )?;
    expect("reply-to", m.reply_to.as_deref(), Some("pika.replies"))?;
    expect(
        "content type",
        m.content_type.as_deref(),
        Some("application/json"),
    )?;
    expect("type", m.kind.as_deref(), Some("PikaEvent"))?;
    expect("priority", m.priority, Some(5))?;
    expect("persistent", m.persistent, true)?;
    expect("ttl", m.ttl, Some(Duration::from_secs(600)))?;
    expect(
        "timestamp",
        m.timestamp,
        Some(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
    )?;
    let h = &m.headers;
    expect(
        "str",
        h.get("str").and_then(HeaderValue::as_str),
        Some("hello"),
    )?;
    expect("int", h.get("int").and_then(HeaderValue::as_i64), Some(42))?;
    expect(
        "big",
        h.get("big").and_then(HeaderValue::as_i64),
        Some(1 << 40),
    )?;
    expect("neg", h.get("neg").and_then(HeaderValue::as_i64), Some(-7))?;
    expect("bool", h.get("bool"), Some(&HeaderValue::Bool(true)))?;
    expect("decimal", h.get("decimal"), Some(&HeaderValue::F64(2.5)))?;
    let list = match h.get("list") {
        Some(HeaderValue::List(l)) => l.clone(),
        other => return Err(format!("list header: {other:?}").into()),
    };
    expect("list[0]", list[0].as_i64(), Some(1))?;
    expect("list[1]", list[1].as_str(), Some("two"))?;
    match h.get("map") {
        Some(HeaderValue::Map(map)) => expect(
            "map.inner",
            map.get("inner").and_then(HeaderValue::as_str),
            Some("x"),
        ),
        other => Err(format!("map header: {other:?}").into()),
    }
}

/// amqp-tools (librabbitmq, C) publishes; coolmq maps its properties and header.
async fn interop_amqp_tools_publishes_coolmq_consumes() -> TestResult {
    let broker = broker(|_| {}).await?;
    let queue = unique("amqp-tools-in");
    broker
        .declare_queue(&broker.queue_spec(&queue).dead_letter_queue(None))
        .await?;
    run_cmd(Command::new("amqp-publish").args([
        "--url",
        &configured_url().expect("set"),
        "-r",
        &queue,
        "-p",
        "-C",
        "text/plain",
        "-t",
        "tools.replies",
        "-H",
        "tenant: acme",
        "-b",
        "from amqp-publish",
    ]))?;
    let m = recv_one(&broker, &queue).await?;
    broker.delete_queue(&queue).await?;
    expect("body", &m.body[..], b"from amqp-publish")?;
    expect(
        "content type",
        m.content_type.as_deref(),
        Some("text/plain"),
    )?;
    expect("reply-to", m.reply_to.as_deref(), Some("tools.replies"))?;
    expect("persistent", m.persistent, true)?;
    expect(
        "header",
        m.headers.get("tenant").and_then(HeaderValue::as_str),
        Some("acme"),
    )?;
    if m.id.is_empty() {
        return Err("a message without message-id must still get an id".into());
    }
    Ok(())
}

/// amqp-tools (librabbitmq) sends a header's text as the bytes it is given, so a foreign
/// message can carry a long string that is not UTF-8: it arrives as bytes, and the messages
/// around it arrive too (nothing wedges the queue). Prefetch 5, so on amqprs the lapin rescue
/// ends within the run and amqprs receives the rest. On amqprs each of the two connection
/// drops before the rescue can bring back the prefetch's worth of unacked deliveries: their
/// acks are stale and the copies come again, at most 2 × 5 duplicates.
async fn interop_amqp_tools_non_utf8_header_is_delivered() -> TestResult {
    use std::collections::HashMap;
    use std::os::unix::ffi::OsStrExt;
    const PREFETCH: u16 = 5;
    const BEFORE: usize = 5;
    const AFTER: usize = 20;
    const DUPLICATES_BOUND: usize = 2 * PREFETCH as usize;
    let broker = broker(|_| {}).await?;
    let queue = unique("amqp-tools-bytes");
    broker
        .declare_queue(&broker.queue_spec(&queue).dead_letter_queue(None))
        .await?;
    let url = configured_url().expect("set");
    let publish = |header: &[u8], body: &str| {
        let mut cmd = Command::new("amqp-publish");
        cmd.args(["--url", &url, "-r", &queue, "-p", "-b", body, "-H"])
            .arg(std::ffi::OsStr::from_bytes(header));
        run_cmd(&mut cmd).map(|_| ())
    };
    let mut expected: Vec<String> = (0..BEFORE).map(|i| format!("before-{i}")).collect();
    expected.push("hostile".into());
    expected.extend((0..AFTER).map(|i| format!("after-{i}")));
    for body in &expected {
        if body == "hostile" {
            publish(b"raw: \xff\xfe text", body)?;
        } else {
            publish(b"fine: yes", body)?;
        }
    }
    let mut c = broker.consumer_with_prefetch(&queue, PREFETCH).await?;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut raw = None;
    let mut stale = 0;
    while seen.len() < expected.len() {
        let d = tokio::time::timeout(Duration::from_secs(20), c.recv())
            .await
            .map_err(|_| format!("no message within 20 s; received {seen:?}"))??
            .ok_or("consumer closed")?;
        let body = String::from_utf8_lossy(&d.message().body).into_owned();
        if body == "hostile" {
            raw = d.message().headers.get("raw").cloned();
        }
        *seen.entry(body).or_default() += 1;
        match d.ack().await {
            Ok(()) => {}
            // Its connection dropped: the broker sends it again.
            Err(e) if e.kind() == coolmq::ErrorKind::StaleDelivery => stale += 1,
            Err(e) => return Err(e.into()),
        }
    }
    c.close().await?;
    let depth = broker.queue_depth(&queue).await?;
    broker.delete_queue(&queue).await?;
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    println!(
        "non-UTF-8 header: received {} of {} distinct, duplicates {duplicates}, stale acks {stale} (bound {DUPLICATES_BOUND} each), header {raw:?}, left {depth}",
        seen.len(),
        expected.len()
    );
    expect(
        "the header's bytes",
        raw,
        Some(HeaderValue::Bytes(b"\xff\xfe text".to_vec())),
    )?;
    if duplicates > DUPLICATES_BOUND || stale > DUPLICATES_BOUND {
        return Err(format!(
            "{duplicates} duplicates, {stale} stale acks: more than 2 drops × prefetch {PREFETCH}"
        )
        .into());
    }
    expect("messages left", depth, 0)?;
    Ok(())
}

/// coolmq publishes every property and header type; pika reads it back intact.
async fn interop_coolmq_publishes_pika_reads() -> TestResult {
    let broker = broker(|_| {}).await?;
    let queue = unique("pika-out");
    broker
        .declare_queue(&broker.queue_spec(&queue).dead_letter_queue(None))
        .await?;
    let mut map = std::collections::BTreeMap::new();
    map.insert("k".to_string(), HeaderValue::from("v"));
    let mut sent = Message::new(vec![0u8, 1, 2, 255])
        .with_id("coolmq-1")
        .with_correlation_id("corr-coolmq")
        .with_reply_to("coolmq.replies")
        .with_content_type("application/octet-stream")
        .with_kind("CoolEvent")
        .with_priority(3)
        .with_ttl(Duration::from_secs(60))
        .with_header("s", "text")
        .with_header("i32", 7i32)
        .with_header("i64", -(1i64 << 40))
        .with_header("b", false)
        // pika decodes floats through int(): integral values keep the check meaningful.
        .with_header("f", 4.0f64)
        .with_header("f32", 8.0f32)
        .with_header("raw", vec![9u8, 8])
        .with_header("list", vec![HeaderValue::I32(1), HeaderValue::from("x")])
        .with_header("map", map);
    sent.timestamp = Some(std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_123_456));
    broker
        .publisher()
        .await?
        .send(&Destination::queue(&queue), sent)
        .await?;
    let out = pika(&["get", &configured_url().expect("set"), &queue])?;
    broker.delete_queue(&queue).await?;
    let j: serde_json::Value =
        serde_json::from_str(out.trim()).map_err(|e| format!("pika output {out:?}: {e}"))?;
    expect("body", j["body"].clone(), serde_json::json!([0, 1, 2, 255]))?;
    expect("message_id", j["message_id"].as_str(), Some("coolmq-1"))?;
    expect(
        "correlation_id",
        j["correlation_id"].as_str(),
        Some("corr-coolmq"),
    )?;
    expect("reply_to", j["reply_to"].as_str(), Some("coolmq.replies"))?;
    expect(
        "content_type",
        j["content_type"].as_str(),
        Some("application/octet-stream"),
    )?;
    expect("type", j["type"].as_str(), Some("CoolEvent"))?;
    expect("priority", j["priority"].as_i64(), Some(3))?;
    expect("delivery_mode", j["delivery_mode"].as_i64(), Some(2))?;
    expect("expiration", j["expiration"].as_str(), Some("60000"))?;
    expect(
        "timestamp (seconds)",
        j["timestamp"].as_i64(),
        Some(1_700_000_123),
    )?;
    let h = &j["headers"];
    expect(
        "timestamp_in_ms",
        h["timestamp_in_ms"].as_i64(),
        Some(1_700_000_123_456),
    )?;
    expect("s", h["s"].as_str(), Some("text"))?;
    expect("i32", h["i32"].as_i64(), Some(7))?;
    expect("i64", h["i64"].as_i64(), Some(-(1i64 << 40)))?;
    expect("b", h["b"].as_bool(), Some(false))?;
    expect("f", h["f"].as_f64(), Some(4.0))?;
    expect("f32", h["f32"].as_f64(), Some(8.0))?;
    expect(
        "raw",
        h["raw"].clone(),
        serde_json::json!({"bytes": [9, 8]}),
    )?;
    expect("list", h["list"].clone(), serde_json::json!([1, "x"]))?;
    expect("map", h["map"].clone(), serde_json::json!({"k": "v"}))?;
    Ok(())
}

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let rt = Arc::new(rt);
    type Case = (
        &'static str,
        fn() -> futures::future::BoxFuture<'static, TestResult>,
    );
    let cases: Vec<Case> = vec![
        ("rabbit::interop::pika_publishes_coolmq_consumes", || {
            Box::pin(interop_pika_publishes_coolmq_consumes())
        }),
        (
            "rabbit::delay::full_work_queue_keeps_the_delayed_copy",
            || Box::pin(delay_full_work_queue_keeps_the_delayed_copy()),
        ),
        (
            "rabbit::delay::deleted_work_queue_keeps_the_delayed_copy",
            || Box::pin(delay_deleted_work_queue_keeps_the_delayed_copy()),
        ),
        (
            "rabbit::interop::pika_extreme_values_never_stop_a_worker",
            || Box::pin(interop_pika_extreme_values_never_stop_a_worker()),
        ),
        (
            "rabbit::interop::amqp_tools_publishes_coolmq_consumes",
            || Box::pin(interop_amqp_tools_publishes_coolmq_consumes()),
        ),
        (
            "rabbit::interop::amqp_tools_non_utf8_header_is_delivered",
            || Box::pin(interop_amqp_tools_non_utf8_header_is_delivered()),
        ),
        ("rabbit::interop::coolmq_publishes_pika_reads", || {
            Box::pin(interop_coolmq_publishes_pika_reads())
        }),
        (
            "rabbit::fault::close_all_connections_twice_loses_nothing",
            || Box::pin(fault_close_all_connections()),
        ),
    ];
    let configured = configured_url().is_some();
    let mut trials = Vec::new();
    for driver in rabbit_drivers::rabbit_drivers() {
        for (name, f) in &cases {
            // Each trial says its driver: rabbit::<driver>::<group>::<case>.
            let name = format!("rabbit::{driver}::{}", name.trim_start_matches("rabbit::"));
            if !configured {
                trials.push(broker_var::missing(&name, "COOLMQ_TEST_RABBIT_URL"));
                continue;
            }
            let (rt, f) = (rt.clone(), *f);
            trials.push(Trial::test(name, move || {
                *DRIVER.lock().unwrap_or_else(|p| p.into_inner()) = driver;
                rt.block_on(f())
            }));
        }
    }
    libtest_mimic::run(&args, trials).exit_code()
}
