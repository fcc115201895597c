//! Sending: one sender link per queue address, `send_batchable` so many transfers are in flight
//! (bounded by the publisher window), each resolving on its own outcome: `Accepted` is the
//! confirm; `Rejected`, `Released`, `Modified` are typed errors that hand the message back. A
//! failed link is dropped from the cache and reattached by the next send.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coolmq_core::{
    Destination, Error, ErrorKind, Message, PublisherBackend, Receipt, Result, SendError,
    SendOptions, TransactionBackend,
};
use fe2o3_amqp::types::messaging::Outcome;
use fe2o3_amqp::Sender;
use tokio::sync::{Mutex, Semaphore};

use crate::connection::Link;
use crate::convert::to_amqp;
use crate::error::map;

pub(crate) struct AmqPublisher {
    link: Arc<Link>,
    senders: Mutex<HashMap<String, Arc<Mutex<Sender>>>>,
    window: Semaphore,
    confirm_timeout: Duration,
}

impl AmqPublisher {
    pub fn new(link: Arc<Link>, window: usize, confirm_timeout: Duration) -> Self {
        AmqPublisher {
            link,
            senders: Mutex::new(HashMap::new()),
            window: Semaphore::new(window),
            confirm_timeout,
        }
    }

    async fn sender(&self, address: &str) -> Result<Arc<Mutex<Sender>>> {
        let mut senders = self.senders.lock().await;
        if let Some(s) = senders.get(address) {
            return Ok(s.clone());
        }
        let s = Arc::new(Mutex::new(self.link.sender(address).await?));
        senders.insert(address.to_string(), s.clone());
        Ok(s)
    }

    async fn forget(&self, address: &str) {
        self.senders.lock().await.remove(address);
    }

    pub async fn publish(
        &self,
        destination: &Destination,
        message: Message,
        delay: Option<Duration>,
    ) -> Result<Receipt, SendError> {
        let _permit = self.window.acquire().await.expect("window never closed");
        let address = destination.name();
        let amqp = match to_amqp(&message, delay) {
            Ok(a) => a,
            Err(e) => return Err(SendError::new(e, message)),
        };
        let sender = match self.sender(address).await {
            Ok(s) => s,
            Err(e) => return Err(SendError::new(e, message)),
        };
        let pending = sender.lock().await.send_batchable(amqp).await;
        let pending = match pending {
            Ok(p) => p,
            Err(e) => {
                self.forget(address).await;
                return Err(SendError::new(map(e, "transfer"), message));
            }
        };
        let outcome = match tokio::time::timeout(self.confirm_timeout, pending).await {
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "no outcome within {:?}; the broker may have taken the message",
                    self.confirm_timeout
                ),
            )),
            Ok(Err(e)) => {
                self.forget(address).await;
                Err(map(e, "outcome").set_temporary(true))
            }
            Ok(Ok(Outcome::Accepted(_))) => Ok(()),
            Ok(Ok(Outcome::Rejected(r))) => {
                let condition = r
                    .error
                    .as_ref()
                    .map(|e| format!("{:?}", e.condition))
                    .unwrap_or_default();
                let temporary = condition.contains("resource-limit");
                Err(Error::new(
                    ErrorKind::Rejected,
                    format!("ActiveMQ rejected the message: {:?}", r.error),
                )
                .set_temporary(temporary))
            }
            Ok(Ok(Outcome::Released(_))) => Err(Error::new(
                ErrorKind::Rejected,
                "ActiveMQ released the message (not taken); resend it",
            )
            .set_temporary(true)),
            Ok(Ok(Outcome::Modified(m))) => Err(Error::new(
                ErrorKind::Rejected,
                format!("ActiveMQ modified the message (not taken): {m:?}"),
            )
            .set_temporary(true)),
            Ok(Ok(other)) => Err(Error::new(
                ErrorKind::Unexpected,
                format!("unexpected outcome {other:?}"),
            )),
        };
        match outcome {
            Ok(()) => Ok(Receipt {
                message_id: message.id,
            }),
            Err(e) => Err(SendError::new(
                e.with_context("destination", destination.to_string()),
                message,
            )),
        }
    }
}

/// The `PublisherBackend` handed to applications.
pub(crate) struct PublisherHandle(pub Arc<AmqPublisher>, pub Arc<Link>);

#[async_trait]
impl PublisherBackend for PublisherHandle {
    async fn send(
        &self,
        destination: &Destination,
        message: Message,
        options: &SendOptions,
    ) -> Result<Receipt, SendError> {
        self.0.publish(destination, message, options.delay).await
    }

    async fn begin(&self) -> Result<Box<dyn TransactionBackend>> {
        Ok(Box::new(
            crate::transaction::AmqTransaction::begin(self.1.clone()).await?,
        ))
    }
}
