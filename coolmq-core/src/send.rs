//! A send in progress: what [`Publisher::send`] and [`Publisher::send_pipelined`] return.
//! Both are futures with builder methods for the per-send options (OpenDAL's
//! `write_with(..).content_type(..)` shape), so there is one method per kind of send.
//!
//! Core owns the publisher window here, the same for every backend: a send takes a slot
//! before the backend sees the message; an awaited send holds it until its confirm, a
//! pipelined send only until its message is handed to the connection (its caller holds the
//! confirm and bounds how many it keeps). A send that finds no slot within the confirm
//! timeout fails with the message handed back, never sent.

use std::fmt;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_lock::{Semaphore, SemaphoreGuard};

use crate::confirm::{Observed, PendingConfirm};
use crate::raw::{BackendConfirm, HandOver, Start};
use crate::{Destination, Error, ErrorKind, Message, Publisher, Receipt, SendError, SendOptions};

/// The publisher window: how many sends may be in flight, and how long one waits for room.
#[derive(Debug)]
pub(crate) struct Window {
    slots: Semaphore,
    size: usize,
    timeout: Duration,
}

impl Window {
    pub fn new(size: usize, timeout: Duration) -> Self {
        Window {
            slots: Semaphore::new(size),
            size,
            timeout,
        }
    }
}

type Slot<'a> = SemaphoreGuard<'a>;

/// The slow start: wait for a slot (at most the confirm timeout), then hand over.
type Queued<'a> =
    Pin<Box<dyn Future<Output = Result<(BackendConfirm, Slot<'a>), SendError>> + Send + 'a>>;

/// How far a send got before its confirm.
enum Stage<'a> {
    /// Not polled yet: the options may still change.
    Unstarted {
        publisher: &'a Publisher,
        destination: &'a Destination,
        message: Message,
        options: SendOptions,
    },
    /// The backend is handing the message over, in a slot.
    Handing {
        hand_over: HandOver<'a>,
        slot: Slot<'a>,
        observed: Observed,
    },
    /// Waiting for a slot, then the hand-over.
    Queued {
        queued: Queued<'a>,
        observed: Observed,
    },
    /// Handed over (or failed): nothing left for this stage.
    Done,
}

/// The part both sends share: prepare, take a slot, hand the message to the backend.
struct Starting<'a> {
    stage: Stage<'a>,
}

impl<'a> Starting<'a> {
    fn new(publisher: &'a Publisher, destination: &'a Destination, message: Message) -> Self {
        Starting {
            stage: Stage::Unstarted {
                publisher,
                destination,
                message,
                options: SendOptions::default(),
            },
        }
    }

    /// Change the options (before the first poll; after it, nothing changes).
    fn set_options(&mut self, change: impl FnOnce(&mut SendOptions)) {
        if let Stage::Unstarted { options, .. } = &mut self.stage {
            change(options);
        }
    }

    /// Resolves with the confirm and the slot once the message is handed over.
    fn poll_start(&mut self, cx: &mut Context<'_>) -> Poll<Started<'a>> {
        loop {
            // Taken out and put back while pending: each arm owns its stage.
            self.stage = match std::mem::replace(&mut self.stage, Stage::Done) {
                Stage::Unstarted {
                    publisher,
                    destination,
                    message,
                    options,
                } => match begin(publisher, destination, message, options) {
                    ControlFlow::Break(started) => return Poll::Ready(started),
                    ControlFlow::Continue(stage) => stage,
                },
                Stage::Handing {
                    mut hand_over,
                    slot,
                    observed,
                } => {
                    let polled = {
                        let _entered = observed.span.enter();
                        hand_over.as_mut().poll(cx)
                    };
                    if let Poll::Ready(started) = polled {
                        return Poll::Ready(handed(started, slot, observed));
                    }
                    self.stage = Stage::Handing {
                        hand_over,
                        slot,
                        observed,
                    };
                    return Poll::Pending;
                }
                Stage::Queued {
                    mut queued,
                    observed,
                } => {
                    let polled = {
                        let _entered = observed.span.enter();
                        queued.as_mut().poll(cx)
                    };
                    match polled {
                        Poll::Ready(Ok((confirm, slot))) => {
                            return Poll::Ready(handed(Ok(confirm), slot, observed))
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(failed(e, observed))),
                        Poll::Pending => {}
                    }
                    self.stage = Stage::Queued { queued, observed };
                    return Poll::Pending;
                }
                Stage::Done => panic!("a send polled after it resolved"),
            };
        }
    }
}

/// What a send's start resolves with: the confirm and its window slot, or the failure.
type Started<'a> = Result<(PendingConfirm, Slot<'a>), SendError>;

