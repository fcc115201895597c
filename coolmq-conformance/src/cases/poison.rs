//! Exact attempts whatever ended the previous delivery, and poison messages: a message whose
//! consumers keep dying reaches the dead-letter queue instead of wedging the queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coolmq_core::dead_letter::{ATTEMPTS_HEADER, ORIGIN_QUEUE_HEADER};
use coolmq_core::{HandlerError, HeaderValue, Message, Nack, RedeliveryPolicy};

use super::case;
use super::redelivery::{wait_until, Recorder};
use crate::case::req::*;
use crate::{check, check_eq, Case, Ctx, TestResult};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        case!(
            "poison",
            nack_requeue_through_five_consumers_counts_every_attempt,
            [CONFIRMS]
        ),
        case!(
            "poison",
            consumers_gone_without_settling_count_every_attempt,
            [CONFIRMS]
        ),
        case!(
            "poison",
            requeued_past_the_brokers_own_limits_stays_in_its_queue,
            [CONFIRMS]
        ),
        case!(
            "poison",
            delivery_over_the_limit_is_dead_lettered_without_the_handler,
            [CONFIRMS, DLQ]
        ),
        case!(
            "poison",
            dead_letters_go_to_the_declared_dead_letter_queue,
            [CONFIRMS, DLQ]
        ),
        case!(
            "poison",
            poison_at_volume_dead_letters_exactly_the_failing_ids,
            [CONFIRMS, DLQ]
        ),
    ]
}

/// Five consumers, each on a new connection, each requeue the message: the attempts are
/// 1, 2, 3, 4, 5 and the redelivered flag is set from the second on.
async fn nack_requeue_through_five_consumers_counts_every_attempt(ctx: Ctx) -> TestResult {
    let q = ctx.queue("requeue5").await?;
    ctx.send(&q, Message::new("p").with_id("requeued")).await?;
    for expected in 1..=5u32 {
        let broker = ctx.reconnect().await?;
        let mut consumer = broker.consumer_with_prefetch(&q, 1).await?;
        let d = ctx.recv(&mut consumer).await?;
        check_eq!(d.message().id, "requeued", "message id");
        check_eq!(d.attempt(), expected, "attempt of consumer {expected}");
        check_eq!(
            d.redelivered(),
            expected > 1,
            "redelivered flag of attempt {expected}"
        );
        if expected < 5 {
            d.nack(Nack::Requeue).await?;
        } else {
            d.ack().await?;
        }
        consumer.close().await?;
        broker.close().await?;
    }
    Ok(())
}

/// Three consumers die holding the message unsettled (their connection closes under them):
/// the fourth delivery says attempt 4.
async fn consumers_gone_without_settling_count_every_attempt(ctx: Ctx) -> TestResult {
    let q = ctx.queue("gone3").await?;
    ctx.send(&q, Message::new("p").with_id("abandoned")).await?;
    for expected in 1..=4u32 {
        let broker = ctx.reconnect().await?;
        let mut consumer = broker.consumer_with_prefetch(&q, 1).await?;
        let d = ctx.recv(&mut consumer).await?;
        check_eq!(
            d.attempt(),
            expected,
            "attempt after {} deaths",
            expected - 1
        );
        if expected == 4 {
            d.ack().await?;
            consumer.close().await?;
            broker.close().await?;
        } else {
            // The connection goes while the delivery is unsettled, as when the process dies.
            broker.close().await?;
            drop(d);
            drop(consumer);
        }
    }
    Ok(())
}

