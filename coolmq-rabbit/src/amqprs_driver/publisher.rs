//! Publishing with confirms through amqprs: every send is `mandatory` on one confirm channel
//! per publisher, written by one task, its delivery tag tracked by [`Tracker`]. A returned message is
//! `Unroutable`, a nack `Nacked`; a dead channel resolves every pending send at once with a
//! temporary `ConnectionLost`, and the next send opens a new channel.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use amqprs::channel::{BasicPublishArguments, Channel, ConfirmSelectArguments};
use async_trait::async_trait;
use coolmq_core::raw::{BackendConfirm, PublisherBackend, Start, TransactionBackend};
use coolmq_core::{
    Destination, Error, ErrorKind, Message, Receipt, Result, SendError, SendOptions,
};
use lapin::types::{AMQPValue, LongString};
use tokio::sync::{mpsc, oneshot};

use super::confirms::{Confirm, ConfirmEvents, Tracker};
use super::error::{check_short, map};
use super::events::ConnectionEvents;
use super::link::{bounded, AmqprsLink, Live};
use super::props::to_amqprs;
use super::transaction::AmqprsTransaction;
use crate::convert::{to_properties, DELAY_HEADER};
use crate::delay::{plan, tier_millis, Back, Tiers, DELAY_EXCHANGE};
use crate::error::by_reply_code;
use crate::publisher::blocked;

/// The confirm-mode channel, its tracker and its connection.
struct ConfirmChannel {
    channel: Channel,
    tracker: Arc<Tracker>,
    live: Live,
}

impl ConfirmChannel {
    fn usable(&self) -> bool {
        !self.tracker.ended() && self.channel.is_open() && self.live.alive()
    }
}

/// One publish for the writer.
struct Write {
    exchange: String,
    routing_key: String,
    message_id: String,
    properties: amqprs::BasicProperties,
    body: Vec<u8>,
    settle: oneshot::Sender<Confirm>,
}

/// How many publishes may wait for the writer (each sender then waits its turn).
const QUEUED_WRITES: usize = 1024;

pub(crate) struct AmqprsPublisher {
    link: Arc<AmqprsLink>,
    tiers: Arc<Tiers>,
    /// The writer task's queue: one task owns the confirm channel and writes every publish,
    /// taking its tag as it goes, so tags follow the order on the wire without a lock
    /// handed from sender to sender.
    writes: mpsc::Sender<Write>,
    /// The writer's connection, asked at a timeout whether RabbitMQ blocked it.
    events: Arc<Mutex<Option<Arc<ConnectionEvents>>>>,
    confirm_timeout: Duration,
}

impl AmqprsPublisher {
    pub fn new(link: Arc<AmqprsLink>, tiers: Arc<Tiers>, confirm_timeout: Duration) -> Self {
        let (writes, queued) = mpsc::channel(QUEUED_WRITES);
        let events = Arc::new(Mutex::new(None));
        tokio::spawn(writer(link.clone(), queued, events.clone()));
        AmqprsPublisher {
            link,
            tiers,
            writes,
            events,
            confirm_timeout,
        }
    }