/// The first poll: the shared checks, then a slot and the backend's start; or, with no slot
/// free, the queued start.
fn begin<'a>(
    publisher: &'a Publisher,
    destination: &'a Destination,
    mut message: Message,
    options: SendOptions,
) -> ControlFlow<Started<'a>, Stage<'a>> {
    let observed = match publisher.prepare(destination, &mut message, &options) {
        Ok(observed) => observed,
        Err(e) => return ControlFlow::Break(Err(SendError::new(e, message))),
    };
    let window = &publisher.window;
    let Some(slot) = window.slots.try_acquire() else {
        let queued = Box::pin(async move {
            let Ok(slot) = tokio::time::timeout(window.timeout, window.slots.acquire()).await
            else {
                let e = window_full(window.size, window.timeout);
                return Err(SendError::new(e, message));
            };
            let confirm = match publisher.inner.start(destination, message, options) {
                Start::Ready(started) => started,
                Start::Waiting(hand_over) => hand_over.await,
            }?;
            Ok((confirm, slot))
        });
        return ControlFlow::Continue(Stage::Queued { queued, observed });
    };
    let started = {
        let _entered = observed.span.enter();
        publisher.inner.start(destination, message, options)
    };
    match started {
        Start::Ready(started) => ControlFlow::Break(handed(started, slot, observed)),
        Start::Waiting(hand_over) => ControlFlow::Continue(Stage::Handing {
            hand_over,
            slot,
            observed,
        }),
    }
}

/// The confirm of a message handed over, or the failure (recorded) that hands it back.
fn handed<'a>(
    started: Result<BackendConfirm, SendError>,
    slot: Slot<'a>,
    observed: Observed,
) -> Started<'a> {
    match started {
        Ok(confirm) => Ok((PendingConfirm::new(confirm, observed), slot)),
        Err(e) => Err(failed(e, observed)),
    }
}

fn failed(e: SendError, mut observed: Observed) -> SendError {
    observed.failed(e.error());
    e
}

/// No room in the window within the confirm timeout: the broker is not confirming.
#[cold]
#[inline(never)]
fn window_full(size: usize, timeout: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!(
            "no room in the publisher window within {timeout:?}: all {size} sends in flight are still unconfirmed; not sent"
        ),
    )
    .set_temporary(true)
}

/// A send awaiting the broker's confirm, from [`Publisher::send`]. Set options with its
/// builder methods before awaiting it.
///
/// ```no_run
/// # async fn demo(publisher: coolmq_core::Publisher) -> Result<(), coolmq_core::SendError> {
/// use coolmq_core::{Destination, Message};
/// use std::time::Duration;
///
/// let reminders = Destination::queue("reminders");
/// publisher.send(&reminders, Message::new("now")).await?;
/// publisher
///     .send(&reminders, Message::new("in a minute"))
///     .delay(Duration::from_secs(60))
///     .await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "a send does nothing until it is awaited"]
pub struct SendFuture<'a> {
    starting: Starting<'a>,
    /// After the hand-over: the confirm, and the window slot it holds until then.
    confirming: Option<(PendingConfirm, Slot<'a>)>,
}

impl<'a> SendFuture<'a> {
    pub(crate) fn new(
        publisher: &'a Publisher,
        destination: &'a Destination,
        message: Message,
    ) -> Self {
        SendFuture {
            starting: Starting::new(publisher, destination, message),
            confirming: None,
        }
    }