/// Twelve requeues, past Artemis's default `max-delivery-attempts` (10) and Classic's
/// default redelivery limit (6): the broker never diverts the message behind coolmq's back;
/// the thirteenth delivery still comes from the queue, with attempt 13.
async fn requeued_past_the_brokers_own_limits_stays_in_its_queue(ctx: Ctx) -> TestResult {
    let q = ctx.queue("requeue12").await?;
    ctx.send(&q, Message::new("p").with_id("stays")).await?;
    let mut consumer = ctx.broker.consumer_with_prefetch(&q, 1).await?;
    for expected in 1..=13u32 {
        let d = ctx.recv(&mut consumer).await?;
        check_eq!(d.message().id, "stays", "message id");
        check_eq!(d.attempt(), expected, "attempt");
        if expected < 13 {
            d.nack(Nack::Requeue).await?;
        } else {
            d.ack().await?;
        }
    }
    consumer.close().await?;
    Ok(())
}

fn fast_policy(max: i32) -> RedeliveryPolicy {
    RedeliveryPolicy {
        maximum_redeliveries: max,
        initial_redelivery_delay: Duration::from_millis(50),
        redelivery_delay: Duration::from_millis(50),
        ..Default::default()
    }
}

/// A message delivered `maximum_redeliveries + 1` times to consumers that never settled it
/// is dead-lettered by the worker on its next delivery, without running the handler, with
/// the attempts in its metadata and one observer call.
async fn delivery_over_the_limit_is_dead_lettered_without_the_handler(ctx: Ctx) -> TestResult {
    let q = ctx.queue("overlimit").await?;
    let dlq = ctx
        .broker
        .dead_letter_queue_of(&q)
        .ok_or_else(|| crate::Failed("no dead-letter queue".into()))?;
    ctx.send(&q, Message::new("p").with_id("killer")).await?;
    const MAX: i32 = 2;
    for _ in 0..=MAX {
        let broker = ctx.reconnect().await?;
        let mut consumer = broker.consumer_with_prefetch(&q, 1).await?;
        let d = ctx.recv(&mut consumer).await?;
        broker.close().await?;
        drop(d);
    }
    let recorder = Arc::new(Recorder::default());
    let calls = Arc::new(Mutex::new(0u32));
    let c2 = calls.clone();
    let worker = ctx
        .broker
        .worker(&q)
        .policy(fast_policy(MAX))
        .observer(recorder.clone())
        .start(move |_| {
            *c2.lock().expect("lock") += 1;
            async { Ok::<(), HandlerError>(()) }
        })
        .await?;
    wait_until(Duration::from_secs(20), "the dead-letter event", || {
        !recorder.0.lock().expect("lock").is_empty()
    })
    .await?;
    worker.shutdown(Duration::from_secs(5)).await?;
    check_eq!(*calls.lock().expect("lock"), 0, "handler calls");
    let events = recorder.0.lock().expect("lock").clone();
    check_eq!(events.len(), 1, "observer calls");
    check_eq!(events[0].attempts, MAX as u32 + 2, "attempts in the event");
    let dead = ctx.drain(&dlq, Duration::from_secs(2)).await?;
    check_eq!(dead.len(), 1, "messages in {dlq}");
    check_eq!(dead[0].id, "killer", "dead-lettered id");
    check_eq!(
        dead[0].headers.get(ATTEMPTS_HEADER),
        Some(&HeaderValue::I32(MAX + 2)),
        "attempts header"
    );
    check_eq!(
        dead[0]
            .headers
            .get(ORIGIN_QUEUE_HEADER)
            .and_then(HeaderValue::as_str),
        Some(q.as_str()),
        "origin queue header"
    );
    check_eq!(
        ctx.drain(&q, Duration::from_millis(500)).await?.len(),
        0,
        "left in {q}"
    );
    Ok(())
}

