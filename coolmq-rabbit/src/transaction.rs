//! AMQP 0-9-1 transactions on their own channel (a channel cannot be in confirm and tx mode at
//! once). Sends to queues are checked for existence first, so an unroutable message is
//! reported instead of dropped; an abandoned transaction's channel is closed, which rolls it
//! back on the broker.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use coolmq_core::raw::{Acker, TransactionBackend};
use coolmq_core::{Destination, Error, ErrorKind, Message, Result, SendError};
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::Channel;

use crate::connection::Link;
use crate::convert::to_properties;
use crate::error::map;

pub(crate) struct RabbitTransaction {
    link: Arc<Link>,
    channel: Channel,
    known_queues: HashSet<String>,
}

impl RabbitTransaction {
    pub async fn begin(link: Arc<Link>) -> Result<Self> {
        let channel = link.channel().await?;
        channel.tx_select().await.map_err(|e| map(e, "tx.select"))?;
        Ok(RabbitTransaction {
            link,
            channel,
            known_queues: HashSet::new(),
        })
    }

    async fn check_queue(&mut self, queue: &str) -> Result<()> {
        if self.known_queues.contains(queue) {
            return Ok(());
        }
        // A passive declare of a missing queue closes its channel: use a throwaway one.
        let probe = self.link.channel().await?;
        let r = probe
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        let _ = probe.close(200, "".into()).await;
        match r {
            Ok(_) => {
                self.known_queues.insert(queue.to_string());
                Ok(())
            }
            Err(e) => {
                let e = map(e, "queue.declare(passive)");
                if e.kind() == ErrorKind::NotFound {
                    Err(
                        Error::new(ErrorKind::Unroutable, format!("no queue named {queue:?}"))
                            .with_context("destination", format!("queue://{queue}"))
                            .set_temporary(false),
                    )
                } else {
                    Err(e)
                }
            }
        }
    }
}

#[async_trait]
impl TransactionBackend for RabbitTransaction {
    async fn send(&mut self, destination: &Destination, message: Message) -> Result<(), SendError> {
        let (exchange, routing_key) = match destination {
            Destination::Queue(q) => {
                if let Err(e) = self.check_queue(q).await {
                    return Err(SendError::new(e, message));
                }
                (String::new(), q.clone())
            }
            Destination::Topic(t) => (self.link.options.topic_exchange.clone(), t.clone()),
        };
        let properties = match to_properties(&message, None) {
            Ok(p) => p,
            Err(e) => return Err(SendError::new(e, message)),
        };
        let r = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                // A queue was checked above. A topic's bindings cannot be asked for, and
                // RabbitMQ routes a transaction's messages at commit: an unroutable topic
                // message comes back then, and `commit` reports it.
                BasicPublishOptions {
                    mandatory: matches!(destination, Destination::Topic(_)),
                    ..Default::default()
                },
                &message.body,
                properties,
            )
            .await;
        match r {
            Ok(_not_requested) => Ok(()),
            Err(e) => Err(SendError::new(map(e, "basic.publish"), message)),
        }
    }

    async fn ack(&mut self, acker: Box<dyn Acker>) -> Result<()> {
        // Acks live on the consumer's channel, which is not in tx mode: back to the queue.
        acker.release();
        Err(Error::unsupported("transactional ack", "rabbit"))
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let r = self.channel.tx_commit().await.map_err(|e| {
            map(e, "tx.commit").with_context(
                "outcome",
                "unknown: the commit may or may not have happened",
            )
        });
        // The `basic.return`s of the commit's unroutable topic messages came before its
        // commit-ok, on the same channel.
        let returned = match &r {
            Ok(()) => self.channel.wait_for_confirms().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let _ = self.channel.close(200, "".into()).await;
        r?;
        if returned.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = returned
            .iter()
            .map(|m| {
                m.properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.as_str().to_string())
                    .unwrap_or_default()
            })
            .collect();
        Err(Error::new(
            ErrorKind::Unroutable,
            format!(
                "committed, except {} topic message(s) no queue is bound to: {ids:?}",
                ids.len()
            ),
        )
        .with_context("outcome", "committed without the unroutable messages")
        .set_temporary(false))
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        let r = self
            .channel
            .tx_rollback()
            .await
            .map_err(|e| map(e, "tx.rollback"));
        let _ = self.channel.close(200, "".into()).await;
        r
    }

    fn abandon(self: Box<Self>) {
        let channel = self.channel;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = channel.tx_rollback().await;
                let _ = channel.close(200, "".into()).await;
            });
        }
    }
}
