//! Confirm timeouts: one deadline per sent message, checked by one sweeper task per publisher
//! instead of a tokio timer per message.
//!
//! Every send waits for its outcome at most the confirm timeout. A tokio `timeout` per message
//! would register and clear a timer-wheel entry under the runtime's timer lock for every
//! message, on the send path's hottest code. Here a message's deadline is a slab entry of its
//! publisher, added when its outcome is first awaited and removed when it comes; a sweeper
//! task runs only while entries exist and wakes the expired ones every `timeout / 32`
//! (between 1 ms and 1 s). So an outcome is given up on between the timeout and the timeout
//! plus that resolution after the send.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use slab::Slab;
use tokio::time::Instant;

/// The deadlines of one publisher's sends.
#[derive(Clone)]
pub(crate) struct ConfirmTimer {
    shared: Arc<Shared>,
}

struct Shared {
    timeout: Duration,
    resolution: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: Slab<Entry>,
    /// Whether a sweeper task is running (it stops when no entry is left).
    sweeping: bool,
}

struct Entry {
    deadline: Instant,
    waker: Waker,
    expired: bool,
}

impl ConfirmTimer {
    pub fn new(timeout: Duration) -> Self {
        let resolution = (timeout / 32).clamp(Duration::from_millis(1), Duration::from_secs(1));
        ConfirmTimer {
            shared: Arc::new(Shared {
                timeout,
                resolution,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The confirm timeout.
    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// Wake every send awaiting its outcome, so each looks at its link again (the connection
    /// it went out on has ended).
    pub fn wake_all(&self) {
        let wakers: Vec<Waker> = {
            let state = self.shared.lock();
            state.entries.iter().map(|(_, e)| e.waker.clone()).collect()
        };
        // Outside the lock: a woken task may be polled on another thread at once.
        for waker in wakers {
            waker.wake();
        }
    }

    /// A deadline `timeout` from now, for a message just sent.
    pub fn deadline(&self) -> Deadline {
        self.deadline_from(Instant::now())
    }

    /// A deadline `timeout` from `start`, for a send whose whole wait (window, link, credit,
    /// outcome) the timeout bounds.
    pub fn deadline_from(&self, start: Instant) -> Deadline {
        Deadline {
            shared: self.shared.clone(),
            deadline: start + self.shared.timeout,
            key: None,
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing here panics while holding the lock; if something did, the state is still
        // consistent (entries are whole).
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One message's deadline. Dropping it forgets the deadline.
pub(crate) struct Deadline {
    shared: Arc<Shared>,
    deadline: Instant,
    /// The slab entry, once the deadline is awaited.
    key: Option<usize>,
}

impl Deadline {
    /// The confirm timeout it was set with.
    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// Whether the deadline passed; if not, `cx` is woken when it does.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let mut state = self.shared.lock();
        match self.key {
            Some(key) => {
                let entry = &mut state.entries[key];
                if entry.expired {
                    return true;
                }
                if !entry.waker.will_wake(cx.waker()) {
                    entry.waker = cx.waker().clone();
                }
                false
            }
            None => {
                if self.deadline <= Instant::now() {
                    return true;
                }
                self.key = Some(state.entries.insert(Entry {
                    deadline: self.deadline,
                    waker: cx.waker().clone(),
                    expired: false,
                }));
                let start_sweeper = !std::mem::replace(&mut state.sweeping, true);
                drop(state);
                if start_sweeper {
                    // Outside the lock: spawning outside a runtime panics, and must not
                    // poison the publisher's deadlines.
                    tokio::spawn(sweep(self.shared.clone()));
                }
                false
            }
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            // The waker is dropped after the lock is released.
            let entry = self.shared.lock().entries.remove(key);
            drop(entry);
        }
    }
}

/// Wake the expired entries every `resolution`, while there are entries.
async fn sweep(shared: Arc<Shared>) {
    let mut running = Running {
        shared,
        stopped: false,
    };
    loop {
        tokio::time::sleep(running.shared.resolution).await;
        let now = Instant::now();
        let mut state = running.shared.lock();
        if state.entries.is_empty() {
            // Under the same lock as the check: a deadline added after it starts a sweeper.
            state.sweeping = false;
            drop(state);
            running.stopped = true;
            return;
        }
        for (_, entry) in state.entries.iter_mut() {
            if !entry.expired && entry.deadline <= now {
                entry.expired = true;
                entry.waker.wake_by_ref();
            }
        }
    }
}

/// A running sweeper. If its task is dropped instead of stopping (its runtime shut down),
/// the next deadline starts a new one.
struct Running {
    shared: Arc<Shared>,
    stopped: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.stopped {
            self.shared.lock().sweeping = false;
        }
    }
}

impl Deadline {
    /// Poll `future`, then the deadline: `future`'s output, or `None` once the deadline
    /// passed. For futures written by hand, which hold their deadline themselves.
    pub fn poll_within<F: Future + ?Sized>(
        &mut self,
        future: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<F::Output>> {
        if let Poll::Ready(output) = future.poll(cx) {
            return Poll::Ready(Some(output));
        }
        if self.poll_expired(cx) {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

/// `future`'s output, or `None` once `deadline` passed.
#[cfg(test)]
async fn within<F: Future>(future: F, mut deadline: Deadline) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| deadline.poll_within(future.as_mut(), cx)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lost connection wakes every send awaiting its outcome at once, long before its
    /// deadline, so each can see its link is gone.
    #[tokio::test(start_paused = true)]
    async fn wake_all_wakes_every_waiting_send_before_its_deadline() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let timer = ConfirmTimer::new(Duration::from_secs(30));
        let lost = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let sends: Vec<_> = (0..3)
            .map(|_| {
                let (mut deadline, lost) = (timer.deadline(), lost.clone());
                tokio::spawn(std::future::poll_fn(move |cx| {
                    if deadline.poll_expired(cx) {
                        return Poll::Ready("expired");
                    }
                    if lost.load(Ordering::SeqCst) {
                        return Poll::Ready("lost");
                    }
                    Poll::Pending
                }))
            })
            .collect();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        lost.store(true, Ordering::SeqCst);
        timer.wake_all();
        for send in sends {
            assert_eq!(send.await.expect("join"), "lost");
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_fires_after_the_timeout_and_not_before() {
        let timer = ConfirmTimer::new(Duration::from_secs(32));
        let start = Instant::now();
        let never = std::future::pending::<()>();
        let fired = tokio::time::timeout(Duration::from_secs(60), within(never, timer.deadline()));
        assert_eq!(fired.await, Ok(None), "the deadline never fired");
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(32), "fired after {waited:?}");
        assert!(waited <= Duration::from_secs(33), "fired after {waited:?}");
        // Nothing left; the sweeper stops.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let state = timer.shared.state.lock().expect("lock");
        assert!(state.entries.is_empty());
        assert!(!state.sweeping);
    }

    #[test]
    fn deadlines_still_fire_after_the_runtime_of_their_sweeper_shut_down() {
        let timer = ConfirmTimer::new(Duration::from_millis(64));
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        first.block_on(async {
            let pending = within(std::future::pending::<()>(), timer.deadline());
            // The sweeper starts, then the runtime goes away with the wait unfinished.
            let _ = tokio::time::timeout(Duration::from_millis(10), pending).await;
        });
        drop(first);
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let fired = second.block_on(async {
            let pending = within(std::future::pending::<()>(), timer.deadline());
            tokio::time::timeout(Duration::from_secs(5), pending).await
        });
        assert_eq!(fired, Ok(None), "a new sweeper fired the deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn a_future_that_completes_in_time_wins_and_leaves_no_entry() {
        let timer = ConfirmTimer::new(Duration::from_secs(10));
        let soon = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            7
        };
        assert_eq!(within(soon, timer.deadline()).await, Some(7));
        assert!(timer.shared.state.lock().expect("lock").entries.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn many_deadlines_fire_each_once_in_order_of_their_start() {
        let timer = ConfirmTimer::new(Duration::from_millis(320));
        let mut waits = Vec::new();
        for i in 0..50u64 {
            let deadline = timer.deadline();
            waits.push(tokio::spawn(async move {
                let start = Instant::now();
                let never = within(std::future::pending::<()>(), deadline);
                let r = tokio::time::timeout(Duration::from_secs(5), never).await;
                (i, r == Ok(None), start.elapsed())
            }));
            tokio::time::sleep(Duration::from_millis(7)).await;
        }
        for w in waits {
            let (i, expired, waited) = w.await.expect("task");
            assert!(expired, "{i}");
            // Spawned a little after its deadline started: fired within timeout + resolution.
            assert!(waited <= Duration::from_millis(320 + 10), "{i}: {waited:?}");
        }
    }
}
