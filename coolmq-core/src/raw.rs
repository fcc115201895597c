//! The backend SPI (OpenDAL's `raw::Access`): the traits a backend implements and the raw
//! values it returns. Applications never see these: core wraps them into [`crate::Broker`],
//! [`crate::Publisher`], [`crate::Consumer`] and [`crate::Delivery`]. Out-of-tree backends
//! implement them and run the conformance suite.
//!
//! Every method is required: a backend that cannot do something says so with
//! [`crate::ErrorKind::Unsupported`] and a false flag in [`Capabilities`].

use std::any::Any;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    Broker, Capabilities, Config, ConsumerOptions, Destination, Message, QueueSpec, Result,
    SendError, SendOptions,
};

pub use crate::addresses::{AddressOrder, Addresses};
pub use crate::config::{parse_backend_url, parse_url_option};
pub use crate::confirm::BackendConfirm;
pub use crate::delivery::ack_after_forward;
pub use crate::driver::{connect_with, ConnectFn, Driver};
pub use crate::error::{closed, confirm_timeout, stale_delivery};
#[cfg(feature = "tls")]
pub use crate::tls_client::{probe_handshake, tls_failure, TlsClient};

/// Wrap a connected backend into the [`Broker`] applications hold, with the configuration it
/// was made from: what a backend's `connect` returns.
pub fn into_broker(backend: Arc<dyn Backend>, config: Config) -> Broker {
    Broker::new(backend, config)
}

/// One message as a backend received it: the broker's facts and the acker that settles it.
/// Core turns it into a [`crate::Delivery`] (attempt, checkpointing, drop = requeue).
pub struct Received {
    /// The message, converted from the wire.
    pub message: Message,
    /// The broker's redelivered flag.
    pub redelivered: bool,
    /// How often the broker delivered this copy before: its count where it keeps one, else 1
    /// for a flagged copy and 0 for a fresh one.
    pub broker_redeliveries: u32,
    /// Whether `broker_redeliveries` is the broker's exact count, or only a lower bound from
    /// a redelivered flag (RabbitMQ classic queues, ActiveMQ Classic over AMQP): core then
    /// checkpoints a flagged copy (republishes it with its attempt, acknowledges the
    /// original) before the application sees it.
    pub exact_count: bool,
    /// Settles it on the broker.
    pub acker: Box<dyn Acker>,
}

impl Received {
    /// A delivery whose broker counts deliveries exactly.
    pub fn counted(message: Message, broker_redeliveries: u32, acker: Box<dyn Acker>) -> Self {
        Received {
            message,
            redelivered: broker_redeliveries > 0,
            broker_redeliveries,
            exact_count: true,
            acker,
        }
    }

    /// A delivery whose broker only flags redeliveries.
    pub fn flagged(message: Message, redelivered: bool, acker: Box<dyn Acker>) -> Self {
        Received {
            message,
            redelivered,
            broker_redeliveries: u32::from(redelivered),
            exact_count: false,
            acker,
        }
    }
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("message_id", &self.message.id)
            .field("redelivered", &self.redelivered)
            .field("broker_redeliveries", &self.broker_redeliveries)
            .field("exact_count", &self.exact_count)
            .finish()
    }
}

/// Who a backend is and what it can do.
#[derive(Debug, Clone)]
pub struct BackendInfo {
    /// The backend's name (`memory`, `rabbit`, `activemq`).
    pub name: &'static str,
    /// The endpoint with credentials redacted, for logs.
    pub endpoint: String,
    /// What it can do.
    pub capabilities: Capabilities,
}

/// A connection to one broker.
///
/// # Contract
/// - `declare_queue` is idempotent and also declares the spec's dead-letter queue and bindings.
/// - `delete_queue` of an absent queue succeeds.
/// - `publisher` and `consumer` may be called many times; each consumer has its own prefetch.
#[async_trait]
pub trait Backend: Send + Sync + Debug + 'static {
    /// Name, endpoint and capabilities.
    fn info(&self) -> &BackendInfo;
    /// Declare a queue, its dead-letter queue and its topic bindings.
    async fn declare_queue(&self, spec: &QueueSpec) -> Result<()>;
    /// Delete a queue and the messages in it.
    async fn delete_queue(&self, name: &str) -> Result<()>;
    /// Number of messages ready for delivery (not counting unsettled or delayed ones).
    async fn queue_depth(&self, name: &str) -> Result<u64>;
    /// A publisher; `send` takes `&self` so many sends can be in flight.
    async fn publisher(&self) -> Result<Arc<dyn PublisherBackend>>;
    /// A consumer of `queue` with manual acknowledgement and the given prefetch.
    async fn consumer(
        &self,
        queue: &str,
        options: &ConsumerOptions,
    ) -> Result<Box<dyn ConsumerBackend>>;
    /// Close the connection; unsettled deliveries return to their queues.
    async fn close(&self) -> Result<()>;
}

