//! Portable topology: the durable queue, its dead-letter queue, limits and topic bindings,
//! declared the same way on every broker.

/// The default prefix of dead-letter queues: `DLQ.<queue>` (ActiveMQ's
/// `individualDeadLetterStrategy` convention).
pub const DEFAULT_DEAD_LETTER_PREFIX: &str = "DLQ.";

/// The dead-letter queue name for `queue` with the default prefix.
pub fn dead_letter_queue_name(queue: &str) -> String {
    format!("{DEFAULT_DEAD_LETTER_PREFIX}{queue}")
}

/// What a full queue (see [`QueueSpec::max_length`]) does with a new message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Refuse the publish: the sender gets [`crate::ErrorKind::Nacked`] and keeps the message.
    #[default]
    RejectPublish,
    /// Drop (or dead-letter) the oldest message to make room.
    DropHead,
}

/// How a queue is stored, where the broker offers a choice (`Config::queue_kind` sets it for
/// every queue `Broker::queue_spec` makes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueKind {
    /// The broker's ordinary durable queue.
    #[default]
    Classic,
    /// A replicated queue (RabbitMQ quorum queue: Raft, confirmed once a majority of nodes
    /// has it, exact delivery counts, at-least-once dead-lettering); others treat it as
    /// classic.
    Quorum,
}

/// A queue to declare, with everything coolmq's reliability needs alongside it.
///
/// ```
/// use coolmq_core::QueueSpec;
/// let spec = QueueSpec::new("orders").bind("orders.*").max_length(10_000);
/// assert_eq!(spec.dead_letter_queue.as_deref(), Some("DLQ.orders"));
/// assert!(spec.durable);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// The queue name.
    pub name: String,
    /// Survive a broker restart. Default `true`.
    pub durable: bool,
    /// The queue's dead-letter queue, declared alongside; `None` for none.
    /// Default `DLQ.<name>`.
    pub dead_letter_queue: Option<String>,
    /// Maximum number of ready messages, if limited.
    pub max_length: Option<u64>,
    /// What happens when `max_length` is reached.
    pub overflow: Overflow,
    /// Topic patterns this queue subscribes to.
    pub bindings: Vec<String>,
    /// Storage kind.
    pub kind: QueueKind,
    /// Redeliveries after which the broker itself dead-letters a message, where it can
    /// (RabbitMQ quorum queues' `x-delivery-limit`): a safety net for queues read by
    /// consumers that are not coolmq workers. Default `None`: the redelivery policy decides,
    /// and an explicit `Nack::Requeue` is never overruled by the broker. Set it above the
    /// policy's `maximum_redeliveries + 1`, or the broker dead-letters before the worker can
    /// record why.
    pub delivery_limit: Option<u32>,
}

impl QueueSpec {
    /// A durable classic queue with its `DLQ.<name>` dead-letter queue and no limits.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        QueueSpec {
            dead_letter_queue: Some(dead_letter_queue_name(&name)),
            name,
            durable: true,
            max_length: None,
            overflow: Overflow::RejectPublish,
            bindings: Vec::new(),
            kind: QueueKind::Classic,
            delivery_limit: None,
        }
    }

    /// Subscribe the queue to a topic pattern.
    pub fn bind(mut self, pattern: impl Into<String>) -> Self {
        self.bindings.push(pattern.into());
        self
    }

    /// Limit the queue to `n` ready messages (overflow: reject the publish).
    pub fn max_length(mut self, n: u64) -> Self {
        self.max_length = Some(n);
        self
    }

    /// Choose the overflow behaviour.
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Use another dead-letter queue name, or `None` for no dead-letter queue.
    pub fn dead_letter_queue(mut self, name: Option<String>) -> Self {
        self.dead_letter_queue = name;
        self
    }

    /// Make the queue transient (deleted on broker restart).
    pub fn transient(mut self) -> Self {
        self.durable = false;
        self
    }

    /// Choose the storage kind.
    pub fn kind(mut self, kind: QueueKind) -> Self {
        self.kind = kind;
        self
    }

    /// Let the broker dead-letter a message after `n` redeliveries, where it can (`None`:
    /// never).
    pub fn delivery_limit(mut self, n: Option<u32>) -> Self {
        self.delivery_limit = n;
        self
    }
}
