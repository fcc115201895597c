//! ActiveMQ-only tests against the real brokers named by `COOLMQ_TEST_ARTEMIS_URL` and
//! `COOLMQ_TEST_ACTIVEMQ_URL` (Classic):
//! - a restart test per broker: 5,000 persistent sends while the broker is restarted
//!   (`scripts/brokers restart …`); every send resolves within 30 s, resending the failures
//!   loses nothing (fe2o3 has no reconnect: coolmq's own reconnection is what is tested);
//! - wrong credentials are a typed `AuthenticationFailed`, never a hang.
//!
//! Trials run one at a time (a restart disturbs everything on that broker). Without the URLs
//! they are listed as ignored with the reason, never silently absent.

use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coolmq::{Config, Destination, ErrorKind, Message};
use libtest_mimic::{Arguments, Failed, Trial};

#[path = "common/broker_var.rs"]
mod broker_var;
mod support;

type TestResult = Result<(), Failed>;
type CaseFn = Box<dyn Fn(String) -> futures::future::BoxFuture<'static, TestResult> + Send + Sync>;

fn url(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|u| !u.is_empty())
}

fn restart_broker(which: &str) -> Result<(), Failed> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/brokers");
    let out = Command::new(script)
        .args(["restart", which])
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "restart {which} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

async fn restart_loses_nothing(url: String, which: &'static str) -> TestResult {
    const N: usize = 5_000;
    let mut config = Config::from_url(url)?;
    config.confirm_timeout = Duration::from_secs(10);
    config.connect_timeout = Duration::from_secs(5);
    let broker = coolmq::connect(&config).await.map_err(|e| {
        format!("cannot reach ActiveMQ ({e}); start it with `scripts/brokers start`")
    })?;
    let queue = format!("coolmq.test.restart.{}", coolmq::new_message_id());
    broker
        .declare_queue(&broker.queue_spec(&queue).dead_letter_queue(None))
        .await?;
    let publisher = broker.publisher().await?;
    let done = Arc::new(AtomicUsize::new(0));
    let restarter = {
        let done = done.clone();
        tokio::spawn(async move {
            // Early, and sends paced over 10 s: a JVM broker under load can take seconds to
            // stop, and the outage must fall inside the run.
            while done.load(Ordering::SeqCst) < N / 5 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let at = done.load(Ordering::SeqCst);
            let r = tokio::task::spawn_blocking(move || restart_broker(which))
                .await
                .expect("join");
            (at, Instant::now(), r)
        })
    };
    let start = Instant::now();
    let dest = Destination::queue(&queue);
    let run = support::paced_sends(
        &publisher,
        &dest,
        N,
        Duration::from_millis(2),
        512,
        "restart",
        done.clone(),
    )
    .await;
    let finished = run.finished;
    let (restarted_at, restart_done, restart) =
        restarter.await.map_err(|e| format!("restarter: {e}"))?;
    restart?;
    let hangs = run.hangs;
    let failed = run.failed;
    let errors = failed.len();
    let resent =
        support::resend_until_confirmed(&publisher, &dest, failed, 100, Duration::from_millis(200))
            .await?;
    let ids = (0..N).map(|i| format!("restart-{i}"));
    let tally = support::drain_and_tally(&broker, &queue, ids, Duration::from_secs(5)).await?;
    let _ = broker.delete_queue(&queue).await;
    let lost = tally.lost;
    println!(
        "{which} restart test: sent={N} errors={errors} resent={resent} received={} lost={lost} duplicates={} \
         hangs={hangs} restart_at_send={restarted_at} run={:?}",
        tally.received,
        tally.duplicates,
        finished - start
    );
    // The broker is down for seconds while sends go out every millisecond: a real restart
    // always fails some sends. None failing means the outage did not happen.
    if restart_done < start || restarted_at >= N || errors == 0 {
        return Err("the restart did not happen during the run".into());
    }
    if hangs > 0 {
        return Err(format!("{hangs} sends did not resolve within 30 s").into());
    }
    if lost > 0 {
        return Err(format!("{lost} messages lost").into());
    }
    // Every failure was resent once confirmed; only those can have left a second copy.
    if resent != errors {
        return Err(format!("{resent} resent for {errors} failures").into());
    }
    if tally.duplicates > errors {
        return Err(format!(
            "{} duplicates, more than the {errors} failures",
            tally.duplicates
        )
        .into());
    }
    if tally.received != N + tally.duplicates {
        return Err(format!(
            "received {} for {N} ids and {} duplicates",
            tally.received, tally.duplicates
        )
        .into());
    }
    Ok(())
}

