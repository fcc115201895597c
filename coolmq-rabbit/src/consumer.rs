//! Consuming with manual ack: `basic_qos(prefetch)` before every `basic_consume` (lapin buffers
//! without limit otherwise); after the channel or connection dies the consumer resubscribes on
//! the next `recv`. Settling a delivery whose channel has died is a local `StaleDelivery`
//! error, never a channel-closing PRECONDITION_FAILED.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coolmq_core::raw::{Acker, ConsumerBackend, Received};
use coolmq_core::{Destination, Error, Message, Result, SendOptions};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::Channel;

use crate::connection::Link;
use crate::convert::from_properties;
use crate::error::map;
use crate::publisher::RabbitPublisher;

pub(crate) struct RabbitConsumer {
    link: Arc<Link>,
    forwarder: Arc<RabbitPublisher>,
    queue: String,
    prefetch: u16,
    current: Option<(Channel, lapin::Consumer)>,
    closed: bool,
}

impl RabbitConsumer {
    pub async fn open(
        link: Arc<Link>,
        forwarder: Arc<RabbitPublisher>,
        queue: &str,
        prefetch: u16,
    ) -> Result<Self> {
        let mut c = RabbitConsumer {
            link,
            forwarder,
            queue: queue.to_string(),
            prefetch,
            current: None,
            closed: false,
        };
        c.subscribe().await?;
        Ok(c)
    }

    async fn subscribe(&mut self) -> Result<()> {
        let channel = self.link.channel().await?;
        let wait = self.link.connect_timeout();
        bounded(
            wait,
            "basic.qos-ok",
            channel.basic_qos(self.prefetch, BasicQosOptions { global: false }),
        )
        .await?
        .map_err(|e| map(e, "basic.qos"))?;
        let consumer = bounded(
            wait,
            "basic.consume-ok",
            channel.basic_consume(
                self.queue.clone().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?
        .map_err(|e| map(e, "basic.consume").with_context("queue", self.queue.clone()))?;
        self.current = Some((channel, consumer));
        Ok(())
    }

    fn delivery(&self, d: lapin::message::Delivery) -> Received {
        let lapin::message::Delivery {
            redelivered,
            properties,
            data,
            acker,
            ..
        } = d;
        let message: Message = from_properties(&properties, data);
        let acker = RabbitAcker {
            acker,
            forwarder: self.forwarder.clone(),
            wait: self.link.connect_timeout(),
        };
        // Only the redelivered flag, on classic and quorum queues alike; core checkpoints
        // flagged copies into exact attempts. A quorum queue's `x-delivery-count` is not
        // exact for coolmq's purpose on RabbitMQ 3.10: a consumer that requeues a message
        // and closes at once can leave it counted twice (one count for a return of a
        // delivery that never reached the client).
        Received::flagged(message, redelivered, Box::new(acker))
    }
}

impl RabbitConsumer {
    /// Stop deliveries (`basic.cancel`) but keep the channel, so the deliveries already
    /// handed out can still be settled on it; dropping the consumer closes the channel.
    #[cfg(feature = "amqprs")]
    pub async fn cancel(&mut self) {
        self.closed = true;
        if let Some((channel, consumer)) = &self.current {
            let _ = bounded(
                self.link.connect_timeout(),
                "basic.cancel-ok",
                channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
            )
            .await;
        }
    }
}

#[async_trait]
impl ConsumerBackend for RabbitConsumer {
    async fn recv(&mut self) -> Result<Option<Received>> {
        loop {
            if self.closed {
                return Ok(None);
            }
            if self.current.is_none() {
                // Resubscribe after a lost channel or connection; an error here is temporary
                // (callers such as the worker retry with backoff).
                self.subscribe().await?;
            }
            let (channel, consumer) = self.current.as_mut().expect("subscribed");
            match consumer.next().await {
                Some(Ok(d)) => return Ok(Some(self.delivery(d))),
                Some(Err(e)) => {
                    tracing::warn!(queue = %self.queue, error = %e, "consumer channel failed; resubscribing");
                    self.current = None;
                }
                None => {
                    let channel_alive = channel.status().connected();
                    self.current = None;
                    if channel_alive {
                        // The broker cancelled the consumer: the queue was deleted.
                        self.closed = true;
                        return Ok(None);
                    }
                    tracing::warn!(queue = %self.queue, "consumer channel closed; resubscribing");
                }
            }
        }
    }

    async fn close(&mut self) -> Result<()> {
        self.closed = true;
        if let Some((channel, consumer)) = self.current.take() {
            let wait = self.link.connect_timeout();
            let _ = bounded(
                wait,
                "basic.cancel-ok",
                channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
            )
            .await;
            // Closing the channel returns every unsettled delivery to the queue.
            let _ = bounded(
                wait,
                "channel.close-ok",
                channel.close(200, "consumer closed".into()),
            )
            .await;
        }
        Ok(())
    }
}

impl Drop for RabbitConsumer {
    fn drop(&mut self) {
        if let Some((channel, _)) = self.current.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = channel.close(200, "consumer dropped".into()).await;
                });
            }
        }
    }
}