/// A queue declared with its own dead-letter queue dead-letters there, not to the name the
/// configuration would derive.
async fn dead_letters_go_to_the_declared_dead_letter_queue(ctx: Ctx) -> TestResult {
    let custom = ctx.name("custom-dlq");
    let spec = ctx.spec("declared").dead_letter_queue(Some(custom.clone()));
    ctx.declare(&spec).await?;
    let q = spec.name.clone();
    ctx.send(&q, Message::new("p").with_id("to-custom")).await?;
    let recorder = Arc::new(Recorder::default());
    let worker = ctx
        .broker
        .worker(&q)
        .policy(fast_policy(0))
        .observer(recorder.clone())
        .start(|_| async { Err::<(), _>(HandlerError::msg("always fails")) })
        .await?;
    wait_until(Duration::from_secs(20), "the dead-letter event", || {
        !recorder.0.lock().expect("lock").is_empty()
    })
    .await?;
    worker.shutdown(Duration::from_secs(5)).await?;
    let event = recorder.0.lock().expect("lock")[0].clone();
    check_eq!(
        event.dead_letter_queue,
        custom,
        "dead-letter queue of the event"
    );
    let dead = ctx.drain(&custom, Duration::from_secs(2)).await?;
    check_eq!(dead.len(), 1, "messages in the declared dead-letter queue");
    check_eq!(dead[0].id, "to-custom", "dead-lettered id");
    Ok(())
}

/// 1,000 messages, every 10th always fails, concurrency 8, `maximum_redeliveries` 2: exactly
/// those 100 ids are dead-lettered (after 3 deliveries each), the other 900 are handled
/// exactly once, and the observer is called 100 times.
async fn poison_at_volume_dead_letters_exactly_the_failing_ids(ctx: Ctx) -> TestResult {
    const N: usize = 1_000;
    let q = ctx.queue("poison1k").await?;
    let dlq = ctx
        .broker
        .dead_letter_queue_of(&q)
        .ok_or_else(|| crate::Failed("no dead-letter queue".into()))?;
    let p = ctx.publisher().await?;
    super::load::publish_many(&p, &q, N, "v").await?;
    let poison = |id: &str| {
        id.strip_prefix("v-")
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n % 10 == 0)
    };
    let recorder = Arc::new(Recorder::default());
    let calls: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let c2 = calls.clone();
    let worker = ctx
        .broker
        .worker(&q)
        .concurrency(8)
        .policy(fast_policy(2))
        .observer(recorder.clone())
        .start(move |incoming| {
            let calls = c2.clone();
            async move {
                let id = incoming.message.id.clone();
                calls
                    .lock()
                    .expect("lock")
                    .entry(id.clone())
                    .or_default()
                    .push(incoming.attempt);
                if poison(&id) {
                    Err(HandlerError::msg("poison"))
                } else {
                    Ok(())
                }
            }
        })
        .await?;
    wait_until(
        Duration::from_secs(120),
        "900 acks and 100 dead letters",
        || {
            let c = worker.counts();
            c.acked >= 900 && c.dead_lettered >= 100
        },
    )
    .await?;
    // Anything still to come (a duplicate) would show within this pause.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = worker.counts();
    worker.shutdown(Duration::from_secs(5)).await?;
    check_eq!(counts.acked, 900, "acked");
    check_eq!(counts.dead_lettered, 100, "dead-lettered");
    check_eq!(
        recorder.0.lock().expect("lock").len(),
        100,
        "observer calls"
    );
    let calls = calls.lock().expect("lock").clone();
    check_eq!(calls.len(), N, "distinct ids handled");
    for (id, attempts) in &calls {
        if poison(id) {
            check_eq!(attempts, &vec![1, 2, 3], "attempts of poison {id}");
        } else {
            check_eq!(attempts, &vec![1], "attempts of {id}");
        }
    }
    let dead = ctx.drain(&dlq, Duration::from_secs(2)).await?;
    let mut dead_ids: Vec<_> = dead.iter().map(|m| m.id.clone()).collect();
    dead_ids.sort();
    let mut expected: Vec<_> = (0..N)
        .filter(|n| n % 10 == 0)
        .map(|n| format!("v-{n}"))
        .collect();
    expected.sort();
    check!(
        dead_ids == expected,
        "dead-letter queue holds {} messages, not exactly the 100 poison ids",
        dead_ids.len()
    );
    Ok(())
}
