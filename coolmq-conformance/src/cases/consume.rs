//! Consuming: manual ack, requeue with redelivered flag and attempt count, drop = requeue,
//! prefetch bounds, ordering, competing consumers, dead-lettering, delayed retry.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use coolmq_core::dead_letter::{ATTEMPTS_HEADER, LAST_ERROR_HEADER, ORIGIN_QUEUE_HEADER};
use coolmq_core::{Destination, ErrorKind, HeaderValue, Message, Nack};

use super::case;
use crate::case::req::*;
use crate::{check, check_eq, Case, Ctx, Failed, TestResult};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        case!("consume", ack_removes_the_message, [CONFIRMS]),
        case!(
            "consume",
            nack_requeue_redelivers_with_flag_and_attempt,
            [CONFIRMS]
        ),
        case!("consume", drop_without_settle_redelivers, [CONFIRMS]),
        case!(
            "consume",
            consumer_close_requeues_and_old_ack_is_stale,
            [CONFIRMS]
        ),
        case!(
            "consume",
            consumer_close_returns_every_unsettled_delivery_once,
            [CONFIRMS]
        ),
        case!("consume", prefetch_bounds_unsettled_deliveries, [CONFIRMS]),
        case!(
            "consume",
            prefetch_of_16_bounds_unsettled_deliveries,
            [CONFIRMS]
        ),
        case!(
            "consume",
            unacked_message_withholds_the_next_at_prefetch_one,
            [CONFIRMS]
        ),
        case!("consume", fifo_for_a_single_consumer, [CONFIRMS]),
        case!(
            "consume",
            competing_consumers_5000_no_loss_no_duplicate,
            [CONFIRMS]
        ),
        case!("consume", resend_on_error_delivers_everything, [CONFIRMS]),
        case!(
            "consume",
            nack_dead_letter_moves_to_dlq_with_metadata,
            [CONFIRMS, DLQ]
        ),
        case!(
            "consume",
            retry_after_waits_then_redelivers,
            [CONFIRMS, DELAY]
        ),
        case!(
            "consume",
            delayed_send_arrives_after_the_delay,
            [CONFIRMS, DELAY]
        ),
        case!("consume", expired_message_is_not_delivered, [CONFIRMS, TTL]),
        case!(
            "consume",
            connection_drop_requeues_and_stale_ack_is_local,
            [CONFIRMS, CONNECTION_FAULTS]
        ),
    ]
}

async fn ack_removes_the_message(ctx: Ctx) -> TestResult {
    let q = ctx.queue("ack").await?;
    ctx.send(&q, Message::new("once")).await?;
    let mut c = ctx.broker.consumer(&q).await?;
    let d = ctx.recv(&mut c).await?;
    check_eq!(d.redelivered(), false, "first delivery flag");
    check_eq!(d.attempt(), 1, "first attempt");
    check_eq!(d.queue(), q.as_str(), "source queue");
    d.ack().await?;
    c.close().await?;
    let mut c2 = ctx.broker.consumer(&q).await?;
    ctx.expect_nothing(&mut c2, Duration::from_millis(400))
        .await?;
    check_eq!(ctx.broker.queue_depth(&q).await?, 0, "depth after ack");
    Ok(())
}

async fn nack_requeue_redelivers_with_flag_and_attempt(ctx: Ctx) -> TestResult {
    let q = ctx.queue("requeue").await?;
    ctx.send(&q, Message::new("again").with_id("r-1")).await?;
    let mut c = ctx.broker.consumer(&q).await?;
    let d = ctx.recv(&mut c).await?;
    check_eq!((d.attempt(), d.redelivered()), (1, false), "first delivery");
    d.nack(Nack::Requeue).await?;
    let d = ctx.recv(&mut c).await?;
    check_eq!(d.message().id, "r-1", "same message");
    check_eq!((d.attempt(), d.redelivered()), (2, true), "second delivery");
    d.nack(Nack::Requeue).await?;
    let d = ctx.recv(&mut c).await?;
    check_eq!(d.message().id, "r-1", "same message");
    if ctx.broker.capabilities().delivery_count {
        check_eq!(
            d.attempt(),
            3,
            "third delivery (the broker counts redeliveries)"
        );
    } else {
        // A classic RabbitMQ queue only flags redelivery; it cannot count requeues.
        check!(
            d.attempt() >= 2,
            "third delivery counts as a redelivery, got {}",
            d.attempt()
        );
    }
    d.ack().await?;
    Ok(())
}

