//! ActiveMQ's `RedeliveryPolicy`, with its names and defaults, plus a per-queue map: what the
//! worker does when a handler fails.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{duration_serde, Error, Result};

/// How often and how late a failed message is redelivered before it is dead-lettered.
///
/// Field names and defaults are ActiveMQ's: 6 redeliveries, 1 s initial and later delay, no
/// exponential backoff (multiplier 5 when enabled), no cap, collision avoidance off (±15 %).
/// `maximum_redeliveries = -1` means no limit.
///
/// ```
/// use std::time::Duration;
/// use coolmq_core::RedeliveryPolicy;
/// let p = RedeliveryPolicy { use_exponential_backoff: true, ..Default::default() };
/// let secs: Vec<u64> = (1..=4).map(|n| p.delay_for(n).as_secs()).collect();
/// assert_eq!(secs, [1, 5, 25, 125]);
/// assert!(p.should_dead_letter(7) && !p.should_dead_letter(6));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedeliveryPolicy {
    /// Redeliveries after the first delivery; `-1` = unlimited. Default 6.
    pub maximum_redeliveries: i32,
    /// Delay before the first redelivery. Default 1 s.
    #[serde(with = "duration_serde")]
    pub initial_redelivery_delay: Duration,
    /// Delay before later redeliveries when backoff is off. Default 1 s.
    #[serde(with = "duration_serde")]
    pub redelivery_delay: Duration,
    /// Multiply the previous delay by `backoff_multiplier`. Default false.
    pub use_exponential_backoff: bool,
    /// Backoff factor. Default 5.0.
    pub backoff_multiplier: f64,
    /// Cap on the delay; `None` (or `-1`) = no cap. Default none.
    #[serde(with = "duration_serde::option")]
    pub maximum_redelivery_delay: Option<Duration>,
    /// Randomize each delay by ± `collision_avoidance_factor`. Default false.
    pub use_collision_avoidance: bool,
    /// Randomization factor. Default 0.15.
    pub collision_avoidance_factor: f64,
}

impl Default for RedeliveryPolicy {
    fn default() -> Self {
        RedeliveryPolicy {
            maximum_redeliveries: 6,
            initial_redelivery_delay: Duration::from_secs(1),
            redelivery_delay: Duration::from_secs(1),
            use_exponential_backoff: false,
            backoff_multiplier: 5.0,
            maximum_redelivery_delay: None,
            use_collision_avoidance: false,
            collision_avoidance_factor: 0.15,
        }
    }
}

/// `d × factor`, saturating at `Duration::MAX`: an unlimited policy with exponential backoff and
/// no maximum delay grows past what a `Duration` holds, and that must never panic.
fn scaled(d: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// What the worker does with a failed delivery ([`RedeliveryPolicy::decide`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Redeliver it after this delay (the broker holds a copy; nothing else waits).
    RetryAfter(Duration),
    /// Return it to its queue now (a backend without delayed delivery).
    Requeue,
    /// Move it to its dead-letter queue with the failure metadata.
    DeadLetter,
}

impl RedeliveryPolicy {
    /// Whether a message that just failed on delivery `attempt` (1 = first delivery) has used
    /// up its redeliveries and must go to the dead-letter queue.
    pub fn should_dead_letter(&self, attempt: u32) -> bool {
        self.maximum_redeliveries >= 0 && attempt > self.maximum_redeliveries as u32
    }

    /// Whether delivery `attempt` may still reach the handler: false once the message was
    /// delivered `maximum_redeliveries + 1` times already without being settled by a
    /// handler failure (its consumer died, or lost its connection, each time). The worker
    /// dead-letters such a delivery without running the handler, so a message that kills
    /// its consumer cannot wedge the queue.
    pub fn allows_delivery(&self, attempt: u32) -> bool {
        !self.should_dead_letter(attempt.saturating_sub(1))
    }

