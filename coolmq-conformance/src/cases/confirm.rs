//! Confirms: `send` resolves only when the broker has the message; every refusal is a typed
//! error that hands the message back.

use std::collections::HashSet;
use std::time::Duration;

use coolmq_core::{Destination, ErrorKind, Message, SendError};
use futures::stream::{self, FuturesUnordered, StreamExt};
use futures::FutureExt;

use super::case;
use crate::case::req::*;
use crate::{check, check_eq, Case, Ctx, Failed, TestResult};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        case!("confirm", confirmed_message_is_in_the_queue, [CONFIRMS]),
        case!(
            "confirm",
            unroutable_queue_returns_the_message,
            [CONFIRMS, UNROUTABLE]
        ),
        case!(
            "confirm",
            unroutable_topic_returns_the_message,
            [CONFIRMS, UNROUTABLE, TOPICS]
        ),
        case!(
            "confirm",
            undeclared_queue_keeps_the_message_where_queues_are_made_on_send,
            [CONFIRMS, QUEUES_MADE_ON_SEND]
        ),
        case!(
            "confirm",
            full_queue_nacks_and_returns_the_message,
            [CONFIRMS, MAX_LENGTH]
        ),
        case!("confirm", pipelined_sends_all_confirm, [CONFIRMS]),
        case!(
            "confirm",
            send_pipelined_confirms_every_message_in_order,
            [CONFIRMS]
        ),
        case!(
            "confirm",
            send_pipelined_unroutable_returns_the_message,
            [CONFIRMS, UNROUTABLE]
        ),
        case!(
            "confirm",
            send_pipelined_full_queue_nacks_only_the_overflow,
            [CONFIRMS, MAX_LENGTH]
        ),
        case!(
            "confirm",
            full_queue_at_volume_nacks_exactly_the_overflow,
            [CONFIRMS, MAX_LENGTH]
        ),
        case!(
            "confirm",
            send_pipelined_injected_nack_returns_the_message,
            [CONFIRMS, FAULTS]
        ),
        case!(
            "confirm",
            injected_nack_returns_the_message,
            [CONFIRMS, FAULTS]
        ),
        case!(
            "confirm",
            lost_confirm_times_out_and_resend_duplicates,
            [CONFIRMS, CONNECTION_FAULTS]
        ),
    ]
}

fn expect_err(r: Result<coolmq_core::Receipt, SendError>, what: &str) -> Result<SendError, Failed> {
    match r {
        Ok(receipt) => Err(Failed(format!(
            "{what}: send succeeded ({receipt:?}) but must fail"
        ))),
        Err(e) => Ok(e),
    }
}

/// `r` failed as `Unroutable` and handed `sent` back intact.
fn check_returned(
    r: Result<coolmq_core::Receipt, SendError>,
    what: &str,
    sent: &Message,
) -> TestResult {
    let e = expect_err(r, what)?;
    check_eq!(e.kind(), ErrorKind::Unroutable, "error kind");
    check_eq!(
        crate::untraced(e.message()),
        *sent,
        "message handed back intact"
    );
    Ok(())
}

async fn confirmed_message_is_in_the_queue(ctx: Ctx) -> TestResult {
    let q = ctx.queue("c").await?;
    let receipt = ctx
        .publisher()
        .await?
        .send(&Destination::queue(&q), Message::new("x").with_id("m-1"))
        .await?;
    check_eq!(receipt.message_id, "m-1", "receipt names the message");
    check_eq!(
        ctx.broker.queue_depth(&q).await?,
        1,
        "depth right after the confirm"
    );
    Ok(())
}

async fn unroutable_queue_returns_the_message(ctx: Ctx) -> TestResult {
    let missing = ctx.name("never-declared");
    let sent = Message::new("lost?");
    let r = ctx
        .publisher()
        .await?
        .send(&Destination::queue(&missing), sent.clone())
        .await;
    check_returned(r, "send to a queue that does not exist", &sent)?;
    // Nothing stored: the broker made no queue for it.
    match ctx.broker.queue_depth(&missing).await {
        Ok(0) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => Err(crate::Failed(format!(
            "the refused message was stored: depth of {missing} is {other:?}"
        ))),
    }
}