    /// Deliver no earlier than `delay` from now (needs `delayed_delivery`).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.starting.set_options(|o| o.delay = Some(delay));
        self
    }

    /// Replace all options at once. Options set after the first poll have no effect.
    pub fn options(mut self, options: SendOptions) -> Self {
        self.starting.set_options(|o| *o = options);
        self
    }
}

impl Future for SendFuture<'_> {
    type Output = Result<Receipt, SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            if let Some((confirm, _slot)) = &mut this.confirming {
                let outcome = ready!(Pin::new(confirm).poll(cx));
                // The slot is given back with the outcome.
                this.confirming = None;
                return Poll::Ready(outcome);
            }
            this.confirming = Some(ready!(this.starting.poll_start(cx))?);
        }
    }
}

impl fmt::Debug for SendFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendFuture").finish_non_exhaustive()
    }
}

/// A pipelined send, from [`Publisher::send_pipelined`]: resolves with the message's
/// [`PendingConfirm`] once it is handed to the connection. Set options with its builder
/// methods before awaiting it.
#[must_use = "a send does nothing until it is awaited"]
pub struct PipelinedSendFuture<'a> {
    starting: Starting<'a>,
}

impl<'a> PipelinedSendFuture<'a> {
    pub(crate) fn new(
        publisher: &'a Publisher,
        destination: &'a Destination,
        message: Message,
    ) -> Self {
        PipelinedSendFuture {
            starting: Starting::new(publisher, destination, message),
        }
    }

    /// Deliver no earlier than `delay` from now (needs `delayed_delivery`).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.starting.set_options(|o| o.delay = Some(delay));
        self
    }

    /// Replace all options at once. Options set after the first poll have no effect.
    pub fn options(mut self, options: SendOptions) -> Self {
        self.starting.set_options(|o| *o = options);
        self
    }
}

impl Future for PipelinedSendFuture<'_> {
    type Output = Result<PendingConfirm, SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The caller holds the confirm: the slot is given back at the hand-over.
        let (confirm, _slot) = ready!(self.get_mut().starting.poll_start(cx))?;
        Poll::Ready(Ok(confirm))
    }
}

