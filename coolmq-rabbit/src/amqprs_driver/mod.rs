//! The amqprs driver (`?driver=amqprs`, cargo feature `amqprs`): the same contract as the
//! lapin driver over a second, independent AMQP 0-9-1 client. The topology, delay tiers,
//! conversions and error kinds are the crate's shared ones; what amqprs lacks, coolmq adds
//! here: confirm tracking by delivery tag (`confirms.rs`), the broker's reply codes from
//! close callbacks (`events.rs`), and reconnection (`link.rs`).

mod confirms;
mod consumer;
mod error;
mod events;
mod link;
mod props;
mod publisher;
mod rescue;
mod topology;
mod transaction;

use std::sync::Arc;

use async_trait::async_trait;
use coolmq_core::raw::{Addresses, Backend, BackendInfo, ConsumerBackend, PublisherBackend};
use coolmq_core::{Broker, Config, ConsumerOptions, QueueSpec, Result};

use crate::delay::Tiers;
use crate::RabbitOptions;
use consumer::AmqprsConsumer;
use link::AmqprsLink;
use publisher::{AmqprsPublisher, AmqprsPublisherHandle};
use rescue::RescueLink;

/// A connection to RabbitMQ through amqprs: the [`Backend`] implementation.
struct AmqprsBackend {
    info: BackendInfo,
    link: Arc<AmqprsLink>,
    tiers: Arc<Tiers>,
    /// Publishes forwards (delayed retries, dead letters) for this connection's consumers.
    forwarder: Arc<AmqprsPublisher>,
    /// lapin, for the messages amqprs cannot decode (`rescue.rs`).
    rescue: Arc<RescueLink>,
    config: Config,
}

/// Connect through amqprs; `info` is the backend's description (shared with lapin's).
pub(crate) async fn connect(
    config: Config,
    addresses: Addresses<RabbitOptions>,
    info: BackendInfo,
) -> Result<Broker> {
    let link = Arc::new(AmqprsLink::new(addresses.clone(), config.connect_timeout));
    // Connect now, so a bad URL, refused credentials or a down broker fail here.
    link.live().await?;
    let tiers = Arc::new(Tiers::default());
    let forwarder = Arc::new(AmqprsPublisher::new(
        link.clone(),
        tiers.clone(),
        config.confirm_timeout,
    ));
    let rescue = Arc::new(RescueLink::new(
        addresses,
        config.connect_timeout,
        tiers.clone(),
        config.confirm_timeout,
    ));
    let backend = AmqprsBackend {
        info,
        link,
        tiers,
        forwarder,
        rescue,
        config: config.clone(),
    };
    Ok(coolmq_core::raw::into_broker(Arc::new(backend), config))
}

impl std::fmt::Debug for AmqprsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitBackend")
            .field("driver", &"amqprs")
            .field("endpoint", &self.info.endpoint)
            .finish()
    }
}

#[async_trait]
impl Backend for AmqprsBackend {
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
        let inner = Arc::new(AmqprsPublisher::new(
            self.link.clone(),
            self.tiers.clone(),
            self.config.confirm_timeout,
        ));
        Ok(Arc::new(AmqprsPublisherHandle {
            inner,
            link: self.link.clone(),
        }))
    }

    async fn consumer(
        &self,
        queue: &str,
        options: &ConsumerOptions,
    ) -> Result<Box<dyn ConsumerBackend>> {
        let consumer = AmqprsConsumer::open(
            self.link.clone(),
            self.forwarder.clone(),
            self.rescue.clone(),
            queue,
            options.prefetch,
        )
        .await?;
        Ok(Box::new(consumer))
    }

    async fn close(&self) -> Result<()> {
        self.link.close().await;
        self.rescue.close().await;
        Ok(())
    }
}
