//! Topology: declaring is idempotent and declares the dead-letter queue; deleting removes.

use coolmq_core::{Destination, ErrorKind, Message};

use super::case;
use crate::case::req::*;
use crate::{check, check_eq, Case, Ctx, TestResult};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        case!(
            "topology",
            declare_is_idempotent_and_declares_the_dlq,
            [CONFIRMS, DLQ]
        ),
        case!(
            "topology",
            deleted_queue_is_unroutable,
            [CONFIRMS, UNROUTABLE]
        ),
    ]
}

async fn declare_is_idempotent_and_declares_the_dlq(ctx: Ctx) -> TestResult {
    let spec = ctx.spec("idem");
    ctx.declare(&spec).await?;
    ctx.send(&spec.name, Message::new("kept")).await?;
    ctx.declare(&spec).await?;
    check_eq!(
        ctx.broker.queue_depth(&spec.name).await?,
        1,
        "redeclaring keeps messages"
    );
    let dlq = spec.dead_letter_queue.clone().expect("dlq");
    check_eq!(
        ctx.broker.queue_depth(&dlq).await?,
        0,
        "the DLQ exists and is empty"
    );
    ctx.send(&dlq, Message::new("to dlq")).await?;
    check_eq!(
        ctx.broker.queue_depth(&dlq).await?,
        1,
        "the DLQ takes messages"
    );
    Ok(())
}

async fn deleted_queue_is_unroutable(ctx: Ctx) -> TestResult {
    let q = ctx.queue("gone").await?;
    ctx.send(&q, Message::new("x")).await?;
    ctx.broker.delete_queue(&q).await?;
    ctx.broker.delete_queue(&q).await?; // deleting an absent queue is fine
    let r = ctx
        .publisher()
        .await?
        .send(&Destination::queue(&q), Message::new("y"))
        .await;
    check!(
        matches!(&r, Err(e) if e.kind() == ErrorKind::Unroutable),
        "send to a deleted queue must be Unroutable, got {r:?}"
    );
    Ok(())
}
