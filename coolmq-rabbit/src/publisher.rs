//! Publishing with confirms: every send is `mandatory`, keeps its own `PublisherConfirm`
//! (never `wait_for_confirms`). `Ack` carrying a
//! returned message is `Unroutable`; `Nack` is `Nacked`; a dead channel fails every pending
//! send with a temporary `ConnectionLost`, and the next send reopens it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use coolmq_core::raw::{BackendConfirm, PublisherBackend, Start, TransactionBackend};
use coolmq_core::{
    Destination, Error, ErrorKind, Message, Receipt, Result, SendError, SendOptions,
};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, LongString};
use lapin::PublisherConfirm;
use lapin::{Channel, Confirmation, ConnectionStatus};

use crate::connection::Link;
use crate::convert::{to_properties, DELAY_HEADER};
use crate::delay::{tier_millis, Back, Tiers, DELAY_EXCHANGE};
use crate::error::map;
use crate::transaction::RabbitTransaction;

pub(crate) struct RabbitPublisher {
    link: Arc<Link>,
    tiers: Arc<Tiers>,
    /// The confirm-mode channel and its connection's status (read for the blocked flag under
    /// the same lock that hands out the channel).
    channel: Mutex<Option<(Channel, ConnectionStatus)>>,
    reopen: tokio::sync::Mutex<()>,
    confirm_timeout: Duration,
}

impl RabbitPublisher {
    pub fn new(link: Arc<Link>, tiers: Arc<Tiers>, confirm_timeout: Duration) -> Self {
        RabbitPublisher {
            link,
            tiers,
            channel: Mutex::new(None),
            reopen: tokio::sync::Mutex::new(()),
            confirm_timeout,
        }
    }

