//! Receiving through lapin what amqprs cannot decode. amqprs decodes AMQP long strings as
//! UTF-8 text, so a message another client published with other bytes there (librabbitmq and
//! Erlang clients send a header's bytes as they are) fails the frame and drops the whole
//! connection; RabbitMQ requeues it, and an amqprs consumer would receive it again forever,
//! wedging the queue. A consumer whose connection drops twice in a row soon after
//! subscribing takes its next deliveries through lapin, which decodes any bytes, until the
//! messages that came back with the drop have passed; then amqprs again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use coolmq_core::raw::{Addresses, ConsumerBackend, Received};
use coolmq_core::Result;

use crate::connection::Link;
use crate::consumer::RabbitConsumer;
use crate::delay::Tiers;
use crate::publisher::RabbitPublisher;
use crate::RabbitOptions;

/// Connection drops in a row, each soon after subscribing, that start a rescue.
pub(crate) const DROPS_BEFORE_RESCUE: u32 = 2;
/// A drop counts toward a rescue only this soon after subscribing: the broker pushes the
/// prefetch's worth of deliveries at once, and a message that fails the decoder is among
/// them. A subscribe the broker refuses or cannot answer resets the count (a broker down or
/// restarting drops connections too, and is no reason for a rescue).
pub(crate) const SOON: Duration = Duration::from_secs(5);
/// A rescue ends early when lapin brings nothing for this long (the queue drained).
const IDLE: Duration = Duration::from_secs(1);

/// The lapin connection rescues use, opened on first need (never, on a healthy run).
pub(crate) struct RescueLink {
    link: Arc<Link>,
    forwarder: Arc<RabbitPublisher>,
}

impl RescueLink {
    pub fn new(
        addresses: Addresses<RabbitOptions>,
        connect_timeout: Duration,
        tiers: Arc<Tiers>,
        confirm_timeout: Duration,
    ) -> Self {
        let link = Arc::new(Link::new(addresses, connect_timeout));
        let forwarder = Arc::new(RabbitPublisher::new(link.clone(), tiers, confirm_timeout));
        RescueLink { link, forwarder }
    }

    pub async fn close(&self) {
        self.link.close().await;
    }
}

/// One rescue in progress: a lapin consumer with prefetch 1 for `left` more deliveries.
pub(crate) struct Rescue {
    consumer: RabbitConsumer,
    left: usize,
    /// Since the last delivery (or the start): the idle end counts from here, across calls
    /// a caller's own timeout may cut short.
    quiet_since: Instant,
}

/// What the rescue brought.
pub(crate) enum Rescued {
    /// A delivery, settled through lapin.
    Delivery(Box<Received>),
    /// The rescue is over (its deliveries passed, or the queue is empty for now).
    Over,
    /// The broker cancelled the consumer: the queue was deleted.
    Cancelled,
}

impl Rescue {
    /// Start receiving `queue` through lapin, for the messages a drop sent back: the
    /// prefetch's worth plus the one that failed to decode.
    pub async fn start(link: Arc<RescueLink>, queue: String, prefetch: u16) -> Result<Self> {
        tracing::warn!(
            queue,
            "the amqprs connection dropped twice right after subscribing: receiving the next messages through lapin (a message amqprs cannot decode)"
        );
        let consumer =
            RabbitConsumer::open(link.link.clone(), link.forwarder.clone(), &queue, 1).await?;
        Ok(Rescue {
            consumer,
            left: usize::from(prefetch) + 1,
            quiet_since: Instant::now(),
        })
    }

    /// The next delivery, or the rescue's end (then [`Rescue::done`]: the lapin consumer is
    /// cancelled but open, so its last delivery can still be settled).
    pub async fn next(&mut self) -> Result<Rescued> {
        let quiet_for = IDLE.saturating_sub(self.quiet_since.elapsed());
        let next = match tokio::time::timeout(quiet_for, self.consumer.recv()).await {
            Err(_idle) => None,
            Ok(r) => match r? {
                Some(d) => Some(d),
                None => return Ok(Rescued::Cancelled),
            },
        };
        self.quiet_since = Instant::now();
        self.left = if next.is_some() {
            self.left.saturating_sub(1)
        } else {
            0
        };
        if self.left == 0 {
            // Cancel before handing out the last delivery: with prefetch 1 nothing else is
            // on its way, and the channel stays open for this one's settlement.
            self.consumer.cancel().await;
        }
        Ok(match next {
            Some(d) => Rescued::Delivery(Box::new(d)),
            None => Rescued::Over,
        })
    }

    /// Whether the rescue has handed out all it was for.
    pub fn done(&self) -> bool {
        self.left == 0
    }

    /// The lapin consumer, to keep until the next rescue (its channel settles the last
    /// delivery; dropping it closes the channel).
    pub fn finish(self) -> RabbitConsumer {
        self.consumer
    }
}