async fn wrong_credentials_are_typed(url: String) -> TestResult {
    let mut u = url::Url::parse(&url).map_err(|e| e.to_string())?;
    u.set_password(Some("not-the-password"))
        .map_err(|_| "cannot set password")?;
    let mut config = Config::from_url(u.to_string())?;
    config.connect_timeout = Duration::from_secs(10);
    match tokio::time::timeout(Duration::from_secs(20), coolmq::connect(&config)).await {
        Err(_) => Err("connecting with wrong credentials hung".into()),
        Ok(Ok(_)) => Err("wrong credentials were accepted".into()),
        Ok(Err(e)) if e.kind() == ErrorKind::AuthenticationFailed => {
            if e.to_string().contains("not-the-password") {
                return Err(format!("the password leaked into the error: {e}").into());
            }
            Ok(())
        }
        Ok(Err(e)) => Err(format!("expected AuthenticationFailed, got {e}").into()),
    }
}

/// Topic bindings are diverts on Artemis: deleting the queue must remove them, or a queue of
/// the same name declared later would still receive the old topic's messages. On Classic the
/// binding must be refused with a typed error, not silently dropped.
async fn deleted_queue_loses_its_topic_bindings(url: String) -> TestResult {
    let broker = coolmq::connect_url(&url).await?;
    let unique = format!("coolmq.test.unbind.{}", uuid::Uuid::new_v4().simple());
    let topic = format!("{unique}.events.created");
    let spec = coolmq::QueueSpec::new(format!("{unique}.q")).bind(format!("{unique}.events.*"));
    if !broker.capabilities().topics {
        return match broker.declare_queue(&spec).await {
            Err(e) if e.kind() == ErrorKind::Unsupported => Ok(()),
            other => Err(format!("expected Unsupported for a topic binding, got {other:?}").into()),
        };
    }
    broker.declare_queue(&spec).await?;
    let publisher = broker.publisher().await?;
    publisher
        .send(&Destination::topic(&topic), Message::new("bound"))
        .await?;
    expect(
        "copies while bound",
        broker.queue_depth(&spec.name).await?,
        1,
    )?;
    broker.delete_queue(&spec.name).await?;
    let plain = coolmq::QueueSpec::new(spec.name.clone());
    broker.declare_queue(&plain).await?;
    publisher
        .send(&Destination::topic(&topic), Message::new("after delete"))
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let depth = broker.queue_depth(&spec.name).await?;
    broker.delete_queue(&spec.name).await?;
    if let Some(dlq) = &spec.dead_letter_queue {
        broker.delete_queue(dlq).await?;
    }
    expect(
        "copies after the queue was deleted and declared again",
        depth,
        0,
    )
}

/// Build the Java JMS program once (Maven caches its dependencies) and return how to run it.
fn jms_classpath() -> Result<String, Failed> {
    static CP: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    CP.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/jms");
        let out = Command::new("mvn")
            .args([
                "-q",
                "-B",
                "compile",
                "dependency:build-classpath",
                "-Dmdep.outputFile=target/classpath.txt",
            ])
            .current_dir(dir)
            .output()
            .map_err(|e| format!("cannot run mvn: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "building the JMS program failed: {}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        let deps = std::fs::read_to_string(format!("{dir}/target/classpath.txt"))
            .map_err(|e| e.to_string())?;
        Ok(format!("{dir}/target/classes:{}", deps.trim()))
    })
    .clone()
    .map_err(Into::into)
}

/// Run the JMS program against the broker of `url` (a coolmq `amqp1://` URL).
fn jms(mode: &str, url: &str, queue: &str) -> Result<serde_json::Value, Failed> {
    let u = url::Url::parse(url).map_err(|e| e.to_string())?;
    // Bounded waits: a broker that withholds credit (e.g. Artemis blocking producers when the
    // disk is nearly full) must fail the test with an error, not hang it.
    let broker = format!(
        "amqp://{}:{}?jms.sendTimeout=30000&jms.requestTimeout=30000&jms.connectTimeout=15000",
        u.host_str().unwrap_or("127.0.0.1"),
        u.port().unwrap_or(5672)
    );
    let out = Command::new("java")
        .args([
            "-cp",
            &jms_classpath()?,
            "JmsInterop",
            mode,
            &broker,
            u.username(),
            u.password().unwrap_or(""),
            queue,
        ])
        .output()
        .map_err(|e| format!("cannot run java: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "JMS {mode} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).map_err(|e| format!("JMS output {text:?}: {e}").into())
}

fn expect<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> TestResult {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}").into())
    }
}

