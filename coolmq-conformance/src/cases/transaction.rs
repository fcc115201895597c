//! Broker transactions: commit delivers all, rollback none, drop = rollback; acks can join.

use std::time::Duration;

use coolmq_core::{Destination, ErrorKind, Message};

use super::case;
use crate::case::req::*;
use crate::{check, check_eq, Case, Ctx, TestResult};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        case!("transaction", commit_delivers_all_in_order, [TX]),
        case!("transaction", rollback_delivers_none, [TX]),
        case!("transaction", drop_without_commit_rolls_back, [TX]),
        case!(
            "transaction",
            unroutable_sends_are_refused_and_handed_back,
            [TX, UNROUTABLE, TOPICS]
        ),
        case!(
            "transaction",
            commit_makes_ack_and_send_atomic,
            [TX, TX_ACK]
        ),
        case!(
            "transaction",
            rollback_returns_the_acked_delivery,
            [TX, TX_ACK]
        ),
    ]
}

/// Inside a transaction, a send to a queue that does not exist and to a topic nobody is bound
/// to is refused as `Unroutable` with the message handed back, as outside one, and the rest
/// of the transaction commits. A broker that routes a transaction's messages only at commit
/// (RabbitMQ) may report the topic message there instead: `commit` fails with `Unroutable`
/// naming it, and the routed message is still delivered.
async fn unroutable_sends_are_refused_and_handed_back(ctx: Ctx) -> TestResult {
    let q = ctx.queue("tx-routed").await?;
    let p = ctx.publisher().await?;
    let mut tx = p.begin().await?;
    let missing = Message::new("lost?").with_id("to-missing-queue");
    let r = tx
        .send(
            &Destination::queue(ctx.name("tx-never-declared")),
            missing.clone(),
        )
        .await;
    check!(
        matches!(&r, Err(e) if e.kind() == ErrorKind::Unroutable),
        "transactional send to a missing queue must be Unroutable, got {r:?}"
    );
    if let Err(e) = r {
        check_eq!(
            crate::untraced(e.message()),
            missing,
            "message handed back intact"
        );
    }
    let unbound = Message::new("lost?").with_id("to-unbound-topic");
    let topic_refused = match tx
        .send(
            &Destination::topic(ctx.name("tx-nobody-listens")),
            unbound.clone(),
        )
        .await
    {
        Err(e) => {
            check_eq!(e.kind(), ErrorKind::Unroutable, "topic send error kind");
            check_eq!(
                crate::untraced(e.message()),
                unbound,
                "message handed back intact"
            );
            true
        }
        Ok(()) => false,
    };
    tx.send(
        &Destination::queue(&q),
        Message::new("kept").with_id("kept"),
    )
    .await?;
    match tx.commit().await {
        Ok(()) => check!(
            topic_refused,
            "the unroutable topic message was neither refused nor reported"
        ),
        Err(e) => {
            check!(
                !topic_refused,
                "commit failed although the send was refused: {e}"
            );
            check_eq!(e.kind(), ErrorKind::Unroutable, "commit error kind");
            check!(
                e.to_string().contains("to-unbound-topic"),
                "commit error names the message: {e}"
            );
        }
    }
    let got = ctx.drain(&q, Duration::from_millis(300)).await?;
    check_eq!(got.len(), 1, "routed messages after commit");
    check_eq!(got[0].id, "kept", "the routed message");
    Ok(())
}

async fn commit_delivers_all_in_order(ctx: Ctx) -> TestResult {
    let q = ctx.queue("tx").await?;
    let p = ctx.publisher().await?;
    let mut tx = p.begin().await?;
    for i in 0..10 {
        tx.send(&Destination::queue(&q), Message::new(format!("{i}")))
            .await?;
    }
    check_eq!(
        ctx.broker.queue_depth(&q).await?,
        0,
        "nothing visible before commit"
    );
    tx.commit().await?;
    let got = ctx.drain(&q, Duration::from_millis(300)).await?;
    let bodies: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into())
        .collect();
    let want: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    check_eq!(bodies, want, "all ten, in order");
    Ok(())
}

async fn rollback_delivers_none(ctx: Ctx) -> TestResult {
    let q = ctx.queue("tx").await?;
    let p = ctx.publisher().await?;
    let mut tx = p.begin().await?;
    for i in 0..5 {
        tx.send(&Destination::queue(&q), Message::new(format!("{i}")))
            .await?;
    }
    tx.rollback().await?;
    // A later committed message proves the queue works and the rolled-back ones are gone.
    let mut tx = p.begin().await?;
    tx.send(&Destination::queue(&q), Message::new("after"))
        .await?;
    tx.commit().await?;
    let got = ctx.drain(&q, Duration::from_millis(300)).await?;
    check_eq!(got.len(), 1, "only the committed message");
    check_eq!(&got[0].body[..], b"after", "body");
    Ok(())
}

async fn drop_without_commit_rolls_back(ctx: Ctx) -> TestResult {
    let q = ctx.queue("tx").await?;
    let p = ctx.publisher().await?;
    {
        let mut tx = p.begin().await?;
        tx.send(&Destination::queue(&q), Message::new("dropped"))
            .await?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = ctx.drain(&q, Duration::from_millis(300)).await?;
    check_eq!(got.len(), 0, "messages of a dropped transaction");
    Ok(())
}

async fn commit_makes_ack_and_send_atomic(ctx: Ctx) -> TestResult {
    let input = ctx.queue("in").await?;
    let output = ctx.queue("out").await?;
    ctx.send(&input, Message::new("work")).await?;
    let mut consumer = ctx.broker.consumer(&input).await?;
    let d = ctx.recv(&mut consumer).await?;
    let p = ctx.publisher().await?;
    let mut tx = p.begin().await?;
    tx.send(&Destination::queue(&output), Message::new("result"))
        .await?;
    tx.ack(d).await?;
    tx.commit().await?;
    consumer.close().await?;
    check_eq!(
        ctx.drain(&input, Duration::from_millis(300)).await?.len(),
        0,
        "input after commit"
    );
    check_eq!(
        ctx.drain(&output, Duration::from_millis(300)).await?.len(),
        1,
        "output after commit"
    );
    Ok(())
}

async fn rollback_returns_the_acked_delivery(ctx: Ctx) -> TestResult {
    let input = ctx.queue("in").await?;
    let output = ctx.queue("out").await?;
    ctx.send(&input, Message::new("work").with_id("w-1"))
        .await?;
    let mut consumer = ctx.broker.consumer(&input).await?;
    let d = ctx.recv(&mut consumer).await?;
    let p = ctx.publisher().await?;
    let mut tx = p.begin().await?;
    tx.send(&Destination::queue(&output), Message::new("result"))
        .await?;
    tx.ack(d).await?;
    tx.rollback().await?;
    let again = ctx.recv(&mut consumer).await?;
    check_eq!(again.message().id, "w-1", "the same message comes back");
    check_eq!(again.redelivered(), true, "redelivered flag");
    again.ack().await?;
    consumer.close().await?;
    check_eq!(
        ctx.drain(&output, Duration::from_millis(300)).await?.len(),
        0,
        "output after rollback"
    );
    Ok(())
}