async fn drop_without_settle_redelivers(ctx: Ctx) -> TestResult {
    let q = ctx.queue("drop").await?;
    ctx.send(&q, Message::new("forgotten").with_id("d-1"))
        .await?;
    let mut c = ctx.broker.consumer(&q).await?;
    let d = ctx.recv(&mut c).await?;
    drop(d); // neither acked nor nacked: must not wedge the queue
    let d = ctx.recv(&mut c).await?;
    check_eq!(d.message().id, "d-1", "same message");
    check!(d.redelivered(), "redelivered flag after drop");
    check_eq!(d.attempt(), 2, "attempt after drop");
    d.ack().await?;
    Ok(())
}

async fn consumer_close_requeues_and_old_ack_is_stale(ctx: Ctx) -> TestResult {
    let q = ctx.queue("close").await?;
    ctx.send(&q, Message::new("held").with_id("h-1")).await?;
    let mut c = ctx.broker.consumer(&q).await?;
    let held = ctx.recv(&mut c).await?;
    c.close().await?;
    let mut c2 = ctx.broker.consumer(&q).await?;
    let d = ctx.recv(&mut c2).await?;
    check_eq!(d.message().id, "h-1", "requeued to the next consumer");
    check!(d.redelivered(), "redelivered flag");
    let stale = held.ack().await;
    check!(
        matches!(&stale, Err(e) if e.kind() == ErrorKind::StaleDelivery),
        "ack of a delivery from a closed consumer must be a local StaleDelivery error, got {stale:?}"
    );
    d.ack().await?;
    Ok(())
}

/// Closing a consumer returns every delivery it holds, those handed to the application and
/// those still prefetched, each exactly once (the ActiveMQ backend returns them together).
async fn consumer_close_returns_every_unsettled_delivery_once(ctx: Ctx) -> TestResult {
    let q = ctx.queue("close-many").await?;
    let ids: HashSet<String> = (0..20).map(|i| format!("m-{i}")).collect();
    for id in &ids {
        ctx.send(&q, Message::new_with_id(id.clone(), "x")).await?;
    }
    let mut c = ctx.broker.consumer_with_prefetch(&q, 20).await?;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(ctx.recv(&mut c).await?);
    }
    let handed: HashSet<String> = held.iter().map(|d| d.message().id.clone()).collect();
    c.close().await?;
    drop(held);
    let mut c2 = ctx.broker.consumer(&q).await?;
    let mut seen = HashSet::new();
    for _ in 0..ids.len() {
        let d = ctx.recv(&mut c2).await?;
        let id = d.message().id.clone();
        if handed.contains(&id) {
            check!(d.redelivered(), "{id} was handed out: redelivered flag");
        }
        check!(seen.insert(id.clone()), "{id} came back twice");
        d.ack().await?;
    }
    check_eq!(seen, ids, "every message came back");
    ctx.expect_nothing(&mut c2, Duration::from_millis(300))
        .await?;
    Ok(())
}

async fn prefetch_bounds_unsettled_deliveries(ctx: Ctx) -> TestResult {
    prefetch_bound(ctx, 3, 10).await
}

/// The same with a prefetch whose credit a backend may top up in batches (ActiveMQ Classic:
/// per eighth of the prefetch): one ack while the whole prefetch is held still lets exactly
/// one more delivery through.
async fn prefetch_of_16_bounds_unsettled_deliveries(ctx: Ctx) -> TestResult {
    prefetch_bound(ctx, 16, 40).await
}

/// Hold `prefetch` deliveries of `total`: nothing more comes until one is acked, then exactly
/// one; the rest come after.
async fn prefetch_bound(ctx: Ctx, prefetch: u16, total: usize) -> TestResult {
    let q = ctx.queue("prefetch").await?;
    for i in 0..total {
        ctx.send(&q, Message::new(format!("{i}"))).await?;
    }
    let mut c = ctx.broker.consumer_with_prefetch(&q, prefetch).await?;
    let mut held = Vec::new();
    for _ in 0..prefetch {
        held.push(ctx.recv(&mut c).await?);
    }
    ctx.expect_nothing(&mut c, Duration::from_millis(500))
        .await?;
    held.remove(0).ack().await?;
    held.push(ctx.recv(&mut c).await?);
    ctx.expect_nothing(&mut c, Duration::from_millis(300))
        .await?;
    for d in held {
        d.ack().await?;
    }
    let mut rest = prefetch as usize + 1;
    while rest < total {
        ctx.recv(&mut c).await?.ack().await?;
        rest += 1;
    }
    Ok(())
}

