//! Consuming through amqprs with manual ack: `basic.qos(prefetch)` before every
//! `basic.consume` (amqprs hands deliveries to an unbounded channel, so the prefetch is what
//! bounds it); after the channel or connection dies the consumer resubscribes on the next
//! `recv`. Settling a delivery whose channel has died is a local `StaleDelivery` error. A
//! consumer whose connection keeps dropping right after subscribing receives through lapin
//! for a while (`rescue.rs`), so a message amqprs cannot decode never wedges the queue.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqprs::channel::{
    BasicAckArguments, BasicCancelArguments, BasicConsumeArguments, BasicNackArguments,
    BasicQosArguments, Channel, ConsumerMessage,
};
use async_trait::async_trait;
use coolmq_core::raw::{Acker, ConsumerBackend, Received};
use coolmq_core::{Destination, Error, ErrorKind, Message, Result, SendOptions};
use tokio::sync::mpsc::UnboundedReceiver;

use super::error::map;
use super::events::ChannelEvents;
use super::link::{bounded, bounded_quick, AmqprsLink, Live};
use super::props::from_amqprs;
use super::publisher::AmqprsPublisher;
use super::rescue::{Rescue, RescueLink, Rescued, DROPS_BEFORE_RESCUE, SOON};
use crate::consumer::RabbitConsumer;
use crate::convert::from_properties;

/// One subscription: its channel, its deliveries, what the broker told it.
struct Subscription {
    channel: Channel,
    tag: String,
    deliveries: UnboundedReceiver<ConsumerMessage>,
    events: Arc<ChannelEvents>,
    live: Live,
    since: Instant,
}

pub(crate) struct AmqprsConsumer {
    link: Arc<AmqprsLink>,
    forwarder: Arc<AmqprsPublisher>,
    rescue_link: Arc<RescueLink>,
    queue: String,
    prefetch: u16,
    current: Option<Subscription>,
    /// Connection drops in a row soon after subscribing (see `rescue.rs`).
    drops: u32,
    rescue: Option<Rescue>,
    /// A rescue being started.
    starting: Option<tokio::task::JoinHandle<Result<Rescue>>>,
    /// The last rescue's lapin consumer, cancelled, kept open for its last settlement.
    retired: Option<RabbitConsumer>,
    closed: bool,
}

/// A subscribe that failed because the connection dropped under it (as a message amqprs
/// cannot decode makes it): counted toward a rescue, not returned.
fn dropped(e: &coolmq_core::Error) -> bool {
    e.kind() == ErrorKind::ConnectionLost
}

impl AmqprsConsumer {
    pub async fn open(
        link: Arc<AmqprsLink>,
        forwarder: Arc<AmqprsPublisher>,
        rescue_link: Arc<RescueLink>,
        queue: &str,
        prefetch: u16,
    ) -> Result<Self> {
        super::error::check_short("queue name", queue)?;
        let mut c = AmqprsConsumer {
            link,
            forwarder,
            rescue_link,
            queue: queue.to_string(),
            prefetch,
            current: None,
            drops: 0,
            rescue: None,
            starting: None,
            retired: None,
            closed: false,
        };
        match c.subscribe().await {
            Ok(()) => {}
            Err(e) if dropped(&e) => c.drops += 1,
            Err(e) => return Err(e),
        }
        Ok(c)
    }

    async fn subscribe(&mut self) -> Result<()> {
        let since = Instant::now();
        let (channel, events, live) = self.link.channel_on_live().await?;
        let wait = self.link.connect_timeout();
        let r = async {
            bounded(
                wait,
                "basic.qos-ok",
                channel.basic_qos(BasicQosArguments::new(0, self.prefetch, false)),
            )
            .await?
            .map_err(|e| map(e, "basic.qos", events.closed()))?;
            let args = BasicConsumeArguments::new(&self.queue, "")
                .manual_ack(true)
                .finish();
            bounded(wait, "basic.consume-ok", channel.basic_consume_rx(args))
                .await?
                .map_err(|e| {
                    map(e, "basic.consume", events.closed())
                        .with_context("queue", self.queue.clone())
                })
        }
        .await;
        let (tag, deliveries) = r?;
        self.current = Some(Subscription {
            channel,
            tag,
            deliveries,
            events,
            live,
            since,
        });
        Ok(())
    }

    fn delivery(&self, channel: &Channel, d: ConsumerMessage) -> Option<Received> {
        let deliver = d.deliver?;
        let properties = d
            .basic_properties
            .map(|p| from_amqprs(&p))
            .unwrap_or_default();
        let message: Message = from_properties(&properties, d.content.unwrap_or_default());
        let acker = AmqprsAcker {
            channel: channel.clone(),
            tag: deliver.delivery_tag(),
            forwarder: self.forwarder.clone(),
            wait: self.link.connect_timeout(),
        };
        Some(Received::flagged(
            message,
            deliver.redelivered(),
            Box::new(acker),
        ))
    }
}

