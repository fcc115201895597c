//! Sending: one sender link per address ([`SenderLink`]), shared by the sends to it. A send
//! holds the link only while it puts its transfer on the wire, then awaits the outcome
//! without it, so many transfers are in flight (bounded by core's publisher window). The
//! transfer is made by the caller's own task: a per-link task would add a task hop per
//! message, which costs throughput on a busy machine. `Accepted` is the confirm; `Rejected`, `Released`,
//! `Modified` are typed errors that hand the message back. A failed link is dropped; the next
//! send attaches a new one.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex as StdMutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use coolmq_core::raw::{BackendConfirm, PublisherBackend, Start as Started, TransactionBackend};
use coolmq_core::{
    Destination, Error, ErrorKind, Message, Receipt, Result, SendError, SendOptions,
};
use fe2o3_amqp::types::messaging::Outcome;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::confirm_timer::{ConfirmTimer, Deadline};
use crate::connection::Link;
use crate::error::map;
use crate::sender_link::{Pending, SenderLink, Start};

/// Sender links by destination, looked up on every send: foldhash (hashbrown's default
/// hasher) instead of SipHash, a third of the lookup's cost.
type Senders = HashMap<Destination, Arc<SenderLink>, foldhash::fast::RandomState>;

/// `destination`'s sender link, unless it failed (then the next send attaches anew).
fn live_sender(senders: &StdMutex<Senders>, destination: &Destination) -> Option<Arc<SenderLink>> {
    let senders = senders.lock().expect("lock");
    senders.get(destination).filter(|s| !s.is_failed()).cloned()
}

pub(crate) struct AmqPublisher {
    link: Arc<Link>,
    senders: Arc<StdMutex<Senders>>,
    attaching: Arc<Mutex<()>>,
    /// Bounds each send's wait for its outcome (the confirm timeout).
    timer: ConfirmTimer,
}

impl AmqPublisher {
    pub fn new(link: Arc<Link>, confirm_timeout: Duration) -> Self {
        AmqPublisher {
            link,
            senders: Arc::default(),
            attaching: Arc::default(),
            timer: ConfirmTimer::new(confirm_timeout),
        }
    }

    /// The connection this publisher sends on.
    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }

    fn cached(&self, destination: &Destination) -> Option<Arc<SenderLink>> {
        live_sender(&self.senders, destination)
    }

    /// Attach `destination`'s sender link (once: concurrent sends wait for the first) in a
    /// task of its own: a send that stops waiting for it (its confirm timeout) does not cancel
    /// it halfway, so after a stall the link comes up for the sends that follow instead of
    /// every attempt being cut short.
    fn attach(
        &self,
        destination: &Destination,
    ) -> tokio::task::JoinHandle<Result<Arc<SenderLink>>> {
        let (link, senders, attaching, timer) = (
            self.link.clone(),
            self.senders.clone(),
            self.attaching.clone(),
            self.timer.clone(),
        );
        let destination = destination.clone();
        tokio::spawn(async move {
            let _attaching = attaching.lock().await;
            if let Some(s) = live_sender(&senders, &destination) {
                return Ok(s);
            }
            let (attached, lost) = link.routed_sender_watched(&destination).await?;
            let sender = Arc::new(SenderLink::new(attached, destination.clone()));
            sender.watch(lost, move || timer.wake_all());
            senders
                .lock()
                .expect("lock")
                .insert(destination, sender.clone());
            Ok(sender)
        })
    }

    /// Forget `link` if it failed, so the next send attaches a new one.
    #[cold]
    fn forget_if_failed(&self, link: &Arc<SenderLink>) {
        if link.is_failed() {
            self.senders
                .lock()
                .expect("lock")
                .retain(|_, v| !Arc::ptr_eq(v, link));
        }
    }

    /// Send and wait for the outcome.
    pub async fn publish(
        &self,
        destination: &Destination,
        message: Message,
        delay: Option<Duration>,
    ) -> Result<Receipt, SendError> {
        // The transfer's future ends with its `.await`: only the confirm is kept while the
        // outcome is awaited.
        self.transfer(destination, message, delay).await?.await
    }

    /// Put the message on the wire (once the link is free) and return what awaits its
    /// outcome. The confirm timeout bounds the whole send, waits included: a
    /// broker that stops answering (no credit, no attach, no outcome) fails it in time with
    /// the message handed back.
    async fn transfer(
        &self,
        destination: &Destination,
        mut message: Message,
        delay: Option<Duration>,
    ) -> Result<Transferred, SendError> {
        let started = Instant::now();
        let timeout = self.timer.timeout();
        let sender = match self.cached(destination) {
            Some(s) => s,
            None => {
                let left = timeout.saturating_sub(started.elapsed());
                match tokio::time::timeout(left, self.attach(destination)).await {
                    Ok(Ok(Ok(s))) => s,
                    Ok(Ok(Err(e))) => return Err(SendError::new(e, message)),
                    Ok(Err(panicked)) => {
                        let e = Error::new(ErrorKind::Unexpected, "attaching a sender link failed")
                            .with_source(panicked);
                        return Err(SendError::new(e, message));
                    }
                    Err(_) => {
                        return Err(SendError::new(
                            not_sent("the sender link", timeout),
                            message,
                        ))
                    }
                }
            }
        };
        // The link's AMQP message borrows the message's id and body (no copy of the body) and
        // gives them back as soon as it is on the wire; the message is kept to hand back.
        // Keeping an AMQP message until the outcome instead kept ~10 allocations alive per
        // message in flight, freed cold then (docs/BENCHMARKS.md).
        let left = timeout.saturating_sub(started.elapsed());
        let sent = sender.transfer(&mut message, delay, left).await;
        self.transferred(sent, message, sender, Some(started))
    }

    /// Start a send: when the link is free and takes the message at once (a pipelining
    /// loop's usual case), the confirm is made right here, with no future allocated for the
    /// hand-over; otherwise a future finishes what was started.
    fn start<'a>(
        &'a self,
        destination: &'a Destination,
        mut message: Message,
        delay: Option<Duration>,
    ) -> Started<'a> {
        let waiting = |message| -> Started<'a> {
            Started::waiting(async move {
                Ok(self.transfer(destination, message, delay).await?.boxed())
            })
        };
        let Some(sender) = self.cached(destination) else {
            return waiting(message);
        };
        match sender.start(&mut message, delay) {
            Start::Done(sent) => Started::Ready(
                self.transferred(sent, message, sender, None)
                    .map(Transferred::boxed),
            ),
            Start::Busy => waiting(message),
            Start::Handed(handed) => Started::waiting(async move {
                let sent = handed.finish(&mut message, self.timer.timeout()).await;
                self.transferred(sent, message, sender, None)
                    .map(Transferred::boxed)
            }),
        }
    }

    /// What awaits the outcome of a transfer that went out, or the error that hands the
    /// message back (forgetting the link if it failed).
    fn transferred(
        &self,
        sent: Result<Pending>,
        message: Message,
        sender: Arc<SenderLink>,
        started: Option<Instant>,
    ) -> Result<Transferred, SendError> {
        match sent {
            Ok(pending) => Ok(Transferred {
                pending,
                message: Some(message),
                destination: sender,
                deadline: match started {
                    Some(start) => self.timer.deadline_from(start),
                    None => self.timer.deadline(),
                },
            }),
            Err(e) => {
                self.forget_if_failed(&sender);
                Err(SendError::new(e, message))
            }
        }
    }
}