async fn unacked_message_withholds_the_next_at_prefetch_one(ctx: Ctx) -> TestResult {
    let q = ctx.queue("noack").await?;
    ctx.send(&q, Message::new("first")).await?;
    ctx.send(&q, Message::new("second")).await?;
    let mut c = ctx.broker.consumer_with_prefetch(&q, 1).await?;
    let first = ctx.recv(&mut c).await?;
    ctx.expect_nothing(&mut c, Duration::from_millis(300))
        .await?;
    first.ack().await?;
    let second = ctx.recv(&mut c).await?;
    check_eq!(&second.message().body[..], b"second", "second after ack");
    second.ack().await?;
    ctx.expect_nothing(&mut c, Duration::from_millis(300))
        .await?;
    Ok(())
}

async fn fifo_for_a_single_consumer(ctx: Ctx) -> TestResult {
    let q = ctx.queue("fifo").await?;
    let p = ctx.publisher().await?;
    for i in 0..200 {
        p.send(&Destination::queue(&q), Message::new(format!("{i}")))
            .await?;
    }
    let got = ctx.drain(&q, Duration::from_millis(500)).await?;
    let bodies: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into())
        .collect();
    let want: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    check_eq!(bodies, want, "order");
    Ok(())
}

async fn competing_consumers_5000_no_loss_no_duplicate(ctx: Ctx) -> TestResult {
    const N: usize = 5000;
    const CONSUMERS: usize = 10;
    let q = ctx.queue("compete").await?;
    let mut handles = Vec::new();
    for _ in 0..CONSUMERS {
        let mut c = ctx.broker.consumer_with_prefetch(&q, 50).await?;
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            while let Ok(Ok(Some(d))) = tokio::time::timeout(Duration::from_secs(3), c.recv()).await
            {
                ids.push(d.message().id.clone());
                d.ack().await?;
            }
            c.close().await?;
            Ok::<_, coolmq_core::Error>(ids)
        }));
    }
    let p = ctx.publisher().await?;
    super::load::publish_many(&p, &q, N, "c").await?;
    let mut seen = HashMap::new();
    let mut busy = 0;
    for h in handles {
        let ids = h
            .await
            .map_err(|e| Failed(format!("consumer task: {e}")))??;
        busy += usize::from(!ids.is_empty());
        for id in ids {
            *seen.entry(id).or_insert(0) += 1;
        }
    }
    let dups = seen.values().filter(|n| **n > 1).count();
    check_eq!(seen.len(), N, "distinct messages received");
    check_eq!(dups, 0, "duplicates");
    check!(
        busy >= 2,
        "work must be shared between consumers, only {busy} got messages"
    );
    Ok(())
}

async fn resend_on_error_delivers_everything(ctx: Ctx) -> TestResult {
    let q = ctx.queue("resend").await?;
    let p = ctx.publisher().await?;
    super::load::publish_many(&p, &q, 100, "r").await?;
    let mut c = ctx.broker.consumer(&q).await?;
    let mut acked = HashSet::new();
    let mut nacked = 0;
    while acked.len() < 100 {
        let d = ctx.recv(&mut c).await?;
        if nacked < 2 && !d.redelivered() {
            nacked += 1;
            d.nack(Nack::Requeue).await?;
        } else {
            acked.insert(d.message().id.clone());
            d.ack().await?;
        }
    }
    ctx.expect_nothing(&mut c, Duration::from_millis(300))
        .await?;
    check_eq!(acked.len(), 100, "all messages processed");
    Ok(())
}

async fn nack_dead_letter_moves_to_dlq_with_metadata(ctx: Ctx) -> TestResult {
    let spec = ctx.spec("dl");
    ctx.declare(&spec).await?;
    let dlq = spec.dead_letter_queue.clone().expect("dlq");
    check_eq!(
        dlq,
        ctx.broker.config().dead_letter_queue(&spec.name),
        "DLQ name"
    );
    ctx.send(
        &spec.name,
        Message::new("poison").with_id("p-1").with_header("k", "v"),
    )
    .await?;
    let mut c = ctx.broker.consumer(&spec.name).await?;
    let d = ctx.recv(&mut c).await?;
    d.nack(Nack::DeadLetter("cannot parse".into())).await?;
    ctx.expect_nothing(&mut c, Duration::from_millis(300))
        .await?;
    let dead = ctx.drain(&dlq, Duration::from_millis(300)).await?;
    check_eq!(dead.len(), 1, "copies in the DLQ");
    let m = &dead[0];
    check_eq!(m.id, "p-1", "id kept");
    check_eq!(
        m.headers.get("k"),
        Some(&HeaderValue::from("v")),
        "original headers kept"
    );
    check_eq!(
        m.headers.get(ORIGIN_QUEUE_HEADER),
        Some(&HeaderValue::from(spec.name.as_str())),
        "origin queue"
    );
    check_eq!(
        m.headers.get(ATTEMPTS_HEADER).and_then(HeaderValue::as_i64),
        Some(1),
        "attempts"
    );
    check_eq!(
        m.headers.get(LAST_ERROR_HEADER),
        Some(&HeaderValue::from("cannot parse")),
        "last error"
    );
    Ok(())
}

