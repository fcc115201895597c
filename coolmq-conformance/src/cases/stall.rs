//! Stalls: a connection that stops answering without closing (a dead router, a half-open
//! TCP connection), through a [`crate::FaultProxy`] black hole. Nothing may hang: sends
//! resolve within the confirm timeout, a consumer notices within its heartbeat, and nothing
//! is lost once the path is back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use coolmq_core::{Destination, Message};
use futures::stream::{self, StreamExt};

use super::case;
use crate::case::req::*;
use crate::{check, check_eq, Case, Ctx, Failed, TestResult};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        case!(
            "stall",
            sends_during_a_black_hole_resolve_in_time,
            [CONFIRMS, NETWORK]
        ),
        case!(
            "stall",
            consumer_notices_a_black_hole_and_loses_nothing,
            [CONFIRMS, NETWORK]
        ),
    ]
}

/// 2,250 sends paced over 45 s through a connection black-holed from 5 s to 35 s: every
/// send resolves (confirmed, or an error with the message handed back) within the confirm
/// timeout + 1 s, the sends started 5 s after the stall are all confirmed, and every
/// confirmed message is in the queue.
async fn sends_during_a_black_hole_resolve_in_time(ctx: Ctx) -> TestResult {
    const N: usize = 2_250;
    const PACE: Duration = Duration::from_millis(20);
    const CONFIRM_TIMEOUT: Duration = Duration::from_secs(3);
    let stall = (Duration::from_secs(5), Duration::from_secs(35));
    let q = ctx.queue("stall-send").await?;
    let (faulty, proxy) = ctx.proxied(|c| c.confirm_timeout = CONFIRM_TIMEOUT).await?;
    let p = faulty.publisher().await?;
    let dest = Destination::queue(&q);
    let start = Instant::now();
    let hole = async {
        tokio::time::sleep(stall.0).await;
        proxy.black_hole(true);
        tokio::time::sleep(stall.1 - stall.0).await;
        proxy.black_hole(false);
    };
    let sends = stream::iter(0..N)
        .map(|i| {
            let (p, dest) = (p.clone(), dest.clone());
            async move {
                let at = start + PACE * i as u32;
                tokio::time::sleep_until(at.into()).await;
                let m = Message::new_with_id(format!("s-{i}"), "x");
                let sent = Instant::now();
                let r = tokio::time::timeout(Duration::from_secs(30), p.send(&dest, m)).await;
                (i, sent - start, sent.elapsed(), r)
            }
        })
        .buffer_unordered(1_024)
        .collect::<Vec<_>>();
    let (_, results) = tokio::join!(hole, sends);
    let (mut hangs, mut late, mut errors, mut after_errors) = (0, 0, 0, 0);
    let mut after_sample = None;
    let mut confirmed = Vec::new();
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for (i, started, took, r) in results {
        match r {
            Err(_) => hangs += 1,
            Ok(r) => {
                if took > CONFIRM_TIMEOUT + Duration::from_secs(1) {
                    late += 1;
                }
                match r {
                    Ok(_) => confirmed.push(format!("s-{i}")),
                    Err(e) => {
                        errors += 1;
                        *kinds.entry(e.kind().to_string()).or_default() += 1;
                        if started > stall.1 + Duration::from_secs(5) {
                            after_errors += 1;
                            after_sample.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
            }
        }
    }
    let got = ctx.drain(&q, Duration::from_secs(2)).await?;
    let present: std::collections::HashSet<_> = got.iter().map(|m| m.id.clone()).collect();
    let lost = confirmed.iter().filter(|id| !present.contains(*id)).count();
    tracing::info!(?kinds, "stall sends");
    check_eq!(hangs, 0, "sends unresolved after 30 s");
    check_eq!(
        late,
        0,
        "sends resolved later than the confirm timeout + 1 s"
    );
    check!(errors > 0, "no send failed during a 30 s black hole");
    check_eq!(
        after_errors,
        0,
        "sends failing 5 s after the stall ended ({kinds:?}; e.g. {after_sample:?})"
    );
    check_eq!(lost, 0, "confirmed messages missing from the queue");
    let _ = faulty.close().await;
    Ok(())
}

/// A consumer with a 2 s heartbeat whose connection is black-holed for 10 s notices within
/// 2 heartbeats (+ the 2 s connect timeout of its reconnect) and, once the path is back,
/// every one of 50 messages is delivered; duplicates only of what was in flight.
async fn consumer_notices_a_black_hole_and_loses_nothing(ctx: Ctx) -> TestResult {
    const N: usize = 50;
    const PREFETCH: u16 = 10;
    const HEARTBEAT: Duration = Duration::from_secs(2);
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    let q = ctx.queue("stall-consume").await?;
    super::load::publish_many(&ctx.publisher().await?, &q, N, "c").await?;
    let (faulty, proxy) = ctx
        .proxied(|c| {
            c.heartbeat = HEARTBEAT;
            c.connect_timeout = CONNECT_TIMEOUT;
        })
        .await?;
    let mut consumer = faulty.consumer_with_prefetch(&q, PREFETCH).await?;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..N / 5 {
        let d = ctx.recv(&mut consumer).await?;
        *seen.entry(d.message().id.clone()).or_default() += 1;
        d.ack().await?;
    }
    proxy.black_hole(true);
    let holed = Instant::now();
    // The first error (or end) of the consumer is when it noticed.
    let noticed = loop {
        match tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await {
            Err(_) => {
                return Err(Failed(
                    "the consumer did not notice a 30 s black hole".into(),
                ))
            }
            Ok(Ok(Some(d))) => {
                // Prefetched before the stall: settle later, after the path is back.
                *seen.entry(d.message().id.clone()).or_default() += 1;
                drop(d);
            }
            Ok(Ok(None)) | Ok(Err(_)) => break holed.elapsed(),
        }
    };
    let bound = HEARTBEAT * 2 + CONNECT_TIMEOUT + Duration::from_secs(1);
    check!(
        noticed <= bound,
        "the consumer noticed the black hole after {noticed:?}, later than 2 heartbeats + the connect timeout + 1 s ({bound:?})"
    );
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(holed.elapsed())).await;
    proxy.black_hole(false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < N && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await {
            Ok(Ok(Some(d))) => {
                *seen.entry(d.message().id.clone()).or_default() += 1;
                d.ack().await.ok();
            }
            Ok(Ok(None)) => break,
            // Reconnecting: temporary errors until the broker answers again.
            Ok(Err(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let lost = N - seen.len();
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    check_eq!(lost, 0, "messages never delivered after the stall");
    check!(
        duplicates <= 2 * PREFETCH as usize,
        "{duplicates} duplicates, more than the deliveries in flight at the stall allow"
    );
    let _ = consumer.close().await;
    let _ = faulty.close().await;
    Ok(())
}
