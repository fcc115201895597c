//! Portable topology on RabbitMQ: durable classic or quorum queues whose broker-side
//! dead-lettering (expiry, overflow) targets `DLQ.<queue>` through the default exchange, the DLQ
//! itself, length limits, and topic bindings on the topic exchange. Each operation uses its
//! own channel, since a refused declare closes the channel it ran on.

use coolmq_core::{ErrorKind, Overflow, QueueKind, QueueSpec, Result};
use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};

use crate::connection::Link;
use crate::error::map;

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

pub(crate) fn arguments(spec: &QueueSpec) -> FieldTable {
    let mut args = FieldTable::default();
    let quorum = spec.kind == QueueKind::Quorum;
    if let Some(dlq) = &spec.dead_letter_queue {
        args.insert("x-dead-letter-exchange".into(), long(""));
        args.insert("x-dead-letter-routing-key".into(), long(dlq));
    }
    let overflow = match spec.overflow {
        Overflow::RejectPublish => "reject-publish",
        Overflow::DropHead => "drop-head",
    };
    if let Some(max) = spec.max_length {
        args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(max.min(i64::MAX as u64) as i64),
        );
        args.insert("x-overflow".into(), long(overflow));
    }
    if quorum {
        args.insert("x-queue-type".into(), long("quorum"));
        // Quorum queues dead-letter at least once (RabbitMQ 3.10+) when they never drop the
        // head: a message leaves only once its dead-letter queue confirmed it. Classic
        // queues' dead-letter hop is at most once.
        if spec.dead_letter_queue.is_some() && spec.overflow == Overflow::RejectPublish {
            args.insert("x-dead-letter-strategy".into(), long("at-least-once"));
            args.insert("x-overflow".into(), long("reject-publish"));
        }
        if let Some(limit) = spec.delivery_limit {
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(i64::from(limit)),
            );
        }
    }
    args
}

/// The dead-letter queue of `spec`: durable, of the queue's kind (on a cluster, a quorum
/// queue's dead letters are replicated like the queue).
pub(crate) fn dead_letter_arguments(spec: &QueueSpec) -> FieldTable {
    let mut args = FieldTable::default();
    if spec.kind == QueueKind::Quorum {
        args.insert("x-queue-type".into(), long("quorum"));
    }
    args
}

pub(crate) async fn declare(link: &Link, spec: &QueueSpec) -> Result<()> {
    let channel = link.channel().await?;
    let durable = QueueDeclareOptions {
        durable: spec.durable,
        ..Default::default()
    };
    let r = async {
        if let Some(dlq) = &spec.dead_letter_queue {
            channel
                .queue_declare(
                    dlq.clone().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    dead_letter_arguments(spec),
                )
                .await
                .map_err(|e| map(e, "queue.declare").with_context("queue", dlq.clone()))?;
        }
        channel
            .queue_declare(spec.name.clone().into(), durable, arguments(spec))
            .await
            .map_err(|e| map(e, "queue.declare").with_context("queue", spec.name.clone()))?;
        for pattern in &spec.bindings {
            channel
                .queue_bind(
                    spec.name.clone().into(),
                    link.options.topic_exchange.clone().into(),
                    pattern.clone().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| map(e, "queue.bind").with_context("queue", spec.name.clone()))?;
        }
        Ok(())
    }
    .await;
    let _ = channel.close(200, "".into()).await;
    r
}

pub(crate) async fn delete(link: &Link, name: &str) -> Result<()> {
    let channel = link.channel().await?;
    let r = channel
        .queue_delete(name.into(), QueueDeleteOptions::default())
        .await;
    let _ = channel.close(200, "".into()).await;
    match r {
        Ok(_) => Ok(()),
        Err(e) => match map(e, "queue.delete") {
            e if e.kind() == ErrorKind::NotFound => Ok(()),
            e => Err(e),
        },
    }
}

pub(crate) async fn depth(link: &Link, name: &str) -> Result<u64> {
    let channel = link.channel().await?;
    let r = channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    let _ = channel.close(200, "".into()).await;
    r.map(|q| u64::from(q.message_count()))
        .map_err(|e| map(e, "queue.declare(passive)").with_context("queue", name))
}
