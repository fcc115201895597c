//! Publishing into the in-process broker with confirm semantics (and injected faults).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coolmq_core::{
    Destination, Error, ErrorKind, Message, PublisherBackend, Receipt, Result, SendError,
    SendOptions, TransactionBackend,
};

use crate::engine::{Closed, Engine};
use crate::transaction::MemoryTransaction;

pub(crate) struct MemoryPublisher {
    engine: Arc<Engine>,
    closed: Arc<Closed>,
    confirm_timeout: Duration,
}

impl MemoryPublisher {
    pub fn new(engine: Arc<Engine>, closed: Arc<Closed>, confirm_timeout: Duration) -> Self {
        MemoryPublisher {
            engine,
            closed,
            confirm_timeout,
        }
    }
}

#[async_trait]
impl PublisherBackend for MemoryPublisher {
    async fn send(
        &self,
        destination: &Destination,
        message: Message,
        options: &SendOptions,
    ) -> Result<Receipt, SendError> {
        if let Err(e) = self.closed.check() {
            return Err(SendError::new(e, message));
        }
        let faults = &self.engine.faults;
        if faults.nack_next_publish.swap(false, Ordering::SeqCst) {
            let e = Error::new(
                ErrorKind::Nacked,
                "the broker nacked the publish (injected fault)",
            );
            return Err(SendError::new(e, message));
        }
        let lose_confirm = faults.lose_next_confirm.swap(false, Ordering::SeqCst);
        match self.engine.publish(destination, &message, options.delay) {
            Ok(()) if lose_confirm => {
                // Stored, but the confirm never comes: the sender can only time out.
                tokio::time::sleep(self.confirm_timeout).await;
                let e = Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "no confirm within {:?}; the broker may have taken the message",
                        self.confirm_timeout
                    ),
                );
                Err(SendError::new(e, message))
            }
            Ok(()) => Ok(Receipt {
                message_id: message.id,
            }),
            Err(e) => Err(SendError::new(e, message)),
        }
    }

    async fn begin(&self) -> Result<Box<dyn TransactionBackend>> {
        self.closed.check()?;
        Ok(Box::new(MemoryTransaction::new(
            self.engine.clone(),
            self.closed.clone(),
        )))
    }
}
