//! The idiomatic surface every backend shares: a consumer read as a `futures::Stream`, and
//! typed messages through a codec, with undecodable bodies dead-lettered.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use coolmq_core::dead_letter::LAST_ERROR_HEADER;
use coolmq_core::{Destination, HandlerError, HeaderValue, Json, Message};
use futures::{StreamExt, TryStreamExt};

use super::case;
use super::redelivery::wait_until;
use crate::case::req::*;
use crate::{check, check_eq, Ctx, Failed, TestResult};

pub(crate) fn cases() -> Vec<crate::Case> {
    vec![
        case!("typed", consumer_is_a_stream, [CONFIRMS]),
        case!(
            "typed",
            typed_worker_dead_letters_what_it_cannot_decode,
            [CONFIRMS, DLQ]
        ),
    ]
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Order {
    id: u32,
    sku: String,
}

async fn consumer_is_a_stream(ctx: Ctx) -> TestResult {
    let q = ctx.queue("stream").await?;
    let mut consumer = ctx.broker.consumer(&q).await?;
    // A receive given up on (a timeout on an empty queue) loses nothing: the stream's next
    // item finishes it.
    check!(
        tokio::time::timeout(Duration::from_millis(50), consumer.recv())
            .await
            .is_err(),
        "a delivery from an empty queue"
    );
    let p = ctx.publisher().await?;
    for n in 0..5 {
        p.send(
            &Destination::queue(&q),
            Message::new(format!("s{n}")).with_id(format!("s-{n}")),
        )
        .await?;
    }
    let ids: Vec<String> = tokio::time::timeout(
        crate::ctx::RECV_TIMEOUT,
        consumer
            .by_ref()
            .take(5)
            .and_then(|d| async move {
                let id = d.message().id.clone();
                d.ack().await?;
                Ok(id)
            })
            .try_collect(),
    )
    .await
    .map_err(|_| Failed("five deliveries did not come through the stream".into()))??;
    check_eq!(
        ids,
        (0..5).map(|n| format!("s-{n}")).collect::<Vec<_>>(),
        "ids through the stream, in order"
    );
    consumer.close().await?;
    let left = ctx.drain(&q, Duration::from_millis(300)).await?;
    check_eq!(
        left.len(),
        0,
        "messages left after acking through the stream"
    );
    Ok(())
}

async fn typed_worker_dead_letters_what_it_cannot_decode(ctx: Ctx) -> TestResult {
    let spec = ctx.spec("typed");
    ctx.declare(&spec).await?;
    let dlq = spec.dead_letter_queue.clone().expect("dlq");
    let dest = Destination::queue(&spec.name);
    let orders = ctx.publisher().await?.typed::<Order>();
    let first = Order {
        id: 1,
        sku: "a-1".into(),
    };
    orders.send(&dest, &first)?.await?;
    // A foreign producer's body that is no `Order`.
    ctx.send(
        &spec.name,
        Message::new("{\"id\": \"one\"}").with_id("not-an-order"),
    )
    .await?;
    orders
        .send(
            &dest,
            &Order {
                id: 2,
                sku: "b-2".into(),
            },
        )?
        .await?;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let worker = {
        let seen = seen.clone();
        ctx.broker
            .worker(&spec.name)
            .start_json(move |order: Order, incoming| {
                seen.lock()
                    .unwrap()
                    .push((order, incoming.message.content_type.clone()));
                async { Ok::<(), HandlerError>(()) }
            })
            .await?
    };
    wait_until(Duration::from_secs(30), "2 acks and 1 dead letter", || {
        let c = worker.counts();
        c.acked == 2 && c.dead_lettered == 1
    })
    .await?;
    worker.shutdown(Duration::from_secs(5)).await?;
    let seen = seen.lock().unwrap().clone();
    check_eq!(seen.len(), 2, "orders the handler saw");
    check_eq!(seen[0].0, first, "the first order, decoded");
    check_eq!(
        seen[0].1.as_deref(),
        Some(coolmq_core::JSON_CONTENT_TYPE),
        "the typed send's content type"
    );
    let dead = ctx.drain(&dlq, Duration::from_millis(400)).await?;
    check_eq!(dead.len(), 1, "copies in the DLQ");
    check_eq!(dead[0].id, "not-an-order", "the undecodable message");
    let reason = dead[0]
        .headers
        .get(LAST_ERROR_HEADER)
        .and_then(HeaderValue::as_str)
        .unwrap_or_default()
        .to_string();
    check!(
        reason.contains("codec") && reason.contains("JSON"),
        "the dead letter says why: {reason:?}"
    );
    // Dead-lettered on its first delivery: a decode failure is permanent.
    check_eq!(
        dead[0]
            .headers
            .get(coolmq_core::dead_letter::ATTEMPTS_HEADER)
            .and_then(HeaderValue::as_i64),
        Some(1),
        "deliveries before dead-lettering"
    );
    check!(
        Message::new("x").decode::<Order, _>(&Json).is_err(),
        "decoding garbage fails"
    );
    Ok(())
}
