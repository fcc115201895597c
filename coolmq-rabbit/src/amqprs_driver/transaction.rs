//! AMQP 0-9-1 transactions through amqprs, on their own channel, as on lapin: sends to
//! queues are checked for existence first, topic sends are `mandatory` and the commit
//! reports those that came back; an abandoned transaction's channel is closed, which rolls
//! it back on the broker.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{BasicPublishArguments, Channel};
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use async_trait::async_trait;

use super::error::ClientResult;
use coolmq_core::raw::{Acker, TransactionBackend};
use coolmq_core::{Destination, Error, ErrorKind, Message, Result, SendError};

use super::error::{check_short, map};
use super::events::ChannelEvents;
use super::link::AmqprsLink;
use super::props::to_amqprs;
use crate::convert::to_properties;

/// The transaction channel's callback: closes and returned message ids.
#[derive(Default)]
struct TxEvents {
    channel: ChannelEvents,
    returned: Mutex<Vec<String>>,
}

struct TxCallback(Arc<TxEvents>);

#[async_trait]
impl ChannelCallback for TxCallback {
    async fn close(&mut self, _: &Channel, close: CloseChannel) -> ClientResult<()> {
        self.0.channel.record_close(&close);
        Ok(())
    }

    async fn cancel(&mut self, _: &Channel, _: Cancel) -> ClientResult<()> {
        Ok(())
    }

    async fn flow(&mut self, _: &Channel, _active: bool) -> ClientResult<bool> {
        Ok(true)
    }

    async fn publish_ack(&mut self, _: &Channel, _: Ack) {}

    async fn publish_nack(&mut self, _: &Channel, _: Nack) {}

    async fn publish_return(&mut self, _: &Channel, _: Return, p: BasicProperties, _: Vec<u8>) {
        self.0
            .returned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(p.message_id().cloned().unwrap_or_default());
    }
}

pub(crate) struct AmqprsTransaction {
    link: Arc<AmqprsLink>,
    channel: Channel,
    events: Arc<TxEvents>,
    known_queues: HashSet<String>,
}

impl AmqprsTransaction {
    pub async fn begin(link: Arc<AmqprsLink>) -> Result<Self> {
        let events = Arc::new(TxEvents::default());
        let (channel, _) = link.channel_with(TxCallback(events.clone())).await?;
        channel
            .tx_select()
            .await
            .map_err(|e| map(e, "tx.select", events.channel.closed()))?;
        Ok(AmqprsTransaction {
            link,
            channel,
            events,
            known_queues: HashSet::new(),
        })
    }

    fn closed(&self) -> Option<(u16, String)> {
        self.events.channel.closed()
    }

    async fn check_queue(&mut self, queue: &str) -> Result<()> {
        if self.known_queues.contains(queue) {
            return Ok(());
        }
        match super::topology::depth(&self.link, queue).await {
            Ok(_) => {
                self.known_queues.insert(queue.to_string());
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::new(
                ErrorKind::Unroutable,
                format!("no queue named {queue:?}"),
            )
            .with_context("destination", format!("queue://{queue}"))
            .set_temporary(false)),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl TransactionBackend for AmqprsTransaction {
    async fn send(&mut self, destination: &Destination, message: Message) -> Result<(), SendError> {
        if let Err(e) = check_short("routing key", destination.name()) {
            return Err(SendError::new(e, message));
        }
        let (exchange, routing_key) = match destination {
            Destination::Queue(q) => {
                if let Err(e) = self.check_queue(q).await {
                    return Err(SendError::new(e, message));
                }
                (String::new(), q.clone())
            }
            Destination::Topic(t) => (self.link.options.topic_exchange.clone(), t.clone()),
        };
        let properties = match to_properties(&message, None).and_then(|p| to_amqprs(&p)) {
            Ok(p) => p,
            Err(e) => return Err(SendError::new(e, message)),
        };
        let mut args = BasicPublishArguments::new(&exchange, &routing_key);
        // A queue was checked above; a topic's unroutable messages come back at commit.
        args.mandatory = matches!(destination, Destination::Topic(_));
        match self
            .channel
            .basic_publish(properties, message.body.to_vec(), args)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => {
                let closed = self.closed();
                Err(SendError::new(map(e, "basic.publish", closed), message))
            }
        }
    }

    async fn ack(&mut self, acker: Box<dyn Acker>) -> Result<()> {
        // Acks live on the consumer's channel, which is not in tx mode: back to the queue.
        acker.release();
        Err(Error::unsupported("transactional ack", "rabbit"))
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let r = self.channel.tx_commit().await.map_err(|e| {
            map(e, "tx.commit", self.closed()).with_context(
                "outcome",
                "unknown: the commit may or may not have happened",
            )
        });
        // The commit's `basic.return`s came before its commit-ok, on the same channel, and
        // the callback ran before amqprs handed over the commit-ok.
        let returned = std::mem::take(
            &mut *self
                .events
                .returned
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let _ = self.channel.close().await;
        r?;
        if returned.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Unroutable,
            format!(
                "committed, except {} topic message(s) no queue is bound to: {returned:?}",
                returned.len()
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
            .map_err(|e| map(e, "tx.rollback", self.closed()));
        let _ = self.channel.close().await;
        r
    }

    fn abandon(self: Box<Self>) {
        let channel = self.channel;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = channel.tx_rollback().await;
                let _ = channel.close().await;
            });
        }
    }
}
