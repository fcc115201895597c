//! One sender link, shared by every send to its address. Sends take turns putting their
//! transfer on the wire (fe2o3's transfer needs `&mut Sender`) in the caller's own task, then
//! await the outcome without the link, so many transfers are in flight at once.
//!
//! fe2o3's transfer future is several KiB. Awaited inside each send, it made every send's
//! own (boxed, long-lived: it waits for the outcome) future that large, one allocation and
//! copy per message; here the link owns it in one allocation reused by every transfer
//! (docs/BENCHMARKS.md).

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use coolmq_core::{Destination, Error, ErrorKind, Result};
use fe2o3_amqp::link::delivery::{DeliveryFut, Sendable};
use fe2o3_amqp::types::messaging::message::Body;
use fe2o3_amqp::types::messaging::Outcome;
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::Sender;
use tokio::time::Instant;
use tokio_util::sync::ReusableBoxFuture;

use crate::error::map;

/// A message on its way: shared between the send and the link's transfer, so the send gets
/// it back (to hand back on failure) whatever happens to the transfer.
pub(crate) type Outgoing = Arc<Sendable<Body<Value>>>;
/// The outcome a transfer resolves to.
pub(crate) type Pending = DeliveryFut<std::result::Result<Outcome, fe2o3_amqp::link::SendError>>;
type Transferred = (
    Box<Sender>,
    std::result::Result<Pending, fe2o3_amqp::link::SendError>,
);

enum State {
    /// Idle; the next send may transfer. Boxed once per link: every transfer moves the
    /// sender into its future and back, a pointer instead of fe2o3's ~800-byte `Sender`
    /// (three copies per message, measured with callgrind).
    Ready(Box<Sender>),
    /// A transfer is under way (inside `transfer`), or was abandoned by a send that was
    /// dropped mid-transfer.
    Busy,
    /// Closed after an error: the publisher attaches a new link.
    Failed,
}

struct Inner {
    state: State,
    transfer: ReusableBoxFuture<'static, Transferred>,
}

impl Inner {
    /// Start transferring `message` (the future is polled by the caller).
    fn start(&mut self, message: &Outgoing) -> Result<()> {
        let sender = match std::mem::replace(&mut self.state, State::Failed) {
            State::Ready(s) => s,
            State::Busy => {
                // A send was dropped mid-transfer: the link's state is unknown. Drop that
                // transfer (and the link with it); the next send attaches a new link.
                self.transfer.set(std::future::pending());
                return Err(closed());
            }
            State::Failed => return Err(closed()),
        };
        self.state = State::Busy;
        let message = message.clone();
        self.transfer.set(async move {
            let mut sender = sender;
            let sent = sender.send_batchable_ref(&message).await;
            (sender, sent)
        });
        Ok(())
    }

    /// Wait for the transfer until `deadline`; past it, give up the transfer and the link.
    async fn wait(&mut self, deadline: Instant, timeout: Duration) -> Result<Pending> {
        match tokio::time::timeout_at(deadline, poll_fn(|cx| self.transfer.poll(cx))).await {
            Ok(done) => self.finish(done),
            Err(_) => {
                self.transfer.set(std::future::pending());
                self.state = State::Failed;
                Err(no_credit(timeout))
            }
        }
    }

    fn finish(&mut self, done: Transferred) -> Result<Pending> {
        match done {
            (sender, Ok(pending)) => {
                self.state = State::Ready(sender);
                Ok(pending)
            }
            (sender, Err(e)) => {
                self.state = State::Failed;
                tokio::spawn(async move {
                    let _ = sender.close().await;
                });
                Err(map(e, "transfer"))
            }
        }
    }
}

/// A sender link and the transfer in progress on it. async-lock's mutex: locking and
/// unlocking are single atomic operations when nobody waits (tokio's takes a lock to unlock).
pub(crate) struct SenderLink {
    inner: async_lock::Mutex<Inner>,
    destination: Destination,
}

impl SenderLink {
    pub fn new(sender: Sender, destination: Destination) -> Self {
        SenderLink {
            inner: async_lock::Mutex::new(Inner {
                state: State::Ready(Box::new(sender)),
                transfer: ReusableBoxFuture::new(std::future::pending()),
            }),
            destination,
        }
    }

    #[cfg(test)]
    pub fn new_failed_for_tests(destination: Destination) -> Self {
        SenderLink {
            inner: async_lock::Mutex::new(Inner {
                state: State::Failed,
                transfer: ReusableBoxFuture::new(std::future::pending()),
            }),
            destination,
        }
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
    pub async fn transfer(&self, message: &Outgoing, timeout: Duration) -> Result<Pending> {
        // The fast path (link free, credit available) sets no timer and spends no cooperative
        // budget; waiting is rare and its future large, so it is boxed.
        let Some(mut inner) = self.inner.try_lock() else {
            return Box::pin(self.transfer_waiting(message, timeout)).await;
        };
        inner.start(message)?;
        // Only the small result is kept across the slow path's await, not the finished
        // transfer (the sender link itself): it would make every send's future ~800 B larger.
        let first = poll_fn(|cx| {
            Poll::Ready(match inner.transfer.poll(cx) {
                Poll::Ready(done) => Some(inner.finish(done)),
                Poll::Pending => None,
            })
        })
        .await;
        match first {
            Some(transferred) => transferred,
            None => Box::pin(inner.wait(Instant::now() + timeout, timeout)).await,
        }
    }

    async fn transfer_waiting(&self, message: &Outgoing, timeout: Duration) -> Result<Pending> {
        let deadline = Instant::now() + timeout;
        let mut inner = tokio::time::timeout_at(deadline, self.inner.lock())
            .await
            .map_err(|_| no_credit(timeout))?;
        inner.start(message)?;
        inner.wait(deadline, timeout).await
    }

    /// Whether the link is closed and must be replaced.
    pub fn is_failed(&self) -> bool {
        self.inner
            .try_lock()
            .is_some_and(|g| matches!(g.state, State::Failed))
    }
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
