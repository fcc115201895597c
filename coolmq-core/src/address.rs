//! Where a message goes: a point-to-point queue or a publish/subscribe topic, named the same
//! way on every broker.

use std::fmt;

/// The destination of a send.
///
/// Topics are dotted names (`orders.created`); subscribers bind queues to patterns where `*`
/// matches one word and `#` matches zero or more (AMQP topic-exchange syntax; backends
/// translate it, e.g. to ActiveMQ's `>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A queue: exactly one consumer gets each message.
    Queue(String),
    /// A topic: every queue bound with a matching pattern gets a copy.
    Topic(String),
}

impl Destination {
    /// A queue destination.
    pub fn queue(name: impl Into<String>) -> Self {
        Destination::Queue(name.into())
    }

    /// A topic destination.
    pub fn topic(name: impl Into<String>) -> Self {
        Destination::Topic(name.into())
    }

    /// The queue or topic name.
    pub fn name(&self) -> &str {
        match self {
            Destination::Queue(n) | Destination::Topic(n) => n,
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Queue(n) => write!(f, "queue://{n}"),
            Destination::Topic(n) => write!(f, "topic://{n}"),
        }
    }
}

/// Whether `topic` matches the binding `pattern` (`*` = one word, `#` = zero or more words).
///
/// ```
/// use coolmq_core::topic_matches;
/// assert!(topic_matches("orders.*", "orders.created"));
/// assert!(topic_matches("orders.#", "orders"));
/// assert!(topic_matches("#.created", "eu.orders.created"));
/// assert!(!topic_matches("orders.*", "orders.eu.created"));
/// ```
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let t: Vec<&str> = topic.split('.').collect();
    matches_from(&p, &t)
}

fn matches_from(p: &[&str], t: &[&str]) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some((&"#", rest)) => (0..=t.len()).any(|skip| matches_from(rest, &t[skip..])),
        Some((&word, rest)) => match t.split_first() {
            Some((&tw, trest)) => (word == "*" || word == tw) && matches_from(rest, trest),
            None => false,
        },
    }
}
