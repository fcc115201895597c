//! Publishing into the in-process broker with confirm semantics (and injected faults).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coolmq_core::raw::{BackendConfirm, PublisherBackend, Start, TransactionBackend};
use coolmq_core::{
    Destination, Error, ErrorKind, Message, Receipt, Result, SendError, SendOptions,
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

impl MemoryPublisher {
    /// What the broker does with a message before its confirm: refuse it, store it, or store
    /// it and lose the confirm (an injected fault). Fails at once only when the connection is
    /// closed: every other refusal comes with the confirm, as from a real broker.
    fn store(
        &self,
        destination: &Destination,
        message: Message,
        options: &SendOptions,
    ) -> Result<Stored, SendError> {
        if let Err(e) = self.closed.check() {
            return Err(SendError::new(e, message));
        }
        let faults = &self.engine.faults;
        if faults.nack_next_publish.swap(false, Ordering::SeqCst) {
            let e = Error::new(
                ErrorKind::Nacked,
                "the broker nacked the publish (injected fault)",
            );
            return Ok(Stored::Answered(Err(SendError::new(e, message))));
        }
        let lose_confirm = faults.lose_next_confirm.swap(false, Ordering::SeqCst);
        Ok(
            match self.engine.publish(destination, &message, options.delay) {
                Ok(()) if lose_confirm => Stored::ConfirmLost(message, self.confirm_timeout),
                Ok(()) => Stored::Answered(Ok(Receipt::new(message.id))),
                Err(e) => Stored::Answered(Err(SendError::new(e, message))),
            },
        )
    }
}

/// The broker's answer to a stored message.
enum Stored {
    /// Confirmed or refused.
    Answered(Result<Receipt, SendError>),
    /// Stored, but the confirm never comes: the sender can only time out.
    ConfirmLost(Message, Duration),
}

impl Stored {
    async fn confirm(self) -> Result<Receipt, SendError> {
        match self {
            Stored::Answered(answer) => answer,
            Stored::ConfirmLost(message, timeout) => {
                tokio::time::sleep(timeout).await;
                let e = coolmq_core::raw::confirm_timeout(timeout);
                Err(SendError::new(e, message))
            }
        }
    }
}

#[async_trait]
impl PublisherBackend for MemoryPublisher {
    fn start<'a>(
        &'a self,
        destination: &'a Destination,
        message: Message,
        options: SendOptions,
    ) -> Start<'a> {
        // The in-process broker stores at once: the confirm is all that can wait.
        Start::Ready(
            self.store(destination, message, &options)
                .map(|stored| -> BackendConfirm { Box::pin(stored.confirm()) }),
        )
    }

    async fn begin(&self) -> Result<Box<dyn TransactionBackend>> {
        self.closed.check()?;
        Ok(Box::new(MemoryTransaction::new(
            self.engine.clone(),
            self.closed.clone(),
        )))
    }
}
