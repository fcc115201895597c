//! Delayed delivery without plugins: one durable queue per delay tier holds delayed messages
//! with a queue-level TTL and dead-letters them back, by their original routing key, to the
//! default exchange (queues) or the topic exchange (topics). Every message in a tier has the
//! same TTL, so none waits behind a longer one; tiers are shared by all queues.
//!
//! Tiers are quorum queues with at-least-once dead-lettering (`x-dead-letter-strategy`,
//! which needs `x-overflow = reject-publish`): a tier keeps an expired message until the
//! queue it goes back to has confirmed it, retrying while that queue is full (reject-publish)
//! or missing, every `dead_letter_worker_publisher_confirm_timeout` (RabbitMQ's default: 3
//! minutes). A classic queue's dead-lettering is at-most-once: the retry copy was lost then.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use coolmq_core::Result;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use crate::error::map;

/// The headers exchange that routes delayed messages to their tier. (Its name differs from
/// the at-most-once classic tiers' `coolmq.delay`, whose bindings would otherwise route
/// each delayed message to an old tier too.)
pub(crate) const DELAY_EXCHANGE: &str = "coolmq.delayed";

/// The longest delay a tier holds: the largest two-significant-digit number of milliseconds
/// that fits RabbitMQ's 32-bit `x-message-ttl` (about 48.6 days).
pub(crate) const MAX_DELAY: Duration = Duration::from_millis(4_200_000_000);

/// Round a delay up to its tier: two significant digits of milliseconds, so a tier is never
/// shorter than asked and at most 10 % longer, and jittered delays share few queues. A delay
/// longer than [`MAX_DELAY`] is refused: shortening it would deliver the message early.
pub(crate) fn tier_millis(delay: Duration) -> Result<u64> {
    if delay > MAX_DELAY {
        return Err(coolmq_core::Error::new(
            coolmq_core::ErrorKind::Rejected,
            format!(
                "a delay of {delay:?} is longer than RabbitMQ's delay tiers hold ({MAX_DELAY:?}); \
                 schedule it in the application instead"
            ),
        )
        .set_temporary(false));
    }
    let ms = delay.as_millis().max(1) as u64;
    let mut scale = 1;
    while ms / scale >= 100 {
        scale *= 10;
    }
    Ok(ms.div_ceil(scale) * scale)
}

/// Where a delayed message goes back to: the default exchange (queue) or the topic exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Back {
    Queue,
    Topic,
}

/// Tiers declared so far by this connection.
#[derive(Default)]
pub(crate) struct Tiers(Mutex<HashSet<(Back, u64)>>);

/// What declaring one tier takes, for any driver: the header value selecting it, its queue
/// with arguments, and the headers binding from [`DELAY_EXCHANGE`].
pub(crate) struct TierPlan {
    pub key: String,
    pub queue: String,
    pub queue_args: FieldTable,
    pub bind_args: FieldTable,
}

/// The tier of `ms` milliseconds going back to `back`.
pub(crate) fn plan(back: Back, ms: u64, topic_exchange: &str) -> TierPlan {
    let (tag, dead_letter_exchange) = match back {
        Back::Queue => ("q", ""),
        Back::Topic => ("t", topic_exchange),
    };
    let key = format!("{tag}.{ms}");
    let queue = format!("{DELAY_EXCHANGE}.{key}");
    let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
    let mut queue_args = FieldTable::default();
    queue_args.insert("x-queue-type".into(), text("quorum"));
    queue_args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    queue_args.insert("x-overflow".into(), text("reject-publish"));
    queue_args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ms as i64));
    queue_args.insert("x-dead-letter-exchange".into(), text(dead_letter_exchange));
    let mut bind_args = FieldTable::default();
    bind_args.insert("x-match".into(), text("all"));
    bind_args.insert(crate::convert::DELAY_HEADER.into(), text(&key));
    TierPlan {
        key,
        queue,
        queue_args,
        bind_args,
    }
}

impl Tiers {
    /// Whether this connection declared the tier already.
    pub fn known(&self, back: Back, ms: u64) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(back, ms))
    }

    /// Remember a declared tier.
    pub fn learned(&self, back: Back, ms: u64) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((back, ms));
    }

    /// The header value selecting the tier; declares the tier on first use.
    pub async fn ensure(
        &self,
        channel: &Channel,
        back: Back,
        ms: u64,
        topic_exchange: &str,
    ) -> Result<String> {
        let plan = plan(back, ms, topic_exchange);
        if self.known(back, ms) {
            return Ok(plan.key);
        }
        channel
            .exchange_declare(
                DELAY_EXCHANGE.into(),
                ExchangeKind::Headers,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| map(e, "exchange.declare"))?;
        channel
            .queue_declare(
                plan.queue.clone().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                plan.queue_args,
            )
            .await
            .map_err(|e| map(e, "queue.declare"))?;
        channel
            .queue_bind(
                plan.queue.into(),
                DELAY_EXCHANGE.into(),
                "".into(),
                QueueBindOptions::default(),
                plan.bind_args,
            )
            .await
            .map_err(|e| map(e, "queue.bind"))?;
        self.learned(back, ms);
        Ok(plan.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_round_up_by_at_most_ten_percent() {
        assert_eq!(tier_millis(Duration::from_millis(200)).unwrap(), 200);
        assert_eq!(tier_millis(Duration::from_millis(1234)).unwrap(), 1300);
        assert_eq!(tier_millis(Duration::from_secs(1)).unwrap(), 1000);
        assert_eq!(tier_millis(Duration::from_millis(101)).unwrap(), 110);
        assert_eq!(tier_millis(MAX_DELAY).unwrap(), 4_200_000_000);
        assert!(u32::try_from(tier_millis(MAX_DELAY).unwrap()).is_ok());
        let too_long = tier_millis(MAX_DELAY + Duration::from_millis(1)).unwrap_err();
        assert_eq!(too_long.kind(), coolmq_core::ErrorKind::Rejected);
        assert!(!too_long.is_temporary());
        assert_eq!(tier_millis(Duration::ZERO).unwrap(), 1);
        for ms in 1..20_000u64 {
            let t = tier_millis(Duration::from_millis(ms)).unwrap();
            assert!(t >= ms && t as f64 <= ms as f64 * 1.1 + 1.0, "{ms} -> {t}");
        }
    }
}
