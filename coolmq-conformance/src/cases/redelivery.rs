//! The worker's redelivery policy: attempts, delays, per-queue overrides, panics, and the
//! dead-letter queue with its metadata and the observer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use coolmq_core::dead_letter::{
    ATTEMPTS_HEADER, FIRST_FAILURE_HEADER, LAST_ERROR_HEADER, LAST_FAILURE_HEADER,
    ORIGIN_QUEUE_HEADER,
};
use coolmq_core::{
    DeadLetterEvent, DeadLetterObserver, HandlerError, HeaderValue, Message, PolicyOverride,
    RedeliveryPolicy, RedeliveryPolicyMap, Worker,
};

use super::case;
use crate::case::req::*;
use crate::{check, check_eq, Case, Ctx, Failed, TestResult};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        case!(
            "redelivery",
            always_failing_handler_is_dead_lettered_after_max,
            [CONFIRMS, DELAY, DLQ]
        ),
        case!(
            "redelivery",
            per_queue_override_beats_the_default,
            [CONFIRMS, DELAY, DLQ]
        ),
        case!(
            "redelivery",
            panic_counts_as_failure,
            [CONFIRMS, DELAY, DLQ]
        ),
        case!(
            "redelivery",
            success_on_third_attempt_is_acked_once,
            [CONFIRMS, DELAY, DLQ]
        ),
        case!(
            "redelivery",
            permanent_error_skips_redelivery,
            [CONFIRMS, DLQ]
        ),
        case!(
            "redelivery",
            waiting_retry_does_not_hold_back_later_messages,
            [CONFIRMS, DELAY, DLQ]
        ),
        case!(
            "redelivery",
            waiting_retry_survives_a_consumer_restart,
            [CONFIRMS, DELAY, DLQ]
        ),
    ]
}

/// Records every dead-letter event.
#[derive(Default)]
pub(crate) struct Recorder(pub Mutex<Vec<DeadLetterEvent>>);

#[async_trait]
impl DeadLetterObserver for Recorder {
    async fn on_dead_letter(&self, event: &DeadLetterEvent) {
        self.0.lock().expect("lock").push(event.clone());
    }
}

/// Every handler call: when, which attempt, which message.
pub(crate) type Calls = Arc<Mutex<Vec<(Instant, u32, String)>>>;

