//! Capabilities tell the truth: what a backend lacks returns `Unsupported` (losing nothing),
//! what it claims works.

use std::time::Duration;

use coolmq_core::{Destination, ErrorKind, HeaderValue, Message};

use super::case;
use crate::{check, Case, Ctx, Failed, TestResult};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        case!("capability", missing_capabilities_return_unsupported, []),
        case!("capability", claimed_capabilities_are_usable, []),
    ]
}

fn unsupported<T: std::fmt::Debug>(what: &str, r: Result<T, coolmq_core::Error>) -> TestResult {
    match r {
        Err(e) if e.kind() == ErrorKind::Unsupported => Ok(()),
        other => Err(Failed(format!(
            "{what}: expected Unsupported, got {other:?}"
        ))),
    }
}

async fn missing_capabilities_return_unsupported(ctx: Ctx) -> TestResult {
    let caps = ctx.broker.capabilities();
    let q = ctx.queue("caps").await?;
    let p = ctx.publisher().await?;
    let dest = Destination::queue(&q);
    let mut checked = 0;
    if !caps.transactions {
        unsupported("begin", p.begin().await.map(drop))?;
        checked += 1;
    }
    if !caps.delayed_delivery {
        let m = Message::new("later");
        let r = p
            .send(&dest, m.clone())
            .delay(Duration::from_millis(10))
            .await;
        match r {
            Err(e) if e.kind() == ErrorKind::Unsupported => {
                check!(crate::untraced(e.message()) == m, "message handed back")
            }
            other => {
                return Err(Failed(format!(
                    "delayed send: expected Unsupported, got {other:?}"
                )))
            }
        }
        checked += 1;
    }
    if !caps.topics {
        unsupported(
            "topic send",
            p.send(&Destination::topic("t"), Message::new("x"))
                .await
                .map_err(Into::into),
        )?;
        unsupported(
            "topic binding",
            ctx.declare(&ctx.spec("bound").bind("t.*")).await,
        )?;
        checked += 1;
    }
    if !caps.nested_headers {
        let m = Message::new("n").with_header("list", vec![HeaderValue::I32(1)]);
        unsupported("nested header", p.send(&dest, m).await.map_err(Into::into))?;
        checked += 1;
    }
    if !caps.max_length {
        unsupported(
            "max length",
            ctx.declare(&ctx.spec("len").max_length(1)).await,
        )?;
        checked += 1;
    }
    if !caps.message_ttl {
        let m = Message::new("t").with_ttl(Duration::from_secs(1));
        unsupported("message ttl", p.send(&dest, m).await.map_err(Into::into))?;
        checked += 1;
    }
    tracing::info!(checked, "missing capabilities checked");
    Ok(())
}

async fn claimed_capabilities_are_usable(ctx: Ctx) -> TestResult {
    let caps = ctx.broker.capabilities();
    check!(
        !caps.transactional_ack || caps.transactions,
        "transactional_ack without transactions"
    );
    let q = ctx.queue("claims").await?;
    let p = ctx.publisher().await?;
    if caps.transactions {
        p.begin().await?.rollback().await?;
    }
    if caps.delayed_delivery {
        p.send(&Destination::queue(&q), Message::new("d"))
            .delay(Duration::from_millis(1))
            .await?;
    }
    if caps.topics {
        ctx.declare(&ctx.spec("sub").bind(ctx.name("t.*"))).await?;
    }
    if caps.max_length {
        ctx.declare(&ctx.spec("len").max_length(5)).await?;
    }
    if let Some(max) = caps.max_message_size {
        check!(
            max >= 64 * 1024,
            "max_message_size {max} is below the 64 KiB every backend must take"
        );
        p.send(&Destination::queue(&q), Message::new(vec![1u8; 64 * 1024]))
            .await?;
    }
    Ok(())
}
