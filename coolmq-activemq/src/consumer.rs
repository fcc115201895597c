//! Consuming: a task owns the AMQP receiver link (fe2o3's `recv` needs `&mut`), grants credit
//! so that deliveries handed out and unsettled never exceed the prefetch, and executes the
//! settlements the ackers send it. When the link or connection dies the task ends: old ackers
//! become stale (`StaleDelivery`, the broker redelivers) and the consumer reattaches on the next
//! `recv`.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use coolmq_core::{
    Acker, ConsumerBackend, Delivery, DeliveryContext, Destination, Error, ErrorKind, Message,
    Result, SendOptions,
};
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::types::messaging::{message::Body, Modified};
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::Receiver;
use tokio::sync::{mpsc, oneshot};

use crate::connection::Link;
use crate::convert::from_amqp;
use crate::publisher::AmqPublisher;

/// How a delivery is settled on the link.
enum Settle {
    Accept,
    /// `Modified{delivery_failed}`: the broker counts a failed attempt and redelivers.
    Fail,
}

enum Command {
    Settle(DeliveryInfo, Settle, Option<oneshot::Sender<Result<()>>>),
    Close(oneshot::Sender<()>),
}

type Received = (coolmq_core::Message, u32, DeliveryInfo);

pub(crate) struct AmqConsumer {
    link: Arc<Link>,
    forwarder: Arc<AmqPublisher>,
    queue: String,
    prefetch: u32,
    context: Arc<DeliveryContext>,
    current: Option<(mpsc::Sender<Command>, mpsc::Receiver<Result<Received>>)>,
    closed: bool,
}

impl AmqConsumer {
    pub async fn open(
        link: Arc<Link>,
        forwarder: Arc<AmqPublisher>,
        queue: &str,
        prefetch: u16,
        context: Arc<DeliveryContext>,
    ) -> Result<Self> {
        let mut c = AmqConsumer {
            link,
            forwarder,
            queue: queue.to_string(),
            prefetch: u32::from(prefetch),
            context,
            current: None,
            closed: false,
        };
        c.attach().await?;
        Ok(c)
    }

    async fn attach(&mut self) -> Result<()> {
        let receiver = self.link.receiver(&self.queue).await?;
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (del_tx, del_rx) = mpsc::channel(self.prefetch as usize + 1);
        tokio::spawn(run_link(receiver, self.prefetch, cmd_rx, del_tx));
        self.current = Some((cmd_tx, del_rx));
        Ok(())
    }
}

/// The task owning one receiver link.
async fn run_link(
    mut receiver: Receiver,
    prefetch: u32,
    mut commands: mpsc::Receiver<Command>,
    deliveries: mpsc::Sender<Result<Received>>,
) {
    let mut outstanding: u32 = 0;
    // Unsettled deliveries by delivery id, so closing the link can count them as failed.
    let mut unsettled: std::collections::HashMap<u32, DeliveryInfo> = Default::default();
    loop {
        let want = prefetch.saturating_sub(outstanding);
        if receiver.credit() < want && receiver.set_credit(want).await.is_err() {
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
                Some(Command::Close(done)) => {
                    fail_unsettled(&receiver, &mut unsettled).await;
                    let _ = receiver.close().await;
                    let _ = done.send(());
                    return;
                }
                None => {
                    fail_unsettled(&receiver, &mut unsettled).await;
                    break;
                }
            },
            r = receiver.recv::<Body<Value>>(), if outstanding < prefetch => match r {
                Ok(delivery) => {
                    outstanding += 1;
                    let info = DeliveryInfo::from(&delivery);
                    unsettled.insert(info.delivery_id(), info.clone());
                    let (message, redeliveries) = from_amqp(delivery.into_message());
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
    // Closing the link returns every unsettled delivery to the queue.
    let _ = receiver.close().await;
}

/// Return the consumer's unsettled deliveries as failed attempts: the broker redelivers them
/// with the redelivered flag and an incremented count, as RabbitMQ does on channel close
/// (a plain link close makes ActiveMQ return them uncounted).
async fn fail_unsettled(
    receiver: &Receiver,
    unsettled: &mut std::collections::HashMap<u32, DeliveryInfo>,
) {
    for (_, info) in unsettled.drain() {
        let modified = Modified {
            delivery_failed: Some(true),
            undeliverable_here: None,
            message_annotations: None,
        };
        let _ = receiver.modify(info, modified).await;
    }
}

fn stale() -> Error {
    Error::new(
        ErrorKind::StaleDelivery,
        "the delivery's link has closed; ActiveMQ redelivers the message",
    )
    .set_temporary(false)
}

#[async_trait]
impl ConsumerBackend for AmqConsumer {
    async fn recv(&mut self) -> Result<Option<Delivery>> {
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
                    };
                    return Ok(Some(Delivery::new(
                        message,
                        redeliveries > 0,
                        redeliveries,
                        self.context.clone(),
                        Box::new(acker),
                    )));
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
}

impl AmqAcker {
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

    async fn requeue(self: Box<Self>) -> Result<()> {
        self.settle(Settle::Fail).await
    }

    async fn forward(
        self: Box<Self>,
        destination: &Destination,
        replacement: Message,
        options: &SendOptions,
    ) -> Result<()> {
        // Confirmed (Accepted) first, then accept the original: a crash in between duplicates,
        // never loses.
        match self
            .forwarder
            .publish(destination, replacement, options.delay)
            .await
        {
            Ok(_) => self.ack().await,
            Err(e) => {
                let _ = self.requeue().await;
                Err(e.into())
            }
        }
    }

    fn release(mut self: Box<Self>) {
        if let Some(info) = self.info.take() {
            // Without awaiting: if the link is gone, the broker redelivers anyway.
            let _ = self
                .commands
                .try_send(Command::Settle(info, Settle::Fail, None));
        }
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}
