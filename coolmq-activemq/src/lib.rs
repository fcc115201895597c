//! # coolmq-activemq
//!
//! coolmq's ActiveMQ backend over AMQP 1.0 (fe2o3-amqp), for ActiveMQ Artemis and ActiveMQ
//! Classic, selected by `amqp1://` and `amqp1s://` URLs (credentials → SASL PLAIN, none →
//! ANONYMOUS).
//!
//! - **Sending**: `header.durable = true` by default; a send resolves on `Accepted`;
//!   `Rejected`, `Released`, `Modified` and link errors are typed errors that hand the message
//!   back; transfers are pipelined up to the publisher window.
//! - **Receiving**: credit = prefetch, counted against unsettled deliveries; accept; a
//!   requeue or an unsettled drop is `Modified{delivery_failed}` (the broker counts the
//!   attempt and redelivers).
//! - **Redelivery by coolmq, not broker loops**: a delayed retry republishes the message with
//!   `x-opt-delivery-delay` and the attempt header, then accepts the original; the last
//!   attempt goes to `DLQ.<queue>` with the failure metadata.
//!
//! - **Transactions** through the AMQP 1.0 coordinator: transactional sends, commit,
//!   rollback, rollback on drop.
//!
//! - **Transactional acks**: `Transaction::ack` retires the delivery with a transactional
//!   `Accepted` on its receiver link.
//!
//! - **Topics** (Artemis): a topic send goes to a multicast address; a queue bound to a
//!   pattern gets a copy through a divert from Artemis's wildcard address of that pattern
//!   (`*` one word, `#` any number — the same syntax as coolmq's).
//!
//! Not available (capability flags false, calls return `Unsupported`): topics on Classic
//! (its topic-to-queue fan-out is static broker configuration), length limits.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod config;
mod confirm_timer;
mod connection;
mod consumer;
mod convert;
mod error;
mod management;
mod publisher;
mod sender_link;
mod tls;
mod transaction;

use std::sync::Arc;

use async_trait::async_trait;
use coolmq_core::raw::{Backend, BackendInfo, ConsumerBackend, PublisherBackend};
use coolmq_core::{Broker, Capabilities, Config, ConsumerOptions, Destination, QueueSpec, Result};

pub use config::{ActiveMqOptions, DEFAULT_MAX_MESSAGE_SIZE};
use connection::Link;
use consumer::AmqConsumer;
pub use management::Flavor;
use publisher::{AmqPublisher, PublisherHandle};

/// URL schemes served by this backend.
pub const SCHEMES: &[&str] = &["amqp1", "amqp1s"];

/// This backend for the facade's driver list (`coolmq::drivers()`): name, schemes, the
/// `coolmq` feature that compiles it in, and [`connect`].
pub const DRIVER: coolmq_core::raw::Driver =
    coolmq_core::raw::Driver::new("activemq", SCHEMES, "activemq", |c| Box::pin(connect(c)));

/// A connection to ActiveMQ: the [`Backend`] implementation.
pub struct ActiveMqBackend {
    info: BackendInfo,
    link: Arc<Link>,
    receivers: Arc<consumer::Receivers>,
    forwarder: Arc<AmqPublisher>,
    config: Config,
}

impl std::fmt::Debug for ActiveMqBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveMqBackend")
            .field("endpoint", &self.info.endpoint)
            .finish()
    }
}

