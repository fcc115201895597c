//! # coolmq
//!
//! Reliable, broker-agnostic messaging. One contract — confirmed sends that hand the message
//! back on failure, transactions, manual acks with bounded prefetch, deliveries that are always
//! settled, an ActiveMQ-style redelivery policy and `DLQ.<queue>` dead-lettering — on every
//! backend, chosen by URL so that swapping brokers is a configuration change:
//!
//! | scheme | backend | feature |
//! |---|---|---|
//! | `memory://[name]` | in-process reference broker | `memory` (default) |
//! | `amqp://`, `amqps://` | RabbitMQ (AMQP 0-9-1) | `rabbit` |
//! | `amqp1://`, `amqp1s://` | ActiveMQ Artemis / Classic (AMQP 1.0) | `activemq` |
//!
//! ```
//! # #[tokio::main] async fn main() -> coolmq::Result<()> {
//! use coolmq::{Config, Destination, HandlerError, Message};
//! let config = Config::from_toml_str(r#"
//!     url = "memory://quickstart"
//!     [redelivery.default]
//!     maximum_redeliveries = 2
//!     initial_redelivery_delay = "10ms"
//! "#)?;
//! let broker = coolmq::connect(&config).await?;
//! broker.declare_queue(&broker.queue_spec("orders")).await?;
//! let publisher = broker.publisher().await?;
//! publisher.send(&Destination::queue("orders"), Message::new("order 1")).await?;
//! let worker = broker.worker("orders").start(|incoming| async move {
//!     println!("got {:?}", incoming.message.body);
//!     Ok::<(), HandlerError>(())
//! }).await?;
//! # while worker.counts().acked < 1 { tokio::time::sleep(std::time::Duration::from_millis(5)).await; }
//! worker.shutdown(std::time::Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```
//!
//! ## Cargo features
#![doc = document_features::document_features!()]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

use coolmq_core::raw::{connect_with, Driver};
pub use coolmq_core::*;

#[cfg(feature = "activemq")]
pub use coolmq_activemq as activemq;
#[cfg(feature = "memory")]
pub use coolmq_memory as memory;
/// The transactional outbox and idempotent inbox (features `outbox-sqlite`,
/// `outbox-postgres`).
#[cfg(any(feature = "outbox-sqlite", feature = "outbox-postgres"))]
pub use coolmq_outbox as outbox;
#[cfg(feature = "rabbit")]
pub use coolmq_rabbit as rabbit;

/// README.md's examples, compiled by `cargo test --doc` so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Every backend coolmq knows, with whether it is compiled into this build: each compiled-in
/// backend's own `DRIVER`; one that is not compiled in cannot be asked, so its schemes are
/// named here to say which feature to enable.
pub fn drivers() -> Vec<Driver> {
    vec![
        #[cfg(feature = "memory")]
        coolmq_memory::DRIVER,
        #[cfg(not(feature = "memory"))]
        Driver::disabled("memory", &["memory"], "memory"),
        #[cfg(feature = "rabbit")]
        coolmq_rabbit::DRIVER,
        #[cfg(not(feature = "rabbit"))]
        Driver::disabled("rabbit", &["amqp", "amqps"], "rabbit"),
        #[cfg(feature = "activemq")]
        coolmq_activemq::DRIVER,
        #[cfg(not(feature = "activemq"))]
        Driver::disabled("activemq", &["amqp1", "amqp1s"], "activemq"),
    ]
}

/// Connect to the broker the configuration names.
///
/// # Errors
/// `ConfigInvalid` (the context's `field` names the bad value), `UnknownScheme` (listing the
/// schemes available), `FeatureDisabled` (naming the feature to enable), or the backend's
/// connection errors (`Unreachable`, `AuthenticationFailed`…).
pub async fn connect(config: &Config) -> Result<Broker> {
    connect_with(&drivers(), config).await
}

/// [`connect`] taking the configuration by value (a `coolmq_conformance::ConnectFn`, e.g. for the
/// conformance suite's targets).
pub async fn connect_owned(config: Config) -> Result<Broker> {
    connect(&config).await
}

/// Connect to `url` with default settings.
pub async fn connect_url(url: &str) -> Result<Broker> {
    connect(&Config::from_url(url)?).await
}

/// Connect using `COOLMQ_CONFIG` (a TOML file) and `COOLMQ_*` environment variables; with
/// none set, the embedded memory broker.
pub async fn connect_from_env() -> Result<Broker> {
    connect(&Config::from_env()?).await
}