#[async_trait]
impl ConsumerBackend for AmqprsConsumer {
    async fn recv(&mut self) -> Result<Option<Received>> {
        loop {
            if self.closed {
                return Ok(None);
            }
            if let Some(rescue) = self.rescue.as_mut() {
                let next = rescue.next().await?;
                if rescue.done() {
                    self.retired = self.rescue.take().map(Rescue::finish);
                }
                match next {
                    Rescued::Delivery(d) => return Ok(Some(*d)),
                    Rescued::Over => {
                        tracing::debug!(queue = %self.queue, "rescue over");
                        continue;
                    }
                    Rescued::Cancelled => {
                        self.closed = true;
                        return Ok(None);
                    }
                }
            }
            if self.current.is_none() {
                if self.drops >= DROPS_BEFORE_RESCUE && self.starting.is_none() {
                    // In a task of its own: a caller that gives `recv` a short timeout must
                    // not cancel the rescue's connect over and over.
                    self.starting = Some(tokio::spawn(Rescue::start(
                        self.rescue_link.clone(),
                        self.queue.clone(),
                        self.prefetch,
                    )));
                    self.drops = 0;
                }
                if let Some(starting) = self.starting.as_mut() {
                    let started = starting.await;
                    self.starting = None;
                    match started {
                        Ok(Ok(rescue)) => self.rescue = Some(rescue),
                        Ok(Err(e)) => return Err(e),
                        Err(e) => {
                            return Err(Error::new(
                                ErrorKind::Unexpected,
                                format!("starting a lapin rescue failed: {e}"),
                            ))
                        }
                    }
                    continue;
                }
                // Resubscribe after a lost channel or connection; an error here is temporary
                // (callers such as the worker retry with backoff).
                match self.subscribe().await {
                    Ok(()) => {
                        tracing::debug!(queue = %self.queue, drops = self.drops, "subscribed")
                    }
                    Err(e) if dropped(&e) => {
                        self.drops += 1;
                        tracing::debug!(queue = %self.queue, drops = self.drops, error = %e, "subscribe dropped");
                        continue;
                    }
                    Err(e) => {
                        // The broker cannot be reached (a broker down, not a message amqprs
                        // cannot decode): the drops before it do not count.
                        tracing::debug!(queue = %self.queue, drops = self.drops, error = %e, "subscribe failed");
                        self.drops = 0;
                        return Err(e);
                    }
                }
            }
            let sub = self.current.as_mut().expect("subscribed");
            match sub.deliveries.recv().await {
                Some(d) => {
                    let channel = sub.channel.clone();
                    if let Some(r) = self.delivery(&channel, d) {
                        return Ok(Some(r));
                    }
                }
                None => {
                    let cancelled = sub.events.cancelled() && sub.channel.is_open();
                    // The connection went without the broker closing it, soon after the
                    // subscribe: what a message amqprs cannot decode does.
                    let soon_dropped = !sub.live.alive()
                        && sub.live.events.closed().is_none()
                        && sub.since.elapsed() < SOON;
                    self.current = None;
                    if cancelled {
                        // The broker cancelled the consumer: the queue was deleted.
                        self.closed = true;
                        return Ok(None);
                    }
                    self.drops = if soon_dropped { self.drops + 1 } else { 0 };
                    tracing::warn!(queue = %self.queue, drops = self.drops, "consumer channel closed; resubscribing");
                }
            }
        }
    }

    async fn close(&mut self) -> Result<()> {
        self.closed = true;
        if let Some(starting) = self.starting.take() {
            starting.abort();
        }
        for mut lapin in [self.rescue.take().map(Rescue::finish), self.retired.take()]
            .into_iter()
            .flatten()
        {
            let _ = lapin.close().await;
        }
        if let Some(sub) = self.current.take() {
            let wait = self.link.connect_timeout();
            let _ = bounded(
                wait,
                "basic.cancel-ok",
                sub.channel
                    .basic_cancel(BasicCancelArguments::new(&sub.tag)),
            )
            .await;
            // Closing the channel returns every unsettled delivery to the queue.
            let _ = bounded(wait, "channel.close-ok", sub.channel.close()).await;
        }
        Ok(())
    }
}

impl Drop for AmqprsConsumer {
    fn drop(&mut self) {
        if let Some(sub) = self.current.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = sub.channel.close().await;
                });
            }
        }
    }
}

/// Settles one delivery on the channel it came on; a closed channel makes it stale, known
/// locally without asking the broker.
pub(crate) struct AmqprsAcker {
    channel: Channel,
    tag: u64,
    forwarder: Arc<AmqprsPublisher>,
    /// How long a settlement may wait to be written (the connect timeout).
    wait: Duration,
}

fn stale() -> Error {
    coolmq_core::raw::stale_delivery("channel")
}

impl AmqprsAcker {
    fn settled(&self, r: super::error::ClientResult<()>, operation: &'static str) -> Result<()> {
        match r {
            Ok(()) => Ok(()),
            Err(_) if !self.channel.is_open() => Err(stale()),
            Err(e) => Err(map(e, operation, None)),
        }
    }

    async fn nack(&self) -> Result<()> {
        if !self.channel.is_open() {
            return Err(stale());
        }
        let r = bounded_quick(
            self.wait,
            "word that basic.nack went out",
            self.channel
                .basic_nack(BasicNackArguments::new(self.tag, false, true)),
        )
        .await?;
        self.settled(r, "basic.nack")
    }
}

#[async_trait]
impl Acker for AmqprsAcker {
    async fn ack(self: Box<Self>) -> Result<()> {
        if !self.channel.is_open() {
            return Err(stale());
        }
        // Past the wait the ack may or may not reach the broker: if not, it redelivers.
        let r = bounded_quick(
            self.wait,
            "word that basic.ack went out",
            self.channel
                .basic_ack(BasicAckArguments::new(self.tag, false)),
        )
        .await?;
        self.settled(r, "basic.ack")
    }

    async fn requeue(self: Box<Self>) -> Result<()> {
        self.nack().await
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
        if !self.channel.is_open() {
            return; // the broker requeues it with the channel
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = self.nack().await;
            });
        }
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}