/// Connect to ActiveMQ as `config.url` says.
///
/// # Errors
/// `ConfigInvalid` for a bad URL, `Unreachable` when the broker does not answer within
/// `connect_timeout`, `AuthenticationFailed` for refused credentials.
pub async fn connect(config: Config) -> Result<Broker> {
    let addresses = config.addresses()?.map(|url| {
        Ok(ActiveMqOptions::from_url_with(url, &config.tls)?.with_heartbeat(config.heartbeat))
    })?;
    let options = addresses.first().clone();
    if let Some(other) = addresses.targets().find(|o| o.flavor != options.flavor) {
        let other = &other.endpoint;
        return Err(coolmq_core::Error::config(
            "url",
            format!("every address of one broker must be the same flavor (?broker=): {other} differs from the first"),
        ));
    }
    let capabilities = Capabilities {
        confirms: true,
        // Artemis is asked before a destination's first send (management); Classic creates
        // a queue on first reference and cannot be asked over AMQP.
        unroutable_returns: options.flavor == Flavor::Artemis,
        transactions: true,
        transactional_ack: true,
        delayed_delivery: true,
        delivery_count: true,
        dead_letter: true,
        // Artemis binds queues to topic patterns with diverts from its wildcard addresses;
        // Classic can only fan a topic out to queues through static broker configuration
        // (virtual topics, composite destinations), which a client cannot declare.
        topics: options.flavor == Flavor::Artemis,
        // Artemis: address-full policy FAIL at max-size-messages, set through management.
        // Classic's limits are broker-wide memory and store usage, not per-queue counts.
        max_length: options.flavor == Flavor::Artemis,
        message_ttl: true,
        nested_headers: false,
        network: true,
        max_message_size: Some(options.max_message_size),
    };
    let info = BackendInfo {
        name: "activemq",
        endpoint: addresses.endpoint(),
        capabilities,
    };
    let link = Arc::new(Link::new(addresses, config.connect_timeout));
    link.check().await?;
    let forwarder = Arc::new(AmqPublisher::new(link.clone(), config.confirm_timeout));
    let backend = ActiveMqBackend {
        info,
        link,
        receivers: Arc::default(),
        forwarder,
        config: config.clone(),
    };
    Ok(coolmq_core::raw::into_broker(Arc::new(backend), config))
}

#[async_trait]
impl Backend for ActiveMqBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn declare_queue(&self, spec: &QueueSpec) -> Result<()> {
        if spec.max_length.is_some() && spec.overflow != coolmq_core::Overflow::RejectPublish {
            // Artemis's full address refuses or drops the *new* message; it never drops the
            // oldest.
            return Err(coolmq_core::Error::unsupported(
                "overflow drop-head",
                "activemq (Artemis refuses new messages only)",
            ));
        }
        // ActiveMQ creates a durable anycast queue when a link attaches to its address.
        for name in std::iter::once(&spec.name).chain(spec.dead_letter_queue.iter()) {
            let sender = self.link.sender(&Destination::queue(name.as_str())).await?;
            let _ = sender.close().await;
        }
        for pattern in &spec.bindings {
            management::artemis_bind(&self.link, &spec.name, pattern).await?;
        }
        if self.link.options.flavor == Flavor::Artemis {
            management::artemis_queue_settings(&self.link, &spec.name, spec.max_length).await?;
        }
        Ok(())
    }

    async fn delete_queue(&self, name: &str) -> Result<()> {
        management::delete_queue(&self.link, self.link.options.flavor, name).await
    }

    async fn queue_depth(&self, name: &str) -> Result<u64> {
        management::queue_depth(&self.link, self.link.options.flavor, name).await
    }

    async fn publisher(&self) -> Result<Arc<dyn PublisherBackend>> {
        Ok(Arc::new(PublisherHandle(
            Arc::new(AmqPublisher::new(
                self.link.clone(),
                self.config.confirm_timeout,
            )),
            self.link.clone(),
        )))
    }

    async fn consumer(
        &self,
        queue: &str,
        options: &ConsumerOptions,
    ) -> Result<Box<dyn ConsumerBackend>> {
        if self.link.options.flavor == Flavor::Artemis {
            // A queue declared elsewhere gets the same protection before its first delivery.
            management::artemis_keep_deliveries(&self.link, queue).await?;
        }
        let consumer = AmqConsumer::open(
            self.link.clone(),
            self.receivers.clone(),
            self.forwarder.clone(),
            queue,
            options.prefetch,
        )
        .await?;
        Ok(Box::new(consumer))
    }

    async fn close(&self) -> Result<()> {
        // Unsettled deliveries go back counted before the connection closes under them.
        let returned = self.receivers.close_all();
        let _ = tokio::time::timeout(self.config.connect_timeout, returned).await;
        self.link.close().await;
        Ok(())
    }
}
