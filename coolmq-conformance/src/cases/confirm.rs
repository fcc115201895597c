//! Confirms: `send` resolves only when the broker has the message; every refusal is a typed
//! error that hands the message back.

use std::collections::HashSet;
use std::time::Duration;

use coolmq_core::{Destination, ErrorKind, Message, SendError};
use futures::stream::{self, StreamExt};

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
            full_queue_nacks_and_returns_the_message,
            [CONFIRMS, MAX_LENGTH]
        ),
        case!("confirm", pipelined_sends_all_confirm, [CONFIRMS]),
        case!(
            "confirm",
            injected_nack_returns_the_message,
            [CONFIRMS, FAULTS]
        ),
        case!(
            "confirm",
            lost_confirm_times_out_and_resend_duplicates,
            [CONFIRMS, FAULTS]
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
    let e = expect_err(r, "send to a queue that does not exist")?;
    check_eq!(e.kind(), ErrorKind::Unroutable, "error kind");
    check_eq!(
        crate::untraced(e.message()),
        sent,
        "message handed back intact"
    );
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
    let e = expect_err(r, "send to a topic without subscribers")?;
    check_eq!(e.kind(), ErrorKind::Unroutable, "error kind");
    check_eq!(
        crate::untraced(&e.into_message()),
        sent,
        "message handed back intact"
    );
    Ok(())
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

async fn injected_nack_returns_the_message(ctx: Ctx) -> TestResult {
    let faults = ctx
        .broker
        .fault_injector()
        .ok_or_else(|| Failed("fault_injection without an injector".into()))?;
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
    let faults = ctx
        .broker
        .fault_injector()
        .ok_or_else(|| Failed("fault_injection without an injector".into()))?;
    let q = ctx.queue("lost").await?;
    let p = ctx.publisher().await?;
    let sent = Message::new("confirm lost");
    faults.lose_next_confirm();
    let e = expect_err(
        p.send(&Destination::queue(&q), sent.clone()).await,
        "send with a lost confirm",
    )?;
    check_eq!(e.kind(), ErrorKind::Timeout, "error kind");
    check!(e.error().is_temporary(), "a timeout is temporary");
    // The outcome was unknown, so the caller resends: at-least-once, same id both times.
    p.send(&Destination::queue(&q), e.into_message()).await?;
    let got = ctx.drain(&q, Duration::from_millis(300)).await?;
    check_eq!(
        got.len(),
        2,
        "the broker had taken the first copy: a duplicate"
    );
    check!(
        got.iter().all(|m| m.id == sent.id),
        "both copies carry the same id (dedup key)"
    );
    Ok(())
}
