//! The one handle applications hold (like OpenDAL's `Operator`): topology, publishers,
//! consumers and workers, the same on every backend.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::raw::Backend;
use crate::{
    Capabilities, Config, Consumer, ConsumerOptions, Error, Publisher, QueueSpec, Result,
    WorkerBuilder,
};

/// A connected broker. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    backend: Arc<dyn Backend>,
    config: Arc<Config>,
    /// The dead-letter queue of every queue declared through this handle, so consumers
    /// dead-letter where the declaration said, not to a name derived again from the config.
    dead_letter_queues: Arc<Mutex<HashMap<String, Option<String>>>>,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.backend.info();
        f.debug_struct("Broker")
            .field("backend", &info.name)
            .field("endpoint", &info.endpoint)
            .finish()
    }
}

impl Broker {
    /// Wrap a connected backend with the configuration it was made from
    /// ([`crate::raw::into_broker`]).
    pub(crate) fn new(backend: Arc<dyn Backend>, config: Config) -> Self {
        Broker {
            backend,
            config: Arc::new(config),
            dead_letter_queues: Arc::default(),
        }
    }

    /// The backend's name (`memory`, `rabbit`, `activemq`).
    pub fn backend_name(&self) -> &'static str {
        self.backend.info().name
    }

    /// The endpoint, credentials redacted.
    pub fn endpoint(&self) -> &str {
        &self.backend.info().endpoint
    }

    /// What this backend can do.
    pub fn capabilities(&self) -> Capabilities {
        self.backend.info().capabilities
    }

    /// The configuration this broker was connected with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The raw backend, for extensions.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Declare a queue with its dead-letter queue and bindings (idempotent).
    pub async fn declare_queue(&self, spec: &QueueSpec) -> Result<()> {
        let caps = self.capabilities();
        let name = self.backend_name();
        if !spec.bindings.is_empty() && !caps.topics {
            return Err(Error::unsupported("topic bindings", name));
        }
        if spec.max_length.is_some() && !caps.max_length {
            return Err(Error::unsupported("queue max length", name));
        }
        if spec.dead_letter_queue.is_some() && !caps.dead_letter {
            return Err(Error::unsupported("dead-letter queues", name));
        }
        if spec.name.is_empty() {
            return Err(Error::config("queue", "queue name must not be empty"));
        }
        self.backend.declare_queue(spec).await?;
        self.dead_letter_queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(spec.name.clone(), spec.dead_letter_queue.clone());
        Ok(())
    }

    /// The dead-letter queue of `queue`: the one it was declared with through this handle,
    /// else the configured prefix's (`DLQ.<queue>`).
    pub fn dead_letter_queue_of(&self, queue: &str) -> Option<String> {
        self.dead_letter_queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(queue)
            .cloned()
            .unwrap_or_else(|| Some(self.config.dead_letter_queue(queue)))
    }

    /// A queue spec for `name` using the configured dead-letter prefix and queue kind.
    pub fn queue_spec(&self, name: impl Into<String>) -> QueueSpec {
        let name = name.into();
        let dlq = self.config.dead_letter_queue(&name);
        // No broker-side delivery limit: the redelivery policy decides, and an explicit
        // `Nack::Requeue` is never overruled behind the application's back.
        QueueSpec::new(name)
            .dead_letter_queue(Some(dlq))
            .kind(self.config.queue_kind)
    }

    /// Delete a queue (absent queues are fine).
    pub async fn delete_queue(&self, name: &str) -> Result<()> {
        self.backend.delete_queue(name).await?;
        self.dead_letter_queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        Ok(())
    }

    /// Messages ready in a queue.
    pub async fn queue_depth(&self, name: &str) -> Result<u64> {
        self.backend.queue_depth(name).await
    }

    /// A publisher with confirms.
    pub async fn publisher(&self) -> Result<Publisher> {
        let inner = self.backend.publisher().await?;
        Ok(Publisher::new(
            inner,
            self.capabilities(),
            self.backend_name(),
            self.config.publisher_window,
            self.config.confirm_timeout,
        ))
    }

    /// A consumer of `queue` with the configured prefetch.
    pub async fn consumer(&self, queue: &str) -> Result<Consumer> {
        self.consumer_with_prefetch(queue, self.config.prefetch)
            .await
    }

    /// A consumer of `queue` with an explicit prefetch (> 0).
    pub async fn consumer_with_prefetch(&self, queue: &str, prefetch: u16) -> Result<Consumer> {
        if prefetch == 0 {
            return Err(Error::config("prefetch", "prefetch must be at least 1"));
        }
        let options = ConsumerOptions {
            prefetch,
            dead_letter_queue: self.dead_letter_queue_of(queue),
        };
        let inner = self.backend.consumer(queue, &options).await?;
        let context = crate::delivery::DeliveryContext::new(self.backend.info(), queue, &options);
        Ok(Consumer::new(inner, context))
    }

    /// Start building a worker that runs a handler for every delivery of `queue`.
    pub fn worker(&self, queue: impl Into<String>) -> WorkerBuilder {
        WorkerBuilder::new(self.clone(), queue.into())
    }

    /// Close the connection.
    pub async fn close(&self) -> Result<()> {
        self.backend.close().await
    }
}