/// Settles one delivery. lapin poisons an acker whose channel has closed, so staleness is
/// known locally, without asking the channel.
pub(crate) struct RabbitAcker {
    acker: lapin::Acker,
    forwarder: Arc<RabbitPublisher>,
    /// How long a settlement may wait to be written (the connect timeout).
    wait: Duration,
}

/// `operation` within `wait`: lapin resolves an RPC or a settlement only when the broker
/// answers or the connection reports its end, and a connection that died without reporting
/// it must not wedge a consumer. Past `wait` the outcome is unknown: `ConnectionLost`.
pub(crate) async fn bounded<T>(
    wait: Duration,
    waiting_for: &str,
    operation: impl std::future::Future<Output = T>,
) -> Result<T> {
    tokio::time::timeout(wait, operation).await.map_err(|_| {
        Error::new(
            coolmq_core::ErrorKind::ConnectionLost,
            format!("no {waiting_for} within {wait:?}: the connection is not answering"),
        )
        .set_temporary(true)
    })
}

fn stale() -> Error {
    coolmq_core::raw::stale_delivery("channel")
}

impl RabbitAcker {
    fn settled(&self, r: lapin::Result<bool>, operation: &'static str) -> Result<()> {
        match r {
            Ok(true) => Ok(()),
            Ok(false) => Err(stale()),
            Err(_) if self.acker.poisoned() => Err(stale()),
            Err(e) => Err(map(e, operation)),
        }
    }
}

#[async_trait]
impl Acker for RabbitAcker {
    async fn ack(self: Box<Self>) -> Result<()> {
        if !self.acker.usable() {
            return Err(stale());
        }
        // Past the wait the ack may or may not reach the broker: if not, it redelivers.
        let r = bounded(
            self.wait,
            "word that basic.ack went out",
            self.acker.ack(BasicAckOptions::default()),
        )
        .await?;
        self.settled(r, "basic.ack")
    }

    async fn requeue(self: Box<Self>) -> Result<()> {
        if !self.acker.usable() {
            return Err(stale());
        }
        let r = bounded(
            self.wait,
            "word that basic.nack went out",
            self.acker.nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            }),
        )
        .await?;
        self.settled(r, "basic.nack")
    }

    async fn forward(
        self: Box<Self>,
        destination: &Destination,
        replacement: Message,
        options: &SendOptions,
    ) -> Result<()> {
        let published = self
            .forwarder
            .publish(destination, replacement, options.delay)
            .await;
        coolmq_core::raw::ack_after_forward(self, published).await
    }

    fn release(self: Box<Self>) {
        if !self.acker.usable() {
            return; // the broker requeues it with the channel
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = self
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await;
            });
        }
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}
