//! The broker's state machine: queues, bindings, unsettled deliveries, delayed messages. Every
//! transition happens under one lock and never awaits, so every operation is atomic and
//! cancel-safe, and nothing accepted is lost while the process lives.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use coolmq_core::{
    topic_matches, Destination, Error, ErrorKind, Message, Overflow, QueueSpec, Result,
};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A message held by the broker.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub message: Message,
    /// Deliveries of this copy so far.
    pub delivery_count: u32,
    pub expires_at: Option<Instant>,
}

impl Stored {
    fn new(message: Message, now: Instant) -> Self {
        let expires_at = message.ttl.map(|ttl| now + ttl);
        Stored {
            message,
            delivery_count: 0,
            expires_at,
        }
    }
}

#[derive(Debug)]
struct Delayed {
    due: Instant,
    seq: u64,
    stored: Stored,
}

impl PartialEq for Delayed {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delayed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(o.due, o.seq))
    }
}

#[derive(Debug)]
struct Queue {
    spec: QueueSpec,
    ready: VecDeque<Stored>,
    delayed: BinaryHeap<Reverse<Delayed>>,
}

#[derive(Debug)]
struct Unsettled {
    queue: String,
    consumer: u64,
    stored: Stored,
}

#[derive(Debug)]
struct ConsumerState {
    queue: String,
    connection: u64,
    prefetch: usize,
    unsettled: usize,
}

#[derive(Debug, Default)]
struct Inner {
    queues: HashMap<String, Queue>,
    consumers: HashMap<u64, ConsumerState>,
    unsettled: HashMap<u64, Unsettled>,
    next_id: u64,
}

impl Inner {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// What a consumer's attempt to take a message found.
pub(crate) enum Take {
    /// A delivery: its tag and the stored message.
    Delivery(u64, Box<Stored>),
    /// The consumer was closed (or its queue deleted).
    Closed,
    /// Nothing now; try again when notified or at the instant (next delayed message).
    Wait(Option<Instant>),
}

/// Deterministic faults, each armed for the next matching operation.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub nack_next_publish: AtomicBool,
    pub lose_next_confirm: AtomicBool,
}

/// One in-process broker.
#[derive(Debug)]
pub(crate) struct Engine {
    pub name: String,
    inner: Mutex<Inner>,
    /// Woken on every change a waiting consumer may care about.
    pub changed: Notify,
    pub faults: Faults,
}

fn not_found(queue: &str) -> Error {
    Error::new(ErrorKind::NotFound, format!("no queue named {queue:?}"))
        .with_context("queue", queue)
}

fn unroutable(destination: &Destination) -> Error {
    Error::new(
        ErrorKind::Unroutable,
        format!("no queue is bound to receive messages sent to {destination}"),
    )
    .with_context("destination", destination.to_string())
    .set_temporary(false)
}

