//! A connection to an in-process broker: the [`Backend`] implementation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coolmq_core::raw::{Backend, BackendInfo, ConsumerBackend, PublisherBackend};
use coolmq_core::{Capabilities, Config, ConsumerOptions, QueueSpec, Result};

use crate::consumer::MemoryConsumer;
use crate::engine::{Closed, Engine};
use crate::publisher::MemoryPublisher;
use crate::MemoryOptions;

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// One connection; many may share an engine.
#[derive(Debug)]
pub(crate) struct MemoryConnection {
    engine: Arc<Engine>,
    id: u64,
    info: BackendInfo,
    closed: Arc<Closed>,
    confirm_timeout: Duration,
}

impl MemoryConnection {
    pub fn new(engine: Arc<Engine>, options: MemoryOptions, config: &Config) -> Self {
        let capabilities = Capabilities {
            confirms: true,
            unroutable_returns: true,
            transactions: true,
            transactional_ack: true,
            delayed_delivery: true,
            delivery_count: true,
            dead_letter: true,
            topics: true,
            max_length: true,
            message_ttl: true,
            nested_headers: true,
            network: false,
            max_message_size: Some(options.max_message_size),
        };
        MemoryConnection {
            info: BackendInfo {
                name: "memory",
                endpoint: format!("memory://{}", engine.name),
                capabilities,
            },
            engine,
            id: CONNECTION_IDS.fetch_add(1, Ordering::SeqCst),
            closed: Arc::default(),
            confirm_timeout: config.confirm_timeout,
        }
    }
}

#[async_trait]
impl Backend for MemoryConnection {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn declare_queue(&self, spec: &QueueSpec) -> Result<()> {
        self.closed.check()?;
        self.engine.declare(spec)
    }

    async fn delete_queue(&self, name: &str) -> Result<()> {
        self.closed.check()?;
        self.engine.delete(name);
        Ok(())
    }

    async fn queue_depth(&self, name: &str) -> Result<u64> {
        self.closed.check()?;
        self.engine.depth(name)
    }

    async fn publisher(&self) -> Result<Arc<dyn PublisherBackend>> {
        self.closed.check()?;
        Ok(Arc::new(MemoryPublisher::new(
            self.engine.clone(),
            self.closed.clone(),
            self.confirm_timeout,
        )))
    }

    async fn consumer(
        &self,
        queue: &str,
        options: &ConsumerOptions,
    ) -> Result<Box<dyn ConsumerBackend>> {
        self.closed.check()?;
        let id = self
            .engine
            .add_consumer(queue, self.id, options.prefetch.into())?;
        Ok(Box::new(MemoryConsumer::new(self.engine.clone(), id)))
    }

    async fn close(&self) -> Result<()> {
        self.closed.close();
        let me = self.id;
        self.engine
            .remove_consumers(|_, connection| connection == me);
        Ok(())
    }
}
