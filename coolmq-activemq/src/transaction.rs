//! AMQP 1.0 transactions through the broker's coordinator (fe2o3's `OwnedTransaction`):
//! transactional sends, commit, rollback; a dropped transaction is rolled back by fe2o3's
//! best-effort rollback on drop (and by the broker when the control link goes).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use coolmq_core::raw::{Acker, TransactionBackend};
use coolmq_core::{Destination, Error, ErrorKind, Message, Result, SendError};
use fe2o3_amqp::transaction::{TransactionDischarge, TransactionPosting};
use fe2o3_amqp::types::messaging::Outcome;
use fe2o3_amqp::Sender;

use crate::connection::Link;
use crate::consumer::{AmqAcker, SharedTxn};
use crate::convert::to_amqp;
use crate::error::map;

pub(crate) struct AmqTransaction {
    link: Arc<Link>,
    /// Shared with consumers' link tasks, which retire deliveries transactionally.
    txn: SharedTxn,
    senders: HashMap<String, Sender>,
}

impl AmqTransaction {
    pub async fn begin(link: Arc<Link>) -> Result<Self> {
        let txn = link.declare_transaction().await?;
        Ok(AmqTransaction {
            link,
            txn: Arc::new(tokio::sync::Mutex::new(Some(txn))),
            senders: HashMap::new(),
        })
    }

    async fn close_senders(&mut self) {
        for (_, s) in self.senders.drain() {
            let _ = s.close().await;
        }
    }
}

impl AmqTransaction {
    /// The transaction handle consumers' link tasks retire deliveries with.
    pub(crate) fn shared(&self) -> SharedTxn {
        self.txn.clone()
    }

    /// A transactional send, delayed on the broker by `delay` if given.
    pub(crate) async fn send_delayed(
        &mut self,
        destination: &Destination,
        message: Message,
        delay: Option<std::time::Duration>,
    ) -> Result<(), SendError> {
        let address = destination.to_string();
        if !self.senders.contains_key(&address) {
            match self.link.routed_sender(destination).await {
                Ok(s) => {
                    self.senders.insert(address.clone(), s);
                }
                Err(e) => return Err(SendError::new(e, message)),
            }
        }
        let amqp = match to_amqp(&message, delay) {
            Ok(a) => a,
            Err(e) => return Err(SendError::new(e, message)),
        };
        let sender = self.senders.get_mut(&address).expect("attached");
        let guard = self.txn.lock().await;
        let txn = guard.as_ref().expect("open until discharged");
        match txn.post(sender, amqp).await {
            Ok(Outcome::Accepted(_)) => Ok(()),
            Ok(other) => Err(SendError::new(
                Error::new(
                    ErrorKind::Rejected,
                    format!("ActiveMQ refused the transactional send: {other:?}"),
                ),
                message,
            )),
            Err(e) => Err(SendError::new(map(e, "transactional send"), message)),
        }
    }
}

#[async_trait]
impl TransactionBackend for AmqTransaction {
    async fn send(&mut self, destination: &Destination, message: Message) -> Result<(), SendError> {
        self.send_delayed(destination, message, None).await
    }

    async fn ack(&mut self, acker: Box<dyn Acker>) -> Result<()> {
        match acker.into_any().downcast::<AmqAcker>() {
            Ok(acker) => acker.accept_in(self.txn.clone()).await,
            Err(_) => Err(Error::new(
                ErrorKind::Unsupported,
                "an ActiveMQ transaction can only acknowledge ActiveMQ deliveries",
            )),
        }
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let txn = self.txn.lock().await.take().expect("open");
        let r = txn.commit().await.map_err(|e| {
            Error::new(
                ErrorKind::TransactionRolledBack,
                format!("commit failed; the broker rolled the transaction back or its outcome is unknown: {e}"),
            )
            .with_source(e)
        });
        self.close_senders().await;
        r
    }

    async fn rollback(mut self: Box<Self>) -> Result<()> {
        let txn = self.txn.lock().await.take().expect("open");
        let r = txn.rollback().await.map_err(|e| map(e, "rollback"));
        self.close_senders().await;
        r
    }

    fn abandon(mut self: Box<Self>) {
        // fe2o3 rolls an undischarged transaction back on drop; closing the links is cleanup.
        let txn = self.txn.clone();
        let senders: Vec<Sender> = self.senders.drain().map(|(_, s)| s).collect();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Some(txn) = txn.lock().await.take() {
                    let _ = txn.rollback().await;
                }
                for s in senders {
                    let _ = s.close().await;
                }
            });
        }
    }
}
