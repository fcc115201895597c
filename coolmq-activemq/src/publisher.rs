//! Sending: one sender link per address, shared by the sends to it. A send holds the link
//! only while it puts its transfer on the wire (fe2o3's `send_batchable` needs
//! `&mut Sender`), then awaits the outcome without it, so many transfers are in flight
//! (bounded by the publisher window). The transfer is made by the caller's own task: an
//! earlier design handed transfers to a per-link task, and that extra task hop per message
//! cost a third of the throughput on a busy machine (docs/BENCHMARKS.md). `Accepted` is the
//! confirm; `Rejected`, `Released`, `Modified` are typed errors that hand the message back. A
//! failed link is dropped; the next send attaches a new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use coolmq_core::{
    Destination, Error, ErrorKind, Message, PublisherBackend, Receipt, Result, SendError,
    SendOptions, TransactionBackend,
};
use fe2o3_amqp::link::delivery::DeliveryFut;
use fe2o3_amqp::types::messaging::Outcome;
use fe2o3_amqp::Sender;
use tokio::sync::{Mutex, Semaphore};

use crate::connection::Link;
use crate::convert::{to_amqp, AmqpMessage};
use crate::error::map;

/// One sender link, shared by every send to its address; `None` once it failed.
type LinkSlot = Arc<Mutex<Option<Sender>>>;
type Pending = DeliveryFut<std::result::Result<Outcome, fe2o3_amqp::link::SendError>>;

pub(crate) struct AmqPublisher {
    link: Arc<Link>,
    senders: StdMutex<HashMap<String, LinkSlot>>,
    attaching: Mutex<()>,
    window: Semaphore,
    confirm_timeout: Duration,
}

impl AmqPublisher {
    pub fn new(link: Arc<Link>, window: usize, confirm_timeout: Duration) -> Self {
        AmqPublisher {
            link,
            senders: StdMutex::new(HashMap::new()),
            attaching: Mutex::new(()),
            window: Semaphore::new(window),
            confirm_timeout,
        }
    }

    /// The connection this publisher sends on.
    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }

    fn cached(&self, address: &str) -> Option<LinkSlot> {
        let senders = self.senders.lock().expect("lock");
        senders.get(address).cloned()
    }

    /// The transfer queue of `destination`'s sender link, attaching one (once) if needed.
    async fn sender(&self, destination: &Destination) -> Result<LinkSlot> {
        let address = destination.to_string();
        if let Some(s) = self.cached(&address) {
            return Ok(s);
        }
        let _attaching = self.attaching.lock().await;
        if let Some(s) = self.cached(&address) {
            return Ok(s);
        }
        let link = self.link.sender(destination).await?;
        let tx = Arc::new(Mutex::new(Some(link)));
        self.senders
            .lock()
            .expect("lock")
            .insert(address, tx.clone());
        Ok(tx)
    }

    /// Put one transfer on `slot`'s link; the outcome future comes back. A failed link is
    /// closed and forgotten so the next send attaches a fresh one.
    async fn transfer(&self, slot: &LinkSlot, amqp: AmqpMessage) -> Result<Pending> {
        // Uncontended fast paths skip tokio's cooperative budget (see docs/BENCHMARKS.md).
        let mut guard = match slot.try_lock() {
            Ok(g) => g,
            Err(_) => slot.lock().await,
        };
        let Some(link) = guard.as_mut() else {
            return Err(Error::new(
                ErrorKind::ConnectionLost,
                "the sender link closed; resend",
            ));
        };
        match link.send_batchable(amqp).await {
            Ok(p) => Ok(p),
            Err(e) => {
                if let Some(l) = guard.take() {
                    tokio::spawn(async move {
                        let _ = l.close().await;
                    });
                }
                self.senders
                    .lock()
                    .expect("lock")
                    .retain(|_, v| !Arc::ptr_eq(v, slot));
                Err(map(e, "transfer"))
            }
        }
    }

    pub async fn publish(
        &self,
        destination: &Destination,
        message: Message,
        delay: Option<Duration>,
    ) -> Result<Receipt, SendError> {
        let _permit = match self.window.try_acquire() {
            Ok(p) => p,
            Err(_) => self.window.acquire().await.expect("window never closed"),
        };
        let amqp = match to_amqp(&message, delay) {
            Ok(a) => a,
            Err(e) => return Err(SendError::new(e, message)),
        };
        let sender = match self.sender(destination).await {
            Ok(s) => s,
            Err(e) => return Err(SendError::new(e, message)),
        };
        // The transfer waits for link credit; a broker that withholds credit (a full address
        // under Artemis's BLOCK policy) must not hang the caller.
        let transfer = tokio::time::timeout(self.confirm_timeout, self.transfer(&sender, amqp));
        let pending = match transfer.await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Err(SendError::new(e, message)),
            Err(_) => {
                let e = Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "the broker granted no link credit within {:?}; not sent",
                        self.confirm_timeout
                    ),
                )
                .set_temporary(true);
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