/// Poll `cond` until it holds or `within` passes.
pub(crate) async fn wait_until(
    within: Duration,
    what: &str,
    cond: impl Fn() -> bool,
) -> TestResult {
    let deadline = Instant::now() + within;
    while !cond() {
        if Instant::now() > deadline {
            return Err(Failed(format!(
                "timed out after {within:?} waiting for {what}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn policy(max: i32, initial_ms: u64, backoff: Option<f64>) -> RedeliveryPolicy {
    RedeliveryPolicy {
        maximum_redeliveries: max,
        initial_redelivery_delay: Duration::from_millis(initial_ms),
        redelivery_delay: Duration::from_millis(initial_ms),
        use_exponential_backoff: backoff.is_some(),
        backoff_multiplier: backoff.unwrap_or(5.0),
        ..Default::default()
    }
}

/// Start a worker whose handler records its calls and fails while `fail(attempt)`.
async fn failing_worker(
    ctx: &Ctx,
    broker: &coolmq_core::Broker,
    queue: &str,
    build: impl FnOnce(coolmq_core::WorkerBuilder) -> coolmq_core::WorkerBuilder,
    recorder: Arc<Recorder>,
    calls: Calls,
    fail: fn(&coolmq_core::Incoming) -> Option<HandlerError>,
) -> Result<Worker, Failed> {
    let _ = ctx;
    let worker = build(broker.worker(queue).observer(recorder))
        .start(move |incoming| {
            let calls = calls.clone();
            async move {
                calls.lock().expect("lock").push((
                    Instant::now(),
                    incoming.attempt,
                    incoming.message.id.clone(),
                ));
                match fail(&incoming) {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            }
        })
        .await?;
    Ok(worker)
}

fn header_str<'a>(m: &'a Message, name: &str) -> Option<&'a str> {
    m.headers.get(name).and_then(HeaderValue::as_str)
}

async fn always_failing_handler_is_dead_lettered_after_max(ctx: Ctx) -> TestResult {
    let spec = ctx.spec("poison");
    ctx.declare(&spec).await?;
    let dlq = spec.dead_letter_queue.clone().expect("dlq");
    let p = policy(3, 200, Some(2.0));
    let (recorder, calls) = (Arc::new(Recorder::default()), Calls::default());
    let worker = failing_worker(
        &ctx,
        &ctx.broker,
        &spec.name,
        |b| b.policy(p.clone()),
        recorder.clone(),
        calls.clone(),
        |i| {
            Some(HandlerError::msg(format!(
                "failure on attempt {}",
                i.attempt
            )))
        },
    )
    .await?;
    ctx.send(&spec.name, Message::new("poison").with_id("x-1"))
        .await?;
    wait_until(Duration::from_secs(30), "the dead-letter observer", || {
        !recorder.0.lock().unwrap().is_empty()
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    worker.shutdown(Duration::from_secs(5)).await?;

    let calls = calls.lock().unwrap().clone();
    let attempts: Vec<u32> = calls.iter().map(|c| c.1).collect();
    check_eq!(
        attempts,
        vec![1, 2, 3, 4],
        "attempts = maximum_redeliveries + 1"
    );
    for k in 1..calls.len() {
        let gap = calls[k].0 - calls[k - 1].0;
        let min = p.delay_for(k as u32);
        check!(
            gap >= min,
            "redelivery {k} came after {gap:?}, before the policy's {min:?}"
        );
        check!(
            gap <= min + crate::DELAY_SLACK,
            "redelivery {k} came after {gap:?}, later than the policy's {min:?} + {:?}",
            crate::DELAY_SLACK
        );
    }
    let events = recorder.0.lock().unwrap().clone();
    check_eq!(events.len(), 1, "observer calls");
    check_eq!(events[0].attempts, 4, "event attempts");
    check_eq!(events[0].queue, spec.name, "event queue");
    check_eq!(events[0].dead_letter_queue, dlq, "event DLQ");
    check!(
        events[0].first_failure() <= events[0].last_failure(),
        "failure times ordered"
    );

    let dead = ctx.drain(&dlq, Duration::from_millis(400)).await?;
    check_eq!(dead.len(), 1, "copies in the DLQ");
    let m = &dead[0];
    check_eq!(m.id, "x-1", "id");
    check_eq!(
        header_str(m, ORIGIN_QUEUE_HEADER),
        Some(spec.name.as_str()),
        "origin queue header"
    );
    check_eq!(
        m.headers.get(ATTEMPTS_HEADER).and_then(HeaderValue::as_i64),
        Some(4),
        "attempts header"
    );
    check_eq!(
        header_str(m, LAST_ERROR_HEADER),
        Some("failure on attempt 4"),
        "last error header"
    );
    let first = header_str(m, FIRST_FAILURE_HEADER)
        .ok_or_else(|| Failed("no first-failure header".into()))?;
    let last = header_str(m, LAST_FAILURE_HEADER)
        .ok_or_else(|| Failed("no last-failure header".into()))?;
    check!(
        first < last,
        "first failure {first} must be before last {last}"
    );
    check_eq!(
        ctx.broker.queue_depth(&spec.name).await?,
        0,
        "work queue empty"
    );
    Ok(())
}

async fn per_queue_override_beats_the_default(ctx: Ctx) -> TestResult {
    let spec = ctx.spec("override");
    ctx.declare(&spec).await?;
    let map = RedeliveryPolicyMap::new(policy(5, 50, None)).with_queue(
        spec.name.clone(),
        PolicyOverride {
            maximum_redeliveries: Some(1),
            ..Default::default()
        },
    );
    let (recorder, calls) = (Arc::new(Recorder::default()), Calls::default());
    let worker = failing_worker(
        &ctx,
        &ctx.broker,
        &spec.name,
        |b| b.policies(&map),
        recorder.clone(),
        calls.clone(),
        |_| Some(HandlerError::msg("nope")),
    )
    .await?;
    ctx.send(&spec.name, Message::new("o")).await?;
    wait_until(Duration::from_secs(20), "dead-lettering", || {
        !recorder.0.lock().unwrap().is_empty()
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    worker.shutdown(Duration::from_secs(5)).await?;
    check_eq!(
        calls.lock().unwrap().len(),
        2,
        "attempts with the override's maximum of 1"
    );
    Ok(())
}

async fn panic_counts_as_failure(ctx: Ctx) -> TestResult {
    let spec = ctx.spec("panic");
    ctx.declare(&spec).await?;
    let dlq = spec.dead_letter_queue.clone().expect("dlq");
    let (recorder, calls) = (Arc::new(Recorder::default()), Calls::default());
    let calls2 = calls.clone();
    let worker = ctx
        .broker
        .worker(&spec.name)
        .policy(policy(1, 50, None))
        .observer(recorder.clone())
        .start(move |incoming| {
            let calls = calls2.clone();
            async move {
                calls
                    .lock()
                    .unwrap()
                    .push((Instant::now(), incoming.attempt, incoming.message.id));
                if incoming.attempt > 0 {
                    panic!("kaboom in the handler");
                }
                Ok::<(), HandlerError>(())
            }
        })
        .await?;
    ctx.send(&spec.name, Message::new("boom")).await?;
    wait_until(Duration::from_secs(20), "dead-lettering", || {
        !recorder.0.lock().unwrap().is_empty()
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = worker.counts();
    worker.shutdown(Duration::from_secs(5)).await?;
    check_eq!(calls.lock().unwrap().len(), 2, "attempts");
    check_eq!(counts.failed, 2, "failures counted");
    let dead = ctx.drain(&dlq, Duration::from_millis(300)).await?;
    check_eq!(dead.len(), 1, "DLQ copies");
    let err = header_str(&dead[0], LAST_ERROR_HEADER).unwrap_or_default();
    check!(
        err.contains("panicked") && err.contains("kaboom"),
        "last error names the panic: {err:?}"
    );
    Ok(())
}

async fn success_on_third_attempt_is_acked_once(ctx: Ctx) -> TestResult {
    let spec = ctx.spec("third");
    ctx.declare(&spec).await?;
    let dlq = spec.dead_letter_queue.clone().expect("dlq");
    let (recorder, calls) = (Arc::new(Recorder::default()), Calls::default());
    let worker = failing_worker(
        &ctx,
        &ctx.broker,
        &spec.name,
        |b| b.policy(policy(5, 50, None)),
        recorder.clone(),
        calls.clone(),
        |i| (i.attempt < 3).then(|| HandlerError::msg("not yet")),
    )
    .await?;
    ctx.send(&spec.name, Message::new("eventually")).await?;
    wait_until(Duration::from_secs(20), "the ack", || {
        worker.counts().acked == 1
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let counts = worker.counts();
    worker.shutdown(Duration::from_secs(5)).await?;
    let attempts: Vec<u32> = calls.lock().unwrap().iter().map(|c| c.1).collect();
    check_eq!(attempts, vec![1, 2, 3], "attempts");
    check_eq!(
        (counts.acked, counts.dead_lettered),
        (1, 0),
        "acked once, never dead-lettered"
    );
    check_eq!(recorder.0.lock().unwrap().len(), 0, "observer calls");
    check_eq!(
        ctx.drain(&dlq, Duration::from_millis(300)).await?.len(),
        0,
        "DLQ"
    );
    check_eq!(ctx.broker.queue_depth(&spec.name).await?, 0, "work queue");
    Ok(())
}

async fn permanent_error_skips_redelivery(ctx: Ctx) -> TestResult {
    let spec = ctx.spec("permanent");
    ctx.declare(&spec).await?;
    let dlq = spec.dead_letter_queue.clone().expect("dlq");
    let (recorder, calls) = (Arc::new(Recorder::default()), Calls::default());
    let worker = failing_worker(
        &ctx,
        &ctx.broker,
        &spec.name,
        |b| b.policy(policy(5, 50, None)),
        recorder.clone(),
        calls.clone(),
        |_| Some(HandlerError::permanent("malformed order")),
    )
    .await?;
    ctx.send(&spec.name, Message::new("bad")).await?;
    wait_until(Duration::from_secs(20), "dead-lettering", || {
        !recorder.0.lock().unwrap().is_empty()
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.shutdown(Duration::from_secs(5)).await?;
    check_eq!(calls.lock().unwrap().len(), 1, "attempts");
    check_eq!(
        ctx.drain(&dlq, Duration::from_millis(300)).await?.len(),
        1,
        "DLQ copies"
    );
    Ok(())
}

async fn waiting_retry_does_not_hold_back_later_messages(ctx: Ctx) -> TestResult {
    let spec = ctx.spec("noblock");
    ctx.declare(&spec).await?;
    let (recorder, calls) = (Arc::new(Recorder::default()), Calls::default());
    let worker = failing_worker(
        &ctx,
        &ctx.broker,
        &spec.name,
        |b| b.policy(policy(2, 1000, None)),
        recorder,
        calls.clone(),
        |i| {
            (i.message.id == "A" && i.attempt == 1)
                .then(|| HandlerError::msg("A's first attempt fails"))
        },
    )
    .await?;
    let p = ctx.publisher().await?;
    let dest = coolmq_core::Destination::queue(&spec.name);
    p.send(&dest, Message::new("a").with_id("A")).await?;
    wait_until(Duration::from_secs(10), "A's first attempt", || {
        worker.counts().retried == 1
    })
    .await?;
    p.send(&dest, Message::new("b").with_id("B")).await?;
    wait_until(Duration::from_secs(20), "both acked", || {
        worker.counts().acked == 2
    })
    .await?;
    worker.shutdown(Duration::from_secs(5)).await?;
    let calls = calls.lock().unwrap().clone();
    let order: Vec<(String, u32)> = calls.iter().map(|c| (c.2.clone(), c.1)).collect();
    check_eq!(
        order,
        vec![
            ("A".to_string(), 1),
            ("B".to_string(), 1),
            ("A".to_string(), 2)
        ],
        "B is handled while A waits"
    );
    let gap = calls[2].0 - calls[0].0;
    check!(
        gap >= Duration::from_millis(1000),
        "A retried after {gap:?}, before its 1 s delay"
    );
    check!(
        gap <= Duration::from_millis(1000) + crate::DELAY_SLACK,
        "A retried after {gap:?}, later than its 1 s delay + {:?}",
        crate::DELAY_SLACK
    );
    Ok(())
}

async fn waiting_retry_survives_a_consumer_restart(ctx: Ctx) -> TestResult {
    let spec = ctx.spec("restart");
    ctx.declare(&spec).await?;
    let (recorder, calls) = (Arc::new(Recorder::default()), Calls::default());
    let first = failing_worker(
        &ctx,
        &ctx.broker,
        &spec.name,
        |b| b.policy(policy(3, 800, None)),
        recorder.clone(),
        calls.clone(),
        |_| Some(HandlerError::msg("down")),
    )
    .await?;
    ctx.send(&spec.name, Message::new("survivor").with_id("S"))
        .await?;
    wait_until(Duration::from_secs(10), "the first failure", || {
        first.counts().retried == 1
    })
    .await?;
    // The consuming process "dies": its worker stops and its connection closes.
    first.shutdown(Duration::from_secs(1)).await?;
    let restarted = ctx.reconnect().await?;
    let second = failing_worker(
        &ctx,
        &restarted,
        &spec.name,
        |b| b.policy(policy(3, 800, None)),
        recorder,
        calls.clone(),
        |_| None,
    )
    .await?;
    wait_until(
        Duration::from_secs(20),
        "the retry on the new consumer",
        || second.counts().acked == 1,
    )
    .await?;
    second.shutdown(Duration::from_secs(5)).await?;
    restarted.close().await?;
    let calls = calls.lock().unwrap().clone();
    let attempts: Vec<(String, u32)> = calls.iter().map(|c| (c.2.clone(), c.1)).collect();
    check_eq!(
        attempts,
        vec![("S".to_string(), 1), ("S".to_string(), 2)],
        "attempts across the restart"
    );
    let gap = calls[1].0 - calls[0].0;
    check!(
        gap >= Duration::from_millis(800),
        "retried after {gap:?}, before the 800 ms delay"
    );
    check!(
        gap <= Duration::from_millis(800) + crate::DELAY_SLACK,
        "retried after {gap:?}, later than the 800 ms delay + {:?}",
        crate::DELAY_SLACK
    );
    Ok(())
}
