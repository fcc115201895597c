//! # coolmq-rabbit
//!
//! coolmq's RabbitMQ backend over AMQP 0-9-1, selected by `amqp://` and `amqps://` URLs
//! (TLS with rustls; vhost in the path; lapin's `heartbeat`, `frame_max`, `channel_max`
//! query options; coolmq's `max_message_size`, `topic_exchange`, `connection_name`,
//! `driver`).
//!
//! Two client libraries carry it, chosen by the URL's `driver` option: lapin (the default)
//! and amqprs (`?driver=amqprs`, cargo feature `amqprs`). Both pass the same conformance
//! suite; the topology, delay tiers, conversions and error kinds below are shared, and the
//! amqprs driver adds the confirm tracking and reconnection amqprs lacks.
//!
//! - **Publishing**: confirm mode always, `mandatory` always, one `PublisherConfirm` per send,
//!   persistent by default. A returned
//!   message is `Unroutable`, a nack is `Nacked`; both hand the message back.
//! - **Transactions** on their own channel (`tx.select` / `tx.commit` / `tx.rollback`).
//! - **Consuming**: `basic_qos(prefetch)` before every consume, manual ack, requeue on nack
//!   or drop; a settlement on a dead channel is a local `StaleDelivery` error.
//! - **Delayed redelivery without plugins**: shared delay-tier queues (TTL + dead-letter back
//!   to the work queue), so a waiting message survives the consumer and blocks nothing.
//! - **Connection loss**: operations in flight fail with temporary errors; the next operation
//!   reconnects, consumers resubscribe.
//!
//! ## Cargo features
#![doc = document_features::document_features!()]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

#[cfg(feature = "amqprs")]
mod amqprs_driver;
mod config;
mod connection;
mod consumer;
mod convert;
mod delay;
mod driver;
mod error;
mod publisher;
mod tls;
mod topology;
mod transaction;

use std::sync::Arc;

use async_trait::async_trait;
use coolmq_core::raw::{Backend, BackendInfo, ConsumerBackend, PublisherBackend};
use coolmq_core::{Broker, Capabilities, Config, ConsumerOptions, QueueKind, QueueSpec, Result};

pub use config::{RabbitOptions, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_TOPIC_EXCHANGE};
use connection::Link;
use consumer::RabbitConsumer;
use delay::Tiers;
pub use driver::Driver;
use publisher::{PublisherHandle, RabbitPublisher};

/// URL schemes served by this backend.
pub const SCHEMES: &[&str] = &["amqp", "amqps"];

/// This backend for the facade's driver list (`coolmq::drivers()`): name, schemes, the
/// `coolmq` feature that compiles it in, and [`connect`].
pub const DRIVER: coolmq_core::raw::Driver =
    coolmq_core::raw::Driver::new("rabbit", SCHEMES, "rabbit", |c| Box::pin(connect(c)));

/// A connection to RabbitMQ: the [`Backend`] implementation.
pub struct RabbitBackend {
    info: BackendInfo,
    link: Arc<Link>,
    tiers: Arc<Tiers>,
    /// Publishes forwards (delayed retries, dead letters) for this connection's consumers.
    forwarder: Arc<RabbitPublisher>,
    config: Config,
}

impl std::fmt::Debug for RabbitBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitBackend")
            .field("endpoint", &self.info.endpoint)
            .finish()
    }
}

/// Connect to RabbitMQ as `config.url` says.
///
/// # Errors
/// `ConfigInvalid` for a bad URL, `Unreachable` (temporary) when the broker does not answer
/// within `connect_timeout`, `AuthenticationFailed` / `PermissionDenied` for refused
/// credentials or vhost.
pub async fn connect(config: Config) -> Result<Broker> {
    let addresses = config.addresses()?.map(|url| {
        Ok(RabbitOptions::from_url_with(url, &config.tls)?.with_heartbeat(config.heartbeat))
    })?;
    let options = addresses.first().clone();
    let capabilities = Capabilities {
        confirms: true,
        unroutable_returns: true,
        transactions: true,
        transactional_ack: false,
        delayed_delivery: true,
        // The redelivered flag only (see `consumer.rs`): core checkpoints flagged copies.
        delivery_count: false,
        dead_letter: true,
        topics: true,
        // Quorum queues apply `x-max-length` once the queue is over it, as the publisher
        // learns asynchronously: a few more messages than the limit may be accepted, so an
        // exact limit is a classic queue's only.
        max_length: config.queue_kind == QueueKind::Classic,
        message_ttl: true,
        nested_headers: true,
        network: true,
        max_message_size: Some(options.max_message_size),
    };
    let info = BackendInfo {
        name: "rabbit",
        endpoint: addresses.endpoint(),
        capabilities,
    };
    match options.driver {
        Driver::Lapin => {}
        #[cfg(feature = "amqprs")]
        Driver::Amqprs => return amqprs_driver::connect(config, addresses, info).await,
        #[cfg(not(feature = "amqprs"))]
        Driver::Amqprs => {
            return Err(coolmq_core::Error::config(
                "driver",
                "the amqprs driver is not compiled in: enable coolmq's `rabbit-amqprs` feature",
            ))
        }
    }
    let link = Arc::new(Link::new(addresses, config.connect_timeout));
    // Connect now, so a bad URL, refused credentials or a down broker fail here.
    link.connection().await?;
    let tiers = Arc::new(Tiers::default());
    let forwarder = Arc::new(RabbitPublisher::new(
        link.clone(),
        tiers.clone(),
        config.confirm_timeout,
    ));
    let backend = RabbitBackend {
        info,
        link,
        tiers,
        forwarder,
        config: config.clone(),
    };
    Ok(coolmq_core::raw::into_broker(Arc::new(backend), config))
}

#[async_trait]
impl Backend for RabbitBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn declare_queue(&self, spec: &QueueSpec) -> Result<()> {
        topology::declare(&self.link, spec).await
    }

    async fn delete_queue(&self, name: &str) -> Result<()> {
        topology::delete(&self.link, name).await
    }

    async fn queue_depth(&self, name: &str) -> Result<u64> {
        topology::depth(&self.link, name).await
    }

    async fn publisher(&self) -> Result<Arc<dyn PublisherBackend>> {
        let inner = Arc::new(RabbitPublisher::new(
            self.link.clone(),
            self.tiers.clone(),
            self.config.confirm_timeout,
        ));
        Ok(Arc::new(PublisherHandle {
            inner,
            link: self.link.clone(),
        }))
    }

    async fn consumer(
        &self,
        queue: &str,
        options: &ConsumerOptions,
    ) -> Result<Box<dyn ConsumerBackend>> {
        let consumer = RabbitConsumer::open(
            self.link.clone(),
            self.forwarder.clone(),
            queue,
            options.prefetch,
        )
        .await?;
        Ok(Box::new(consumer))
    }

    async fn close(&self) -> Result<()> {
        self.link.close().await;
        Ok(())
    }
}