impl fmt::Debug for PipelinedSendFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelinedSendFuture")
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    //! The window rules, against a backend whose confirms come only when the test says.
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use futures::FutureExt;
    use tokio::sync::oneshot;

    use super::*;
    use crate::raw::{PublisherBackend, TransactionBackend};
    use crate::{Capabilities, Result};

    /// Hands every message over at once (or, with `waiting`, through a future) and keeps
    /// the confirm's trigger.
    #[derive(Default)]
    struct Gated {
        started: Mutex<Vec<(String, SendOptions)>>,
        confirms: Mutex<Vec<oneshot::Sender<()>>>,
        waiting: bool,
    }

    impl Gated {
        fn started(&self) -> Vec<String> {
            let started = self.started.lock().unwrap();
            started.iter().map(|(id, _)| id.clone()).collect()
        }

        fn confirm_first(&self) {
            let first = self.confirms.lock().unwrap().remove(0);
            first.send(()).unwrap();
        }
    }

    #[async_trait]
    impl PublisherBackend for Gated {
        fn start<'a>(
            &'a self,
            _destination: &'a Destination,
            message: Message,
            options: SendOptions,
        ) -> Start<'a> {
            self.started
                .lock()
                .unwrap()
                .push((message.id.clone(), options));
            let (tx, rx) = oneshot::channel();
            self.confirms.lock().unwrap().push(tx);
            let confirm: BackendConfirm = Box::pin(async move {
                match rx.await {
                    Ok(()) => Ok(Receipt {
                        message_id: message.id,
                    }),
                    Err(_) => Err(SendError::new(
                        Error::new(ErrorKind::ConnectionLost, "gone"),
                        message,
                    )),
                }
            });
            if self.waiting {
                Start::waiting(async move {
                    tokio::task::yield_now().await;
                    Ok(confirm)
                })
            } else {
                Start::Ready(Ok(confirm))
            }
        }

        async fn begin(&self) -> Result<Box<dyn TransactionBackend>> {
            Err(Error::unsupported("transactions", "gated"))
        }
    }

    fn publisher(backend: &Arc<Gated>, window: usize, timeout: Duration) -> Publisher {
        let caps = Capabilities {
            delayed_delivery: true,
            ..Capabilities::default()
        };
        Publisher::new(backend.clone(), caps, "gated", window, timeout)
    }

    fn message(i: usize) -> Message {
        Message::new_with_id(format!("m-{i}"), "x")
    }

    #[tokio::test]
    async fn awaited_sends_hold_their_slot_until_the_confirm() {
        for waiting in [false, true] {
            let backend = Arc::new(Gated {
                waiting,
                ..Gated::default()
            });
            let p = publisher(&backend, 2, Duration::from_secs(30));
            let d = Destination::queue("q");
            let mut sends: Vec<_> = (0..3).map(|i| p.send(&d, message(i)).boxed()).collect();
            for s in &mut sends {
                assert!(futures::poll!(s).is_pending());
            }
            assert_eq!(
                backend.started(),
                ["m-0", "m-1"],
                "the third waits for room"
            );
            backend.confirm_first();
            assert!(futures::poll!(&mut sends[0]).is_ready());
            assert!(futures::poll!(&mut sends[2]).is_pending());
            assert_eq!(
                backend.started(),
                ["m-0", "m-1", "m-2"],
                "room once one confirmed"
            );
        }
    }

    #[tokio::test]
    async fn pipelined_sends_hold_their_slot_only_until_the_hand_over() {
        for waiting in [false, true] {
            let backend = Arc::new(Gated {
                waiting,
                ..Gated::default()
            });
            let p = publisher(&backend, 1, Duration::from_secs(30));
            let d = Destination::queue("q");
            let mut confirms = Vec::new();
            for i in 0..5 {
                confirms.push(p.send_pipelined(&d, message(i)).await.expect("handed over"));
            }
            assert_eq!(backend.started().len(), 5, "a window of 1 never blocks");
            backend.confirm_first();
            let first = confirms.remove(0).await.expect("confirmed");
            assert_eq!(first.message_id, "m-0");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_room_within_the_confirm_timeout_is_a_timeout_that_hands_the_message_back() {
        let backend = Arc::new(Gated::default());
        let p = publisher(&backend, 1, Duration::from_secs(3));
        let d = Destination::queue("q");
        let mut first = p.send(&d, message(0)).boxed();
        assert!(futures::poll!(&mut first).is_pending());
        let refused = p.send(&d, message(1)).await.expect_err("no room");
        assert_eq!(refused.kind(), ErrorKind::Timeout);
        assert!(refused.error().is_temporary());
        assert_eq!(refused.message().id, "m-1");
        assert_eq!(
            backend.started(),
            ["m-0"],
            "the refused message was never started"
        );
    }

    #[tokio::test]
    async fn options_reach_the_backend_and_are_checked_first() {
        let backend = Arc::new(Gated::default());
        let p = publisher(&backend, 4, Duration::from_secs(30));
        let d = Destination::queue("q");
        let delay = Duration::from_millis(1500);
        let pending = p.send_pipelined(&d, message(0)).delay(delay).await;
        drop(pending);
        let mut sent = p
            .send(&d, message(1))
            .options(SendOptions::delayed(delay))
            .boxed();
        assert!(futures::poll!(&mut sent).is_pending());
        let options: Vec<_> = backend
            .started
            .lock()
            .unwrap()
            .iter()
            .map(|(_, o)| o.delay)
            .collect();
        assert_eq!(options, [Some(delay), Some(delay)]);

        let plain = Publisher::new(backend.clone(), Capabilities::default(), "gated", 4, delay);
        let refused = plain
            .send(&d, message(2))
            .delay(delay)
            .await
            .expect_err("no delays");
        assert_eq!(refused.kind(), ErrorKind::Unsupported);
        assert_eq!(refused.message().id, "m-2");
        assert_eq!(
            backend.started().len(),
            2,
            "refused before the backend saw it"
        );
    }
}