impl Engine {
    pub fn new(name: String) -> Self {
        Engine {
            name,
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
            faults: Faults::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-made transition (none awaits or
        // panics by design), so a poisoned lock's data is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(&self) {
        self.changed.notify_waiters();
    }

    pub fn declare(&self, spec: &QueueSpec) -> Result<()> {
        let mut inner = self.lock();
        if let Some(existing) = inner.queues.get_mut(&spec.name) {
            let same = existing.spec.durable == spec.durable
                && existing.spec.max_length == spec.max_length
                && existing.spec.overflow == spec.overflow
                && existing.spec.dead_letter_queue == spec.dead_letter_queue
                && existing.spec.kind == spec.kind;
            if !same {
                return Err(Error::new(
                    ErrorKind::ConfigInvalid,
                    format!("queue {:?} exists with different arguments", spec.name),
                )
                .with_context("queue", spec.name.clone())
                .set_temporary(false));
            }
            for b in &spec.bindings {
                if !existing.spec.bindings.contains(b) {
                    existing.spec.bindings.push(b.clone());
                }
            }
        } else {
            inner.queues.insert(
                spec.name.clone(),
                Queue {
                    spec: spec.clone(),
                    ready: VecDeque::new(),
                    delayed: BinaryHeap::new(),
                },
            );
        }
        if let Some(dlq) = &spec.dead_letter_queue {
            if !inner.queues.contains_key(dlq) {
                let dlq_spec = QueueSpec::new(dlq.clone()).dead_letter_queue(None);
                inner.queues.insert(
                    dlq.clone(),
                    Queue {
                        spec: dlq_spec,
                        ready: VecDeque::new(),
                        delayed: BinaryHeap::new(),
                    },
                );
            }
        }
        Ok(())
    }

    pub fn delete(&self, name: &str) {
        let mut inner = self.lock();
        inner.queues.remove(name);
        let tags: Vec<u64> = inner
            .unsettled
            .iter()
            .filter(|(_, u)| u.queue == name)
            .map(|(t, _)| *t)
            .collect();
        for tag in tags {
            if let Some(u) = inner.unsettled.remove(&tag) {
                if let Some(c) = inner.consumers.get_mut(&u.consumer) {
                    c.unsettled -= 1;
                }
            }
        }
        drop(inner);
        self.wake();
    }

    pub fn depth(&self, name: &str) -> Result<u64> {
        let mut inner = self.lock();
        let q = inner.queues.get_mut(name).ok_or_else(|| not_found(name))?;
        promote_due(q, Instant::now());
        Ok(q.ready.len() as u64)
    }

    /// Route and store one message. Atomic: either every target queue that accepts gets it, or
    /// an error says why (a full reject-publish queue nacks).
    pub fn publish(
        &self,
        destination: &Destination,
        message: &Message,
        delay: Option<std::time::Duration>,
    ) -> Result<()> {
        let mut inner = self.lock();
        let r = publish_locked(&mut inner, destination, message, delay);
        drop(inner);
        self.wake();
        r
    }

    /// Check that every destination routes somewhere, then store all — or nothing.
    pub fn publish_all(&self, batch: Vec<(Destination, Message)>, acks: &[u64]) -> Result<()> {
        let mut inner = self.lock();
        let mut needed: HashMap<String, u64> = HashMap::new();
        for (d, _) in &batch {
            for name in targets(&inner, d)? {
                *needed.entry(name).or_default() += 1;
            }
        }
        for (name, n) in &needed {
            let q = &inner.queues[name];
            if let (Some(max), Overflow::RejectPublish) = (q.spec.max_length, q.spec.overflow) {
                if q.ready.len() as u64 + n > max {
                    return Err(Error::new(
                        ErrorKind::Nacked,
                        format!("queue {name} cannot take the transaction's messages (max length)"),
                    )
                    .with_context("queue", name.clone()));
                }
            }
        }
        for tag in acks {
            if !inner.unsettled.contains_key(tag) {
                return Err(stale());
            }
        }
        for (d, m) in batch {
            // Routing and room were checked under this same lock: this cannot fail.
            publish_locked(&mut inner, &d, &m, None)?;
        }
        for tag in acks {
            settle_locked(&mut inner, *tag);
        }
        drop(inner);
        self.wake();
        Ok(())
    }

    pub fn check_routable(&self, destination: &Destination) -> Result<()> {
        targets(&self.lock(), destination).map(drop)
    }

    pub fn add_consumer(&self, queue: &str, connection: u64, prefetch: usize) -> Result<u64> {
        let mut inner = self.lock();
        if !inner.queues.contains_key(queue) {
            return Err(not_found(queue));
        }
        let id = inner.id();
        inner.consumers.insert(
            id,
            ConsumerState {
                queue: queue.to_string(),
                connection,
                prefetch,
                unsettled: 0,
            },
        );
        Ok(id)
    }

    /// Remove consumers (one, or every consumer of a connection) and requeue what they held.
    pub fn remove_consumers(&self, which: impl Fn(u64, u64) -> bool) {
        let mut inner = self.lock();
        let gone: Vec<u64> = inner
            .consumers
            .iter()
            .filter(|(id, c)| which(**id, c.connection))
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            inner.consumers.remove(id);
        }
        requeue_held_by(&mut inner, |c| gone.contains(&c));
        drop(inner);
        self.wake();
    }

    /// The "connection dropped" fault: every consumer's unsettled deliveries are requeued and
    /// their handles go stale; the consumers stay subscribed, as after a reconnect.
    pub fn drop_consumer_connections(&self) {
        let mut inner = self.lock();
        requeue_held_by(&mut inner, |_| true);
        for c in inner.consumers.values_mut() {
            c.unsettled = 0;
        }
        drop(inner);
        self.wake();
    }

    pub fn take(&self, consumer: u64) -> Take {
        let mut inner = self.lock();
        let now = Instant::now();
        let Some(c) = inner.consumers.get(&consumer) else {
            return Take::Closed;
        };
        if c.unsettled >= c.prefetch {
            return Take::Wait(None);
        }
        let queue_name = c.queue.clone();
        let Some(q) = inner.queues.get_mut(&queue_name) else {
            return Take::Closed;
        };
        promote_due(q, now);
        let mut expired = Vec::new();
        let mut taken = None;
        while let Some(mut s) = q.ready.pop_front() {
            if s.expires_at.is_some_and(|t| t <= now) {
                expired.push(s);
                continue;
            }
            s.delivery_count += 1;
            taken = Some(s);
            break;
        }
        let next_due = q.delayed.peek().map(|Reverse(d)| d.due);
        let dlq = q.spec.dead_letter_queue.clone();
        if let Some(dlq) = dlq {
            for s in expired {
                // Expired messages are dead-lettered (RabbitMQ with a DLX, ActiveMQ's default).
                if let Some(d) = inner.queues.get_mut(&dlq) {
                    d.ready.push_back(Stored::new(s.message, now));
                }
            }
        }
        match taken {
            Some(stored) => {
                let tag = inner.id();
                inner
                    .consumers
                    .get_mut(&consumer)
                    .expect("checked")
                    .unsettled += 1;
                inner.unsettled.insert(
                    tag,
                    Unsettled {
                        queue: queue_name,
                        consumer,
                        stored: stored.clone(),
                    },
                );
                Take::Delivery(tag, Box::new(stored))
            }
            None => Take::Wait(next_due),
        }
    }

    pub fn ack(&self, tag: u64) -> Result<()> {
        let mut inner = self.lock();
        let r = if settle_locked(&mut inner, tag).is_some() {
            Ok(())
        } else {
            Err(stale())
        };
        drop(inner);
        self.wake();
        r
    }

    pub fn requeue(&self, tag: u64) -> Result<()> {
        let mut inner = self.lock();
        let r = match settle_locked(&mut inner, tag) {
            Some(u) => {
                requeue_front(&mut inner, u);
                Ok(())
            }
            None => Err(stale()),
        };
        drop(inner);
        self.wake();
        r
    }

    /// Store `replacement` and settle the original in one step; on failure the original is
    /// requeued, so nothing is lost.
    pub fn forward(
        &self,
        tag: u64,
        destination: &Destination,
        replacement: Message,
        delay: Option<std::time::Duration>,
    ) -> Result<()> {
        let mut inner = self.lock();
        let Some(u) = settle_locked(&mut inner, tag) else {
            return Err(stale());
        };
        let r = publish_locked(&mut inner, destination, &replacement, delay);
        if r.is_err() {
            requeue_front(&mut inner, u);
        }
        drop(inner);
        self.wake();
        r
    }
}

fn stale() -> Error {
    coolmq_core::raw::stale_delivery("consumer or connection")
}

fn settle_locked(inner: &mut Inner, tag: u64) -> Option<Unsettled> {
    let u = inner.unsettled.remove(&tag)?;
    if let Some(c) = inner.consumers.get_mut(&u.consumer) {
        c.unsettled = c.unsettled.saturating_sub(1);
    }
    Some(u)
}

fn requeue_front(inner: &mut Inner, u: Unsettled) {
    if let Some(q) = inner.queues.get_mut(&u.queue) {
        q.ready.push_front(u.stored);
    }
}

fn requeue_held_by(inner: &mut Inner, held_by: impl Fn(u64) -> bool) {
    let mut tags: Vec<u64> = inner
        .unsettled
        .iter()
        .filter(|(_, u)| held_by(u.consumer))
        .map(|(t, _)| *t)
        .collect();
    // Requeue newest first so the oldest ends up at the head, keeping queue order.
    tags.sort_unstable_by(|a, b| b.cmp(a));
    for tag in tags {
        if let Some(u) = inner.unsettled.remove(&tag) {
            requeue_front(inner, u);
        }
    }
}

fn promote_due(q: &mut Queue, now: Instant) {
    while q.delayed.peek().is_some_and(|Reverse(d)| d.due <= now) {
        let Reverse(d) = q.delayed.pop().expect("peeked");
        q.ready.push_back(d.stored);
    }
}

fn targets(inner: &Inner, destination: &Destination) -> Result<Vec<String>> {
    let names: Vec<String> = match destination {
        Destination::Queue(name) if inner.queues.contains_key(name) => vec![name.clone()],
        Destination::Queue(_) => Vec::new(),
        Destination::Topic(topic) => {
            let mut v: Vec<String> = inner
                .queues
                .values()
                .filter(|q| q.spec.bindings.iter().any(|p| topic_matches(p, topic)))
                .map(|q| q.spec.name.clone())
                .collect();
            v.sort();
            v
        }
    };
    if names.is_empty() {
        return Err(unroutable(destination));
    }
    Ok(names)
}

fn publish_locked(
    inner: &mut Inner,
    destination: &Destination,
    message: &Message,
    delay: Option<std::time::Duration>,
) -> Result<()> {
    let names = targets(inner, destination)?;
    let now = Instant::now();
    let mut refused = Vec::new();
    for name in names {
        let seq = inner.id();
        let q = inner.queues.get_mut(&name).expect("target exists");
        let stored = Stored::new(message.clone(), now);
        if let Some(max) = q.spec.max_length {
            if q.ready.len() as u64 >= max {
                match q.spec.overflow {
                    Overflow::RejectPublish => {
                        refused.push(name);
                        continue;
                    }
                    Overflow::DropHead => {
                        let dropped = q.ready.pop_front();
                        let dlq = q.spec.dead_letter_queue.clone();
                        let q_stored = stored;
                        if let (Some(d), Some(dlq)) = (dropped, dlq) {
                            if let Some(dq) = inner.queues.get_mut(&dlq) {
                                dq.ready.push_back(Stored::new(d.message, now));
                            }
                        }
                        let q = inner.queues.get_mut(&name).expect("target exists");
                        q.ready.push_back(q_stored);
                        continue;
                    }
                }
            }
        }
        match delay {
            Some(d) if !d.is_zero() => q.delayed.push(Reverse(Delayed {
                due: now + d,
                seq,
                stored,
            })),
            _ => q.ready.push_back(stored),
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Nacked,
            format!(
                "queue {} is full (max length, reject-publish)",
                refused.join(", ")
            ),
        )
        .with_context("queue", refused.join(",")))
    }
}

/// Whether the connection handle has been closed by the application.
#[derive(Debug, Default)]
pub(crate) struct Closed(AtomicBool);

impl Closed {
    pub fn close(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn check(&self) -> Result<()> {
        if self.0.load(Ordering::SeqCst) {
            Err(coolmq_core::raw::closed())
        } else {
            Ok(())
        }
    }
}
