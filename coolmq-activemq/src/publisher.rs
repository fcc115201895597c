//! Sending: one sender link per queue address, driven by its own task that performs the
//! transfers in order (fe2o3's `send_batchable` needs `&mut Sender`) and hands each caller the
//! future of its outcome, so many transfers are in flight (bounded by the publisher window)
//! without callers contending for the link. `Accepted` is the confirm; `Rejected`, `Released`,
//! `Modified` are typed errors that hand the message back. A failed link ends its task; the
//! next send attaches a new one.

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
use tokio::sync::{mpsc, oneshot, Mutex, Semaphore};

use crate::connection::Link;
use crate::convert::{to_amqp, AmqpMessage};
use crate::error::map;

type Pending = DeliveryFut<std::result::Result<Outcome, fe2o3_amqp::link::SendError>>;
type Transfer = (
    AmqpMessage,
    oneshot::Sender<std::result::Result<Pending, fe2o3_amqp::link::SendError>>,
);

/// The task owning one sender link: transfers in arrival order, outcomes awaited by callers.
async fn run_sender(mut sender: Sender, mut transfers: mpsc::Receiver<Transfer>) {
    while let Some((message, reply)) = transfers.recv().await {
        let r = sender.send_batchable(message).await;
        let failed = r.is_err();
        let _ = reply.send(r);
        if failed {
            break;
        }
    }
    let _ = sender.close().await;
}

pub(crate) struct AmqPublisher {
    link: Arc<Link>,
    senders: StdMutex<HashMap<String, mpsc::Sender<Transfer>>>,
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

    fn cached(&self, address: &str) -> Option<mpsc::Sender<Transfer>> {
        let senders = self.senders.lock().expect("lock");
        senders.get(address).filter(|s| !s.is_closed()).cloned()
    }

    /// The transfer queue of `destination`'s sender link, attaching one (once) if needed.
    async fn sender(&self, destination: &Destination) -> Result<mpsc::Sender<Transfer>> {
        let address = destination.to_string();
        if let Some(s) = self.cached(&address) {
            return Ok(s);
        }
        let _attaching = self.attaching.lock().await;
        if let Some(s) = self.cached(&address) {
            return Ok(s);
        }
        let link = self.link.sender(destination).await?;
        let (tx, rx) = mpsc::channel(self.window.available_permits().max(1));
        tokio::spawn(run_sender(link, rx));
        self.senders
            .lock()
            .expect("lock")
            .insert(address, tx.clone());
        Ok(tx)
    }

    pub async fn publish(
        &self,
        destination: &Destination,
        message: Message,
        delay: Option<Duration>,
    ) -> Result<Receipt, SendError> {
        let _permit = self.window.acquire().await.expect("window never closed");
        let amqp = match to_amqp(&message, delay) {
            Ok(a) => a,
            Err(e) => return Err(SendError::new(e, message)),
        };
        let sender = match self.sender(destination).await {
            Ok(s) => s,
            Err(e) => return Err(SendError::new(e, message)),
        };
        let (reply, pending) = oneshot::channel();
        if sender.send((amqp, reply)).await.is_err() {
            let e = Error::new(ErrorKind::ConnectionLost, "the sender link closed; resend");
            return Err(SendError::new(e, message));
        }
        let pending = match pending.await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Err(SendError::new(map(e, "transfer"), message)),
            Err(_) => {
                let e = Error::new(ErrorKind::ConnectionLost, "the sender link closed; resend");
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