    fn live_channel(&self) -> Option<(Channel, ConnectionStatus)> {
        self.channel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(c, _)| c.status().connected())
            .cloned()
    }

    /// The confirm-mode channel, reopened (once, for all waiting senders) if it died.
    async fn confirm_channel(&self) -> Result<(Channel, ConnectionStatus)> {
        if let Some(c) = self.live_channel() {
            return Ok(c);
        }
        let _reopening = self.reopen.lock().await;
        if let Some(c) = self.live_channel() {
            return Ok(c);
        }
        let (channel, status) = self.link.channel_and_status().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| map(e, "confirm.select"))?;
        *self.channel.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((channel.clone(), status.clone()));
        Ok((channel, status))
    }

    /// Where a message for `destination` is published: exchange, routing key, extra header.
    async fn route(
        &self,
        channel: &Channel,
        destination: &Destination,
        delay: Option<Duration>,
    ) -> Result<(String, String, Option<(&'static str, AMQPValue)>)> {
        let topic_exchange = &self.link.options.topic_exchange;
        let (back, exchange) = match destination {
            Destination::Queue(_) => (Back::Queue, ""),
            Destination::Topic(_) => (Back::Topic, topic_exchange.as_str()),
        };
        let routing_key = destination.name().to_string();
        match delay.filter(|d| !d.is_zero()) {
            None => Ok((exchange.to_string(), routing_key, None)),
            Some(d) => {
                let key = self
                    .tiers
                    .ensure(channel, back, tier_millis(d)?, topic_exchange)
                    .await?;
                let header = AMQPValue::LongString(LongString::from(key.into_bytes()));
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
        // Two statements: a temporary lives to the end of its statement, so in one the
        // finished transfer future would stay in (and enlarge) this future while it waits.
        let transferred = self.transfer(destination, message, delay).await?;
        transferred.outcome().await
    }

    /// Publish (once the channel is ready) and return what awaits the confirm.
    async fn transfer(
        &self,
        destination: &Destination,
        message: Message,
        delay: Option<Duration>,
    ) -> Result<Transferred, SendError> {
        let (channel, status) = match self.confirm_channel().await {
            Ok(c) => c,
            Err(e) => return Err(SendError::new(e, message)),
        };
        // A blocked connection reads nothing: refuse now, the message surely not taken,
        // rather than let the send sit until its confirm timeout.
        if status.blocked() {
            return Err(SendError::new(blocked("the message was not sent"), message));
        }
        let (exchange, routing_key, extra) = match self.route(&channel, destination, delay).await {
            Ok(r) => r,
            Err(e) => return Err(SendError::new(e, message)),
        };
        let properties = match to_properties(&message, extra) {
            Ok(p) => p,
            Err(e) => return Err(SendError::new(e, message)),
        };
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let confirm = match channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                options,
                &message.body,
                properties,
            )
            .await
        {
            Ok(c) => c,
            Err(e) => return Err(SendError::new(map(e, "basic.publish"), message)),
        };
        Ok(Transferred {
            confirm,
            message,
            destination: destination.clone(),
            timeout: self.confirm_timeout,
            status,
        })
    }
}

/// A published message awaiting its confirm.
struct Transferred {
    confirm: PublisherConfirm,
    message: Message,
    destination: Destination,
    timeout: Duration,
    /// Asked at a timeout whether the broker blocked the connection meanwhile.
    status: ConnectionStatus,
}

/// The error of a publish refused or unconfirmed because RabbitMQ blocked the connection.
#[cold]
pub(crate) fn blocked(taken: &str) -> Error {
    Error::new(
        ErrorKind::Blocked,
        format!(
            "RabbitMQ blocked publishing on this connection (connection.blocked: a memory or disk alarm); {taken}"
        ),
    )
}

impl Transferred {
    /// `Ack` is the confirm; a returned message, `Nack`, a dead channel or no confirm within
    /// the timeout is an error that hands the message back.
    async fn outcome(self) -> Result<Receipt, SendError> {
        let Transferred {
            confirm,
            message,
            destination,
            timeout,
            status,
        } = self;
        let destination = &destination;
        let outcome = match tokio::time::timeout(timeout, confirm).await {
            Err(_) if status.blocked() => Err(blocked(
                "no confirm came; the broker may have taken the message",
            )),
            Err(_) => Err(coolmq_core::raw::confirm_timeout(timeout)),
            Ok(Err(e)) => Err(map(e, "publisher confirm").set_temporary(true)),
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)))) => {
                Err(Error::new(
                    ErrorKind::Unroutable,
                    format!(
                        "RabbitMQ returned the message: {} {}",
                        returned.reply_code, returned.reply_text
                    ),
                )
                .with_context("destination", destination.to_string())
                .set_temporary(false))
            }
            Ok(Ok(Confirmation::Nack(None))) => Err(Error::new(
                ErrorKind::Nacked,
                "RabbitMQ nacked the publish (queue full or internal error)",
            )
            .with_context("destination", destination.to_string())),
            Ok(Ok(Confirmation::NotRequested)) => Err(Error::new(
                ErrorKind::Unexpected,
                "publisher confirms were not enabled on the channel",
            )),
        };
        match outcome {
            Ok(()) => Ok(Receipt::new(message.id)),
            Err(e) => {
                let e = if e.kind() == ErrorKind::ConnectionLost {
                    Error::new(
                        ErrorKind::ConnectionLost,
                        "the connection died before the confirm arrived; the broker may have taken the message",
                    )
                    .with_source(e)
                } else {
                    e
                };
                Err(SendError::new(e, message))
            }
        }
    }
}

/// The `PublisherBackend` handed to applications: a publisher plus what transactions need.
pub(crate) struct PublisherHandle {
    pub inner: Arc<RabbitPublisher>,
    pub link: Arc<Link>,
}

#[async_trait]
impl PublisherBackend for PublisherHandle {
    fn start<'a>(
        &'a self,
        destination: &'a Destination,
        message: Message,
        options: SendOptions,
    ) -> Start<'a> {
        // lapin's publish is async (the channel, the frame queue): always a hand-over.
        Start::waiting(async move {
            let transferred = self
                .inner
                .transfer(destination, message, options.delay)
                .await?;
            Ok(Box::pin(transferred.outcome()) as BackendConfirm)
        })
    }

    async fn begin(&self) -> Result<Box<dyn TransactionBackend>> {
        Ok(Box::new(RabbitTransaction::begin(self.link.clone()).await?))
    }
}