/// A message on the wire awaiting its outcome: the confirm future itself, written by hand.
/// Each in-flight message keeps one (boxed) until its outcome, and an `async fn` over these
/// fields would keep them twice plus its inner future: more cache lines written at the send
/// and read cold at the outcome.
struct Transferred {
    pending: Pending,
    /// The message, handed back if the broker does not take it (taken at the outcome).
    message: Option<Message>,
    /// The link it went out on (names the destination in errors).
    destination: Arc<SenderLink>,
    /// The confirm timeout from the send.
    deadline: Deadline,
}

impl Transferred {
    /// The confirm a pipelined send hands its caller.
    fn boxed(self) -> BackendConfirm {
        Box::pin(self)
    }
}

impl Future for Transferred {
    type Output = Result<Receipt, SendError>;

    /// `Accepted` is the confirm; every other outcome, a link error or no outcome within the
    /// confirm timeout is an error that hands the message back.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let outcome = match this.deadline.poll_within(Pin::new(&mut this.pending), cx) {
            Poll::Ready(outcome) => outcome,
            // Checked after the deadline registered this send's waker: a loss reported
            // after that wakes it (`ConfirmTimer::wake_all`), one before is seen here.
            Poll::Pending if this.destination.is_lost() => {
                let message = this
                    .message
                    .take()
                    .expect("a confirm polled after it resolved");
                let error = connection_lost()
                    .with_context("destination", this.destination.destination().to_string());
                return Poll::Ready(Err(SendError::new(error, message)));
            }
            Poll::Pending => return Poll::Pending,
        };
        let message = this
            .message
            .take()
            .expect("a confirm polled after it resolved");
        if let Some(Ok(Outcome::Accepted(_))) = outcome {
            return Poll::Ready(Ok(Receipt::new(message.id)));
        }
        if let Some(Err(_)) = &outcome {
            // The link ended under the transfer (detached, its connection gone).
            this.destination.mark_failed();
        }
        let error = not_accepted(outcome, this.deadline.timeout())
            .with_context("destination", this.destination.destination().to_string());
        Poll::Ready(Err(SendError::new(error, message)))
    }
}

/// The connection ended with the outcome unknown: the broker may or may not have the
/// message.
#[cold]
#[inline(never)]
fn connection_lost() -> Error {
    Error::new(
        ErrorKind::ConnectionLost,
        "the connection ended before the broker's outcome arrived; outcome unknown, resend",
    )
    .set_temporary(true)
}