/// Where a broker creates a queue on first reference and cannot say beforehand whether a
/// queue exists (ActiveMQ Classic), a send to an undeclared queue is confirmed and the message
/// is kept in the queue the broker creates: nothing is lost, and the capability says so.
async fn undeclared_queue_keeps_the_message_where_queues_are_made_on_send(ctx: Ctx) -> TestResult {
    let spec = ctx.spec("made-on-send");
    // Remembered for cleanup, never declared.
    let missing = spec.name.clone();
    ctx.send(&missing, Message::new("kept?").with_id("kept"))
        .await?;
    ctx.declare(&spec).await?;
    let got = ctx.drain(&missing, Duration::from_secs(1)).await?;
    check_eq!(got.len(), 1, "messages kept in the queue the broker made");
    check_eq!(got[0].id, "kept", "the kept message");
    Ok(())
}

async fn unroutable_topic_returns_the_message(ctx: Ctx) -> TestResult {
    let topic = ctx.name("nobody-listens");
    let sent = Message::new("anyone?");
    let r = ctx
        .publisher()
        .await?
        .send(&Destination::topic(&topic), sent.clone())
        .await;
    check_returned(r, "send to a topic without subscribers", &sent)
}

async fn full_queue_nacks_and_returns_the_message(ctx: Ctx) -> TestResult {
    let spec = ctx.spec("full").max_length(2);
    ctx.declare(&spec).await?;
    let p = ctx.publisher().await?;
    let dest = Destination::queue(&spec.name);
    p.send(&dest, Message::new("1")).await?;
    p.send(&dest, Message::new("2")).await?;
    let third = Message::new("3");
    let e = expect_err(
        p.send(&dest, third.clone()).await,
        "send to a full reject-publish queue",
    )?;
    check_eq!(e.kind(), ErrorKind::Nacked, "error kind");
    check!(
        e.error().is_temporary(),
        "a nack is temporary: resend later"
    );
    check_eq!(crate::untraced(e.message()), third, "message handed back");
    check_eq!(ctx.broker.queue_depth(&spec.name).await?, 2, "depth");
    // Room again: the handed-back message can be resent.
    let got = ctx.drain(&spec.name, Duration::from_millis(300)).await?;
    check_eq!(got.len(), 2, "drained");
    p.send(&dest, e.into_message()).await?;
    check_eq!(
        ctx.broker.queue_depth(&spec.name).await?,
        1,
        "depth after resend"
    );
    Ok(())
}

