//! # coolmq-memory
//!
//! coolmq's in-process reference broker, selected by `memory://[name]`. It honours the whole
//! contract — queues and topics, prefetch, unsettled tracking with requeue when a consumer
//! goes away, redelivered flag and delivery count, confirms, unroutable returns, transactions
//! (sends and acks), delayed delivery, dead-letter queues, max length with reject-publish →
//! nack, TTL — and offers deterministic fault hooks for tests ([`Faults`]).
//!
//! Brokers are named: every `memory://orders` connection in a process shares one broker, which
//! lives as long as the process, so nothing it accepted is lost while the process lives.
//! `memory://` is the process's default broker.
//!
//! ```
//! # #[tokio::main] async fn main() -> coolmq_core::Result<()> {
//! use coolmq_core::{Config, Destination, Message};
//! let broker = coolmq_memory::connect(Config::from_url("memory://doc-example")?).await?;
//! broker.declare_queue(&broker.queue_spec("orders")).await?;
//! broker.publisher().await?.send(&Destination::queue("orders"), Message::new("hi")).await?;
//! let mut consumer = broker.consumer("orders").await?;
//! let delivery = consumer.recv().await?.expect("a message");
//! assert_eq!(&delivery.message().body[..], b"hi");
//! delivery.ack().await?;
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod config;
mod connection;
mod consumer;
mod engine;
mod faults;
mod publisher;
mod transaction;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use coolmq_core::{Broker, Config, Result};

pub use config::{MemoryOptions, DEFAULT_MAX_MESSAGE_SIZE};
use connection::MemoryConnection;
use engine::Engine;
pub use faults::Faults;

/// URL schemes served by this backend.
pub const SCHEMES: &[&str] = &["memory"];

/// This backend for the facade's driver list (`coolmq::drivers()`): name, schemes, the
/// `coolmq` feature that compiles it in, and [`connect`].
pub const DRIVER: coolmq_core::raw::Driver =
    coolmq_core::raw::Driver::new("memory", SCHEMES, "memory", |c| Box::pin(connect(c)));

fn registry() -> &'static Mutex<HashMap<String, Arc<Engine>>> {
    static BROKERS: OnceLock<Mutex<HashMap<String, Arc<Engine>>>> = OnceLock::new();
    BROKERS.get_or_init(Default::default)
}

/// The named broker, created on first use.
fn engine_named(name: &str) -> Arc<Engine> {
    let mut brokers = registry().lock().unwrap_or_else(|p| p.into_inner());
    brokers
        .entry(name.to_string())
        .or_insert_with(|| Arc::new(Engine::new(name.to_string())))
        .clone()
}

/// Connect to the named in-process broker of `config.url`, creating it on first use.
///
/// # Errors
/// `ConfigInvalid` for a URL that is not `memory://…` or has a bad option.
pub async fn connect(config: Config) -> Result<Broker> {
    let options = MemoryOptions::from_url(&config.url)?;
    let engine = engine_named(&options.name);
    let connection = MemoryConnection::new(engine, options, &config);
    Ok(coolmq_core::raw::into_broker(Arc::new(connection), config))
}
