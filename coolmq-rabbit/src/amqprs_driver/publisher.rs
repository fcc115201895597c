//! Publishing with confirms through amqprs: every send is `mandatory` on one confirm channel
//! per publisher, its delivery tag tracked by [`Tracker`]. A returned message is
//! `Unroutable`, a nack `Nacked`; a dead channel resolves every pending send at once with a
//! temporary `ConnectionLost`, and the next send opens a new channel.

use std::sync::Arc;
use std::time::Duration;

use amqprs::channel::{BasicPublishArguments, Channel, ConfirmSelectArguments};
use async_trait::async_trait;
use coolmq_core::raw::{BackendConfirm, PublisherBackend, Start, TransactionBackend};
use coolmq_core::{
    Destination, Error, ErrorKind, Message, Receipt, Result, SendError, SendOptions,
};
use lapin::types::{AMQPValue, LongString};
use tokio::sync::oneshot;

use super::confirms::{Confirm, ConfirmEvents, Tracker};
use super::error::{check_short, map};
use super::link::{bounded, AmqprsLink, Live};
use super::props::to_amqprs;
use super::transaction::AmqprsTransaction;
use crate::convert::{to_properties, DELAY_HEADER};
use crate::delay::{plan, tier_millis, Back, Tiers, DELAY_EXCHANGE};
use crate::error::by_reply_code;

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

pub(crate) struct AmqprsPublisher {
    link: Arc<AmqprsLink>,
    tiers: Arc<Tiers>,
    /// Held while a publish takes its tag and is written, so tags follow the wire's order.
    slot: tokio::sync::Mutex<Option<ConfirmChannel>>,
    confirm_timeout: Duration,
}

impl AmqprsPublisher {
    pub fn new(link: Arc<AmqprsLink>, tiers: Arc<Tiers>, confirm_timeout: Duration) -> Self {
        AmqprsPublisher {
            link,
            tiers,
            slot: tokio::sync::Mutex::new(None),
            confirm_timeout,
        }
    }

    async fn open(&self) -> Result<ConfirmChannel> {
        let tracker = Tracker::new();
        let (channel, live) = self
            .link
            .channel_with(ConfirmEvents(tracker.clone()))
            .await?;
        bounded(
            self.link.connect_timeout(),
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

    /// Write the publish (once the channel is ready) and return what awaits its confirm.
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
        let mut slot = self.slot.lock().await;
        if !slot.as_ref().is_some_and(ConfirmChannel::usable) {
            *slot = None;
            match self.open().await {
                Ok(c) => *slot = Some(c),
                Err(e) => return Err(SendError::new(e, message)),
            }
        }
        let current = slot.as_ref().expect("opened above");
        // A blocked connection reads nothing: refuse now, the message surely not taken.
        if current.live.events.blocked() {
            return Err(SendError::new(blocked("the message was not sent"), message));
        }
        let Some((tag, settled)) = current.tracker.register(&message.id) else {
            return Err(SendError::new(lost(None), message));
        };
        let mut args = BasicPublishArguments::new(&exchange, &routing_key);
        args.mandatory = true;
        let written = current
            .channel
            .basic_publish(properties, message.body.to_vec(), args)
            .await;
        if let Err(e) = written {
            current.tracker.forget(tag);
            let closed = current.live.events.closed();
            *slot = None;
            return Err(SendError::new(map(e, "basic.publish", closed), message));
        }
        let tracker = current.tracker.clone();
        let live = current.live.clone();
        drop(slot);
        Ok(Transferred {
            settled,
            tag,
            tracker,
            live,
            message,
            destination: destination.clone(),
            timeout: self.confirm_timeout,
        })
    }
}

/// The error of a publish refused or unconfirmed because RabbitMQ blocked the connection.
#[cold]
fn blocked(taken: &str) -> Error {
    Error::new(
        ErrorKind::Blocked,
        format!(
            "RabbitMQ blocked publishing on this connection (connection.blocked: a memory or disk alarm); {taken}"
        ),
    )
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

/// A written publish awaiting its confirm.
struct Transferred {
    settled: oneshot::Receiver<Confirm>,
    tag: u64,
    tracker: Arc<Tracker>,
    live: Live,
    message: Message,
    destination: Destination,
    timeout: Duration,
}

impl Transferred {
    async fn outcome(self) -> Result<Receipt, SendError> {
        let Transferred {
            settled,
            tag,
            tracker,
            live,
            message,
            destination,
            timeout,
        } = self;
        let outcome = match tokio::time::timeout(timeout, settled).await {
            Err(_) => {
                tracker.forget(tag);
                if live.events.blocked() {
                    Err(blocked(
                        "no confirm came; the broker may have taken the message",
                    ))
                } else {
                    Err(coolmq_core::raw::confirm_timeout(timeout))
                }
            }
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
            Ok(Ok(Confirm::Lost(closed))) => Err(lost(closed.or_else(|| live.events.closed()))),
        };
        match outcome {
            Ok(()) => Ok(Receipt {
                message_id: message.id,
            }),
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