    /// The delay before redelivery number `redelivery` (1 = the first), without
    /// randomization: ActiveMQ's `getNextRedeliveryDelay` applied from the initial delay.
    pub fn delay_for(&self, redelivery: u32) -> Duration {
        let mut delay = self.initial_redelivery_delay;
        for _ in 1..redelivery.max(1) {
            let next = self.next_delay(delay);
            if next == delay {
                // A fixed point (no backoff, the cap, or saturated): the rest of the loop
                // would change nothing, and an unlimited policy's attempts can be many.
                return next;
            }
            delay = next;
        }
        delay
    }

    /// The delay before redelivery number `redelivery`, randomized when collision avoidance is
    /// on. This is what the worker uses.
    pub fn jittered_delay_for(&self, redelivery: u32) -> Duration {
        self.delay_with(redelivery, fastrand::f64())
    }

    /// [`RedeliveryPolicy::delay_for`] scaled by collision avoidance, with `random` (in
    /// `0.0..1.0`) choosing where in `1 ± collision_avoidance_factor`.
    fn delay_with(&self, redelivery: u32, random: f64) -> Duration {
        let delay = self.delay_for(redelivery);
        if !self.use_collision_avoidance || self.collision_avoidance_factor == 0.0 {
            return delay;
        }
        let f = self.collision_avoidance_factor;
        let scale = 1.0 + (random * 2.0 - 1.0) * f;
        scaled(delay, scale.max(0.0))
    }

    /// What to do with a delivery whose handler failed on `attempt`: a pure function of the
    /// policy, the attempt and the failure (tower's `retry::Policy` as a value), so the
    /// worker's loop only carries it out. `permanent` failures skip redelivery; a backend
    /// without `delayed_delivery` requeues at once; `random` (in `0.0..1.0`) places the
    /// collision-avoidance jitter.
    pub fn decide(
        &self,
        attempt: u32,
        permanent: bool,
        delayed_delivery: bool,
        random: f64,
    ) -> Decision {
        if permanent || self.should_dead_letter(attempt) {
            Decision::DeadLetter
        } else if delayed_delivery {
            Decision::RetryAfter(self.delay_with(attempt, random))
        } else {
            Decision::Requeue
        }
    }

    fn next_delay(&self, previous: Duration) -> Duration {
        if previous.is_zero() || !self.use_exponential_backoff || self.backoff_multiplier <= 1.0 {
            return self.redelivery_delay;
        }
        let next = scaled(previous, self.backoff_multiplier);
        match self.maximum_redelivery_delay {
            Some(max) if next > max => max.max(self.redelivery_delay),
            _ => next,
        }
    }

    /// Check the values make sense; errors name the field.
    pub fn validate(&self, path: &str) -> Result<()> {
        if self.maximum_redeliveries < -1 {
            return Err(Error::config(
                &format!("{path}.maximum_redeliveries"),
                "must be -1 (unlimited) or at least 0",
            ));
        }
        if !self.backoff_multiplier.is_finite() || self.backoff_multiplier < 0.0 {
            return Err(Error::config(
                &format!("{path}.backoff_multiplier"),
                "must be a finite number >= 0",
            ));
        }
        if !(0.0..1.0).contains(&self.collision_avoidance_factor) {
            return Err(Error::config(
                &format!("{path}.collision_avoidance_factor"),
                "must be in [0, 1)",
            ));
        }
        Ok(())
    }
}

/// Per-queue changes to the default policy: every field is optional and, when absent, comes
/// from the map's `default` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyOverride {
    /// See [`RedeliveryPolicy::maximum_redeliveries`].
    pub maximum_redeliveries: Option<i32>,
    /// See [`RedeliveryPolicy::initial_redelivery_delay`].
    #[serde(
        with = "duration_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub initial_redelivery_delay: Option<Duration>,
    /// See [`RedeliveryPolicy::redelivery_delay`].
    #[serde(
        with = "duration_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub redelivery_delay: Option<Duration>,
    /// See [`RedeliveryPolicy::use_exponential_backoff`].
    pub use_exponential_backoff: Option<bool>,
    /// See [`RedeliveryPolicy::backoff_multiplier`].
    pub backoff_multiplier: Option<f64>,
    /// See [`RedeliveryPolicy::maximum_redelivery_delay`].
    #[serde(
        with = "duration_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub maximum_redelivery_delay: Option<Duration>,
    /// See [`RedeliveryPolicy::use_collision_avoidance`].
    pub use_collision_avoidance: Option<bool>,
    /// See [`RedeliveryPolicy::collision_avoidance_factor`].
    pub collision_avoidance_factor: Option<f64>,
}