/// The sending side of a backend: one primitive, [`PublisherBackend::start`] (lapin's
/// `basic_publish` returning its `PublisherConfirm`). Core derives the awaited and the
/// pipelined send from it and owns the publisher window: a backend keeps no window of its
/// own.
///
/// # Contract
/// `start` hands the message to the connection and returns its confirm; messages started
/// one after another (each hand-over awaited before the next `start`) reach the broker in
/// that order. The confirm resolves `Ok` only once the broker has taken responsibility for
/// the message, and no later than the configured confirm timeout after the hand-over; every
/// failure, before or after the hand-over, hands the message back in the [`SendError`].
#[async_trait]
pub trait PublisherBackend: Send + Sync {
    /// Start sending one message: [`Start::Ready`] when it was handed over (or refused) at
    /// once, without a future of its own (the usual case of a pipelining loop on a backend
    /// that can), else [`Start::Waiting`] for the hand-over (a channel, a link, credit).
    fn start<'a>(
        &'a self,
        destination: &'a Destination,
        message: Message,
        options: SendOptions,
    ) -> Start<'a>;
    /// Start a broker transaction.
    async fn begin(&self) -> Result<Box<dyn TransactionBackend>>;
}

/// A hand-over still under way: resolves with the message's confirm once it is on the
/// connection.
pub type HandOver<'a> =
    Pin<Box<dyn Future<Output = std::result::Result<BackendConfirm, SendError>> + Send + 'a>>;

/// What [`PublisherBackend::start`] gives back.
pub enum Start<'a> {
    /// Handed to the connection (its confirm) or refused (the message handed back) at once.
    Ready(std::result::Result<BackendConfirm, SendError>),
    /// Still to be handed over: core awaits it.
    Waiting(HandOver<'a>),
}

impl<'a> Start<'a> {
    /// A start that always waits: the shape of a backend whose hand-over is an `async` block.
    pub fn waiting(
        hand_over: impl Future<Output = std::result::Result<BackendConfirm, SendError>> + Send + 'a,
    ) -> Self {
        Start::Waiting(Box::pin(hand_over))
    }
}

impl std::fmt::Debug for Start<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Start::Ready(_) => "Start::Ready",
            Start::Waiting(_) => "Start::Waiting",
        })
    }
}

/// A broker transaction.
///
/// # Contract
/// Nothing sent in it is visible before `commit`; `rollback` (or `abandon`) discards it all.
#[async_trait]
pub trait TransactionBackend: Send {
    /// Send a message as part of the transaction.
    async fn send(&mut self, destination: &Destination, message: Message) -> Result<(), SendError>;
    /// Acknowledge a delivery (its acker) as part of the transaction (needs
    /// `transactional_ack`).
    async fn ack(&mut self, acker: Box<dyn Acker>) -> Result<()>;
    /// Make everything visible at once.
    async fn commit(self: Box<Self>) -> Result<()>;
    /// Discard everything.
    async fn rollback(self: Box<Self>) -> Result<()>;
    /// Roll back without awaiting (called from `Drop`).
    fn abandon(self: Box<Self>);
}

/// The receiving side of a backend.
#[async_trait]
pub trait ConsumerBackend: Send {
    /// The next delivery; `Ok(None)` once the consumer is closed.
    async fn recv(&mut self) -> Result<Option<Received>>;
    /// Stop consuming; unsettled deliveries return to the queue.
    async fn close(&mut self) -> Result<()>;
}

/// Settles one delivery on the broker. Each method consumes the acker, so a delivery is
/// settled at most once.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Acknowledge: the broker forgets the message.
    async fn ack(self: Box<Self>) -> Result<()>;
    /// Return the message to its queue for immediate redelivery (redelivered flag set,
    /// delivery count + 1).
    async fn requeue(self: Box<Self>) -> Result<()>;
    /// Send `replacement` to `destination` (after `options.delay`) and acknowledge this
    /// delivery — atomically where the broker allows, otherwise confirm first, then ack. Used
    /// for delayed retries and dead-lettering.
    async fn forward(
        self: Box<Self>,
        destination: &Destination,
        replacement: Message,
        options: &SendOptions,
    ) -> Result<()>;
    /// Requeue without awaiting; called when a delivery is dropped unsettled.
    fn release(self: Box<Self>);
    /// For backends whose transactions settle their own deliveries.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}
