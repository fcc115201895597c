//! Consuming: a task owns the AMQP receiver link (fe2o3's `recv` needs `&mut`), grants credit
//! so that deliveries handed out and unsettled never exceed the prefetch, and executes the
//! settlements the ackers send it. When the link or connection dies the task ends: old ackers
//! become stale (`StaleDelivery`, the broker redelivers) and the consumer reattaches on the next
//! `recv`.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use coolmq_core::raw::{Acker, ConsumerBackend, TransactionBackend};
use coolmq_core::{Destination, Error, ErrorKind, Message, Result, SendOptions};
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::types::messaging::{message::Body, Modified};
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::Receiver;
use tokio::sync::{mpsc, oneshot};

use crate::connection::Link;
use crate::convert::from_amqp;
use crate::management::Flavor;
use crate::publisher::AmqPublisher;
use crate::transaction::AmqTransaction;

/// How a delivery is settled on the link.
enum Settle {
    Accept,
    /// `Modified{delivery_failed}`: the broker counts a failed attempt and redelivers.
    Fail,
}

pub(crate) type SharedTxn =
    Arc<tokio::sync::Mutex<Option<fe2o3_amqp::transaction::OwnedTransaction>>>;

enum Command {
    Settle(DeliveryInfo, Settle, Option<oneshot::Sender<Result<()>>>),
    /// Accept the delivery as part of a transaction (settled when the transaction commits).
    TxAccept(DeliveryInfo, SharedTxn, oneshot::Sender<Result<()>>),
    /// Return the delivery to the queue as a counted attempt (republished with its attempt
    /// + 1, the original accepted): an unsettled drop, or a requeue on Classic.
    Return(DeliveryInfo, Option<oneshot::Sender<Result<()>>>),
    Close(oneshot::Sender<()>),
}

type Received = (coolmq_core::Message, u32, DeliveryInfo);

/// The live receiver links of one connection, so closing the connection first returns their
/// unsettled deliveries counted (Artemis does not count a delivery whose link closed with
/// its connection; Classic does not either).
#[derive(Default)]
pub(crate) struct Receivers(std::sync::Mutex<Vec<mpsc::WeakSender<Command>>>);

impl Receivers {
    fn add(&self, commands: &mpsc::Sender<Command>) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|c| c.strong_count() > 0);
        all.push(commands.downgrade());
    }

    /// Close every live receiver link, returning its unsettled deliveries counted.
    pub(crate) async fn close_all(&self) {
        let all: Vec<_> = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        let closes = all
            .into_iter()
            .filter_map(|c| c.upgrade())
            .map(|c| async move {
                let (tx, rx) = oneshot::channel();
                if c.send(Command::Close(tx)).await.is_ok() {
                    let _ = rx.await;
                }
            });
        futures::future::join_all(closes).await;
    }
}

pub(crate) struct AmqConsumer {
    link: Arc<Link>,
    lost: Lost,
    receivers: Arc<Receivers>,
    forwarder: Arc<AmqPublisher>,
    queue: String,
    prefetch: u32,
    current: Option<(mpsc::Sender<Command>, mpsc::Receiver<Result<Received>>)>,
    closed: bool,
}

impl AmqConsumer {
    pub async fn open(
        link: Arc<Link>,
        receivers: Arc<Receivers>,
        forwarder: Arc<AmqPublisher>,
        queue: &str,
        prefetch: u16,
    ) -> Result<Self> {
        let mut c = AmqConsumer {
            link,
            lost: Lost::default(),
            receivers,
            forwarder,
            queue: queue.to_string(),
            prefetch: u32::from(prefetch),
            current: None,
            closed: false,
        };
        c.attach().await?;
        Ok(c)
    }

    async fn attach(&mut self) -> Result<()> {
        let receiver = self.link.receiver(&self.queue).await?;
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        self.receivers.add(&cmd_tx);
        let (del_tx, del_rx) = mpsc::channel(self.prefetch as usize + 1);
        let returner = Returner {
            queue: self.queue.clone(),
            forwarder: self.forwarder.clone(),
            lost: self.lost.clone(),
        };
        let top_up = top_up_after(self.link.options.flavor, self.prefetch);
        tokio::spawn(run_link(
            receiver,
            self.prefetch,
            top_up,
            cmd_rx,
            del_tx,
            returner,
        ));
        self.current = Some((cmd_tx, del_rx));
        Ok(())
    }
}