impl PolicyOverride {
    /// The default policy with these overrides applied.
    pub fn apply(&self, base: &RedeliveryPolicy) -> RedeliveryPolicy {
        RedeliveryPolicy {
            maximum_redeliveries: self
                .maximum_redeliveries
                .unwrap_or(base.maximum_redeliveries),
            initial_redelivery_delay: self
                .initial_redelivery_delay
                .unwrap_or(base.initial_redelivery_delay),
            redelivery_delay: self.redelivery_delay.unwrap_or(base.redelivery_delay),
            use_exponential_backoff: self
                .use_exponential_backoff
                .unwrap_or(base.use_exponential_backoff),
            backoff_multiplier: self.backoff_multiplier.unwrap_or(base.backoff_multiplier),
            maximum_redelivery_delay: self
                .maximum_redelivery_delay
                .or(base.maximum_redelivery_delay),
            use_collision_avoidance: self
                .use_collision_avoidance
                .unwrap_or(base.use_collision_avoidance),
            collision_avoidance_factor: self
                .collision_avoidance_factor
                .unwrap_or(base.collision_avoidance_factor),
        }
    }
}

/// The default policy plus per-queue overrides (ActiveMQ's `RedeliveryPolicyMap`).
///
/// ```
/// use coolmq_core::{PolicyOverride, RedeliveryPolicyMap};
/// let mut map = RedeliveryPolicyMap::default();
/// map.queues.insert("autopay".into(), PolicyOverride { maximum_redeliveries: Some(2), ..Default::default() });
/// assert_eq!(map.policy_for("autopay").maximum_redeliveries, 2);
/// assert_eq!(map.policy_for("other").maximum_redeliveries, 6);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedeliveryPolicyMap {
    /// The policy of every queue without an entry.
    pub default: RedeliveryPolicy,
    /// Per-queue overrides, by exact queue name.
    pub queues: BTreeMap<String, PolicyOverride>,
}

impl RedeliveryPolicyMap {
    /// A map whose default is `policy`.
    pub fn new(policy: RedeliveryPolicy) -> Self {
        RedeliveryPolicyMap {
            default: policy,
            queues: BTreeMap::new(),
        }
    }

    /// Add a per-queue override.
    pub fn with_queue(mut self, queue: impl Into<String>, policy: PolicyOverride) -> Self {
        self.queues.insert(queue.into(), policy);
        self
    }

    /// The effective policy for `queue`.
    pub fn policy_for(&self, queue: &str) -> RedeliveryPolicy {
        match self.queues.get(queue) {
            Some(o) => o.apply(&self.default),
            None => self.default.clone(),
        }
    }

