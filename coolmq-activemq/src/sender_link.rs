//! One sender link, shared by every send to its address. Sends take turns putting their
//! transfer on the wire (fe2o3's transfer needs `&mut Sender`) in the caller's own task, then
//! await the outcome without the link, so many transfers are in flight at once.
//!
//! fe2o3's transfer future is several KiB. Awaited inside each send, it made every send's
//! own (boxed, long-lived: it waits for the outcome) future that large; a future per transfer
//! kept in the link would still cost a copy of it per message. So each link has one driver
//! future, made when it is attached: it takes
//! the message a send leaves in the link's mailbox, transfers it and leaves the result there.
//! The send that holds the link polls the driver; nothing is built or moved per message.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use coolmq_core::{Destination, Error, ErrorKind, Message, Result};
use fe2o3_amqp::link::delivery::{DeliveryFut, Sendable};
use fe2o3_amqp::types::messaging::message::Body;
use fe2o3_amqp::types::messaging::Outcome;
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::Sender;
use tokio::time::Instant;

use crate::connection::Lost;
use crate::convert::{blank, copy_back, refill, take_back};
use crate::error::map;

/// How long a failed link waits for the broker to answer its detach.
const DETACH_WAIT: Duration = Duration::from_secs(5);

/// The link's AMQP message: shared with the driver while it transfers it, so the send takes
/// back what it lent once the driver let go, whatever happened to the transfer.
pub(crate) type Outgoing = Arc<Sendable<Body<Value>>>;
/// The outcome a transfer resolves to.
pub(crate) type Pending = DeliveryFut<std::result::Result<Outcome, fe2o3_amqp::link::SendError>>;
type Sent = std::result::Result<Pending, fe2o3_amqp::link::SendError>;

/// Between the send that holds the link and the link's driver.
#[derive(Default)]
struct Mailbox {
    request: Option<Outgoing>,
    response: Option<Sent>,
}

fn open(mailbox: &Mutex<Mailbox>) -> MutexGuard<'_, Mailbox> {
    mailbox
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Transfers each message left in the mailbox, for the life of the link. Polled only by the
/// send that holds the link, right after it left a message, so waiting for the next one needs
/// no waker. Ends when a transfer fails (the link is then closed).
async fn drive(mut sender: Sender, mailbox: Arc<Mutex<Mailbox>>) {
    loop {
        let message = poll_fn(|_| match open(&mailbox).request.take() {
            Some(message) => Poll::Ready(message),
            None => Poll::Pending,
        })
        .await;
        let sent = sender.send_batchable_ref(&message).await;
        drop(message);
        let failed = sent.is_err();
        open(&mailbox).response = Some(sent);
        if failed {
            // Bounded: on a dead connection the detach is never answered, and the sender
            // (with its unsettled transfers) must not outlive the wait.
            tokio::spawn(async move {
                let _ = tokio::time::timeout(DETACH_WAIT, sender.close()).await;
            });
            return;
        }
    }
}

struct Inner {
    driver: Pin<Box<dyn Future<Output = ()> + Send>>,
    mailbox: Arc<Mutex<Mailbox>>,
    /// A message is with the driver and its result not yet taken. A send dropped
    /// mid-transfer leaves it so; the next send drives that transfer to its end first.
    in_flight: bool,
    /// The link is closed (or its state unknown): the publisher attaches a new one. Shared
    /// with the [`SenderLink`], so the publisher sees it without the link's lock, which
    /// another send may hold for a while.
    failed: Arc<AtomicBool>,
    /// The AMQP message the link sends, refilled for each send (`convert::refill`): no
    /// maps, vectors or `Arc` built and dropped per message.
    slot: Outgoing,
}

impl Inner {
    /// `message` in the link's AMQP message, its id and body lent (a new AMQP message if a
    /// transfer still holds the last one: one abandoned midway). On an error `message` is
    /// whole.
    fn load(&mut self, message: &mut Message, delay: Option<Duration>) -> Result<Outgoing> {
        if Arc::get_mut(&mut self.slot).is_none() {
            self.slot = empty();
        }
        let sendable = Arc::get_mut(&mut self.slot).expect("just made unique");
        refill(&mut sendable.message, message, delay)?;
        Ok(self.slot.clone())
    }