/// How much of a consumer's credit is spent before it is topped up, per broker (chosen with
/// the receive benchmark, docs/BENCHMARKS.md).
fn top_up_after(flavor: Flavor, prefetch: u32) -> u32 {
    match flavor {
        // Artemis: after every settled delivery. The receiver task's pipeline stays fullest:
        // 1.22-1.40; topped up per eighth of the prefetch 0.96-1.13, per half 0.70-0.80.
        Flavor::Artemis => 1,
        // Classic runs a dispatch pass for every flow frame: one per settled delivery halved
        // its rate (0.52-0.56); per eighth of the prefetch 0.97-1.05.
        Flavor::Classic => (prefetch / 8).max(1),
    }
}

/// Returns a closing consumer's unsettled deliveries to their queue as counted attempts, and
/// remembers those of a link that died, to count them when they come back.
struct Returner {
    queue: String,
    forwarder: Arc<AmqPublisher>,
    lost: Lost,
}

/// Message ids that were unsettled on a receiver link that died, with the redeliveries they
/// had then plus that delivery. Artemis takes such a delivery back uncounted when the
/// connection is gone (its AMQP layer closes the consumer as if gracefully), so the next
/// delivery of the message on this consumer counts at least that many.
#[derive(Clone, Default)]
pub(crate) struct Lost(Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>);

/// More lost deliveries than this are forgotten (another consumer took them over).
const LOST_LIMIT: usize = 10_000;

impl Lost {
    fn remember(&self, unsettled: &Unsettled) {
        let mut lost = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if lost.len() + unsettled.len() > LOST_LIMIT {
            lost.clear();
        }
        for (_, message, redeliveries) in unsettled.values() {
            lost.insert(message.id.clone(), redeliveries.saturating_add(1));
        }
    }

    /// The redeliveries of a delivery of `id`: at least what a dead link left behind.
    fn counted(&self, id: &str, redeliveries: u32) -> u32 {
        let mut lost = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if lost.is_empty() {
            return redeliveries;
        }
        lost.remove(id)
            .map_or(redeliveries, |seen| seen.max(redeliveries))
    }
}

type Unsettled = std::collections::HashMap<u32, (DeliveryInfo, coolmq_core::Message, u32)>;

/// The task owning one receiver link.
async fn run_link(
    mut receiver: Receiver,
    prefetch: u32,
    top_up: u32,
    mut commands: mpsc::Receiver<Command>,
    deliveries: mpsc::Sender<Result<Received>>,
    returner: Returner,
) {
    let mut outstanding: u32 = 0;
    // Unsettled deliveries by delivery id, so closing the link can return them counted.
    let mut unsettled: Unsettled = Default::default();
    loop {
        // Credit goes back up to `prefetch - unsettled` (never above it: the bound holds) once
        // `top_up` of it is spent, or none is left.
        let want = prefetch.saturating_sub(outstanding);
        let credit = receiver.credit();
        let spent = want.saturating_sub(credit);
        if spent > 0 && (credit == 0 || spent >= top_up) && receiver.set_credit(want).await.is_err()
        {
            break;
        }
        tokio::select! {
            cmd = commands.recv() => match cmd {
                Some(Command::Settle(info, how, reply)) => {
                    unsettled.remove(&info.delivery_id());
                    let r = match how {
                        Settle::Accept => receiver.accept(info).await,
                        Settle::Fail => {
                            let modified = Modified { delivery_failed: Some(true), undeliverable_here: None, message_annotations: None };
                            receiver.modify(info, modified).await
                        }
                    };
                    outstanding = outstanding.saturating_sub(1);
                    let r = r.map_err(|e| stale().with_source(e));
                    let failed = r.is_err();
                    if let Some(reply) = reply {
                        let _ = reply.send(r);
                    }
                    if failed {
                        break;
                    }
                }
                Some(Command::TxAccept(info, txn, reply)) => {
                    use fe2o3_amqp::transaction::TransactionRetirement;
                    let guard = txn.lock().await;
                    let r = match guard.as_ref() {
                        Some(t) => t
                            .accept(&mut receiver, info.clone())
                            .await
                            .map_err(|e| crate::error::map(e, "transactional accept")),
                        None => Err(Error::new(ErrorKind::TransactionRolledBack, "the transaction is over")),
                    };
                    drop(guard);
                    if r.is_ok() {
                        unsettled.remove(&info.delivery_id());
                        outstanding = outstanding.saturating_sub(1);
                    }
                    let _ = reply.send(r);
                }
                Some(Command::Return(info, reply)) => {
                    let r = match unsettled.remove(&info.delivery_id()) {
                        Some(entry) => {
                            outstanding = outstanding.saturating_sub(1);
                            return_one(&receiver, entry, &returner).await;
                            Ok(())
                        }
                        None => Err(stale()),
                    };
                    if let Some(reply) = reply {
                        let _ = reply.send(r);
                    }
                }
                Some(Command::Close(done)) => {
                    return_unsettled(&mut receiver, &mut unsettled, &returner).await;
                    let _ = receiver.close().await;
                    let _ = done.send(());
                    return;
                }
                None => {
                    return_unsettled(&mut receiver, &mut unsettled, &returner).await;
                    break;
                }
            },
            r = receiver.recv::<Body<Value>>(), if outstanding < prefetch => match r {
                Ok(delivery) => {
                    outstanding += 1;
                    let info = DeliveryInfo::from(&delivery);
                    let (message, redeliveries) = from_amqp(delivery.into_message());
                    let redeliveries = returner.lost.counted(&message.id, redeliveries);
                    unsettled.insert(info.delivery_id(), (info.clone(), message.clone(), redeliveries));
                    if deliveries.send(Ok((message, redeliveries, info))).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = deliveries.send(Err(crate::error::map(e, "receive"))).await;
                    break;
                }
            },
        }
    }
    // The link failed: the broker takes every unsettled delivery back (Artemis uncounted).
    returner.lost.remember(&unsettled);
    let _ = receiver.close().await;
}