    /// Exchange, routing key and extra header for `destination` (declaring a delay tier on
    /// its first use).
    async fn route(
        &self,
        destination: &Destination,
        delay: Option<Duration>,
    ) -> Result<(String, String, Option<(&'static str, AMQPValue)>)> {
        let topic_exchange = &self.link.options.topic_exchange;
        let (back, exchange) = match destination {
            Destination::Queue(_) => (Back::Queue, ""),
            Destination::Topic(_) => (Back::Topic, topic_exchange.as_str()),
        };
        let routing_key = destination.name().to_string();
        check_short("routing key", &routing_key)?;
        match delay.filter(|d| !d.is_zero()) {
            None => Ok((exchange.to_string(), routing_key, None)),
            Some(d) => {
                let ms = tier_millis(d)?;
                let tier = plan(back, ms, topic_exchange);
                if !self.tiers.known(back, ms) {
                    super::topology::declare_tier(&self.link, &tier).await?;
                    self.tiers.learned(back, ms);
                }
                let header = AMQPValue::LongString(LongString::from(tier.key.into_bytes()));
                Ok((
                    DELAY_EXCHANGE.to_string(),
                    routing_key,
                    Some((DELAY_HEADER, header)),
                ))
            }
        }
    }

    /// Send and wait for the confirm.
    pub async fn publish(
        &self,
        destination: &Destination,
        message: Message,
        delay: Option<Duration>,
    ) -> Result<Receipt, SendError> {
        let transferred = self.transfer(destination, message, delay).await?;
        transferred.outcome().await
    }

    /// Hand the publish to the writer and return what awaits its confirm.
    async fn transfer(
        &self,
        destination: &Destination,
        message: Message,
        delay: Option<Duration>,
    ) -> Result<Transferred, SendError> {
        let (exchange, routing_key, extra) = match self.route(destination, delay).await {
            Ok(r) => r,
            Err(e) => return Err(SendError::new(e, message)),
        };
        let properties = match to_properties(&message, extra).and_then(|p| to_amqprs(&p)) {
            Ok(p) => p,
            Err(e) => return Err(SendError::new(e, message)),
        };
        let (settle, settled) = oneshot::channel();
        let write = Write {
            exchange,
            routing_key,
            message_id: message.id.clone(),
            properties,
            body: message.body.to_vec(),
            settle,
        };
        if self.writes.send(write).await.is_err() {
            return Err(SendError::new(coolmq_core::raw::closed(), message));
        }
        Ok(Transferred {
            settled,
            events: self.events.clone(),
            message,
            destination: destination.clone(),
            timeout: self.confirm_timeout,
        })
    }
}

/// The writer: owns the confirm channel, (re)opens it when it died, and writes each publish
/// after registering its tag. Ends when its publisher is dropped.
async fn writer(
    link: Arc<AmqprsLink>,
    mut queued: mpsc::Receiver<Write>,
    events: Arc<Mutex<Option<Arc<ConnectionEvents>>>>,
) {
    let mut current: Option<ConfirmChannel> = None;
    while let Some(write) = queued.recv().await {
        if !current.as_ref().is_some_and(ConfirmChannel::usable) {
            current = None;
            match open(&link).await {
                Ok(c) => {
                    *events.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.live.events.clone());
                    current = Some(c);
                }
                Err(e) => {
                    // Every publish already waiting fails alike, rather than each waiting
                    // out its own attempt to open.
                    while let Ok(w) = queued.try_recv() {
                        let _ = w.settle.send(Confirm::NotSent(alike(&e)));
                    }
                    let _ = write.settle.send(Confirm::NotSent(e));
                    continue;
                }
            }
        }
        let c = current.as_ref().expect("opened above");
        // A blocked connection reads nothing: refuse now, the message surely not taken.
        if c.live.events.blocked() {
            let _ = write
                .settle
                .send(Confirm::NotSent(blocked("the message was not sent")));
            continue;
        }
        let tag = match c.tracker.register(write.message_id, write.settle) {
            Ok(tag) => tag,
            Err(settle) => {
                let _ = settle.send(Confirm::NotSent(lost(None)));
                current = None;
                continue;
            }
        };
        let mut args = BasicPublishArguments::new(&write.exchange, &write.routing_key);
        args.mandatory = true;
        if let Err(e) = c
            .channel
            .basic_publish(write.properties, write.body, args)
            .await
        {
            if let Some(settle) = c.tracker.take(tag) {
                let closed = c.live.events.closed();
                let _ = settle.send(Confirm::NotSent(map(e, "basic.publish", closed)));
            }
            current = None;
        }
    }
}