    /// Give `message` back what [`Inner::load`] lent, once the transfer let go of it (it has
    /// when it ended, failed or was given up; a copy if anything still holds it).
    fn unload(&mut self, message: &mut Message, outgoing: Outgoing) {
        drop(outgoing);
        match Arc::get_mut(&mut self.slot) {
            Some(sendable) => take_back(message, &mut sendable.message),
            None => copy_back(message, &self.slot.message),
        }
    }

    /// Transfer `message` (left for the driver once the link is free: `handed` tells).
    fn poll_send(
        &mut self,
        message: &Outgoing,
        handed: &mut bool,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Pending>> {
        loop {
            if self.failed.load(Ordering::Relaxed) {
                return Poll::Ready(Err(closed()));
            }
            if !*handed && !self.in_flight {
                open(&self.mailbox).request = Some(message.clone());
                self.in_flight = true;
                *handed = true;
            }
            let ended = self.driver.as_mut().poll(cx).is_ready();
            if let Some(sent) = open(&self.mailbox).response.take() {
                self.in_flight = false;
                let result = sent.map_err(|e| {
                    self.failed.store(true, Ordering::Relaxed);
                    map(e, "transfer")
                });
                if *handed {
                    return Poll::Ready(result);
                }
                // An abandoned send's transfer finished: now this one.
                continue;
            }
            if ended {
                self.failed.store(true, Ordering::Relaxed);
                continue;
            }
            return Poll::Pending;
        }
    }

    /// [`Inner::poll_send`] until `deadline`; past it, give up the transfer and the link.
    async fn wait(
        &mut self,
        message: &Outgoing,
        mut handed: bool,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Pending> {
        let sending = poll_fn(|cx| self.poll_send(message, &mut handed, cx));
        match tokio::time::timeout_at(deadline, sending).await {
            Ok(result) => result,
            Err(_) => {
                // No credit in time: the message must not go out after the caller got it
                // back, so the link (and the transfer in it) is dropped.
                self.driver = Box::pin(std::future::pending());
                self.failed.store(true, Ordering::Relaxed);
                Err(no_credit(timeout))
            }
        }
    }
}

/// A sender link and its driver. async-lock's mutex: locking and unlocking are single atomic
/// operations when nobody waits (tokio's takes a lock to unlock). In an `Arc` of its own, so
/// a transfer still waiting can keep the link in a future without borrowing the link.
pub(crate) struct SenderLink {
    inner: Arc<async_lock::Mutex<Inner>>,
    /// [`Inner::failed`], readable without the lock.
    failed: Arc<AtomicBool>,
    /// The connection it was attached on has ended: no outcome can arrive any more.
    lost: Arc<AtomicBool>,
    destination: Destination,
}

/// How [`SenderLink::start`] left a transfer.
pub(crate) enum Start {
    /// On the wire (its outcome to await) or failed; the message is whole again.
    Done(Result<Pending>),
    /// Another send holds the link: nothing was lent.
    Busy,
    /// Lent to the link, whose transfer waits (for credit, for the session): the link stays
    /// held until [`Handed::finish`] takes its result.
    Handed(Handed),
}

/// A transfer [`SenderLink::start`] could not finish at once, holding the link.
pub(crate) struct Handed {
    inner: async_lock::MutexGuardArc<Inner>,
    outgoing: Outgoing,
    handed: bool,
}

impl Handed {
    /// Finish the transfer (at most `timeout` more) and give `message` back what it lent.
    pub async fn finish(self, message: &mut Message, timeout: Duration) -> Result<Pending> {
        let Handed {
            mut inner,
            outgoing,
            handed,
        } = self;
        let deadline = Instant::now() + timeout;
        let result = inner.wait(&outgoing, handed, deadline, timeout).await;
        inner.unload(message, outgoing);
        result
    }
}

impl SenderLink {
    pub fn new(sender: Sender, destination: Destination) -> Self {
        let mailbox = Arc::new(Mutex::new(Mailbox::default()));
        let driver = Box::pin(drive(sender, mailbox.clone()));
        Self::with_driver(driver, mailbox, destination)
    }

    fn with_driver(
        driver: Pin<Box<dyn Future<Output = ()> + Send>>,
        mailbox: Arc<Mutex<Mailbox>>,
        destination: Destination,
    ) -> Self {
        let failed = Arc::new(AtomicBool::new(false));
        SenderLink {
            inner: Arc::new(async_lock::Mutex::new(Inner {
                driver,
                mailbox,
                in_flight: false,
                failed: failed.clone(),
                slot: empty(),
            })),
            failed,
            lost: Arc::default(),
            destination,
        }
    }

    /// Once `lost` says the link's connection has ended, mark the link failed and lost and
    /// run `on_lost` (which wakes the sends awaiting outcomes, so they fail at once instead
    /// of at their confirm timeout).
    pub fn watch(&self, mut lost: Lost, on_lost: impl FnOnce() + Send + 'static) {
        let (failed, flag) = (self.failed.clone(), self.lost.clone());
        tokio::spawn(async move {
            // An error: the connection's task is gone, so is the connection.
            let _ = lost.wait_for(|lost| *lost).await;
            flag.store(true, Ordering::SeqCst);
            failed.store(true, Ordering::Relaxed);
            on_lost();
        });
    }

    /// Whether the link's connection has ended (see [`SenderLink::watch`]).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    #[cfg(test)]
    pub fn new_failed_for_tests(destination: Destination) -> Self {
        let link = Self::with_driver(
            Box::pin(std::future::pending()),
            Arc::default(),
            destination,
        );
        link.failed.store(true, Ordering::Relaxed);
        link
    }

    /// Where the link sends to.
    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// Put `message` on the wire and return its outcome future. Waits at most `timeout` for
    /// the link (another send's transfer) and for link credit: a broker that withholds credit
    /// (a full address under Artemis's BLOCK policy) must not hang the caller. An error other
    /// than waiting for the link leaves the link failed (`is_failed`); nothing was sent then
    /// unless the error says so.
    pub async fn transfer(
        &self,
        message: &mut Message,
        delay: Option<Duration>,
        timeout: Duration,
    ) -> Result<Pending> {
        // Waiting is rare and its futures large, so they are boxed.
        match self.start(message, delay) {
            Start::Done(result) => result,
            Start::Busy => Box::pin(self.transfer_waiting(message, delay, timeout)).await,
            Start::Handed(handed) => Box::pin(handed.finish(message, timeout)).await,
        }
    }

    /// [`SenderLink::transfer`]'s fast path, with no future: if the link is free, lend
    /// `message` to it and try the transfer once. Sets no timer and spends no cooperative
    /// budget. The try has no task to wake (a no-op waker): whoever finishes a [`Handed`]
    /// transfer polls it again from its own task.
    pub fn start(&self, message: &mut Message, delay: Option<Duration>) -> Start {
        let Some(mut inner) = self.inner.try_lock_arc() else {
            return Start::Busy;
        };
        let outgoing = match inner.load(message, delay) {
            Ok(outgoing) => outgoing,
            Err(e) => return Start::Done(Err(e)),
        };
        let mut handed = false;
        let mut cx = Context::from_waker(Waker::noop());
        match inner.poll_send(&outgoing, &mut handed, &mut cx) {
            Poll::Ready(result) => {
                inner.unload(message, outgoing);
                Start::Done(result)
            }
            Poll::Pending => Start::Handed(Handed {
                inner,
                outgoing,
                handed,
            }),
        }
    }

    async fn transfer_waiting(
        &self,
        message: &mut Message,
        delay: Option<Duration>,
        timeout: Duration,
    ) -> Result<Pending> {
        let deadline = Instant::now() + timeout;
        let mut inner = tokio::time::timeout_at(deadline, self.inner.lock())
            .await
            .map_err(|_| no_credit(timeout))?;
        let outgoing = inner.load(message, delay)?;
        let result = inner.wait(&outgoing, false, deadline, timeout).await;
        inner.unload(message, outgoing);
        result
    }

    /// Whether the link is closed and must be replaced.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// The link ended (an outcome reported its end): sends attach a new one.
    pub fn mark_failed(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }
}

/// An AMQP message for a link to refill.
fn empty() -> Outgoing {
    Arc::new(Sendable::from(blank()))
}

fn closed() -> Error {
    Error::new(ErrorKind::ConnectionLost, "the sender link closed; resend").set_temporary(true)
}

fn no_credit(timeout: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("the broker granted no link credit within {timeout:?}; not sent"),
    )
    .set_temporary(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coolmq_core::Message;
    use tokio::sync::Notify;

    /// A link whose driver takes one message, waits for `gate`, then fails its transfer (a
    /// successful transfer needs a broker: the conformance suite covers those).
    fn gated_link(gate: Arc<Notify>) -> SenderLink {
        let mailbox = Arc::new(Mutex::new(Mailbox::default()));
        let shared = mailbox.clone();
        let driver = async move {
            let message = poll_fn(|_| match open(&shared).request.take() {
                Some(message) => Poll::Ready(message),
                None => Poll::Pending,
            })
            .await;
            gate.notified().await;
            drop(message);
            open(&shared).response = Some(Err(fe2o3_amqp::link::SendError::MessageEncodeError));
        };
        SenderLink::with_driver(Box::pin(driver), mailbox, Destination::queue("q"))
    }

    /// Whether the link holds the only reference to its AMQP message: no transfer can still
    /// send it.
    fn let_go(link: &SenderLink) -> bool {
        let inner = link.inner.try_lock().expect("free");
        Arc::strong_count(&inner.slot) == 1
    }

    #[tokio::test]
    async fn a_transfer_abandoned_midway_is_finished_by_the_next_send() {
        let gate = Arc::new(Notify::new());
        let link = gated_link(gate.clone());
        let mut abandoned_message = Message::new("first");
        let first = link.transfer(&mut abandoned_message, None, Duration::from_secs(5));
        let abandoned = tokio::time::timeout(Duration::from_millis(50), first).await;
        assert!(abandoned.is_err(), "the transfer waits at the gate");
        assert!(
            !link.is_failed(),
            "an abandoned transfer does not cost the link"
        );
        gate.notify_one();
        let mut message = Message::new("second");
        let id = message.id.clone();
        let second = link
            .transfer(&mut message, None, Duration::from_secs(5))
            .await;
        // The first transfer failed when the second drove it: the second is not sent.
        let Err(error) = second else {
            panic!("the link failed: no transfer")
        };
        assert_eq!(error.kind(), ErrorKind::ConnectionLost);
        assert!(link.is_failed());
        assert!(let_go(&link), "the driver let go of it");
        assert_eq!((&message.id, &message.body[..]), (&id, &b"second"[..]));
    }

    /// The fast path without a future: a transfer that cannot finish at once keeps the link
    /// (a second send finds it busy and lends nothing) until its own task finishes it.
    #[tokio::test]
    async fn a_started_transfer_that_waits_holds_the_link_until_finished() {
        let gate = Arc::new(Notify::new());
        let link = gated_link(gate.clone());
        let mut message = Message::new("first");
        let id = message.id.clone();
        let Start::Handed(handed) = link.start(&mut message, None) else {
            panic!("the driver waits at the gate: the transfer cannot finish at once")
        };
        assert!(message.body.is_empty(), "the body is lent to the link");
        let mut other = Message::new("second");
        assert!(matches!(link.start(&mut other, None), Start::Busy));
        assert_eq!(&other.body[..], b"second", "a busy link lends nothing");
        gate.notify_one();
        let finished = handed.finish(&mut message, Duration::from_secs(5)).await;
        let Err(error) = finished else {
            panic!("the gated driver fails its transfer")
        };
        assert_eq!(error.kind(), ErrorKind::ConnectionLost);
        assert!(link.is_failed());
        assert!(let_go(&link), "the driver let go of it");
        assert_eq!((&message.id, &message.body[..]), (&id, &b"first"[..]));
        let Start::Done(Err(error)) = link.start(&mut other, None) else {
            panic!("a failed link sends nothing")
        };
        assert_eq!(error.kind(), ErrorKind::ConnectionLost);
        assert_eq!(&other.body[..], b"second", "handed back whole");
    }

    #[tokio::test]
    async fn no_credit_in_time_drops_the_link_and_the_message_with_it() {
        let link = gated_link(Arc::new(Notify::new()));
        let mut message = Message::new("x");
        let id = message.id.clone();
        let Err(error) = link
            .transfer(&mut message, None, Duration::from_millis(50))
            .await
        else {
            panic!("no credit: no transfer")
        };
        assert_eq!(error.kind(), ErrorKind::Timeout);
        assert!(link.is_failed());
        // Nothing left in the link that could still go out after the caller got it back.
        assert!(let_go(&link));
        assert_eq!(
            (&message.id, &message.body[..]),
            (&id, &b"x"[..]),
            "handed back whole"
        );
    }
}
