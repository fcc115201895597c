//! Transactions in the in-process broker: sends and acks buffered, applied atomically on
//! commit, discarded (acks requeued) on rollback.

use std::sync::Arc;

use async_trait::async_trait;
use coolmq_core::raw::{Acker, TransactionBackend};
use coolmq_core::{Destination, Error, ErrorKind, Message, Result, SendError};

use crate::consumer::MemoryAcker;
use crate::engine::{Closed, Engine};

pub(crate) struct MemoryTransaction {
    engine: Arc<Engine>,
    closed: Arc<Closed>,
    sends: Vec<(Destination, Message)>,
    acks: Vec<u64>,
}

impl MemoryTransaction {
    pub fn new(engine: Arc<Engine>, closed: Arc<Closed>) -> Self {
        MemoryTransaction {
            engine,
            closed,
            sends: Vec::new(),
            acks: Vec::new(),
        }
    }

    fn release_acks(&mut self) {
        for tag in self.acks.drain(..) {
            let _ = self.engine.requeue(tag);
        }
    }
}

#[async_trait]
impl TransactionBackend for MemoryTransaction {
    async fn send(&mut self, destination: &Destination, message: Message) -> Result<(), SendError> {
        // Checked now so an unroutable message is reported to the sender, never dropped.
        if let Err(e) = self
            .closed
            .check()
            .and_then(|_| self.engine.check_routable(destination))
        {
            return Err(SendError::new(e, message));
        }
        self.sends.push((destination.clone(), message));
        Ok(())
    }

    async fn ack(&mut self, acker: Box<dyn Acker>) -> Result<()> {
        match acker.into_any().downcast::<MemoryAcker>() {
            Ok(a) if Arc::ptr_eq(&a.engine, &self.engine) => {
                self.acks.push(a.tag);
                Ok(())
            }
            Ok(a) => {
                let _ = a.engine.requeue(a.tag);
                Err(Error::new(
                    ErrorKind::Unsupported,
                    "a transaction can only ack deliveries from its own broker",
                ))
            }
            Err(_) => Err(Error::new(
                ErrorKind::Unsupported,
                "a memory transaction can only ack memory deliveries",
            )),
        }
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        self.closed.check()?;
        let sends = std::mem::take(&mut self.sends);
        let acks = std::mem::take(&mut self.acks);
        match self.engine.publish_all(sends, &acks) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.acks = acks;
                self.release_acks();
                Err(Error::new(
                    ErrorKind::TransactionRolledBack,
                    format!("commit failed, nothing was applied: {}", e.message()),
                )
                .with_source(e))
            }
        }
    }

    async fn rollback(mut self: Box<Self>) -> Result<()> {
        self.sends.clear();
        self.release_acks();
        Ok(())
    }

    fn abandon(mut self: Box<Self>) {
        self.sends.clear();
        self.release_acks();
    }
}