/// A JMS application (Qpid JMS) sends a MapMessage (an `amqp-value` body), a StreamMessage
/// (`amqp-sequence`) and a TextMessage with extreme properties ahead of 20 ordinary
/// messages: a `Worker` takes all 23, nothing panics, fails or is left behind, and the
/// non-Data bodies arrive whole (AMQP-encoded, marked).
async fn jms_extreme_values_never_stop_a_worker(url: String) -> TestResult {
    use coolmq::HeaderValue as H;
    let broker = coolmq::connect(&Config::from_url(url.clone())?).await?;
    let queue = format!("coolmq.test.jms-extreme.{}", coolmq::new_message_id());
    broker.declare_queue(&broker.queue_spec(&queue)).await?;
    let ids = jms("extreme", &url, &queue)?;
    let (counts, seen) = support::handle_all(&broker, &queue, 23).await?;
    println!(
        "{}: JMS extreme values: {counts:?}",
        coolmq::redact_url(&url)
    );
    expect("acked", counts.acked, 23)?;
    expect("received", counts.received, 23)?;
    expect("failed", counts.failed, 0)?;
    expect("dead-lettered", counts.dead_lettered, 0)?;
    expect("settle errors", counts.settle_errors, 0)?;
    let by_id = |key: &str| {
        let id = ids[key].as_str().unwrap_or_default().to_string();
        seen.iter().find(|m| m.id == id).cloned()
    };
    for key in ["map", "stream"] {
        let m = by_id(key).ok_or(format!("the {key} message was not handled"))?;
        let kind = m.headers.get("coolmq_amqp_body").and_then(H::as_str);
        expect(
            &format!("{key} body marked as an AMQP section"),
            kind.is_some_and(|k| k.starts_with("amqp-")),
            true,
        )?;
        expect(&format!("{key} body kept"), m.body.is_empty(), false)?;
    }
    let text = by_id("text").ok_or("the text message was not handled")?;
    let h = &text.headers;
    expect("max", h.get("max"), Some(&H::I64(i64::MAX)))?;
    expect("min", h.get("min"), Some(&H::I64(i64::MIN)))?;
    expect(
        "nan",
        h.get("nan")
            .is_some_and(|v| matches!(v, H::F64(x) if x.is_nan())),
        true,
    )?;
    expect("inf", h.get("inf"), Some(&H::F32(f32::INFINITY)))?;
    expect("empty", h.get("empty"), Some(&H::from("")))?;
    expect(
        "group",
        h.get("JMSXGroupID").and_then(H::as_str),
        Some("g-1"),
    )?;
    let ordinary = seen
        .iter()
        .filter(|m| {
            m.headers
                .get("n")
                .and_then(H::as_str)
                .is_some_and(|n| n.starts_with("ok-"))
        })
        .count();
    expect("ordinary messages handled", ordinary, 20)?;
    expect("left in the queue", broker.queue_depth(&queue).await?, 0)?;
    let _ = broker.delete_queue(&queue).await;
    let _ = broker.delete_queue(&format!("DLQ.{queue}")).await;
    broker.close().await?;
    Ok(())
}

/// A JMS application (Qpid JMS) sends; coolmq maps JMS headers and properties.
async fn jms_sends_coolmq_receives(url: String) -> TestResult {
    use coolmq::HeaderValue as H;
    let broker = coolmq::connect(&Config::from_url(url.clone())?).await?;
    let queue = format!("coolmq.test.jms-in.{}", coolmq::new_message_id());
    broker
        .declare_queue(&broker.queue_spec(&queue).dead_letter_queue(None))
        .await?;
    let sent = jms("send", &url, &queue)?;
    let mut c = broker.consumer(&queue).await?;
    let d = tokio::time::timeout(Duration::from_secs(20), c.recv())
        .await
        .map_err(|_| "no message from JMS")??
        .ok_or("consumer closed")?;
    let m = d.message().clone();
    d.ack().await?;
    c.close().await?;
    let _ = broker.delete_queue(&queue).await;
    expect("id", Some(m.id.as_str()), sent["sent"].as_str())?;
    expect("body", &m.body[..], &[0u8, 1, 2, 255][..])?;
    expect(
        "JMSCorrelationID",
        m.correlation_id.as_deref(),
        Some("corr-jms"),
    )?;
    expect("JMSType", m.kind.as_deref(), Some("JmsEvent"))?;
    expect(
        "JMSReplyTo",
        m.reply_to
            .as_deref()
            .is_some_and(|r| r.contains("jms.replies")),
        true,
    )?;
    expect("JMSPriority", m.priority, Some(6))?;
    expect("persistent", m.persistent, true)?;
    expect("ttl", m.ttl, Some(Duration::from_secs(600)))?;
    let h = &m.headers;
    expect("str", h.get("str"), Some(&H::from("hello")))?;
    expect("int", h.get("int"), Some(&H::I32(42)))?;
    expect("long", h.get("long"), Some(&H::I64(1 << 40)))?;
    expect("flag", h.get("flag"), Some(&H::Bool(true)))?;
    expect("dbl", h.get("dbl"), Some(&H::F64(2.5)))?;
    expect("flt", h.get("flt"), Some(&H::F32(1.5)))?;
    expect("shrt", h.get("shrt"), Some(&H::I16(7)))?;
    expect("byt", h.get("byt"), Some(&H::I8(-3)))
}

