//! An outbox row in neutral form: what `enqueue` writes and the relay reads back, so the
//! message the broker gets is the message the caller stored — same id on every resend.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coolmq_core::{Destination, Error, ErrorKind, Headers, Message, Result};

/// Milliseconds since the epoch, the unit of every outbox time column.
pub(crate) fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}

/// Now, in outbox time.
pub fn now_ms() -> i64 {
    millis(SystemTime::now())
}

/// One message as stored in `coolmq_outbox`.
#[doc(hidden)]
#[allow(missing_docs)] // internal: the columns of `coolmq_outbox`
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: String,
    pub destination_kind: String,
    pub destination: String,
    pub body: Vec<u8>,
    pub headers: String,
    pub content_type: Option<String>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub kind: Option<String>,
    pub priority: Option<i16>,
    pub persistent: bool,
    pub ttl_ms: Option<i64>,
    pub timestamp_ms: Option<i64>,
    pub attempts: i32,
}

impl OutboxRow {
    /// The row for `message` to `destination`.
    pub fn new(destination: &Destination, message: &Message) -> Result<OutboxRow> {
        let headers = serde_json::to_string(&message.headers).map_err(|e| {
            Error::new(ErrorKind::Unexpected, "headers cannot be stored").with_source(e)
        })?;
        let (destination_kind, name) = match destination {
            Destination::Queue(n) => ("queue", n),
            Destination::Topic(n) => ("topic", n),
        };
        Ok(OutboxRow {
            id: if message.id.is_empty() {
                coolmq_core::new_message_id()
            } else {
                message.id.clone()
            },
            destination_kind: destination_kind.to_string(),
            destination: name.clone(),
            body: message.body.to_vec(),
            headers,
            content_type: message.content_type.clone(),
            correlation_id: message.correlation_id.clone(),
            reply_to: message.reply_to.clone(),
            kind: message.kind.clone(),
            priority: message.priority.map(i16::from),
            persistent: message.persistent,
            ttl_ms: message.ttl.map(|t| t.as_millis() as i64),
            timestamp_ms: message.timestamp.map(millis),
            attempts: 0,
        })
    }

    /// Where the row goes.
    pub fn destination(&self) -> Destination {
        if self.destination_kind == "topic" {
            Destination::topic(self.destination.clone())
        } else {
            Destination::queue(self.destination.clone())
        }
    }

    /// The message the relay publishes (the stored one, id included).
    pub fn message(&self) -> Result<Message> {
        let headers: Headers = serde_json::from_str(&self.headers).map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("outbox row {}: unreadable headers", self.id),
            )
            .with_source(e)
        })?;
        let mut m = Message::new_with_id(self.id.clone(), self.body.clone());
        m.headers = headers;
        m.content_type = self.content_type.clone();
        m.correlation_id = self.correlation_id.clone();
        m.reply_to = self.reply_to.clone();
        m.kind = self.kind.clone();
        m.priority = self.priority.and_then(|p| u8::try_from(p).ok());
        m.persistent = self.persistent;
        m.ttl = self
            .ttl_ms
            .map(|t| Duration::from_millis(u64::try_from(t).unwrap_or(0)));
        m.timestamp = self
            .timestamp_ms
            .map(|t| UNIX_EPOCH + Duration::from_millis(u64::try_from(t).unwrap_or(0)));
        Ok(m)
    }
}

/// What the relay learned about one claimed row.
#[doc(hidden)]
#[allow(missing_docs)] // internal
#[derive(Debug, Clone)]
pub enum Settle {
    /// Confirmed by the broker: delete the row.
    Confirmed,
    /// Not confirmed: count the attempt, retry at `next_attempt_at`, or park.
    Failed {
        attempts: i32,
        next_attempt_at: i64,
        error: String,
        park: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_survives_the_row() {
        let m = Message::new(&b"\x00\xffbody"[..])
            .with_id("order-1")
            .with_header("n", 7i64)
            .with_correlation_id("c")
            .with_reply_to("r")
            .with_kind("OrderPlaced")
            .with_priority(7)
            .with_ttl(Duration::from_secs(9))
            .with_content_type("application/octet-stream");
        let row = OutboxRow::new(&Destination::topic("orders.created"), &m).unwrap();
        assert_eq!(row.destination(), Destination::topic("orders.created"));
        let back = row.message().unwrap();
        assert_eq!(back.id, "order-1");
        assert_eq!(back.body, m.body);
        assert_eq!(back.headers, m.headers);
        assert_eq!(back.correlation_id, m.correlation_id);
        assert_eq!(back.reply_to, m.reply_to);
        assert_eq!(back.kind, m.kind);
        assert_eq!(back.priority, m.priority);
        assert_eq!(back.ttl, m.ttl);
        assert_eq!(back.persistent, m.persistent);
        assert_eq!(
            back.timestamp.map(millis),
            m.timestamp.map(millis),
            "timestamp kept to the millisecond"
        );
    }
}
