//! The worker's lifecycle: concurrency limit and graceful shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coolmq_core::{Destination, HandlerError, Message, TraceContext};

use super::case;
use super::redelivery::wait_until;
use crate::case::req::*;
use crate::{check, check_eq, Case, Ctx, TestResult};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        case!("worker", concurrency_limit_is_respected, [CONFIRMS]),
        case!("worker", handler_sends_continue_the_trace, [CONFIRMS]),
        case!(
            "worker",
            graceful_shutdown_drains_in_flight_handlers,
            [CONFIRMS]
        ),
        case!(
            "worker",
            shutdown_deadline_leaves_the_message_for_redelivery,
            [CONFIRMS]
        ),
    ]
}

async fn concurrency_limit_is_respected(ctx: Ctx) -> TestResult {
    let q = ctx.queue("conc").await?;
    let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (n2, m2) = (now.clone(), max.clone());
    let worker = ctx
        .broker
        .worker(&q)
        .concurrency(4)
        .start(move |_| {
            let (now, max) = (n2.clone(), m2.clone());
            async move {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }
        })
        .await?;
    let p = ctx.publisher().await?;
    super::load::publish_many(&p, &q, 40, "w").await?;
    wait_until(Duration::from_secs(30), "40 acks", || {
        worker.counts().acked == 40
    })
    .await?;
    worker.shutdown(Duration::from_secs(5)).await?;
    let max = max.load(Ordering::SeqCst);
    check!(max <= 4, "{max} handlers ran at once with concurrency 4");
    check!(
        max >= 2,
        "handlers never overlapped (max {max}) with concurrency 4"
    );
    Ok(())
}

async fn graceful_shutdown_drains_in_flight_handlers(ctx: Ctx) -> TestResult {
    let q = ctx.queue("drain").await?;
    let done = Arc::new(AtomicUsize::new(0));
    let d2 = done.clone();
    let worker = ctx
        .broker
        .worker(&q)
        .start(move |_| {
            let done = d2.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                done.fetch_add(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }
        })
        .await?;
    ctx.send(&q, Message::new("slow")).await?;
    wait_until(Duration::from_secs(10), "the handler to start", || {
        worker.counts().in_flight == 1
    })
    .await?;
    let report = worker.shutdown(Duration::from_secs(10)).await?;
    check_eq!(
        (report.drained, report.abandoned),
        (1, 0),
        "shutdown report"
    );
    check_eq!(done.load(Ordering::SeqCst), 1, "the handler finished");
    let mut c = ctx.broker.consumer(&q).await?;
    ctx.expect_nothing(&mut c, Duration::from_millis(400))
        .await?;
    Ok(())
}

async fn shutdown_deadline_leaves_the_message_for_redelivery(ctx: Ctx) -> TestResult {
    let q = ctx.queue("abandon").await?;
    let worker = ctx
        .broker
        .worker(&q)
        .start(|_| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<(), HandlerError>(())
        })
        .await?;
    ctx.send(&q, Message::new("stuck").with_id("s-1")).await?;
    wait_until(Duration::from_secs(10), "the handler to start", || {
        worker.counts().in_flight == 1
    })
    .await?;
    let report = worker.shutdown(Duration::from_millis(200)).await?;
    check_eq!(
        (report.drained, report.abandoned),
        (0, 1),
        "shutdown report"
    );
    let mut c = ctx.broker.consumer(&q).await?;
    let d = ctx.recv(&mut c).await?;
    check_eq!(
        d.message().id,
        "s-1",
        "the abandoned message is redelivered"
    );
    check!(d.redelivered(), "redelivered flag");
    d.ack().await?;
    Ok(())
}

/// A message the handler sends continues the trace of the message it handles, across two
/// broker hops.
async fn handler_sends_continue_the_trace(ctx: Ctx) -> TestResult {
    let first = ctx.queue("trace-in").await?;
    let second = ctx.queue("trace-out").await?;
    let publisher = ctx.publisher().await?;
    let forward = publisher.clone();
    let next = Destination::queue(&second);
    let worker = ctx
        .broker
        .worker(&first)
        .start(move |incoming| {
            let (forward, next) = (forward.clone(), next.clone());
            async move {
                let reply = Message::new("next").with_correlation_id(incoming.message.id.clone());
                forward
                    .send(&next, reply)
                    .await
                    .map_err(|e| HandlerError::msg(e.to_string()))?;
                Ok::<(), HandlerError>(())
            }
        })
        .await?;
    let origin = TraceContext::new_root();
    let sent =
        Message::new("start").with_header(coolmq_core::TRACEPARENT_HEADER, origin.to_string());
    let id = sent.id.clone();
    publisher.send(&Destination::queue(&first), sent).await?;
    wait_until(Duration::from_secs(10), "the handler to finish", || {
        worker.counts().acked == 1
    })
    .await?;
    worker.shutdown(Duration::from_secs(5)).await?;
    let got = ctx.drain(&second, Duration::from_millis(400)).await?;
    check_eq!(got.len(), 1, "forwarded messages");
    check_eq!(
        got[0].correlation_id.as_deref(),
        Some(id.as_str()),
        "correlation"
    );
    let carried = TraceContext::of(&got[0]);
    check!(
        carried.is_some_and(|t| t.trace_id == origin.trace_id && t.parent_id != origin.parent_id),
        "the forwarded message continues the trace: {carried:?} from {origin:?}"
    );
    Ok(())
}
