//! The portable topology through amqprs: the same queue arguments, dead-letter queues,
//! bindings and delay tiers as the lapin driver builds (`crate::topology`, `crate::delay`),
//! each operation on its own channel, since a refused declare closes the channel it ran on.

use amqprs::channel::{
    Channel, ExchangeDeclareArguments, QueueBindArguments, QueueDeclareArguments,
    QueueDeleteArguments,
};
use coolmq_core::{ErrorKind, QueueSpec, Result};

use super::error::{check_short, map};
use super::events::ChannelEvents;
use super::link::AmqprsLink;
use super::props::table;
use crate::delay::{TierPlan, DELAY_EXCHANGE};
use crate::topology::{arguments, dead_letter_arguments};

fn name(field: &'static str, value: &str) -> Result<()> {
    check_short(field, value).map_err(|e| {
        coolmq_core::Error::config(field, format!("{e}: RabbitMQ names are short strings"))
    })
}

async fn close(channel: Channel) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), channel.close()).await;
}

pub(crate) async fn declare(link: &AmqprsLink, spec: &QueueSpec) -> Result<()> {
    name("queue name", &spec.name)?;
    if let Some(dlq) = &spec.dead_letter_queue {
        name("dead-letter queue name", dlq)?;
    }
    for pattern in &spec.bindings {
        name("binding pattern", pattern)?;
    }
    let (channel, events) = link.channel().await?;
    let r = declare_on(&channel, &events, link, spec).await;
    close(channel).await;
    r
}

async fn declare_on(
    channel: &Channel,
    events: &ChannelEvents,
    link: &AmqprsLink,
    spec: &QueueSpec,
) -> Result<()> {
    if let Some(dlq) = &spec.dead_letter_queue {
        channel
            .queue_declare(
                QueueDeclareArguments::new(dlq)
                    .durable(true)
                    .arguments(table(&dead_letter_arguments(spec))?)
                    .finish(),
            )
            .await
            .map_err(|e| {
                map(e, "queue.declare", events.closed()).with_context("queue", dlq.clone())
            })?;
    }
    channel
        .queue_declare(
            QueueDeclareArguments::new(&spec.name)
                .durable(spec.durable)
                .arguments(table(&arguments(spec))?)
                .finish(),
        )
        .await
        .map_err(|e| {
            map(e, "queue.declare", events.closed()).with_context("queue", spec.name.clone())
        })?;
    for pattern in &spec.bindings {
        channel
            .queue_bind(QueueBindArguments::new(
                &spec.name,
                &link.options.topic_exchange,
                pattern,
            ))
            .await
            .map_err(|e| {
                map(e, "queue.bind", events.closed()).with_context("queue", spec.name.clone())
            })?;
    }
    Ok(())
}

pub(crate) async fn delete(link: &AmqprsLink, queue: &str) -> Result<()> {
    name("queue name", queue)?;
    let (channel, events) = link.channel().await?;
    let r = channel.queue_delete(QueueDeleteArguments::new(queue)).await;
    close(channel).await;
    match r {
        Ok(_) => Ok(()),
        Err(e) => match map(e, "queue.delete", events.closed()) {
            e if e.kind() == ErrorKind::NotFound => Ok(()),
            e => Err(e),
        },
    }
}

/// A passive declare's message count; `NotFound` for a missing queue.
pub(crate) async fn depth(link: &AmqprsLink, queue: &str) -> Result<u64> {
    name("queue name", queue)?;
    let (channel, events) = link.channel().await?;
    let r = channel
        .queue_declare(QueueDeclareArguments::new(queue).passive(true).finish())
        .await;
    close(channel).await;
    match r {
        Ok(Some((_, count, _))) => Ok(u64::from(count)),
        Ok(None) => Ok(0),
        Err(e) => {
            Err(map(e, "queue.declare(passive)", events.closed()).with_context("queue", queue))
        }
    }
}

/// Declare one delay tier (see `crate::delay`).
pub(crate) async fn declare_tier(link: &AmqprsLink, plan: &TierPlan) -> Result<()> {
    let (channel, events) = link.channel().await?;
    let r = async {
        channel
            .exchange_declare(
                ExchangeDeclareArguments::new(DELAY_EXCHANGE, "headers")
                    .durable(true)
                    .finish(),
            )
            .await
            .map_err(|e| map(e, "exchange.declare", events.closed()))?;
        channel
            .queue_declare(
                QueueDeclareArguments::new(&plan.queue)
                    .durable(true)
                    .arguments(table(&plan.queue_args)?)
                    .finish(),
            )
            .await
            .map_err(|e| map(e, "queue.declare", events.closed()))?;
        channel
            .queue_bind(
                QueueBindArguments::new(&plan.queue, DELAY_EXCHANGE, "")
                    .arguments(table(&plan.bind_args)?)
                    .finish(),
            )
            .await
            .map_err(|e| map(e, "queue.bind", events.closed()))?;
        Ok(())
    }
    .await;
    close(channel).await;
    r
}
