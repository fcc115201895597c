//! Publish/subscribe: topics fan out to every bound queue and stay isolated.

use std::time::Duration;

use coolmq_core::{Destination, Message};

use super::case;
use crate::case::req::*;
use crate::{check_eq, Case, Ctx, TestResult};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        case!("topic", fan_out_to_two_subscribers, [CONFIRMS, TOPICS]),
        case!(
            "topic",
            patterns_route_and_topics_stay_isolated,
            [CONFIRMS, TOPICS]
        ),
    ]
}

async fn fan_out_to_two_subscribers(ctx: Ctx) -> TestResult {
    let topic = ctx.name("events.created");
    let a = ctx.spec("sub-a").bind(&topic);
    let b = ctx.spec("sub-b").bind(&topic);
    ctx.declare(&a).await?;
    ctx.declare(&b).await?;
    let p = ctx.publisher().await?;
    for i in 0..20 {
        p.send(&Destination::topic(&topic), Message::new(format!("{i}")))
            .await?;
    }
    for spec in [&a, &b] {
        let got = ctx.drain(&spec.name, Duration::from_millis(400)).await?;
        check_eq!(got.len(), 20, "messages in {}", spec.name);
    }
    Ok(())
}

async fn patterns_route_and_topics_stay_isolated(ctx: Ctx) -> TestResult {
    let base = ctx.name("shop");
    let orders = ctx.spec("orders").bind(format!("{base}.orders.*"));
    let all = ctx.spec("all").bind(format!("{base}.#"));
    ctx.declare(&orders).await?;
    ctx.declare(&all).await?;
    let p = ctx.publisher().await?;
    p.send(
        &Destination::topic(format!("{base}.orders.created")),
        Message::new("o"),
    )
    .await?;
    p.send(
        &Destination::topic(format!("{base}.payments.done")),
        Message::new("p"),
    )
    .await?;
    p.send(
        &Destination::topic(format!("{base}.orders.eu.created")),
        Message::new("deep"),
    )
    .await?;
    let got_orders = ctx.drain(&orders.name, Duration::from_millis(400)).await?;
    let got_all = ctx.drain(&all.name, Duration::from_millis(400)).await?;
    let bodies = |v: &[Message]| {
        v.iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect::<Vec<_>>()
    };
    check_eq!(
        bodies(&got_orders),
        vec!["o".to_string()],
        "orders.* matches one word only"
    );
    check_eq!(
        bodies(&got_all),
        vec!["o".to_string(), "p".into(), "deep".into()],
        "# matches all"
    );
    Ok(())
}