/// A send that could not even start within the confirm timeout: nothing was sent.
#[cold]
#[inline(never)]
fn not_sent(waiting_for: &str, timeout: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("no {waiting_for} within {timeout:?}: the broker is not answering; not sent"),
    )
    .set_temporary(true)
}

/// The error for an outcome other than `Accepted` (`None`: none within `timeout`). Out of
/// line and cold: every send runs the accepted path, and keeping the rest out of it keeps the
/// send path's code small (instruction-cache misses matter on that path).
#[cold]
#[inline(never)]
fn not_accepted(
    outcome: Option<std::result::Result<Outcome, fe2o3_amqp::link::SendError>>,
    timeout: Duration,
) -> Error {
    match outcome {
        None => coolmq_core::raw::confirm_timeout(timeout),
        Some(Err(e)) => map(e, "outcome").set_temporary(true),
        Some(Ok(Outcome::Rejected(r))) => {
            let full = r.error.as_ref().is_some_and(|e| {
                matches!(
                    e.condition,
                    fe2o3_amqp::types::definitions::ErrorCondition::AmqpError(
                        fe2o3_amqp::types::definitions::AmqpError::ResourceLimitExceeded
                    )
                )
            });
            // A full address (Artemis's FAIL policy at a queue's max_length) is the AMQP
            // 1.0 form of a reject-publish nack: temporary, the message handed back.
            if full {
                return Error::new(
                    ErrorKind::Nacked,
                    format!(
                        "ActiveMQ refused the message, the queue is full: {:?}",
                        r.error
                    ),
                );
            }
            Error::new(
                ErrorKind::Rejected,
                format!("ActiveMQ rejected the message: {:?}", r.error),
            )
            .set_temporary(false)
        }
        Some(Ok(Outcome::Released(_))) => Error::new(
            ErrorKind::Rejected,
            "ActiveMQ released the message (not taken); resend it",
        )
        .set_temporary(true),
        Some(Ok(Outcome::Modified(m))) => Error::new(
            ErrorKind::Rejected,
            format!("ActiveMQ modified the message (not taken): {m:?}"),
        )
        .set_temporary(true),
        Some(Ok(other)) => Error::new(
            ErrorKind::Unexpected,
            format!("unexpected outcome {other:?}"),
        ),
    }
}

/// The `PublisherBackend` handed to applications.
pub(crate) struct PublisherHandle(pub Arc<AmqPublisher>, pub Arc<Link>);

#[async_trait]
impl PublisherBackend for PublisherHandle {
    fn start<'a>(
        &'a self,
        destination: &'a Destination,
        message: Message,
        options: SendOptions,
    ) -> Started<'a> {
        self.0.start(destination, message, options.delay)
    }

    async fn begin(&self) -> Result<Box<dyn TransactionBackend>> {
        Ok(Box::new(
            crate::transaction::AmqTransaction::begin(self.1.clone()).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ActiveMqOptions;

    fn handle() -> PublisherHandle {
        let addresses = coolmq_core::raw::Addresses::parse(
            "amqp1://127.0.0.1:1",
            coolmq_core::AddressOrder::InOrder,
        )
        .and_then(|a| a.map(ActiveMqOptions::from_url))
        .expect("url");
        let link = Arc::new(Link::new(addresses, Duration::from_secs(1)));
        let publisher = Arc::new(AmqPublisher::new(link.clone(), Duration::from_secs(1)));
        PublisherHandle(publisher, link)
    }

    /// The hand-over futures are allocated per message when the link cannot take it at once:
    /// they stay under glibc's per-thread cache limit (1,032 bytes), above which every
    /// allocation and free takes the allocator's slow path.
    #[test]
    fn send_futures_stay_small() {
        let h = handle();
        let d = Destination::queue("q");
        let Started::Waiting(hand_over) = h.start(&d, Message::new("x"), SendOptions::default())
        else {
            panic!("no link is attached yet: the start must wait")
        };
        let hand_over = std::mem::size_of_val(&*hand_over);
        let link = Arc::new(SenderLink::new_failed_for_tests(d.clone()));
        let mut m = Message::new("x");
        let transfer = std::mem::size_of_val(&link.transfer(&mut m, None, Duration::from_secs(1)));
        let confirm = std::mem::size_of::<Transferred>();
        eprintln!("hand-over {hand_over} B, link transfer {transfer} B, confirm {confirm} B");
        // Kept per message in flight until its outcome: the message and little more.
        assert!(
            confirm <= std::mem::size_of::<Message>() + 128,
            "the confirm future is {confirm} B"
        );
        assert!(hand_over <= 1032, "the hand-over future is {hand_over} B");
        assert!(
            transfer <= 256,
            "the link's transfer future is {transfer} B"
        );
    }
}
