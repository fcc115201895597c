//! Volume: thousands of messages, concurrent publishers, nothing lost.

use std::collections::HashSet;
use std::time::Duration;

use coolmq_core::{Destination, Message, Publisher};
use futures::stream::{self, StreamExt, TryStreamExt};

use super::case;
use crate::case::req::*;
use crate::{check_eq, Case, Ctx, Failed, TestResult};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        case!("load", ten_thousand_messages_none_lost, [CONFIRMS]),
        case!("load", concurrent_publishers_none_lost, [CONFIRMS]),
    ]
}

/// Publish `n` messages with ids `<tag>-<i>`, 256 in flight, failing on any error.
pub(crate) async fn publish_many(p: &Publisher, queue: &str, n: usize, tag: &str) -> TestResult {
    let dest = Destination::queue(queue);
    stream::iter(0..n)
        .map(|i| {
            let (p, dest) = (p.clone(), dest.clone());
            let m = Message::new(format!("{i}")).with_id(format!("{tag}-{i}"));
            async move { p.send(&dest, m).await }
        })
        .buffer_unordered(256)
        .try_for_each(|_| async { Ok(()) })
        .await
        .map_err(|e| Failed(format!("publish failed: {e}")))
}

async fn ten_thousand_messages_none_lost(ctx: Ctx) -> TestResult {
    const N: usize = 10_000;
    let q = ctx.queue("10k").await?;
    let p = ctx.publisher().await?;
    publish_many(&p, &q, N, "k").await?;
    let got = ctx.drain(&q, Duration::from_secs(1)).await?;
    let ids: HashSet<_> = got.iter().map(|m| &m.id).collect();
    check_eq!(got.len(), N, "received");
    check_eq!(ids.len(), N, "distinct");
    Ok(())
}

async fn concurrent_publishers_none_lost(ctx: Ctx) -> TestResult {
    let q = ctx.queue("pubs").await?;
    let mut tasks = Vec::new();
    for t in 0..10 {
        let p = ctx.publisher().await?;
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            publish_many(&p, &q, 500, &format!("t{t}")).await
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| Failed(format!("publisher task: {e}")))??;
    }
    let got = ctx.drain(&q, Duration::from_secs(1)).await?;
    let ids: HashSet<_> = got.iter().map(|m| &m.id).collect();
    check_eq!(ids.len(), 5000, "distinct messages from 10 publishers");
    check_eq!(got.len(), 5000, "received");
    Ok(())
}