/// Return a closing consumer's unsettled deliveries as counted attempts, the way RabbitMQ
/// requeues on channel close. ActiveMQ returns deliveries of a detached link uncounted (Classic
/// even after `Modified{delivery_failed}`), so coolmq republishes each with its attempt + 1,
/// confirmed, then accepts the original — a crash in between duplicates, never loses. Credit
/// is withdrawn first so nothing new arrives meanwhile.
async fn return_unsettled(receiver: &mut Receiver, unsettled: &mut Unsettled, returner: &Returner) {
    if unsettled.is_empty() {
        return;
    }
    let _ = receiver.set_credit(0).await;
    // Each return is a durable republish awaiting its confirm, then an accept. Made one after
    // another, closing a consumer with a full prefetch would take a round trip per delivery;
    // made together they share the round trips, bounded by the publisher's window.
    let receiver = &*receiver;
    let returns = unsettled
        .drain()
        .map(|(_, entry)| return_one(receiver, entry, returner));
    futures::future::join_all(returns).await;
}

async fn return_one(
    receiver: &Receiver,
    (info, mut message, redeliveries): (DeliveryInfo, coolmq_core::Message, u32),
    returner: &Returner,
) {
    coolmq_core::dead_letter::count_return(&mut message.headers, redeliveries);
    let destination = Destination::queue(returner.queue.clone());
    match returner
        .forwarder
        .publish(&destination, message, None)
        .await
    {
        Ok(_) => {
            let _ = receiver.accept(info).await;
        }
        Err(_) => {
            let modified = Modified {
                delivery_failed: Some(true),
                undeliverable_here: None,
                message_annotations: None,
            };
            let _ = receiver.modify(info, modified).await;
        }
    }
}

fn stale() -> Error {
    coolmq_core::raw::stale_delivery("receiver link")
}

#[async_trait]
impl ConsumerBackend for AmqConsumer {
    async fn recv(&mut self) -> Result<Option<coolmq_core::raw::Received>> {
        loop {
            if self.closed {
                return Ok(None);
            }
            if self.current.is_none() {
                self.attach().await?;
            }
            let (commands, deliveries) = self.current.as_mut().expect("attached");
            match deliveries.recv().await {
                Some(Ok((message, redeliveries, info))) => {
                    let acker = AmqAcker {
                        commands: commands.clone(),
                        info: Some(info),
                        forwarder: self.forwarder.clone(),
                        flavor: self.link.options.flavor,
                    };
                    // Artemis counts every delivery (`delivery-count`); Classic keeps its
                    // count on the link, and a consumer that died leaves the message only
                    // flagged: the core checkpoints such copies.
                    return Ok(Some(coolmq_core::raw::Received {
                        message,
                        redelivered: redeliveries > 0,
                        broker_redeliveries: redeliveries,
                        exact_count: self.link.options.flavor == Flavor::Artemis,
                        acker: Box::new(acker),
                    }));
                }
                Some(Err(e)) => {
                    self.current = None;
                    if e.kind() == ErrorKind::NotFound {
                        return Err(e);
                    }
                    tracing::warn!(queue = %self.queue, error = %e, "receiver link failed; reattaching");
                }
                None => {
                    self.current = None;
                    tracing::warn!(queue = %self.queue, "receiver link closed; reattaching");
                }
            }
        }
    }