async fn retry_after_waits_then_redelivers(ctx: Ctx) -> TestResult {
    let q = ctx.queue("retry").await?;
    ctx.send(&q, Message::new("later").with_id("l-1")).await?;
    let mut c = ctx.broker.consumer(&q).await?;
    let d = ctx.recv(&mut c).await?;
    let t0 = Instant::now();
    d.nack(Nack::RetryAfter(Duration::from_millis(600))).await?;
    ctx.expect_nothing(&mut c, Duration::from_millis(300))
        .await?;
    let d = ctx.recv(&mut c).await?;
    let waited = t0.elapsed();
    check!(
        waited >= Duration::from_millis(600),
        "redelivered after {waited:?}, before the 600 ms delay"
    );
    check!(
        waited <= Duration::from_millis(600) + crate::DELAY_SLACK,
        "redelivered after {waited:?}, later than the 600 ms delay + {:?}",
        crate::DELAY_SLACK
    );
    check_eq!(d.message().id, "l-1", "same id");
    check_eq!(d.attempt(), 2, "attempt");
    check!(d.redelivered(), "redelivered flag");
    d.ack().await?;
    Ok(())
}

async fn delayed_send_arrives_after_the_delay(ctx: Ctx) -> TestResult {
    let q = ctx.queue("delayed").await?;
    let p = ctx.publisher().await?;
    let t0 = Instant::now();
    p.send(&Destination::queue(&q), Message::new("wait"))
        .delay(Duration::from_millis(500))
        .await?;
    let mut c = ctx.broker.consumer(&q).await?;
    let d = ctx.recv(&mut c).await?;
    let waited = t0.elapsed();
    check!(
        waited >= Duration::from_millis(500),
        "arrived after {waited:?}, before the 500 ms delay"
    );
    check!(
        waited <= Duration::from_millis(500) + crate::DELAY_SLACK,
        "arrived after {waited:?}, later than the 500 ms delay + {:?}",
        crate::DELAY_SLACK
    );
    d.ack().await?;
    Ok(())
}

async fn expired_message_is_not_delivered(ctx: Ctx) -> TestResult {
    let q = ctx.queue("ttl").await?;
    ctx.send(
        &q,
        Message::new("stale").with_ttl(Duration::from_millis(100)),
    )
    .await?;
    ctx.send(&q, Message::new("fresh")).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = ctx.drain(&q, Duration::from_millis(300)).await?;
    let bodies: Vec<&[u8]> = got.iter().map(|m| &m.body[..]).collect();
    check_eq!(bodies, vec![&b"fresh"[..]], "only the unexpired message");
    Ok(())
}

async fn connection_drop_requeues_and_stale_ack_is_local(ctx: Ctx) -> TestResult {
    let (faulty, faults) = ctx.faulty(Duration::from_secs(5)).await?;
    let q = ctx.queue("conn").await?;
    ctx.send(&q, Message::new("in flight").with_id("f-1"))
        .await?;
    let mut c = faulty.consumer(&q).await?;
    let held = ctx.recv(&mut c).await?;
    faults.drop_connections();
    // A real connection's end reaches the client a moment later (the socket closes); the
    // ack must then fail locally, never hang and never pretend.
    if let crate::Faults::Proxied(_) = faults {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let stale = tokio::time::timeout(Duration::from_secs(5), held.ack())
        .await
        .map_err(|_| crate::Failed("the ack after the connection dropped hung".into()))?;
    check!(
        matches!(&stale, Err(e) if e.kind() == ErrorKind::StaleDelivery),
        "ack after the connection dropped must be StaleDelivery, got {stale:?}"
    );
    let d = ctx.recv(&mut c).await?;
    check_eq!(d.message().id, "f-1", "redelivered after reconnect");
    check!(d.redelivered(), "redelivered flag");
    d.ack().await?;
    ctx.expect_nothing(&mut c, Duration::from_millis(300))
        .await?;
    c.close().await?;
    if let crate::Faults::Proxied(_) = faults {
        let _ = faulty.close().await;
    }
    Ok(())
}
