//! Sending: one sender link per address ([`SenderLink`]), shared by the sends to it. A send
//! holds the link only while it puts its transfer on the wire, then awaits the outcome
//! without it, so many transfers are in flight (bounded by the publisher window). The
//! transfer is made by the caller's own task: an earlier design handed transfers to a
//! per-link task, and that extra task hop per message cost a third of the throughput on a
//! busy machine (docs/BENCHMARKS.md). `Accepted` is the confirm; `Rejected`, `Released`,
//! `Modified` are typed errors that hand the message back. A failed link is dropped; the next
//! send attaches a new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use coolmq_core::{
    Destination, Error, ErrorKind, Message, PublisherBackend, Receipt, Result, SendError,
    SendOptions, TransactionBackend,
};
use fe2o3_amqp::link::delivery::Sendable;
use fe2o3_amqp::types::messaging::Outcome;
use tokio::sync::Mutex;

use crate::connection::Link;
use crate::convert::{restore_body, to_amqp_taking_body};
use crate::error::map;
use crate::sender_link::SenderLink;

pub(crate) struct AmqPublisher {
    link: Arc<Link>,
    senders: StdMutex<HashMap<Destination, Arc<SenderLink>>>,
    attaching: Mutex<()>,
    /// In-flight sends (async-lock's semaphore: taking and returning a permit are single
    /// atomic operations when nobody waits; tokio's locks on every return).
    window: async_lock::Semaphore,
    confirm_timeout: Duration,
}

impl AmqPublisher {
    pub fn new(link: Arc<Link>, window: usize, confirm_timeout: Duration) -> Self {
        AmqPublisher {
            link,
            senders: StdMutex::new(HashMap::new()),
            attaching: Mutex::new(()),
            window: async_lock::Semaphore::new(window),
            confirm_timeout,
        }
    }

    /// The connection this publisher sends on.
    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }

    fn cached(&self, destination: &Destination) -> Option<Arc<SenderLink>> {
        let senders = self.senders.lock().expect("lock");
        senders.get(destination).cloned()
    }

    /// `destination`'s sender link, attaching one (once) if needed. Attaching is rare and its
    /// future is large, so it is boxed: it does not bloat every send's future.
    async fn sender(&self, destination: &Destination) -> Result<Arc<SenderLink>> {
        match self.cached(destination) {
            Some(s) => Ok(s),
            None => Box::pin(self.attach(destination)).await,
        }
    }

    async fn attach(&self, destination: &Destination) -> Result<Arc<SenderLink>> {
        let _attaching = self.attaching.lock().await;
        if let Some(s) = self.cached(destination) {
            return Ok(s);
        }
        let link = Arc::new(SenderLink::new(self.link.sender(destination).await?));
        self.senders
            .lock()
            .expect("lock")
            .insert(destination.clone(), link.clone());
        Ok(link)
    }

    /// Forget `link` if it failed, so the next send attaches a new one.
    fn forget_if_failed(&self, link: &Arc<SenderLink>) {
        if link.is_failed() {
            self.senders
                .lock()
                .expect("lock")
                .retain(|_, v| !Arc::ptr_eq(v, link));
        }
    }

    pub async fn publish(
        &self,
        destination: &Destination,
        message: Message,
        delay: Option<Duration>,
    ) -> Result<Receipt, SendError> {
        let _permit = match self.window.try_acquire() {
            Some(p) => p,
            None => self.window.acquire().await,
        };
        let sender = match self.sender(destination).await {
            Ok(s) => s,
            Err(e) => return Err(SendError::new(e, message)),
        };
        let mut message = message;
        // The body moves into the AMQP message and back: no copy per send.
        let outgoing = match to_amqp_taking_body(&mut message, delay) {
            Ok(a) => Arc::new(Sendable::from(a)),
            Err(e) => return Err(SendError::new(e, message)),
        };
        let transferred = sender.transfer(&outgoing, self.confirm_timeout).await;
        // The link holds no reference once `transfer` returned.
        let sections = Arc::try_unwrap(outgoing)
            .map(|s| s.message)
            .unwrap_or_else(|shared| shared.message.clone());
        restore_body(&mut message, sections);
        let pending = match transferred {
            Ok(p) => p,
            Err(e) => {
                self.forget_if_failed(&sender);
                return Err(SendError::new(e, message));
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
            Ok(Err(e)) => Err(map(e, "outcome").set_temporary(true)),
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
