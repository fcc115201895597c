//! Broker transactions: all-or-nothing batches of sends (and acks where supported); dropping
//! an uncommitted transaction rolls it back.

use std::fmt;

use crate::publisher::check_send;
use crate::raw::TransactionBackend;
use crate::{Capabilities, Delivery, Destination, Error, Message, Result, SendError, SendOptions};

/// An open broker transaction. Nothing sent in it is visible until [`Transaction::commit`];
/// dropped without commit, it rolls back.
pub struct Transaction {
    inner: Option<Box<dyn TransactionBackend>>,
    capabilities: Capabilities,
    backend: &'static str,
}

impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Transaction {
    pub(crate) fn new(
        inner: Box<dyn TransactionBackend>,
        capabilities: Capabilities,
        backend: &'static str,
    ) -> Self {
        Transaction {
            inner: Some(inner),
            capabilities,
            backend,
        }
    }

    fn inner(&mut self) -> &mut Box<dyn TransactionBackend> {
        self.inner
            .as_mut()
            .expect("transaction is open until commit or rollback consumes it")
    }

    /// Send a message within the transaction.
    pub async fn send(
        &mut self,
        destination: &Destination,
        message: Message,
    ) -> Result<(), SendError> {
        let mut message = message;
        crate::TraceContext::inject(&mut message);
        let caps = self.capabilities;
        if let Err(e) = check_send(
            &caps,
            self.backend,
            destination,
            &message,
            &SendOptions::default(),
        ) {
            return Err(SendError::new(e, message));
        }
        self.inner().send(destination, message).await
    }

    /// Acknowledge a delivery when the transaction commits (needs `transactional_ack`); a
    /// rollback returns it to its queue.
    pub async fn ack(&mut self, delivery: Delivery) -> Result<()> {
        if !self.capabilities.transactional_ack {
            // Dropping the delivery requeues it: nothing is lost.
            return Err(Error::unsupported("transactional ack", self.backend));
        }
        self.inner().ack(delivery.into_acker()).await
    }

    /// Commit: everything sent becomes visible at once.
    pub async fn commit(mut self) -> Result<()> {
        self.inner.take().expect("open").commit().await
    }

    /// Roll back: nothing sent becomes visible.
    pub async fn rollback(mut self) -> Result<()> {
        self.inner.take().expect("open").rollback().await
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            tracing::debug!(
                backend = self.backend,
                "transaction dropped without commit: rolling back"
            );
            inner.abandon();
        }
    }
}