async fn pipelined_sends_all_confirm(ctx: Ctx) -> TestResult {
    const N: usize = 2000;
    let q = ctx.queue("pipe").await?;
    let p = ctx.publisher().await?;
    let dest = Destination::queue(&q);
    let results: Vec<_> = stream::iter(0..N)
        .map(|i| {
            let (p, dest) = (p.clone(), dest.clone());
            async move {
                p.send(
                    &dest,
                    Message::new(format!("{i}")).with_id(format!("p-{i}")),
                )
                .await
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    check_eq!(failed, 0, "failed sends");
    let got = ctx.drain(&q, Duration::from_millis(500)).await?;
    let ids: HashSet<_> = got.iter().map(|m| m.id.clone()).collect();
    check_eq!(got.len(), N, "messages received");
    check_eq!(ids.len(), N, "distinct ids");
    Ok(())
}

/// One task, many sends in flight: every confirm resolves, and the queue holds the messages in
/// the order of the `send_pipelined` calls.
async fn send_pipelined_confirms_every_message_in_order(ctx: Ctx) -> TestResult {
    const N: usize = 2000;
    let q = ctx.queue("ordered").await?;
    let p = ctx.publisher().await?;
    let dest = Destination::queue(&q);
    let mut confirms = FuturesUnordered::new();
    let mut confirmed = Vec::with_capacity(N);
    for i in 0..N {
        let message = Message::new(format!("{i}")).with_id(format!("o-{i}"));
        confirms.push(p.send_pipelined(&dest, message).await?);
        // Take the confirms that are in, as an application would, keeping the rest in flight.
        while let Some(Some(r)) = confirms.next().now_or_never() {
            confirmed.push(r?.message_id);
        }
    }
    while let Some(r) = confirms.next().await {
        confirmed.push(r?.message_id);
    }
    check_eq!(confirmed.len(), N, "confirms");
    let distinct: HashSet<_> = confirmed.iter().collect();
    check_eq!(distinct.len(), N, "distinct confirmed ids");
    let got = ctx.drain(&q, Duration::from_millis(500)).await?;
    let ids: Vec<_> = got.iter().map(|m| m.id.clone()).collect();
    let expected: Vec<_> = (0..N).map(|i| format!("o-{i}")).collect();
    check_eq!(ids.len(), N, "messages received");
    check!(
        ids == expected,
        "messages arrive in send order; first out of order at {:?}",
        ids.iter().zip(&expected).position(|(a, b)| a != b)
    );
    Ok(())
}

/// The send itself or its confirm fails as `Unroutable`, with the message handed back.
async fn send_pipelined_unroutable_returns_the_message(ctx: Ctx) -> TestResult {
    let missing = Destination::queue(ctx.name("never-declared"));
    let sent = Message::new("lost?");
    let p = ctx.publisher().await?;
    let r = match p.send_pipelined(&missing, sent.clone()).await {
        Ok(confirm) => confirm.await,
        Err(e) => Err(e),
    };
    check_returned(r, "pipelined send to a queue that does not exist", &sent)
}

/// Three sends in flight to a queue with room for two: the first two confirm, the third is
/// nacked with its message handed back, and the queue holds the first two.
async fn send_pipelined_full_queue_nacks_only_the_overflow(ctx: Ctx) -> TestResult {
    let spec = ctx.spec("full-pipe").max_length(2);
    ctx.declare(&spec).await?;
    let p = ctx.publisher().await?;
    let dest = Destination::queue(&spec.name);
    let mut confirms = Vec::new();
    let mut refused_at_once = Vec::new();
    for i in 1..=3 {
        match p
            .send_pipelined(
                &dest,
                Message::new(format!("{i}")).with_id(format!("f-{i}")),
            )
            .await
        {
            Ok(c) => confirms.push(c),
            Err(e) => refused_at_once.push(e),
        }
    }
    check_eq!(
        refused_at_once.len(),
        0,
        "sends refused before the broker answered"
    );
    let mut results = Vec::new();
    for c in confirms {
        results.push(c.await);
    }
    check!(
        results[0].is_ok() && results[1].is_ok(),
        "the first two confirm: {:?}",
        &results[..2]
    );
    let e = expect_err(results.pop().expect("three"), "the overflowing send")?;
    check_eq!(e.kind(), ErrorKind::Nacked, "error kind");
    check_eq!(
        e.message().id,
        "f-3",
        "the overflowing message is handed back"
    );
    let got = ctx.drain(&spec.name, Duration::from_millis(300)).await?;
    check_eq!(
        got.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        vec!["f-1", "f-2"],
        "queue content"
    );
    Ok(())
}

/// `max_length` 100 with reject-publish and 1,000 pipelined sends: exactly the 900 beyond the
/// limit are `Nacked`, each handing its own message back, and the queue holds the first 100.
async fn full_queue_at_volume_nacks_exactly_the_overflow(ctx: Ctx) -> TestResult {
    const LIMIT: u64 = 100;
    const N: usize = 1000;
    let spec = ctx.spec("full-volume").max_length(LIMIT);
    ctx.declare(&spec).await?;
    let p = ctx.publisher().await?;
    let dest = Destination::queue(&spec.name);
    let mut pending = Vec::with_capacity(N);
    for i in 0..N {
        let m = Message::new(format!("v{i}")).with_id(format!("v-{i}"));
        pending.push(p.send_pipelined(&dest, m).await?);
    }
    let mut confirmed = Vec::new();
    let mut nacked = Vec::new();
    for (i, outcome) in futures::future::join_all(pending)
        .await
        .into_iter()
        .enumerate()
    {
        match outcome {
            Ok(receipt) => confirmed.push(receipt.message_id),
            Err(e) => {
                check_eq!(e.kind(), ErrorKind::Nacked, "send {i}: error kind");
                check_eq!(
                    e.message().id,
                    format!("v-{i}"),
                    "send {i}: its own message handed back"
                );
                let body = format!("v{i}");
                check_eq!(
                    &e.message().body[..],
                    body.as_bytes(),
                    "send {i}: body handed back"
                );
                nacked.push(i);
            }
        }
    }
    check_eq!(nacked.len(), N - LIMIT as usize, "nacked sends");
    check_eq!(confirmed.len(), LIMIT as usize, "confirmed sends");
    check_eq!(
        ctx.broker.queue_depth(&spec.name).await?,
        LIMIT,
        "queue depth"
    );
    let got = ctx.drain(&spec.name, Duration::from_millis(500)).await?;
    let mut held: Vec<String> = got.into_iter().map(|m| m.id).collect();
    held.sort();
    confirmed.sort();
    check_eq!(
        held,
        confirmed,
        "the queue holds exactly the confirmed messages"
    );
    Ok(())
}

async fn send_pipelined_injected_nack_returns_the_message(ctx: Ctx) -> TestResult {
    let faults = ctx.faults()?;
    let q = ctx.queue("nack-pipe").await?;
    let p = ctx.publisher().await?;
    let dest = Destination::queue(&q);
    faults.nack_next_publish();
    let sent = Message::new("nack me");
    let e = expect_err(
        p.send_pipelined(&dest, sent.clone()).await?.await,
        "nacked pipelined publish",
    )?;
    check_eq!(e.kind(), ErrorKind::Nacked, "error kind");
    check_eq!(crate::untraced(e.message()), sent, "message handed back");
    p.send_pipelined(&dest, e.into_message()).await?.await?;
    check_eq!(
        ctx.broker.queue_depth(&q).await?,
        1,
        "depth after the resend"
    );
    Ok(())
}

async fn injected_nack_returns_the_message(ctx: Ctx) -> TestResult {
    let faults = ctx.faults()?;
    let q = ctx.queue("nack").await?;
    let p = ctx.publisher().await?;
    let sent = Message::new("nack me");
    faults.nack_next_publish();
    let e = expect_err(
        p.send(&Destination::queue(&q), sent.clone()).await,
        "nacked publish",
    )?;
    check_eq!(e.kind(), ErrorKind::Nacked, "error kind");
    check_eq!(
        ctx.broker.queue_depth(&q).await?,
        0,
        "a nacked message is not in the queue"
    );
    p.send(&Destination::queue(&q), e.into_message()).await?;
    let got = ctx.drain(&q, Duration::from_millis(300)).await?;
    check_eq!(
        got.iter().map(crate::untraced).collect::<Vec<_>>(),
        vec![sent],
        "the resent message arrives once"
    );
    Ok(())
}

async fn lost_confirm_times_out_and_resend_duplicates(ctx: Ctx) -> TestResult {
    const CONFIRM_TIMEOUT: Duration = Duration::from_secs(1);
    let (faulty, faults) = ctx.faulty(CONFIRM_TIMEOUT).await?;
    let q = ctx.queue("lost").await?;
    let p = faulty.publisher().await?;
    // A confirmed send first: the connection, channel or link is up when confirms get lost.
    p.send(
        &Destination::queue(&q),
        Message::new("warm-up").with_id("warm-up"),
    )
    .await?;
    let sent = Message::new("confirm lost");
    faults.lose_confirms();
    let start = std::time::Instant::now();
    let r = p.send(&Destination::queue(&q), sent.clone()).await;
    let took = start.elapsed();
    faults.restore();
    let e = expect_err(r, "send with a lost confirm")?;
    check_eq!(e.kind(), ErrorKind::Timeout, "error kind");
    check!(e.error().is_temporary(), "a timeout is temporary");
    // A target with injected faults keeps its own configuration (its confirm timeout).
    let limit = faulty.config().confirm_timeout;
    check!(
        took <= limit + Duration::from_secs(1),
        "the timeout came after {took:?}, more than the confirm timeout {limit:?} + 1 s"
    );
    // The outcome was unknown, so the caller resends: at-least-once, same id both times.
    ctx.publisher()
        .await?
        .send(&Destination::queue(&q), e.into_message())
        .await?;
    let mut got = ctx.drain(&q, Duration::from_millis(500)).await?;
    got.retain(|m| m.id != "warm-up");
    check_eq!(
        got.len(),
        2,
        "the broker had taken the first copy: a duplicate"
    );
    check!(
        got.iter().all(|m| m.id == sent.id),
        "both copies carry the same id (dedup key)"
    );
    if let crate::Faults::Proxied(_) = faults {
        let _ = faulty.close().await;
    }
    Ok(())
}