/// coolmq sends; a JMS application reads a BytesMessage with JMS headers and typed properties.
async fn coolmq_sends_jms_receives(url: String) -> TestResult {
    let broker = coolmq::connect(&Config::from_url(url.clone())?).await?;
    let queue = format!("coolmq.test.jms-out.{}", coolmq::new_message_id());
    broker
        .declare_queue(&broker.queue_spec(&queue).dead_letter_queue(None))
        .await?;
    let m = Message::new(vec![9u8, 8, 7])
        .with_id("coolmq-1")
        .with_correlation_id("corr-coolmq")
        .with_kind("CoolEvent")
        .with_priority(7)
        .with_header("s", "text")
        .with_header("i", 7i32)
        .with_header("l", -(1i64 << 40))
        .with_header("b", true)
        .with_header("d", 0.25f64)
        .with_header("f", 0.5f32)
        .with_header("sh", 300i16)
        .with_header("by", -1i8);
    broker
        .publisher()
        .await?
        .send(&Destination::queue(&queue), m)
        .await?;
    let j = jms("recv", &url, &queue)?;
    let _ = broker.delete_queue(&queue).await;
    expect("class", j["class"].as_str(), Some("JmsBytesMessage"))?;
    expect("body", j["body"].clone(), serde_json::json!([9, 8, 7]))?;
    expect(
        "JMSMessageID",
        j["id"].as_str().is_some_and(|id| id.ends_with("coolmq-1")),
        true,
    )?;
    expect(
        "JMSCorrelationID",
        j["correlation_id"].as_str(),
        Some("corr-coolmq"),
    )?;
    expect("JMSType", j["type"].as_str(), Some("CoolEvent"))?;
    expect("JMSPriority", j["priority"].as_i64(), Some(7))?;
    expect("persistent", j["persistent"].as_bool(), Some(true))?;
    expect(
        "JMSTimestamp set",
        j["timestamp"].as_i64().is_some_and(|t| t > 0),
        true,
    )?;
    let p = &j["properties"];
    for (name, ty, value) in [
        ("s", "String", "text"),
        ("i", "Integer", "7"),
        ("l", "Long", "-1099511627776"),
        ("b", "Boolean", "true"),
        ("d", "Double", "0.25"),
        ("f", "Float", "0.5"),
        ("sh", "Short", "300"),
        ("by", "Byte", "-1"),
    ] {
        expect(
            name,
            (p[name]["type"].as_str(), p[name]["value"].as_str()),
            (Some(ty), Some(value)),
        )?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    let rt = Arc::new(tokio::runtime::Runtime::new().expect("runtime"));
    let mut trials = Vec::new();
    for (name, var, which) in [
        ("artemis", "COOLMQ_TEST_ARTEMIS_URL", "artemis"),
        ("activemq", "COOLMQ_TEST_ACTIVEMQ_URL", "classic"),
    ] {
        let tests: [(&str, CaseFn); 6] = [
            (
                "topic::deleted_queue_loses_its_topic_bindings",
                Box::new(|u| Box::pin(deleted_queue_loses_its_topic_bindings(u))),
            ),
            (
                "jms::qpid_jms_sends_coolmq_receives",
                Box::new(|u| Box::pin(jms_sends_coolmq_receives(u))),
            ),
            (
                "jms::qpid_jms_extreme_values_never_stop_a_worker",
                Box::new(|u| Box::pin(jms_extreme_values_never_stop_a_worker(u))),
            ),
            (
                "jms::coolmq_sends_qpid_jms_receives",
                Box::new(|u| Box::pin(coolmq_sends_jms_receives(u))),
            ),
            (
                "credentials::wrong_password_is_authentication_failed",
                Box::new(|u| Box::pin(wrong_credentials_are_typed(u))),
            ),
            (
                "fault::broker_restart_loses_nothing",
                Box::new(move |u| Box::pin(restart_loses_nothing(u, which))),
            ),
        ];
        for (case, f) in tests {
            let full = format!("{name}::{case}");
            match url(var) {
                None => trials.push(broker_var::missing(full, var)),
                Some(u) => {
                    let rt = rt.clone();
                    trials.push(Trial::test(full, move || rt.block_on(f(u))));
                }
            }
        }
    }
    libtest_mimic::run(&args, trials).exit_code()
}