    async fn close(&mut self) -> Result<()> {
        self.closed = true;
        if let Some((commands, _)) = self.current.take() {
            let (tx, rx) = oneshot::channel();
            if commands.send(Command::Close(tx)).await.is_ok() {
                let _ = rx.await;
            }
        }
        Ok(())
    }
}

pub(crate) struct AmqAcker {
    commands: mpsc::Sender<Command>,
    info: Option<DeliveryInfo>,
    forwarder: Arc<AmqPublisher>,
    flavor: Flavor,
}

impl AmqAcker {
    /// Accept within `txn`: the link task retires the delivery transactionally.
    pub(crate) async fn accept_in(mut self: Box<Self>, txn: SharedTxn) -> Result<()> {
        let info = self.info.take().expect("unsettled");
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::TxAccept(info, txn, tx))
            .await
            .map_err(|_| stale())?;
        rx.await.map_err(|_| stale())?
    }

    async fn settle(mut self: Box<Self>, how: Settle) -> Result<()> {
        let info = self.info.take().expect("unsettled");
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Settle(info, how, Some(tx)))
            .await
            .map_err(|_| stale())?;
        rx.await.map_err(|_| stale())?
    }
}

#[async_trait]
impl Acker for AmqAcker {
    async fn ack(self: Box<Self>) -> Result<()> {
        self.settle(Settle::Accept).await
    }

    async fn requeue(mut self: Box<Self>) -> Result<()> {
        match self.flavor {
            // Artemis counts `Modified{delivery_failed}` in the message's delivery count.
            Flavor::Artemis => self.settle(Settle::Fail).await,
            // Classic counts it only on this link (a new consumer sees the message fresh):
            // return it counted, as a closing consumer does.
            Flavor::Classic => {
                let info = self.info.take().expect("unsettled");
                let (tx, rx) = oneshot::channel();
                self.commands
                    .send(Command::Return(info, Some(tx)))
                    .await
                    .map_err(|_| stale())?;
                rx.await.map_err(|_| stale())?
            }
        }
    }

    async fn forward(
        self: Box<Self>,
        destination: &Destination,
        replacement: Message,
        options: &SendOptions,
    ) -> Result<()> {
        // Atomically where the broker allows: the replacement (delayed retry or dead letter)
        // and the acceptance of the original commit together, so neither a duplicate nor a
        // loss can result. Without a transaction: confirm first, then accept.
        let mut tx = match AmqTransaction::begin(self.forwarder.link().clone()).await {
            Ok(tx) => tx,
            Err(e) => {
                tracing::debug!(error = %e, "no transaction for the forward; confirming, then accepting");
                let published = self
                    .forwarder
                    .publish(destination, replacement, options.delay)
                    .await;
                return coolmq_core::raw::ack_after_forward(self, published).await;
            }
        };
        if let Err(e) = tx
            .send_delayed(destination, replacement, options.delay)
            .await
        {
            TransactionBackend::abandon(Box::new(tx));
            if let Err(requeue) = self.requeue().await {
                tracing::warn!(error = %requeue, "requeue after a failed forward failed; the broker redelivers");
            }
            return Err(e.into());
        }
        if let Err(e) = self.accept_in(tx.shared()).await {
            TransactionBackend::abandon(Box::new(tx));
            return Err(e);
        }
        TransactionBackend::commit(Box::new(tx)).await
    }

    fn release(mut self: Box<Self>) {
        if let Some(info) = self.info.take() {
            // Without awaiting: if the link is gone, the broker redelivers anyway.
            let _ = self.commands.try_send(Command::Return(info, None));
        }
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}