/// The same error for another publish (its kind, message, temporariness and the source's
/// text).
fn alike(e: &Error) -> Error {
    Error::new(e.kind(), e.message().to_string())
        .set_temporary(e.is_temporary())
        .with_source(e.to_string())
}

async fn open(link: &AmqprsLink) -> Result<ConfirmChannel> {
    let tracker = Tracker::new();
    let (channel, live) = link.channel_with(ConfirmEvents(tracker.clone())).await?;
    bounded(
        link.connect_timeout(),
        "confirm.select-ok",
        channel.confirm_select(ConfirmSelectArguments::default()),
    )
    .await?
    .map_err(|e| map(e, "confirm.select", live.events.closed()))?;
    Ok(ConfirmChannel {
        channel,
        tracker,
        live,
    })
}

/// The channel ended before the confirm: by the broker's close if it sent one.
fn lost(closed: Option<(u16, String)>) -> Error {
    match closed {
        Some((code, text)) => {
            let (kind, temporary) = by_reply_code(code);
            Error::new(kind, format!("RabbitMQ closed the channel: {code} {text}"))
                .set_temporary(temporary)
        }
        None => Error::new(
            ErrorKind::ConnectionLost,
            "the connection died before the confirm arrived; the broker may have taken the message",
        )
        .set_temporary(true),
    }
}

/// A publish handed to the writer, awaiting its confirm.
struct Transferred {
    settled: oneshot::Receiver<Confirm>,
    events: Arc<Mutex<Option<Arc<ConnectionEvents>>>>,
    message: Message,
    destination: Destination,
    timeout: Duration,
}

impl Transferred {
    async fn outcome(self) -> Result<Receipt, SendError> {
        let Transferred {
            settled,
            events,
            message,
            destination,
            timeout,
        } = self;
        let events = || events.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let outcome = match tokio::time::timeout(timeout, settled).await {
            Err(_) if events().is_some_and(|e| e.blocked()) => Err(blocked(
                "no confirm came; the broker may have taken the message",
            )),
            Err(_) => Err(coolmq_core::raw::confirm_timeout(timeout)),
            // The tracker went without settling: its channel ended.
            Ok(Err(_)) => Err(lost(None)),
            Ok(Ok(Confirm::Ack)) => Ok(()),
            Ok(Ok(Confirm::Returned(code, text))) => Err(Error::new(
                ErrorKind::Unroutable,
                format!("RabbitMQ returned the message: {code} {text}"),
            )
            .with_context("destination", destination.to_string())
            .set_temporary(false)),
            Ok(Ok(Confirm::Nack)) => Err(Error::new(
                ErrorKind::Nacked,
                "RabbitMQ nacked the publish (queue full or internal error)",
            )
            .with_context("destination", destination.to_string())),
            Ok(Ok(Confirm::Lost(closed))) => {
                Err(lost(closed.or_else(|| events().and_then(|e| e.closed()))))
            }
            Ok(Ok(Confirm::NotSent(e))) => Err(e),
        };
        match outcome {
            Ok(()) => Ok(Receipt::new(message.id)),
            Err(e) => Err(SendError::new(e, message)),
        }
    }
}

/// The `PublisherBackend` handed to applications: a publisher plus what transactions need.
pub(crate) struct AmqprsPublisherHandle {
    pub inner: Arc<AmqprsPublisher>,
    pub link: Arc<AmqprsLink>,
}

#[async_trait]
impl PublisherBackend for AmqprsPublisherHandle {
    fn start<'a>(
        &'a self,
        destination: &'a Destination,
        message: Message,
        options: SendOptions,
    ) -> Start<'a> {
        Start::waiting(async move {
            let transferred = self
                .inner
                .transfer(destination, message, options.delay)
                .await?;
            Ok(Box::pin(transferred.outcome()) as BackendConfirm)
        })
    }

    async fn begin(&self) -> Result<Box<dyn TransactionBackend>> {
        Ok(Box::new(AmqprsTransaction::begin(self.link.clone()).await?))
    }
}
