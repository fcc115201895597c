//! The metadata that travels with a failing message (attempt count, failure times, last
//! error) and the observer that tells a human when a message is dead-lettered.

use std::time::SystemTime;

use async_trait::async_trait;

use crate::{HeaderValue, Headers, Message};

/// Header carrying the attempt number of the next delivery of a republished (retried) copy.
/// Names use `_` so they are valid JMS property identifiers.
pub const ATTEMPT_HEADER: &str = "coolmq_attempt";
/// Header: when the message first failed (RFC 3339, UTC).
pub const FIRST_FAILURE_HEADER: &str = "coolmq_first_failure";
/// Header: when the message last failed (RFC 3339, UTC).
pub const LAST_FAILURE_HEADER: &str = "coolmq_last_failure";
/// Header: the last error's text.
pub const LAST_ERROR_HEADER: &str = "coolmq_last_error";
/// Header on dead-lettered copies: the queue the message was consumed from.
pub const ORIGIN_QUEUE_HEADER: &str = "coolmq_origin_queue";
/// Header on dead-lettered copies: how many deliveries were attempted.
pub const ATTEMPTS_HEADER: &str = "coolmq_attempts";

/// The attempt number of a delivery: the copy's [`ATTEMPT_HEADER`] (1 when absent) plus the
/// broker's redeliveries of this copy.
pub fn attempt_of(headers: &Headers, broker_redeliveries: u32) -> u32 {
    let base = headers
        .get(ATTEMPT_HEADER)
        .and_then(HeaderValue::as_i64)
        .filter(|v| *v >= 1)
        .map(|v| v.min(u32::MAX as i64) as u32)
        .unwrap_or(1);
    base.saturating_add(broker_redeliveries)
}

/// Carry `attempt` on a copy: its next delivery's attempt number ([`ATTEMPT_HEADER`]).
pub fn set_attempt(headers: &mut Headers, attempt: u32) {
    headers.insert(
        ATTEMPT_HEADER.to_string(),
        HeaderValue::I32(attempt.min(i32::MAX as u32) as i32),
    );
}

/// Prepare a copy of a delivery that is being returned to its queue as a counted attempt
/// (its broker would return it uncounted): the copy's next delivery is one attempt later.
pub fn count_return(headers: &mut Headers, broker_redeliveries: u32) {
    let next = attempt_of(headers, broker_redeliveries).saturating_add(1);
    set_attempt(headers, next);
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Record a failure on `message`: first failure (kept if already set), last failure = now,
/// last error.
pub fn record_failure(message: &mut Message, error: &str, now: SystemTime) {
    let now = rfc3339(now);
    message
        .headers
        .entry(FIRST_FAILURE_HEADER.to_string())
        .or_insert_with(|| HeaderValue::String(now.clone()));
    message
        .headers
        .insert(LAST_FAILURE_HEADER.to_string(), HeaderValue::String(now));
    message.headers.insert(
        LAST_ERROR_HEADER.to_string(),
        HeaderValue::String(truncate(error, 1024)),
    );
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// What happened when a message was dead-lettered, for the observer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadLetterEvent {
    /// The queue the message was consumed from.
    pub queue: String,
    /// The dead-letter queue it was moved to.
    pub dead_letter_queue: String,
    /// The message as stored in the dead-letter queue (with the metadata headers).
    pub message: Message,
    /// Deliveries attempted.
    pub attempts: u32,
    /// The last error.
    pub reason: String,
}

impl DeadLetterEvent {
    /// The event of `message` moved from `queue` to `dead_letter_queue` after `attempts`
    /// deliveries, the last failing with `reason` (for parking places of one's own, as the
    /// outbox relay's).
    pub fn new(
        queue: impl Into<String>,
        dead_letter_queue: impl Into<String>,
        message: Message,
        attempts: u32,
        reason: impl Into<String>,
    ) -> Self {
        DeadLetterEvent {
            queue: queue.into(),
            dead_letter_queue: dead_letter_queue.into(),
            message,
            attempts,
            reason: reason.into(),
        }
    }

    /// The first failure time as recorded in the headers.
    pub fn first_failure(&self) -> Option<SystemTime> {
        self.header_time(FIRST_FAILURE_HEADER)
    }

    /// The last failure time as recorded in the headers.
    pub fn last_failure(&self) -> Option<SystemTime> {
        self.header_time(LAST_FAILURE_HEADER)
    }

    fn header_time(&self, name: &str) -> Option<SystemTime> {
        let s = self.message.headers.get(name)?.as_str()?;
        humantime::parse_rfc3339(s).ok()
    }
}

/// The human fallback: called once for every dead-lettered message (send an e-mail, page
/// someone). Keep it quick; it runs on the worker's task.
#[async_trait]
pub trait DeadLetterObserver: Send + Sync {
    /// A message was moved to its dead-letter queue.
    async fn on_dead_letter(&self, event: &DeadLetterEvent);
}

/// The default observer: logs every dead-lettered message at error level.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogObserver;

#[async_trait]
impl DeadLetterObserver for LogObserver {
    async fn on_dead_letter(&self, event: &DeadLetterEvent) {
        tracing::error!(
            queue = %event.queue,
            dead_letter_queue = %event.dead_letter_queue,
            message_id = %event.message.id,
            attempts = event.attempts,
            reason = %event.reason,
            "message dead-lettered; a human should look at it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_combines_header_and_broker_count() {
        let mut m = Message::new("x");
        assert_eq!(attempt_of(&m.headers, 0), 1);
        assert_eq!(attempt_of(&m.headers, 2), 3);
        m.headers.insert(ATTEMPT_HEADER.into(), HeaderValue::I32(4));
        assert_eq!(attempt_of(&m.headers, 1), 5);
    }

    #[test]
    fn a_counted_return_is_one_attempt_later() {
        let mut m = Message::new("x");
        count_return(&mut m.headers, 0);
        assert_eq!(attempt_of(&m.headers, 0), 2);
        count_return(&mut m.headers, 2); // delivered twice more before this return
        assert_eq!(attempt_of(&m.headers, 0), 5);
    }

    #[test]
    fn first_failure_is_kept() {
        let mut m = Message::new("x");
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        record_failure(&mut m, "boom", t0);
        record_failure(&mut m, "bang", t0 + std::time::Duration::from_secs(5));
        assert_eq!(
            m.headers[FIRST_FAILURE_HEADER].as_str(),
            Some("2023-11-14T22:13:20.000Z")
        );
        assert_eq!(
            m.headers[LAST_FAILURE_HEADER].as_str(),
            Some("2023-11-14T22:13:25.000Z")
        );
        assert_eq!(m.headers[LAST_ERROR_HEADER].as_str(), Some("bang"));
    }
}
