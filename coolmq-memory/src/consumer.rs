//! Consuming from the in-process broker: prefetch-bounded, cancel-safe `recv`, and the acker
//! that settles each delivery.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use coolmq_core::raw::{Acker, ConsumerBackend, Received};
use coolmq_core::{Destination, Message, Result, SendOptions};

use crate::engine::{Engine, Take};

pub(crate) struct MemoryConsumer {
    engine: Arc<Engine>,
    id: u64,
    closed: bool,
}

impl MemoryConsumer {
    pub fn new(engine: Arc<Engine>, id: u64) -> Self {
        MemoryConsumer {
            engine,
            id,
            closed: false,
        }
    }
}

#[async_trait]
impl ConsumerBackend for MemoryConsumer {
    async fn recv(&mut self) -> Result<Option<Received>> {
        if self.closed {
            return Ok(None);
        }
        loop {
            // Register for wake-ups before looking, so no change is missed between the look
            // and the wait. Taking happens synchronously: cancelling recv loses nothing.
            let notified = self.engine.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.engine.take(self.id) {
                Take::Delivery(tag, stored) => {
                    let acker = MemoryAcker {
                        engine: self.engine.clone(),
                        tag,
                    };
                    let redeliveries = stored.delivery_count - 1;
                    return Ok(Some(Received::counted(
                        stored.message,
                        redeliveries,
                        Box::new(acker),
                    )));
                }
                Take::Closed => {
                    self.closed = true;
                    return Ok(None);
                }
                Take::Wait(Some(due)) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(due) => {}
                    }
                }
                Take::Wait(None) => notified.await,
            }
        }
    }

    async fn close(&mut self) -> Result<()> {
        if !self.closed {
            self.closed = true;
            let me = self.id;
            self.engine.remove_consumers(|id, _| id == me);
        }
        Ok(())
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        if !self.closed {
            let me = self.id;
            self.engine.remove_consumers(|id, _| id == me);
        }
    }
}

/// Settles one delivery by its tag.
pub(crate) struct MemoryAcker {
    pub engine: Arc<Engine>,
    pub tag: u64,
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(self: Box<Self>) -> Result<()> {
        self.engine.ack(self.tag)
    }

    async fn requeue(self: Box<Self>) -> Result<()> {
        self.engine.requeue(self.tag)
    }

    async fn forward(
        self: Box<Self>,
        destination: &Destination,
        replacement: Message,
        options: &SendOptions,
    ) -> Result<()> {
        self.engine
            .forward(self.tag, destination, replacement, options.delay)
    }

    fn release(self: Box<Self>) {
        // Already requeued if the consumer went away: then there is nothing to release.
        let _ = self.engine.requeue(self.tag);
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}