    /// Validate the default and every override.
    pub fn validate(&self) -> Result<()> {
        self.default.validate("redelivery.default")?;
        for (q, o) in &self.queues {
            o.apply(&self.default)
                .validate(&format!("redelivery.queues.{q}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decide_follows_attempts_permanence_and_capability() {
        let p = RedeliveryPolicy {
            maximum_redeliveries: 2,
            initial_redelivery_delay: Duration::from_millis(100),
            redelivery_delay: Duration::from_millis(100),
            use_exponential_backoff: true,
            backoff_multiplier: 2.0,
            use_collision_avoidance: false,
            ..RedeliveryPolicy::default()
        };
        assert_eq!(
            p.decide(1, false, true, 0.5),
            Decision::RetryAfter(Duration::from_millis(100))
        );
        assert_eq!(
            p.decide(2, false, true, 0.5),
            Decision::RetryAfter(Duration::from_millis(200))
        );
        assert_eq!(p.decide(3, false, true, 0.5), Decision::DeadLetter);
        assert_eq!(p.decide(1, true, true, 0.5), Decision::DeadLetter);
        assert_eq!(p.decide(1, false, false, 0.5), Decision::Requeue);
        let unlimited = RedeliveryPolicy {
            maximum_redeliveries: -1,
            ..p.clone()
        };
        assert!(matches!(
            unlimited.decide(1_000, false, true, 0.5),
            Decision::RetryAfter(_)
        ));
    }

    #[test]
    fn decide_places_the_jitter_within_the_factor() {
        let p = RedeliveryPolicy {
            initial_redelivery_delay: Duration::from_millis(1000),
            use_collision_avoidance: true,
            collision_avoidance_factor: 0.15,
            ..RedeliveryPolicy::default()
        };
        assert_eq!(
            p.decide(1, false, true, 0.0),
            Decision::RetryAfter(Duration::from_millis(850))
        );
        assert_eq!(
            p.decide(1, false, true, 0.5),
            Decision::RetryAfter(Duration::from_millis(1000))
        );
    }

    #[test]
    fn activemq_defaults() {
        let p = RedeliveryPolicy::default();
        assert_eq!(p.maximum_redeliveries, 6);
        assert_eq!(p.delay_for(1), Duration::from_secs(1));
        assert_eq!(p.delay_for(5), Duration::from_secs(1));
        assert!(!p.should_dead_letter(7 - 1));
        assert!(p.should_dead_letter(7));
        assert!(p.allows_delivery(7) && !p.allows_delivery(8));
    }

    #[test]
    fn backoff_is_capped_like_activemq() {
        let p = RedeliveryPolicy {
            use_exponential_backoff: true,
            backoff_multiplier: 2.0,
            initial_redelivery_delay: Duration::from_millis(100),
            maximum_redelivery_delay: Some(Duration::from_millis(500)),
            ..Default::default()
        };
        let ms: Vec<u128> = (1..=6).map(|n| p.delay_for(n).as_millis()).collect();
        // The cap is max(maximum_redelivery_delay, redelivery_delay) = 1 s, as in ActiveMQ.
        assert_eq!(ms, [100, 200, 400, 1000, 1000, 1000]);
    }

    #[test]
    fn unlimited_never_dead_letters() {
        let p = RedeliveryPolicy {
            maximum_redeliveries: -1,
            ..Default::default()
        };
        assert!(!p.should_dead_letter(u32::MAX));
        assert!(p.allows_delivery(u32::MAX));
    }

    #[test]
    fn collision_avoidance_stays_in_band() {
        let p = RedeliveryPolicy {
            use_collision_avoidance: true,
            ..Default::default()
        };
        for _ in 0..1000 {
            let d = p.jittered_delay_for(1).as_millis();
            assert!((850..=1150).contains(&d), "{d}");
        }
    }

    #[test]
    fn overrides_inherit_from_default() {
        let map = RedeliveryPolicyMap::new(RedeliveryPolicy {
            use_exponential_backoff: true,
            ..Default::default()
        })
        .with_queue(
            "q",
            PolicyOverride {
                maximum_redeliveries: Some(1),
                ..Default::default()
            },
        );
        let p = map.policy_for("q");
        assert_eq!(p.maximum_redeliveries, 1);
        assert!(p.use_exponential_backoff);
    }

    #[test]
    fn deserializes_activemq_names_and_units() {
        let map: RedeliveryPolicyMap = serde_json::from_str(
            r#"{"default":{"maximum_redeliveries":3,"initial_redelivery_delay":"250ms",
                "redelivery_delay":2000,"maximum_redelivery_delay":-1},
                "queues":{"a":{"initial_redelivery_delay":"10s"}}}"#,
        )
        .unwrap();
        assert_eq!(map.default.maximum_redeliveries, 3);
        assert_eq!(
            map.default.initial_redelivery_delay,
            Duration::from_millis(250)
        );
        assert_eq!(map.default.redelivery_delay, Duration::from_secs(2));
        assert_eq!(map.default.maximum_redelivery_delay, None);
        assert_eq!(
            map.policy_for("a").initial_redelivery_delay,
            Duration::from_secs(10)
        );
    }
}
